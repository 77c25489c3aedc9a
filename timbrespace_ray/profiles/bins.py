"""Seven levels per headline attribute, with edges fitted on a corpus and stored in `bins.json`.

| attribute | measure binned | levels, lowest to highest value |
| --- | --- | --- |
| pitch | `pitch_median_hz`, within the speaker's group | very low, low, fairly low, medium, fairly high, high, very high |
| variation | `pitch_std_st` | very monotone, monotone, fairly monotone, medium, fairly expressive, expressive, very expressive |
| rate | `onsets_per_s` | very slow, slow, fairly slow, medium, fairly fast, fast, very fast |
| noise | `snr_db` | very noisy, noisy, fairly noisy, medium, fairly clean, clean, very clean |

Edges are the corpus's quantiles at 1/7, 2/7, ..., 6/7: each level holds a seventh of the
utterances it was fitted on. Why quantiles and not mean +- k sd: the measures are skewed (rate,
snr) or bounded (variation >= 0), and a few utterances with a wrong pitch would pull a mean
and an sd but not a quantile; equal shares also make every word equally frequent, so each says
as much as it can. The consequence to keep in mind: the levels are relative to the corpus they were
fitted on ("very slow" is the slowest seventh of it). A corpus of calm readers still has its "very
fast" seventh, which is what `--bins FILE` is for: edges fitted on one corpus, applied to another,
put both on one scale.

A value equal to an edge goes to the lower level of the two; a value equal to several (tied)
edges takes the middle of the levels they bound, so a corpus where every utterance has the same
value calls it "medium" rather than "very high". A missing measure (NaN: no voiced frames, or
no snr: digital silence) has no level (-1).

Pitch within groups. The group is the value of the `gender` column when the corpus carries one,
else of the `speaker` column, else there is one group, the corpus: a 180 Hz voice is low for a
woman and high for a man. A group is the column's value as text, exactly ("F" and "female" are
two groups). Each group with at least `min_group_size` (default 20) utterances with a pitch gets
edges of its own; a smaller group, a row without a group value, a group the file has never seen
(another corpus's speakers or genders, with `--bins FILE`), and every row of a corpus that lacks
the column the file was grouped by, use the corpus-wide edges, which are always fitted (on every
utterance, whatever its group). What
"within the group" means when the group is the speaker: an utterance's pitch level then says how
high it is *for that speaker* (raised, lowered), not how high the voice is, and every speaker is
"medium" on average. The speakers table therefore bins a speaker's median pitch with the
corpus-wide edges in that case (see `speakers.py`). Variation (semitones, already relative to each
utterance's own median), rate and noise are binned corpus-wide.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ModelFormatError
from .grouped import grouped_quantiles

LEVELS: dict[str, tuple[str, ...]] = {
    "pitch": ("very low", "low", "fairly low", "medium", "fairly high", "high", "very high"),
    "variation": ("very monotone", "monotone", "fairly monotone", "medium", "fairly expressive",
                  "expressive", "very expressive"),
    "rate": ("very slow", "slow", "fairly slow", "medium", "fairly fast", "fast", "very fast"),
    "noise": ("very noisy", "noisy", "fairly noisy", "medium", "fairly clean", "clean",
              "very clean"),
}
ATTRIBUTES = tuple(LEVELS)
MEDIUM = 3  # the middle level of seven
MEASURE_OF = {"pitch": "pitch_median_hz", "variation": "pitch_std_st", "rate": "onsets_per_s",
              "noise": "snr_db"}
SEVENTHS = tuple(k / 7 for k in range(1, 7))
# the columns pitch may be grouped by, in order of preference
PITCH_GROUP_COLUMNS = ("gender", "speaker")
# below this many utterances a group's quantiles would be a handful of values, noisier than the
# difference between groups they are meant to capture
DEFAULT_MIN_GROUP_SIZE = 20
MISSING = -1
FORMAT = "timbrespace_ray.profile_bins"
VERSION = 1


def pitch_group_column(columns: Sequence[str]) -> str | None:
    """The column pitch is grouped by for a table with these columns: `gender`, else `speaker`,
    else none (the corpus is one group)."""
    return next((c for c in PITCH_GROUP_COLUMNS if c in columns), None)


def group_keys(values: Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Group names (object array): each value as text, exactly (a number as Arrow writes it: 12
    and 12.0 are both "12"); None for a missing value (null, NaN, blank text), which belongs to
    no group. One Arrow cast for the whole column, no Python loop over rows."""
    array = (values if isinstance(values, (pa.Array, pa.ChunkedArray))
             else pa.array(np.asarray(values) if not isinstance(values, list) else values,
                           from_pandas=True))
    text = pc.cast(array, pa.string())
    blank = pc.equal(pc.utf8_trim_whitespace(text), "")
    text = pc.if_else(blank, pa.scalar(None, pa.string()), text)
    return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)


