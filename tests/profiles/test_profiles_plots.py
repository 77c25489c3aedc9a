"""Report pictures and tables of style profiles (timbrespace_ray.profiles.plots) and the demo
report's "Style profiles" section, on a synthetic profile table whose level counts, speaker order
and numbers are worked out by hand below."""
from __future__ import annotations

import duckdb
import matplotlib.image
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from timbrespace_ray.demo import PROFILE_QUERY, profile_section, summary_table
from timbrespace_ray.stages.base import StageSummary
from timbrespace_ray.profiles import (
    ATTRIBUTES,
    LEVELS,
    MEASURE_COLUMNS,
    Bins,
    describe,
    level_column,
    level_names,
    speaker_table,
)
from timbrespace_ray.profiles.plots import (
    example_descriptions,
    examples_markdown,
    plot_levels,
    plot_speakers,
    speakers_markdown,
)

# 30 utterances: ann 12, bob 8, cat 6, dan 4; the last two of dan's are unvoiced: no pitch,
# variation or rate (snr is measured on all 30)
SPEAKERS = ["ann"] * 12 + ["bob"] * 8 + ["cat"] * 6 + ["dan"] * 4
# distinct pitches, each speaker in a range of their own: medians bob 107, dan 132, cat 157.5,
# ann 233.75 Hz, so lowest first the speakers are bob, dan, cat, ann
PITCH = np.concatenate([220 + 2.5 * np.arange(12), 100 + 2 * np.arange(8),
                        150 + 3 * np.arange(6), [130.0, 134.0, np.nan, np.nan]])
