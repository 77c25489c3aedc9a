"""Pictures and small tables of style profiles, for the report: the corpus in the profile's terms.

- `plot_speakers`: every utterance's median pitch (Hz) and rate (voiced onsets per second), one
  row per speaker (or group), rows ordered by the speaker's median pitch. It shows who is high or
  low, fast or slow, and how much each speaker moves between utterances, which a table of
  medians hides.
- `plot_levels`: how many utterances each level word holds, per attribute. The levels are
  sevenths of the corpus the bins were fitted on, so the bars should be about equal: one far from
  a seventh points at tied values, pitch edges fitted per group, or another corpus's bins
  (`--bins FILE`); a "none" bar counts the utterances the measure could not be taken on.
- `example_descriptions`, `examples_markdown`: a few distinct descriptions with the numbers behind
  them, so that a reader sees what "fairly fast" means in this corpus.
- `speakers_markdown`: the speakers table (speakers.py), its headline columns.

Tables are `pyarrow.Table`s or mappings of column name -> array, with the profile table's or the
speakers table's columns. Matplotlib is imported inside the functions (Agg backend): importing
the package must not need it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .bins import ATTRIBUTES, LEVELS, MEASURE_OF, MEDIUM, group_keys, level_column

Table = pa.Table | Mapping[str, Any]
NO_GROUP = "all utterances"
NO_LEVEL = "none"
# decimals of every number a Markdown table shows: whole Hz, semitones and rates to 0.1, snr in
# whole dB (finer than the measures' precision would be noise: snr_db is good to about 1 dB)
DECIMALS = {"pitch_median_hz": 0, "pitch_std_st": 1, "onsets_per_s": 1, "snr_db": 0,
            "hours": 3, "pitch_median_hz_median": 0, "onsets_per_s_median": 1}
KEY_NUMBERS = tuple(MEASURE_OF[a] for a in ATTRIBUTES)
SPEAKER_COLUMNS = ("speaker", "utterances", "hours", "pitch_median_hz_median",
                   "onsets_per_s_median", "description")


def plot_speakers(profiles: Table, save_path: str | Path, group_column: str = "speaker",
                  max_groups: int = 30) -> list[str]:
    """Pitch (`pitch_median_hz`) and rate (`onsets_per_s`) of each utterance, one row per value of
    `group_column` (one row, "all utterances", when the table lacks it), each row's middle half
    drawn as a bar and its median as a tick. Past `max_groups` groups, only those with the most
    utterances are drawn. Rows without a group value, and null values, are left out. Returns the
    groups drawn, top to bottom (lowest median pitch first; groups without a pitch last)."""
    if max_groups < 1:
        raise ValueError(f"max_groups must be at least 1, got {max_groups}")
    columns = _columns(profiles)
    n = _rows(columns)
    keys = (group_keys(columns[group_column]) if group_column in columns
            else np.full(n, NO_GROUP, dtype=object))
    # as in the speakers table: a row without a speaker belongs to no speaker's row
    named = np.not_equal(keys, None)
    if not named.any():
        _nothing(save_path, "no utterances" if n == 0 else f"no utterances with a {group_column}")
        return []
    names, group, sizes = np.unique(keys[named].astype(str), return_inverse=True,
                                    return_counts=True)
    pitch = _floats(columns, "pitch_median_hz")[named]
    rate = _floats(columns, "onsets_per_s")[named]

    # the largest groups, ties by name: the same table always draws the same groups
    kept = sorted(range(len(names)), key=lambda g: (-sizes[g], names[g]))[:max_groups]
    medians = {g: _median(pitch[group == g]) for g in kept}
    order = sorted(kept, key=lambda g: (np.isnan(medians[g]), np.nan_to_num(medians[g]),
                                        names[g]))

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, max(3.0, 1.6 + 0.3 * len(order))), sharey=True)
    for ax, values, label in ((axes[0], pitch, "median pitch (Hz)"),
                              (axes[1], rate, "voiced onsets per second of speech")):
        for row, g in enumerate(order):
            v = _present(values[group == g])
            ax.scatter(v, row + _spread(len(v)), s=12, alpha=0.6, color="tab:blue")
            if v.size:
                q25, median, q75 = np.quantile(v, (0.25, 0.5, 0.75))
                ax.hlines(row, q25, q75, color="black", lw=3, alpha=0.4)
                ax.plot(median, row, "|", color="tab:red", ms=14, mew=2.5)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(order)), [f"{names[g]} ({sizes[g]})" for g in order])
    axes[0].invert_yaxis()  # shared: the lowest voice on top in both panels
    who = f"per {group_column}" if group_column in columns else f"of {NO_GROUP}"
    cut = (f": the {len(order)} of {len(names)} with the most utterances"
           if len(order) < len(names) else "")
    fig.suptitle(f"Pitch and rate {who}{cut}\n(utterances) per row; bar: the middle half, "
                 "red tick: the median", fontsize=10)
    fig.tight_layout()
    _save(plt, fig, save_path)
    return [str(names[g]) for g in order]


def plot_levels(profiles: Table, save_path: str | Path) -> dict[str, dict[str, int]]:
    """One bar chart per attribute: utterances per level word, in `LEVELS` order, and those
    without a level as a "none" bar when there are any. Returns the counts drawn, per attribute
    (an empty dict for an empty table)."""
    columns = _columns(profiles)
    n = _rows(columns)
    if n == 0:
        _nothing(save_path, "no utterances")
        return {}
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    counts = {}
    for ax, attribute in zip(axes.flat, ATTRIBUTES):
        words = group_keys(columns[level_column(attribute)])
        count = {w: int(np.sum(words == w)) for w in LEVELS[attribute]}
        missing = int(np.sum(np.equal(words, None)))
        if missing:
            count[NO_LEVEL] = missing
        counts[attribute] = count
        ax.bar(range(len(count)), list(count.values()), color="tab:blue")
        ax.axhline(n / 7, color="grey", ls="--", lw=1, label="a seventh of the utterances")
        ax.set_xticks(range(len(count)), list(count), rotation=30, ha="right")
        ax.set_ylabel("utterances")
        ax.set_title(f"{attribute} (levels of {MEASURE_OF[attribute]})")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Level words of {n} utterances", fontsize=11)
    fig.tight_layout()
    _save(plt, fig, save_path)
    return counts


def example_descriptions(profiles: Table, n: int = 6) -> list[dict[str, Any]]:
    """Up to n distinct descriptions, the most different first, each shown by its utterance with
    the smallest `utt_id`: `utt_id`, `speaker` (when the table has one), `description`, the
    measures the levels bin (`KEY_NUMBERS`, None where null) and `utterances`, how many share it.

    "Most different": the first is the description furthest from "medium" on all four levels
    (summed level steps, a missing level counting as medium); each next one is the one furthest
    from "medium" and from every one already chosen, so that a few examples cover the corpus
    rather than repeat its commonest voice. Ties go to the commoner description, then to the
    alphabet: the same table always gives the same examples."""
    columns = _columns(profiles)
    if _rows(columns) == 0 or n < 1:
        return []
    text = group_keys(columns["description"])
    rows = np.flatnonzero(np.not_equal(text, None))
    if rows.size == 0:
        return []
    utt = group_keys(columns["utt_id"]).astype(str)
    names, which, sizes = np.unique(text[rows].astype(str), return_inverse=True,
                                    return_counts=True)
    by_description = np.lexsort((utt[rows], which))
    first = np.ones(len(rows), bool)
    first[1:] = which[by_description][1:] != which[by_description][:-1]
    shown = rows[by_description[first]]  # the row shown for each of `names`, in order

    steps = np.stack([_level_steps(attribute, group_keys(columns[level_column(attribute)])[shown])
                      for attribute in ATTRIBUTES], axis=1)
    distance = np.abs(steps - MEDIUM).sum(axis=1)
    chosen: list[int] = []
    for _ in range(min(n, len(names))):
        best = int(np.lexsort((names, -sizes, -distance))[0])
        chosen.append(best)
        distance = np.minimum(distance, np.abs(steps - steps[best]).sum(axis=1))
        distance[chosen] = -1  # never again, behind every description not yet chosen

    speakers = group_keys(columns["speaker"]) if "speaker" in columns else None
    numbers = {m: _floats(columns, m) for m in KEY_NUMBERS}
    examples = []
    for best in chosen:
        row = shown[best]
        example: dict[str, Any] = {"utt_id": str(utt[row])}
        if speakers is not None:
            example["speaker"] = speakers[row]
        example["description"] = str(names[best])
        example.update({m: _number(numbers[m][row]) for m in KEY_NUMBERS})
        example["utterances"] = int(sizes[best])
        examples.append(example)
    return examples


def examples_markdown(examples: Sequence[Mapping[str, Any]]) -> str:
    """`example_descriptions`'s examples as a Markdown table: pitch to whole Hz, semitones and
    rates to 0.1, snr to whole dB."""
    if not examples:
        return "_No utterances to describe._"
    header = list(dict.fromkeys(key for example in examples for key in example))
    return _markdown(header, [[example.get(key) for key in header] for example in examples])


def speakers_markdown(speakers: Table, max_rows: int = 20) -> str:
    """The speakers table (speakers.py) as Markdown, `SPEAKER_COLUMNS` only, the speakers with the
    most hours first; past `max_rows` speakers, a line says how many are left out."""
    columns = _columns(speakers)
    n = _rows(columns)
    if n == 0:
        return "_No speakers._"
    names = group_keys(columns["speaker"]).astype(str)
    order = np.lexsort((names, -_floats(columns, "hours")))[:max_rows]
    values = {c: group_keys(columns[c]) for c in ("speaker", "description")}
    values["utterances"] = np.asarray(columns["utterances"], np.int64)
    values.update({c: _floats(columns, c) for c in SPEAKER_COLUMNS if c in DECIMALS})
    table = _markdown(list(SPEAKER_COLUMNS),
                      [[values[c][i] for c in SPEAKER_COLUMNS] for i in order])
    if n > len(order):
        table += f"\n\n{len(order)} of {n} speakers, those with the most hours."
    return table


def _columns(table: Table) -> Mapping[str, Any]:
    if isinstance(table, pa.Table):
        return {name: table.column(name) for name in table.column_names}
    return table


def _rows(columns: Mapping[str, Any]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def _floats(columns: Mapping[str, Any], name: str) -> np.ndarray:
    """float64, NaN where null."""
    return np.asarray(columns[name], np.float64)


def _present(values: np.ndarray) -> np.ndarray:
    return values[~np.isnan(values)]


def _median(values: np.ndarray) -> float:
    present = _present(values)
    return float(np.median(present)) if present.size else float("nan")


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _level_steps(attribute: str, words: np.ndarray) -> np.ndarray:
    """Level indices 0..6 of level words; `MEDIUM` for a missing one (nothing to remark on)."""
    index = {word: i for i, word in enumerate(LEVELS[attribute])}
    return np.array([index.get(word, MEDIUM) for word in words], np.int64)


def _spread(count: int) -> np.ndarray:
    # vertical offsets so that equal values do not hide one another: a golden-ratio sequence
    # spreads any number of points evenly and, unlike random jitter, draws the same every time
    return (np.arange(count) * 0.618034 % 1 - 0.5) * 0.5


def _markdown(header: list[str], rows: list[list[Any]]) -> str:
    def cell(key: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if key in DECIMALS:
            return f"{value:.{DECIMALS[key]}f}"
        return str(value).replace("|", "\\|")  # a bar in a name would split the cell

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(k, v) for k, v in zip(header, row)) + " |" for row in rows]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, save_path: str | Path) -> None:
    fig.savefig(save_path, dpi=110)
    plt.close(fig)


def _nothing(save_path: str | Path, message: str) -> None:
    """A picture saying why there is nothing to draw, so the report's image link still works."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14)
    _save(plt, fig, save_path)