@dataclass(frozen=True)
class AttributeBins:
    """The edges of one attribute: corpus-wide, and per group (pitch only)."""

    measure: str
    edges: tuple[float, ...] | None  # None: the corpus had no value to fit on
    count: int  # utterances with a value the edges were fitted on
    group_edges: Mapping[str, tuple[float, ...] | None] = field(default_factory=dict)
    group_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Bins:
    """Fitted edges for every attribute, and how they were fitted."""

    attributes: Mapping[str, AttributeBins]
    quantiles: tuple[float, ...] = SEVENTHS
    pitch_group_by: str | None = None
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
    utterances: int = 0  # rows of the table fitted on
    package_version: str = ""
    version: int = VERSION

    @classmethod
    def fit(cls, columns: Mapping[str, Any], *,
            pitch_group_by: str | None | Literal["auto"] = "auto",
            quantiles: Sequence[float] = SEVENTHS,
            min_group_size: int = DEFAULT_MIN_GROUP_SIZE) -> "Bins":
        """Edges from a profile table's columns (the `MEASURE_OF` measures, and the group column
        when pitch is grouped). `pitch_group_by="auto"` picks `pitch_group_column`."""
        from .. import __version__

        if len(quantiles) != len(LEVELS["pitch"]) - 1:
            raise ValueError(f"seven levels need 6 quantiles, got {len(quantiles)}")
        if list(quantiles) != sorted(quantiles) or not 0 < quantiles[0] <= quantiles[-1] < 1:
            raise ValueError(f"quantiles must rise inside (0, 1): {list(quantiles)}")
        if pitch_group_by == "auto":
            pitch_group_by = pitch_group_column(list(columns))
        elif pitch_group_by is not None and pitch_group_by not in columns:
            raise ValueError(f"no column {pitch_group_by!r} to group pitch by")
        q = tuple(float(x) for x in quantiles)
        attributes = {}
        n_rows = 0
        for attribute, measure in MEASURE_OF.items():
            values = np.asarray(columns[measure], np.float64)
            n_rows = len(values)
            edges, count = _fit_one(values, q)
            groups: dict[str, tuple[float, ...] | None] = {}
            counts: dict[str, int] = {}
            if attribute == "pitch" and pitch_group_by is not None:
                groups, counts = _fit_groups(values, group_keys(columns[pitch_group_by]), q,
                                             min_group_size)
            attributes[attribute] = AttributeBins(measure, edges, count, groups, counts)
        return cls(attributes, q, pitch_group_by, min_group_size, n_rows, __version__)

    def with_pitch_groups(self, group_by: str, edges: Mapping[str, tuple[float, ...] | None],
                          counts: Mapping[str, int]) -> "Bins":
        """These bins with pitch grouped by `group_by`, with the given groups' edges (fitted
        apart, `fit_pitch_groups`: the groups of a corpus too large to fit at once)."""
        pitch = self.attributes["pitch"]
        attributes = {**self.attributes, "pitch": replace(pitch, group_edges=dict(edges),
                                                           group_counts=dict(counts))}
        return replace(self, attributes=attributes, pitch_group_by=group_by)

    def levels(self, attribute: str, values: np.ndarray,
               groups: np.ndarray | None = None) -> np.ndarray:
        """int8 level (0..6, `MISSING` for NaN) of each value; `groups` (from `group_keys`) picks
        each row's pitch edges, the corpus-wide ones where None or unseen."""
        spec = self.attributes[attribute]
        values = np.asarray(values, np.float64)
        if spec.edges is None:
            return np.full(len(values), MISSING, np.int8)
        table = [np.asarray(spec.edges, np.float64)]
        row_edges = np.zeros(len(values), np.int64)
        if groups is not None and spec.group_edges:
            fitted = {g: e for g, e in spec.group_edges.items() if e is not None}
            table += [np.asarray(e, np.float64) for e in fitted.values()]
            # row 0 of the table is the corpus-wide edges: rows without a group or with a group
            # the file has no edges for; "" stands for no group (a group name is never blank)
            names, row = np.unique(np.where(np.not_equal(groups, None), groups, "").astype(str),
                                   return_inverse=True)
            index = {g: i + 1 for i, g in enumerate(fitted)}
            row_edges = np.array([index.get(str(g), 0) for g in names], np.int64)[row]
        edges = np.stack(table)[row_edges]
        return _level(values, edges)

    def apply(self, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The level of every attribute for every row of a profile table (another corpus's
        included: its rows are binned on this file's scale)."""
        groups = None
        if self.pitch_group_by is not None and self.pitch_group_by in columns:
            groups = group_keys(columns[self.pitch_group_by])
        return {a: self.levels(a, columns[MEASURE_OF[a]], groups if a == "pitch" else None)
                for a in ATTRIBUTES}

    def to_dict(self) -> dict[str, Any]:
        def edges(e: tuple[float, ...] | None) -> list[float] | None:
            return None if e is None else [float(x) for x in e]
        return {
            "format": FORMAT,
            "version": self.version,
            "package_version": self.package_version,
            "fitted": {"method": "quantiles", "quantiles": list(self.quantiles),
                       "pitch_group_by": self.pitch_group_by,
                       "min_group_size": self.min_group_size, "utterances": self.utterances},
            "attributes": {
                name: {"measure": a.measure, "levels": list(LEVELS[name]),
                       "edges": edges(a.edges), "count": a.count,
                       "groups": {g: {"edges": edges(e), "count": a.group_counts.get(g, 0)}
                                  for g, e in a.group_edges.items()}}
                for name, a in self.attributes.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Bins":
        if data.get("format") != FORMAT:
            raise ModelFormatError(f"not a bins file (format {data.get('format')!r}, "
                                   f"expected {FORMAT!r})")
        if data.get("version") != VERSION:
            raise ModelFormatError(f"bins file version {data.get('version')!r}; this version "
                                   f"of timbrespace_ray reads version {VERSION}")
        try:
            fitted = data["fitted"]
            attributes = {}
            for name in ATTRIBUTES:
                a = data["attributes"][name]
                if a["measure"] != MEASURE_OF[name]:
                    raise ModelFormatError(
                        f"the bins file levels {name} by {a['measure']!r}; this version of "
                        f"timbrespace_ray levels it by {MEASURE_OF[name]!r}: fit the bins again "
                        "(run the profile stage without profile.bins)")
                groups = a.get("groups", {})
                attributes[name] = AttributeBins(
                    a["measure"], _edges(a["edges"]), int(a["count"]),
                    {g: _edges(v["edges"]) for g, v in groups.items()},
                    {g: int(v["count"]) for g, v in groups.items()})
            return cls(attributes, tuple(float(q) for q in fitted["quantiles"]),
                       fitted["pitch_group_by"], int(fitted["min_group_size"]),
                       int(fitted["utterances"]), data.get("package_version", ""), VERSION)
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"bins file is incomplete or malformed: {exc!r}") from exc

    def to_json(self) -> str:
        # Python writes the shortest text that reads back as the same float: edges round-trip
        # bit for bit, so a loaded file bins exactly as the fitted object does
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Bins":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"bins file is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelFormatError("bins file is not a JSON object")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Bins":
        return cls.from_json(Path(path).read_text())


def level_column(attribute: str) -> str:
    """The column of a profile or speakers table holding an attribute's level words."""
    return f"{attribute}_level"


def level_names(attribute: str, levels: np.ndarray) -> np.ndarray:
    """Object array of the levels' words (None where `MISSING`)."""
    words = np.array(list(LEVELS[attribute]) + [None], dtype=object)
    return words[np.where(np.asarray(levels) == MISSING, len(LEVELS[attribute]), levels)]


def _edges(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    edges = tuple(float(x) for x in value)
    if len(edges) != len(LEVELS["pitch"]) - 1 or list(edges) != sorted(edges):
        raise ValueError(f"edges must be 6 rising numbers, got {list(edges)}")
    return edges


def _fit_one(values: np.ndarray, q: tuple[float, ...]) -> tuple[tuple[float, ...] | None, int]:
    present = values[~np.isnan(values)]
    if present.size == 0:
        return None, 0
    return tuple(float(x) for x in np.quantile(present, q)), int(present.size)


def fit_pitch_groups(columns: Mapping[str, Any], group_by: str,
                     quantiles: Sequence[float] = SEVENTHS,
                     min_group_size: int = DEFAULT_MIN_GROUP_SIZE
                     ) -> tuple[dict[str, tuple[float, ...] | None], dict[str, int]]:
    """The pitch edges and counts of each group of `group_by` in `columns`, as `Bins.fit`
    finds them: every group's rows must be there (groups are independent of each other)."""
    values = np.asarray(columns[MEASURE_OF["pitch"]], np.float64)
    return _fit_groups(values, group_keys(columns[group_by]), tuple(float(x) for x in quantiles),
                       min_group_size)


def _fit_groups(values: np.ndarray, keys: np.ndarray, q: tuple[float, ...],
                min_group_size: int) -> tuple[dict[str, tuple[float, ...] | None], dict[str, int]]:
    """Edges of every group (None below min_group_size) and its count of values; one sort for
    all groups, so a corpus of 10,000 speakers costs what one group does."""
    has_group = np.not_equal(keys, None)
    names, index = np.unique(keys[has_group].astype(str), return_inverse=True)
    group_values = values[has_group]
    quantiles = grouped_quantiles(group_values, index, len(names), q)
    counts = np.bincount(index[~np.isnan(group_values)], minlength=len(names))
    edges = {str(name): (tuple(float(x) for x in quantiles[i]) if counts[i] >= min_group_size
                         else None)
             for i, name in enumerate(names)}
    return edges, {str(name): int(counts[i]) for i, name in enumerate(names)}


def _level(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The level of each value against its row of edges: the middle of the levels whose bounds
    equal it (one level where no edge equals it; the lower of two where one does)."""
    below = (values[:, None] > edges).sum(axis=1)
    not_above = (values[:, None] >= edges).sum(axis=1)
    level = ((below + not_above) // 2).astype(np.int8)
    level[np.isnan(values)] = MISSING
    return level
