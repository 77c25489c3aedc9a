"""The profile aggregated per speaker: how much of each speaker there is, their typical value
of each measure and how much it moves between their utterances, and the speaker's levels.

| column | definition |
| --- | --- |
| `speaker` | the speaker column's value (rows without one are left out) |
| the pitch group column (`gender`), when pitch is grouped by a column other than the speaker | the speaker's most frequent non-empty value of it (ties: the first in sorted order) |
| `utterances` | profile rows of the speaker |
| `hours`, `voiced_hours` | sums of `duration_s` and `voiced_s`, / 3600 |
| `<measure>_median` | median over the speaker's utterances, each counting once, of every measure in `SUMMARISED` (utterances where it is NaN left out) |
| `<measure>_iqr` | interquartile range (75th - 25th percentile, linear interpolation) of the same values |
| `pitch_level`, `variation_level`, `rate_level`, `noise_level` | the level (bins.py) of the speaker's median `pitch_median_hz`, `pitch_std_st`, `onsets_per_s`, `snr_db` |
| `description` | describe.py's sentence for those levels |

Medians and IQRs rather than means and standard deviations: one utterance with a wrong pitch, a
cough or a long silence moves a mean and an sd of a few utterances a long way, a median and an
IQR hardly; and they are quantiles, like the bins they are compared with.

The speaker's pitch level uses the edges of the speaker's group (their gender). When pitch is
grouped per speaker, though, a speaker compared with their own utterances is "medium" by
construction, so the speaker table bins the speaker's median with the corpus-wide edges instead:
there, the level compares speakers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

from .bins import ATTRIBUTES, MEASURE_OF, Bins, group_keys, level_column, level_names
from .describe import describe
from .grouped import grouped_quantiles

# the speaker's column under the names corpora give it, in order of preference: ours and lhotse's,
# Hugging Face datasets' (LibriSpeech, LibriTTS-R, dataspeech), other toolkits', Common Voice's
SPEAKER_COLUMNS = ("speaker", "speaker_id", "spk_id", "client_id")
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class SpeakerColumn:
    """The carried column naming each utterance's speaker (None: there is none), and how it
    was chosen, in words for the run's output."""

    name: str | None
    how: str

    def __str__(self) -> str:
        if self.name is None:
            return f"no speaker column carried ({self.how})"
        return f"speaker column {self.name!r} ({self.how})"


def find_speaker_column(carried: Sequence[str], configured: str | None) -> SpeakerColumn:
    """The speaker column among the `carried` metadata columns: `configured`
    (profile.speaker_column, --speaker-column) when given, which must be carried, else the
    first of SPEAKER_COLUMNS carried. The profile stage, its speakers table and evaluate's
    default label all take it from here."""
    if configured is not None:
        if configured not in carried:
            raise ConfigError(f"speaker column {configured!r} (profile.speaker_column, "
                              f"--speaker-column) is not carried: the tables carry "
                              f"{', '.join(carried) or 'no metadata columns'}")
        return SpeakerColumn(configured, "profile.speaker_column")
    looked = ", ".join(SPEAKER_COLUMNS)
    found = next((c for c in SPEAKER_COLUMNS if c in carried), None)
    return SpeakerColumn(found, f"found among {looked}" if found else f"looked for {looked}")
# the measures of a speaker's style; durations and counts are summed (hours) or left out
SUMMARISED = (
    "voiced_fraction", "pitch_median_hz", "pitch_mean_hz", "pitch_p5_hz", "pitch_p95_hz",
    "pitch_std_st", "pitch_range_st", "f1_mean_hz", "f2_mean_hz", "snr_db", "power_std",
    "onsets_per_s", "pause_fraction", "mean_pause_s",
)


def speaker_table(profiles: Mapping[str, Any], bins: Bins,
                  speaker_column: str = "speaker") -> dict[str, np.ndarray]:
    """One row per speaker (sorted by name) from a profile table's columns: `speaker_column`,
    `duration_s`, `voiced_s` and the `SUMMARISED` measures (and the pitch group column when the
    bins group pitch by one). Columns as in the module docstring."""
    keys = group_keys(profiles[speaker_column])
    known = np.not_equal(keys, None)
    names, speaker = np.unique(keys[known].astype(str), return_inverse=True)
    n = len(names)
    out: dict[str, np.ndarray] = {"speaker": names.astype(object)}

    group_by = bins.pitch_group_by
    groups = None
    if group_by is not None and group_by != speaker_column and group_by in profiles:
        groups = _most_frequent(group_keys(profiles[group_by])[known], speaker, n)
        out[group_by] = groups

    out["utterances"] = np.bincount(speaker, minlength=n).astype(np.int64)
    for column, name in (("duration_s", "hours"), ("voiced_s", "voiced_hours")):
        seconds = np.asarray(profiles[column], np.float64)[known]
        out[name] = np.bincount(speaker, weights=seconds, minlength=n) / SECONDS_PER_HOUR
    for measure in SUMMARISED:
        values = np.asarray(profiles[measure], np.float64)[known]
        q25, median, q75 = grouped_quantiles(values, speaker, n, (0.25, 0.5, 0.75)).T
        out[f"{measure}_median"] = median
        out[f"{measure}_iqr"] = q75 - q25

    levels = {a: bins.levels(a, out[f"{MEASURE_OF[a]}_median"],
                             groups if a == "pitch" else None)
              for a in ATTRIBUTES}
    for attribute in ATTRIBUTES:
        out[level_column(attribute)] = level_names(attribute, levels[attribute])
    out["description"] = describe(levels)
    return out


def _most_frequent(values: np.ndarray, speaker: np.ndarray, n: int) -> np.ndarray:
    """Each speaker's most frequent non-missing value (None when all are missing); ties go to the
    first value in sorted order, so the answer does not depend on row order."""
    out = np.full(n, None, dtype=object)
    present = np.not_equal(values, None)
    if not present.any():
        return out
    names, value = np.unique(values[present].astype(str), return_inverse=True)
    pairs, counts = np.unique(speaker[present] * len(names) + value, return_counts=True)
    who, what = pairs // len(names), pairs % len(names)
    order = np.lexsort((what, -counts, who))  # per speaker: most frequent, then first name
    who, what = who[order], what[order]
    first = np.ones(len(who), bool)
    first[1:] = who[1:] != who[:-1]
    out[who[first]] = names[what[first]].astype(object)
    return out