BY_PITCH = ["bob", "dan", "cat", "ann"]
VOICED = ~np.isnan(PITCH)
# Levels by hand. 28 distinct values: the k/7 quantiles sit at sorted positions 27k/7 = 3.86,
# 7.71, 11.57, 15.43, 19.29, 23.14 (from 0), so each level holds 4 values: positions 0-3, 4-7,
# ..., 24-27; the 2 unvoiced rows have none. 30 distinct snr values: positions 29k/7 = 4.14,
# 8.29, 12.43, 16.57, 20.71, 24.86, so the levels hold 5, 4, 4, 4, 4, 4, 5 (0-4, 5-8, ..., 25-29).
VOICED_COUNTS = {**{w: 4 for w in LEVELS["pitch"]}, "none": 2}
EXPECTED_COUNTS = {
    "pitch": VOICED_COUNTS,
    "variation": {**{w: 4 for w in LEVELS["variation"]}, "none": 2},
    "rate": {**{w: 4 for w in LEVELS["rate"]}, "none": 2},
    "noise": dict(zip(LEVELS["noise"], [5, 4, 4, 4, 4, 4, 5])),
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def voiced_only(values):
    out = np.full(len(SPEAKERS), np.nan)
    out[VOICED] = values
    return out


def profile_columns():
    """A profile table's columns, as the profile stage lays them out (numpy arrays)."""
    n = len(SPEAKERS)
    rng = np.random.default_rng(7)
    i = np.arange(n, dtype=np.float64)
    measures = {name: 0.5 + 0.01 * i for name in MEASURE_COLUMNS}  # the measures not binned
    measures.update({
        "duration_s": 60 + 10 * i, "voiced_s": 30 + 5 * i,
        "pitch_median_hz": PITCH,
        "pitch_std_st": voiced_only(rng.permutation(np.linspace(0.5, 4.0, 28))),
        "onsets_per_s": voiced_only(rng.permutation(np.linspace(2.0, 6.0, 28))),
        "snr_db": rng.permutation(np.linspace(3.0, 40.0, n)),
    })
    columns = {"utt_id": np.array([f"u{k:02d}" for k in range(n)], dtype=object),
               "source": np.array([f"u{k:02d}.wav" for k in range(n)], dtype=object),
               "start_s": np.zeros(n), "end_s": measures["duration_s"],
               "speaker": np.array(SPEAKERS, dtype=object),
               "corpus": np.full(n, "synthetic", dtype=object),
               "language": np.full(n, "en", dtype=object),
               **measures}
    bins = Bins.fit(columns)
    levels = bins.apply(columns)
    columns.update({level_column(a): level_names(a, levels[a]) for a in ATTRIBUTES})
    columns["description"] = describe(levels)
    return columns, bins


def arrow(columns):
    # NaN -> null, as the stage writes missing measures
    return pa.table({k: pa.array(v, from_pandas=True) for k, v in columns.items()})


def without(columns, name):
    return {k: v for k, v in columns.items() if k != name}


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = matplotlib.image.imread(path).shape[:2]
    assert 100 <= height <= 5000 and 300 <= width <= 5000


@pytest.fixture(scope="module")
def table():
    return profile_columns()


# --- plot_levels ---------------------------------------------------------------------------

@pytest.mark.parametrize("form", [dict, arrow])
def test_level_counts_are_the_tables(table, tmp_path, form):
    counts = plot_levels(form(table[0]), tmp_path / "levels.png")
    assert counts == EXPECTED_COUNTS
    assert list(counts["rate"]) == [*LEVELS["rate"], "none"]  # the words in order, none last
    assert_png(tmp_path / "levels.png")


def test_no_none_bar_without_missing_levels(table, tmp_path):
    voiced = {k: np.asarray(v)[VOICED] for k, v in table[0].items()}
    counts = plot_levels(voiced, tmp_path / "levels.png")
    assert counts["pitch"] == {w: 4 for w in LEVELS["pitch"]}


# --- plot_speakers -------------------------------------------------------------------------

@pytest.mark.parametrize("form", [dict, arrow])
def test_speakers_ordered_by_median_pitch(table, tmp_path, form):
    assert plot_speakers(form(table[0]), tmp_path / "s.png") == BY_PITCH
    assert_png(tmp_path / "s.png")


def test_max_groups_keeps_the_largest(table, tmp_path):
    # ann 12 and bob 8 utterances, then cat 6: the cut keeps the largest, still ordered by pitch
    assert plot_speakers(table[0], tmp_path / "s.png", max_groups=2) == ["bob", "ann"]
    assert plot_speakers(table[0], tmp_path / "s.png", max_groups=3) == ["bob", "cat", "ann"]
    assert_png(tmp_path / "s.png")
    with pytest.raises(ValueError):
        plot_speakers(table[0], tmp_path / "s.png", max_groups=0)


def test_groups_by_another_column(table, tmp_path):
    columns = dict(table[0])
    columns["gender"] = np.array(["F" if s in ("ann", "cat") else "M" for s in SPEAKERS],
                                 dtype=object)
    # M: bob and dan's voiced pitches (100-114, 130, 134), median 111; F: 150-165 and 220-247.5
    assert plot_speakers(columns, tmp_path / "g.png", group_column="gender") == ["M", "F"]


def test_rows_without_a_speaker_are_left_out(table, tmp_path):
    columns = dict(table[0])
    columns["speaker"] = np.where(np.array(SPEAKERS) == "cat", None, columns["speaker"])
    assert plot_speakers(columns, tmp_path / "s.png") == ["bob", "dan", "ann"]


def test_no_speaker_column(table, tmp_path):
    columns = without(table[0], "speaker")
    assert plot_speakers(columns, tmp_path / "s.png") == ["all utterances"]
    assert plot_levels(columns, tmp_path / "l.png") == EXPECTED_COUNTS
    examples = example_descriptions(columns)
    assert examples and all("speaker" not in e for e in examples)
    assert "speaker" not in examples_markdown(examples).splitlines()[0]
    assert_png(tmp_path / "s.png")


@pytest.mark.parametrize("empty", [lambda t: pa.table({}), lambda t: {},
                                   lambda t: arrow(t).slice(0, 0),
                                   lambda t: without(arrow(t).slice(0, 0).to_pydict(), "speaker")])
def test_empty_tables(table, tmp_path, empty):
    profiles = empty(table[0])
    assert plot_speakers(profiles, tmp_path / "s.png") == []
    assert plot_levels(profiles, tmp_path / "l.png") == {}
    assert example_descriptions(profiles) == []
    assert examples_markdown([]) == "_No utterances to describe._"
    assert speakers_markdown(profiles) == "_No speakers._"
    assert_png(tmp_path / "s.png")
    assert_png(tmp_path / "l.png")


# --- examples ------------------------------------------------------------------------------

def test_examples_are_distinct_and_deterministic(table):
    columns = table[0]
    examples = example_descriptions(columns, n=6)
    descriptions = [e["description"] for e in examples]
    assert len(descriptions) == len(set(descriptions)) == 6
    # the same table in another row order gives the same examples
    shuffled = np.random.default_rng(1).permutation(len(SPEAKERS))
    assert example_descriptions({k: np.asarray(v)[shuffled] for k, v in columns.items()}) \
        == examples
    assert example_descriptions(arrow(columns)) == examples
    every = example_descriptions(columns, n=100)
    assert len(every) == len(set(columns["description"]))
    assert every[:6] == examples


def test_examples_show_their_description_and_numbers(table):
    columns = table[0]
    utt = list(columns["utt_id"])
    for example in example_descriptions(columns):
        rows = [i for i, d in enumerate(columns["description"]) if d == example["description"]]
        row = min(rows, key=lambda i: utt[i])  # the smallest utt_id shows the description
        assert example["utt_id"] == utt[row]
        assert example["speaker"] == SPEAKERS[row]
        assert example["utterances"] == len(rows)
        assert example["onsets_per_s"] == (None if np.isnan(columns["onsets_per_s"][row])
                                           else columns["onsets_per_s"][row])
        assert example["snr_db"] == columns["snr_db"][row]


def test_first_example_is_the_most_remarkable(table):
    columns = table[0]

    def steps_from_medium(row):
        return sum(abs(LEVELS[a].index(columns[level_column(a)][row]) - 3)
                   if columns[level_column(a)][row] is not None else 0 for a in ATTRIBUTES)

    most = max(steps_from_medium(i) for i in range(len(SPEAKERS)))
    first = example_descriptions(columns)[0]
    assert steps_from_medium(list(columns["utt_id"]).index(first["utt_id"])) == most


def test_examples_markdown_rounds():
    examples = [
        {"utt_id": "a|b", "speaker": "x", "description": "a slow voice", "pitch_median_hz": 187.6,
         "pitch_std_st": 2.34, "onsets_per_s": 3.96, "snr_db": 17.5, "utterances": 3},
        {"utt_id": "c", "speaker": None, "description": "an unvoiced or silent recording",
         "pitch_median_hz": None, "pitch_std_st": None, "onsets_per_s": None, "snr_db": -3.2,
         "utterances": 1},
    ]
    lines = examples_markdown(examples).splitlines()
    assert lines[0] == ("| utt_id | speaker | description | pitch_median_hz | pitch_std_st | "
                        "onsets_per_s | snr_db | utterances |")
    assert lines[1] == "|" + " --- |" * 8
    assert lines[2] == "| a\\|b | x | a slow voice | 188 | 2.3 | 4.0 | 18 | 3 |"
    assert lines[3] == "| c |  | an unvoiced or silent recording |  |  |  | -3 | 1 |"


# --- speakers table ------------------------------------------------------------------------

def test_speakers_markdown(table):
    columns, bins = table
    speakers = speaker_table(columns, bins)
    lines = speakers_markdown(arrow(speakers)).splitlines()
    assert lines[0] == ("| speaker | utterances | hours | pitch_median_hz_median | "
                        "onsets_per_s_median | description |")
    # most hours first; durations 60 + 10 i s: ann's (i = 0..11) 720 + 660 = 1380 s, bob's
    # (i = 12..19) 480 + 1240 = 1720 s = 0.4778 h, cat's (20..25) 360 + 1350 = 1710 s, dan's
    # (26..29) 240 + 1100 = 1340 s; ann's median pitch 233.75 Hz, bob's 107 Hz
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| bob", "| cat", "| ann", "| dan"]
    assert lines[2].startswith("| bob | 8 | 0.478 | 107 | ")
    assert lines[4].startswith("| ann | 12 | 0.383 | 234 | ")
    cut = speakers_markdown(speakers, max_rows=2).splitlines()
    assert len(cut) == 2 + 2 + 2 and cut[-1] == "2 of 4 speakers, those with the most hours."


# --- the demo report -----------------------------------------------------------------------

def fake_out(tmp_path, table, speakers=True):
    columns, bins = table
    out = tmp_path / "out"
    (out / "profiles").mkdir(parents=True)
    pq.write_table(arrow(columns), out / "profiles" / "part-000000.parquet")
    bins.save(out / "profiles" / "bins.json")
    if speakers:
        (out / "speakers").mkdir()
        pq.write_table(arrow(speaker_table(columns, bins)),
                       out / "speakers" / "part-000000.parquet")
    (out / "report").mkdir()
    return out


def test_profile_section(tmp_path, table):
    out = fake_out(tmp_path, table)
    markdown = profile_section(out, out / "report")
    assert markdown.startswith("## Style profiles")
    for picture in ("profile_speakers.png", "profile_levels.png"):
        assert f"](report/{picture})" in markdown
        assert_png(out / "report" / picture)
    assert "### Speakers" in markdown
    for name in BY_PITCH:
        assert f"| {name} | " in markdown
    assert "with 30 utterances each holds about 4.3" in markdown
    assert "`pitch_hz`" in markdown
    assert examples_markdown(example_descriptions(table[0])) in markdown


def test_profile_section_without_speakers(tmp_path, table):
    out = fake_out(tmp_path, (without(table[0], "speaker"), table[1]), speakers=False)
    markdown = profile_section(out, out / "report")
    assert "### Speakers" not in markdown
    assert_png(out / "report" / "profile_speakers.png")


def test_profile_query_runs(tmp_path, table):
    out = fake_out(tmp_path, table)
    rows = duckdb.connect().sql(PROFILE_QUERY.format(out=out)).fetchall()
    assert [r[0] for r in rows] == BY_PITCH
    assert [r[1] for r in rows] == [8, 4, 6, 12]


def test_summary_table_names_the_profiles_folder():
    stage = StageSummary("embed", rows=30)
    lines = summary_table({"embed": stage, "profile": stage}, {"profile": 1.5}).splitlines()
    assert lines[2].split() == ["embed", "embeddings", "30", "0", "0.0"]
    assert lines[3].split() == ["profile", "profiles", "30", "0", "1.5"]
