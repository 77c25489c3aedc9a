"""Style profiles (timbrespace_ray.profiles): measures on synthetic frame arrays with known pitch,
pauses and onsets, checked against numbers worked out by hand; bins, descriptions, speakers."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from timbrespace_ray.errors import ConfigError, ModelFormatError
from timbrespace_ray.features import FeatureConfig
from timbrespace_ray.profiles import (
    ATTRIBUTES,
    LEVELS,
    MEASURE_COLUMNS,
    Bins,
    MeasureConfig,
    describe,
    description,
    find_speaker_column,
    hop_seconds,
    level_names,
    pitch_group_column,
    speaker_table,
    utterance_measures,
)
from timbrespace_ray.profiles.bins import group_keys
from timbrespace_ray.profiles.grouped import grouped_quantiles

HOP = 0.016


def part(*pitches, features=None):
    """Frames of several utterances as the features table lays them out (flat + offsets). Each
    utterance is its pitch track; the Timbrespace features default to 'measured where voiced'."""
    lengths = [len(p) for p in pitches]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    pitch = np.concatenate([np.asarray(p, np.float64) for p in pitches]) if pitches else np.zeros(0)
    voiced = (pitch > 0).astype(np.float64)
    frames = {"f0": voiced * 0.5, "f1": voiced * 0.3, "f2": voiced * 0.1,
              "power": voiced * 0.2}
    frames.update(features or {})
    return frames, pitch, offsets


def levels_of(n, speech_db=-20.0, noise_db=-50.0):
    return {"speech_level_db": np.full(n, speech_db), "noise_level_db": np.full(n, noise_db)}


def measures(*pitches, hop_s=HOP, features=None, levels=None, **kwargs):
    frames, pitch, offsets = part(*pitches, features=features)
    return utterance_measures(frames, pitch, offsets, hop_s=hop_s,
                              levels=levels or levels_of(len(pitches)), **kwargs)


def runs(*pieces):
    """A pitch track from (frames, Hz) pieces; Hz 0 is unvoiced."""
    return np.concatenate([np.full(n, hz, np.float64) for n, hz in pieces])


# --- measures ------------------------------------------------------------------------------

def test_the_hop_is_the_features_hop():
    assert hop_seconds(FeatureConfig()) == 0.016
    assert hop_seconds(FeatureConfig(sample_rate=22_050)) == 352 / 22_050  # a whole sample count


def test_constant_200_hz():
    m = measures(np.full(100, 200.0))
    assert list(m) == list(MEASURE_COLUMNS)
    assert m["pitch_median_hz"][0] == 200.0
    assert m["pitch_mean_hz"][0] == 200.0
    assert m["pitch_p5_hz"][0] == m["pitch_p95_hz"][0] == 200.0
    assert m["pitch_std_st"][0] == 0.0
    assert m["pitch_range_st"][0] == 0.0
    assert m["voiced_s"][0] == pytest.approx(1.6)
    assert m["voiced_fraction"][0] == 1.0
    assert m["duration_s"][0] == pytest.approx(1.6)  # n_frames x hop without a duration_s
    # one voiced stretch: one onset in 1.6 s of speech, no pause
    assert m["onsets_per_s"][0] == pytest.approx(1 / 1.6)
    assert m["pause_fraction"][0] == 0.0
    assert m["pause_count"][0] == 0
    assert math.isnan(m["mean_pause_s"][0])


def test_an_octave_glide_spans_12_semitones():
    # 101 frames, equal steps in log frequency, 100 Hz at frame 5 and 200 Hz at frame 95: the 5th
    # and 95th percentiles fall exactly on those frames (positions 0.05 x 100 and 0.95 x 100)
    k = np.arange(101)
    m = measures(100.0 * 2.0 ** ((k - 5) / 90))
    assert m["pitch_p5_hz"][0] == pytest.approx(100.0, rel=1e-12)
    assert m["pitch_p95_hz"][0] == pytest.approx(200.0, rel=1e-12)
    assert m["pitch_range_st"][0] == pytest.approx(12.0, abs=1e-9)
    assert m["pitch_median_hz"][0] == pytest.approx(100 * math.sqrt(2))
    # semitones equally spaced by 12/90 over 101 frames: sd = step * sqrt((101^2 - 1) / 12)
    assert m["pitch_std_st"][0] == pytest.approx(12 / 90 * math.sqrt(850), rel=1e-9)


def test_a_linear_glide_from_100_to_200_hz():
    m = measures(np.linspace(100.0, 200.0, 101))  # 1 Hz per frame
    assert m["pitch_p5_hz"][0] == pytest.approx(105.0)
    assert m["pitch_p95_hz"][0] == pytest.approx(195.0)
    assert m["pitch_median_hz"][0] == pytest.approx(150.0)
    assert m["pitch_mean_hz"][0] == pytest.approx(150.0)
    assert m["pitch_range_st"][0] == pytest.approx(12 * math.log2(195 / 105))


def test_two_half_second_pauses():
    # at a 20 ms hop: 0.2 s of silence, then 1 s voiced, 0.5 s unvoiced, 1 s voiced, 0.5 s
    # unvoiced, 1 s voiced, then 0.3 s of silence. 4.5 s in all, 3 s voiced, the voiced span is
    # 4 s of which 1 s is pauses; the silence before and after is neither pause nor speech.
    track = runs((10, 0), (50, 150), (25, 0), (50, 150), (25, 0), (50, 150), (15, 0))
    m = measures(track, hop_s=0.02)
    assert m["duration_s"][0] == pytest.approx(4.5)
    assert m["voiced_s"][0] == pytest.approx(3.0)
    assert m["voiced_fraction"][0] == pytest.approx(2 / 3)
    assert m["pause_count"][0] == 2
    assert m["mean_pause_s"][0] == pytest.approx(0.5)
    assert m["pause_fraction"][0] == pytest.approx(0.25)
    assert m["speech_s"][0] == pytest.approx(3.0)
    assert m["onsets_per_s"][0] == pytest.approx(3 / 3.0)


def test_a_pause_is_200_ms_or_longer():
    # at 16 ms, 12 unvoiced frames are 192 ms (not a pause), 13 frames 208 ms (a pause)
    short = measures(runs((20, 120), (12, 0), (20, 120)))
    long = measures(runs((20, 120), (13, 0), (20, 120)))
    assert short["pause_count"][0] == 0 and short["pause_fraction"][0] == 0.0
    assert long["pause_count"][0] == 1
    assert long["mean_pause_s"][0] == pytest.approx(13 * HOP)
    assert long["pause_fraction"][0] == pytest.approx(13 / 53)
    assert long["speech_s"][0] == pytest.approx(40 * HOP)
    longer = measures(runs((20, 120), (13, 0), (20, 120)), config=MeasureConfig(min_pause_s=0.25))
    assert longer["pause_count"][0] == 0
    # a gap of exactly the minimum is a pause, although 0.07 / 0.01 is 7.000000000000001 in floats
    exactly = measures(runs((20, 120), (7, 0), (20, 120)), hop_s=0.01,
                       config=MeasureConfig(min_pause_s=0.07))
    assert exactly["pause_count"][0] == 1


def test_onsets_need_a_gap_of_two_frames():
    # gaps of 1, 2 and 5 unvoiced frames: the lone frame is a dropout, the others split -> 3
    # onsets over 88 frames of speech (no gap is a pause)
    track = runs((20, 120), (1, 0), (20, 120), (2, 0), (20, 120), (5, 0), (20, 120))
    m = measures(track)
    assert m["speech_s"][0] == pytest.approx(88 * HOP)
    assert m["onsets_per_s"][0] == pytest.approx(3 / (88 * HOP))
    assert m["pause_count"][0] == 0
    # the silence around an utterance changes neither its rate nor its pauses
    padded = measures(np.concatenate([np.zeros(30), track, np.zeros(40)]))
    for name in ("onsets_per_s", "speech_s", "pause_fraction"):
        assert padded[name][0] == pytest.approx(m[name][0])
    assert padded["voiced_fraction"][0] == pytest.approx(80 / 158)


def test_onsets_are_counted_between_pauses_as_well():
    # voiced / 20-frame pause / voiced: 2 onsets over 40 frames of speech
    m = measures(runs((20, 120), (20, 0), (20, 120)))
    assert m["onsets_per_s"][0] == pytest.approx(2 / (40 * HOP))


def test_features_are_averaged_where_measured():
    # float32, as the features table stores them
    n = 10
    f1 = np.array([0.3] * 6 + [0.0] * 4, np.float32)  # 500 Hz where tracked
    f2 = np.array([0.0] * 5 + [0.1] * 5, np.float32)  # 1070 Hz where tracked
    f0 = np.array([0.0, 0.0] + [0.5] * 8, np.float32)  # Timbrespace's F0 on frames 2..9
    power = np.array([0.7, 0.7] + [0.2, 0.4] * 4, np.float32)  # frames outside F0 do not count
    m = measures(np.full(n, 150.0), features={"f0": f0, "f1": f1, "f2": f2, "power": power})
    assert m["f1_mean_hz"][0] == pytest.approx(500.0)
    assert m["f2_mean_hz"][0] == pytest.approx(1070.0)
    assert m["power_std"][0] == pytest.approx(0.1)


def test_snr_takes_the_noise_out_of_the_speech_level():
    # speech + noise 10 dB above the noise: the speech alone is 10 - 1 = 9 times the noise
    # (9.54 dB); 20 - 1 = 99 times at 20 dB; the same level as the noise: no speech, the floor
    # of -20 dB; digital silence (no speech level): no snr
    speech = np.array([-30.0, -20.0, -40.0, np.nan])
    noise = np.array([-40.0, -40.0, -40.0, -100.0])
    m = measures(*[np.full(20, 150.0)] * 4,
                 levels={"speech_level_db": speech, "noise_level_db": noise})
    np.testing.assert_allclose(m["snr_db"][:3], [10 * math.log10(9), 10 * math.log10(99), -20.0])
    assert math.isnan(m["snr_db"][3])
    np.testing.assert_array_equal(m["speech_level_db"], speech)  # the levels pass through
    np.testing.assert_array_equal(m["noise_level_db"], noise)


def test_an_unvoiced_utterance_has_no_pitch_rate_or_pauses():
    m = measures(np.zeros(50))
    for name in ("pitch_median_hz", "pitch_mean_hz", "pitch_p5_hz", "pitch_p95_hz",
                 "pitch_std_st", "pitch_range_st", "onsets_per_s", "pause_fraction",
                 "mean_pause_s", "f1_mean_hz", "f2_mean_hz", "power_std"):
        assert math.isnan(m[name][0]), name
    assert m["voiced_s"][0] == 0.0 and m["voiced_fraction"][0] == 0.0
    assert m["speech_s"][0] == 0.0 and m["pause_count"][0] == 0


def test_utterances_of_a_part_are_measured_apart():
    """A part's rows equal each utterance measured alone: runs of unvoiced frames never cross
    from one utterance into the next (b ends unvoiced and c starts unvoiced: no pause)."""
    rng = np.random.default_rng(7)
    a = runs((10, 0), (30, 210), (20, 0), (25, 190))
    b = np.concatenate([rng.uniform(90, 140, 40), np.zeros(30)])
    c = runs((30, 0), (40, 220), (3, 0), (40, 230))
    empty = np.zeros(0)
    silent = np.zeros(12)
    tracks = [a, b, empty, c, silent]
    durations = np.array([1.5, 1.2, 0.03, 1.9, 0.3])
    levels = {"speech_level_db": np.array([-20.0, -31.5, np.nan, -18.0, -60.0]),
              "noise_level_db": np.array([-50.0, -45.0, -100.0, -30.0, -62.0])}
    together = measures(*tracks, duration_s=durations, levels=levels)
    for i, track in enumerate(tracks):
        alone = measures(track, duration_s=durations[i:i + 1],
                         levels={k: v[i:i + 1] for k, v in levels.items()})
        for name in MEASURE_COLUMNS:
            np.testing.assert_allclose(together[name][i], alone[name][0], rtol=1e-12,
                                       err_msg=f"utterance {i}, {name}")
    assert together["duration_s"].tolist() == durations.tolist()
    assert math.isnan(together["voiced_fraction"][2])  # no frames at all
    assert together["pause_count"].tolist() == [1, 0, 0, 0, 0]


def test_pitch_statistics_match_numpy_per_utterance():
    rng = np.random.default_rng(3)
    tracks = [np.where(rng.random(n) < 0.6, rng.lognormal(5.0, 0.3, n), 0.0)
              for n in rng.integers(1, 300, 40)]
    m = measures(*tracks)
    for i, track in enumerate(tracks):
        voiced = track[track > 0]
        if voiced.size == 0:
            assert math.isnan(m["pitch_median_hz"][i])
            continue
        p5, p50, p95 = np.percentile(voiced, [5, 50, 95])
        np.testing.assert_allclose([m["pitch_p5_hz"][i], m["pitch_median_hz"][i],
                                    m["pitch_p95_hz"][i]], [p5, p50, p95], rtol=1e-12)
        np.testing.assert_allclose(m["pitch_mean_hz"][i], voiced.mean(), rtol=1e-12)
        np.testing.assert_allclose(m["pitch_std_st"][i], np.std(12 * np.log2(voiced / p50)),
                                   rtol=1e-9, atol=1e-12)


def test_grouped_quantiles_leave_out_nan_and_empty_groups():
    values = np.array([3.0, np.nan, 1.0, 2.0, 10.0, np.nan])
    groups = np.array([0, 0, 0, 0, 2, 1])
    q = grouped_quantiles(values, groups, 4, [0.25, 0.5, 1.0])
    np.testing.assert_allclose(q[0], np.quantile([1.0, 2.0, 3.0], [0.25, 0.5, 1.0]))
    assert np.isnan(q[1]).all() and np.isnan(q[3]).all()
    assert q[2].tolist() == [10.0, 10.0, 10.0]


def test_a_misshapen_part_is_refused():
    frames, pitch, offsets = part(np.full(10, 100.0))
    with pytest.raises(ValueError, match="pitch_hz has 9 frames"):
        utterance_measures(frames, pitch[:-1], offsets, hop_s=HOP, levels=levels_of(1))
    with pytest.raises(ValueError, match="lack the 'power'"):
        utterance_measures({k: v for k, v in frames.items() if k != "power"}, pitch, offsets,
                           hop_s=HOP, levels=levels_of(1))
    with pytest.raises(ValueError, match="levels lack 'noise_level_db'"):
        utterance_measures(frames, pitch, offsets, hop_s=HOP,
                           levels={"speech_level_db": np.zeros(1)})
    with pytest.raises(ValueError, match="speech_level_db has 2 values for 1 utterances"):
        utterance_measures(frames, pitch, offsets, hop_s=HOP, levels=levels_of(2))


# --- bins ----------------------------------------------------------------------------------

def corpus(n=70, seed=0, shift=0.0, **extra):
    """A profile table of n utterances: rate 1..n (onsets per second, plus shift)."""
    rng = np.random.default_rng(seed)
    columns = {"pitch_median_hz": rng.uniform(100, 250, n), "pitch_std_st": rng.gamma(4, 0.6, n),
               "onsets_per_s": np.arange(1, n + 1, dtype=np.float64) + shift,
               "snr_db": rng.uniform(0.0, 40.0, n)}
    columns.update(extra)
    return columns


def test_edges_are_sevenths_of_the_corpus():
    columns = corpus()
    bins = Bins.fit(columns)
    # quantile k/7 of 1..70 sits at position 69k/7
    np.testing.assert_allclose(bins.attributes["rate"].edges, [1 + 69 * k / 7 for k in range(1, 7)])
    levels = bins.apply(columns)["rate"]
    assert np.bincount(levels, minlength=7).tolist() == [10] * 7
    assert levels[0] == 0 and levels[-1] == 6
    assert level_names("rate", levels[[0, 35, 69]]).tolist() == ["very slow", "medium",
                                                                 "very fast"]
    for attribute in ATTRIBUTES:
        assert np.bincount(bins.apply(columns)[attribute], minlength=7).tolist() == [10] * 7


def test_missing_values_have_no_level_and_tied_values_are_medium():
    columns = corpus(onsets_per_s=np.full(70, 4.0))
    columns["onsets_per_s"][[3, 9]] = np.nan
    bins = Bins.fit(columns)
    levels = bins.apply(columns)["rate"]
    assert levels[3] == levels[9] == -1
    assert set(levels[~np.isnan(columns["onsets_per_s"])].tolist()) == {3}
    assert bins.attributes["rate"].count == 68
    assert level_names("rate", levels[[3, 4]]).tolist() == [None, "medium"]
    # a value equal to one edge goes to the lower of its two levels
    edges = Bins.fit(corpus()).attributes["rate"].edges
    assert Bins.fit(corpus()).levels("rate", np.array([edges[2]]))[0] == 2


def test_pitch_is_binned_within_gender():
    # women 180..260 Hz, men 90..130 Hz: the lowest woman is "very low" although she is higher
    # than every man, and the highest man is "very high"
    female, male = np.linspace(180, 260, 35), np.linspace(90, 130, 35)
    columns = corpus(gender=np.array(["female"] * 35 + ["male"] * 35, dtype=object),
                     speaker=np.array([f"s{i % 5}" for i in range(70)], dtype=object))
    columns["pitch_median_hz"] = np.concatenate([female, male])
    bins = Bins.fit(columns)
    assert pitch_group_column(list(columns)) == "gender"
    assert bins.pitch_group_by == "gender"
    assert set(bins.attributes["pitch"].group_edges) == {"female", "male"}
    pitch = bins.apply(columns)["pitch"]
    assert pitch[0] == 0 and pitch[34] == 6  # lowest and highest woman
    assert pitch[35] == 0 and pitch[69] == 6  # lowest and highest man
    assert np.bincount(pitch[:35], minlength=7).tolist() == [5] * 7
    # corpus-wide, the men would all be low and the women all high
    corpus_wide = Bins.fit(columns, pitch_group_by=None).apply(columns)["pitch"]
    assert corpus_wide[:35].min() >= 3 and corpus_wide[35:].max() <= 3


def test_group_names_are_the_values_as_text():
    assert group_keys(np.array(["female", None, " ", "", "male"], dtype=object)).tolist() == [
        "female", None, None, None, "male"]
    assert group_keys(np.array([12.0, np.nan, 3.0])).tolist() == ["12", None, "3"]
    assert group_keys(pa.chunked_array([[12, None], [7]])).tolist() == ["12", None, "7"]


def test_pitch_falls_back_to_speaker_then_to_the_corpus():
    columns = corpus(speaker=np.array(["a"] * 40 + ["b"] * 30, dtype=object))
    by_speaker = Bins.fit(columns)
    assert by_speaker.pitch_group_by == "speaker"
    assert set(by_speaker.attributes["pitch"].group_edges) == {"a", "b"}
    assert Bins.fit(corpus()).pitch_group_by is None
    assert Bins.fit(corpus()).attributes["pitch"].group_edges == {}


def test_small_unknown_and_empty_groups_use_the_corpus_edges():
    genders = np.array(["f"] * 50 + ["m"] * 10 + [None] * 10, dtype=object)
    columns = corpus(gender=genders)
    bins = Bins.fit(columns, min_group_size=20)
    pitch = bins.attributes["pitch"]
    assert pitch.group_edges["m"] is None and pitch.group_counts["m"] == 10
    assert pitch.group_edges["f"] is not None
    corpus_wide = bins.levels("pitch", columns["pitch_median_hz"])
    grouped = bins.apply(columns)["pitch"]
    assert (grouped[50:] == corpus_wide[50:]).all()  # "m" too small, None has no group
    unseen = np.array(["x"] * 70, dtype=object)
    assert (bins.levels("pitch", columns["pitch_median_hz"], unseen) == corpus_wide).all()
    # a corpus without the gender column: every row on the corpus-wide edges
    no_gender = {k: v for k, v in columns.items() if k != "gender"}
    assert (bins.apply(no_gender)["pitch"] == corpus_wide).all()


def test_bins_json_reproduces_the_bins(tmp_path):
    columns = corpus(gender=np.array(["female", "male"] * 35, dtype=object))
    bins = Bins.fit(columns)
    path = tmp_path / "bins.json"
    bins.save(path)
    loaded = Bins.load(path)
    assert loaded == bins
    for attribute, levels in bins.apply(columns).items():
        assert (loaded.apply(columns)[attribute] == levels).all()
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["format"] == "timbrespace_ray.profile_bins"
    assert data["fitted"] == {"method": "quantiles", "quantiles": [k / 7 for k in range(1, 7)],
                              "pitch_group_by": "gender", "min_group_size": 20,
                              "utterances": 70}
    assert data["attributes"]["pitch"]["groups"]["male"]["count"] == 35
    assert data["attributes"]["noise"]["levels"][0] == "very noisy"
    assert data["attributes"]["rate"]["measure"] == "onsets_per_s"
    assert Bins.from_json(loaded.to_json()).to_json() == bins.to_json()


def test_a_second_corpus_is_binned_on_the_first_ones_scale():
    first = Bins.fit(corpus())
    second = corpus(seed=1, shift=30.0)  # rates 31..100; the first corpus's edges are 1 + 69k/7
    on_first = first.apply(second)["rate"]
    expected = np.searchsorted(first.attributes["rate"].edges, second["onsets_per_s"])
    assert on_first.tolist() == expected.tolist()
    assert np.bincount(on_first, minlength=7).tolist() == [0, 0, 0, 10, 10, 10, 40]
    # fitted on itself, the second corpus would again be spread over all seven levels
    assert np.bincount(Bins.fit(second).apply(second)["rate"], minlength=7).tolist() == [10] * 7


def test_a_damaged_bins_file_is_refused(tmp_path):
    bins = Bins.fit(corpus())
    data = bins.to_dict()
    with pytest.raises(ModelFormatError, match="not a bins file"):
        Bins.from_dict({**data, "format": "something else"})
    with pytest.raises(ModelFormatError, match="version 2"):
        Bins.from_dict({**data, "version": 2})
    broken = json.loads(json.dumps(data))
    broken["attributes"]["rate"]["edges"] = [3.0, 2.0, 1.0, 4.0, 5.0, 6.0]
    with pytest.raises(ModelFormatError, match="6 rising numbers"):
        Bins.from_dict(broken)
    # a file whose noise levels are edges of another measure (the snr feature's mean, 0-1)
    other = json.loads(json.dumps(data))
    other["attributes"]["noise"]["measure"] = "snr_mean"
    with pytest.raises(ModelFormatError, match="levels noise by 'snr_mean'.*by 'snr_db'"):
        Bins.from_dict(other)
    with pytest.raises(ModelFormatError, match="not JSON"):
        Bins.from_json("{")


# --- descriptions --------------------------------------------------------------------------

@pytest.mark.parametrize("levels, text", [
    ((1, 1, 4, 5), "a low-pitched, monotone, fairly fast voice in a clean recording"),
    ((3, 3, 3, 3), "a typical voice"),
    ((3, 3, 3, 6), "a typical voice in a very clean recording"),
    ((3, 5, 3, 0), "an expressive voice in a very noisy recording"),
    ((6, 4, 0, 2), "a very high-pitched, fairly expressive, very slow voice in a fairly noisy "
                   "recording"),
    ((0, 3, 3, -1), "a very low-pitched voice"),
    ((2, -1, 5, 3), "a fairly low-pitched, fast voice"),
    ((-1, -1, -1, 5), "an unvoiced or silent recording"),
])
def test_descriptions(levels, text):
    assert description(*levels) == text


def test_describe_words_every_row():
    rng = np.random.default_rng(5)
    levels = {a: rng.integers(-1, 7, 500).astype(np.int8) for a in ATTRIBUTES}
    levels["variation"][levels["pitch"] == -1] = -1
    texts = describe(levels)
    assert len(texts) == 500
    for i in range(500):
        assert texts[i] == description(*(int(levels[a][i]) for a in ATTRIBUTES))
    assert describe({a: np.zeros(0, np.int8) for a in ATTRIBUTES}).tolist() == []


# --- speakers ------------------------------------------------------------------------------

def profile_rows():
    """Profile rows of three speakers (and one row without a speaker) from synthetic frames."""
    rng = np.random.default_rng(11)
    speakers = ["ann"] * 12 + ["bob"] * 9 + ["cy"] * 7 + [None]
    genders = ["female"] * 12 + ["male"] * 8 + [None] + ["female"] * 4 + ["male"] * 3 + ["male"]
    base = {"ann": 210.0, "bob": 110.0, "cy": 190.0, None: 150.0}
    tracks = []
    for s in speakers:
        n = int(rng.integers(60, 200))
        gaps = rng.random(n) < 0.15
        tracks.append(np.where(gaps, 0.0, base[s] * 2 ** (rng.normal(0, 2.0, n) / 12)))
    durations = np.array([len(t) * HOP + 0.034 for t in tracks])
    levels = levels_of(len(tracks), noise_db=rng.uniform(-70.0, -20.0, len(tracks)))
    rows = measures(*tracks, duration_s=durations, levels=levels)
    rows["speaker"] = np.array(speakers, dtype=object)
    rows["gender"] = np.array(genders, dtype=object)
    return rows


def test_speakers_table_agrees_with_the_profile_rows():
    rows = profile_rows()
    bins = Bins.fit(rows, min_group_size=5)
    table = speaker_table(rows, bins)
    assert table["speaker"].tolist() == ["ann", "bob", "cy"]
    assert table["utterances"].tolist() == [12, 9, 7]
    assert table["gender"].tolist() == ["female", "male", "female"]  # cy: 4 female, 3 male
    speaker = rows["speaker"]
    for i, name in enumerate(table["speaker"]):
        mine = speaker == name
        assert table["hours"][i] == pytest.approx(rows["duration_s"][mine].sum() / 3600)
        assert table["voiced_hours"][i] == pytest.approx(rows["voiced_s"][mine].sum() / 3600)
        for measure in ("pitch_median_hz", "pitch_std_st", "onsets_per_s", "pause_fraction"):
            values = rows[measure][mine]
            values = values[~np.isnan(values)]
            assert table[f"{measure}_median"][i] == pytest.approx(np.median(values))
            q25, q75 = np.percentile(values, [25, 75])
            assert table[f"{measure}_iqr"][i] == pytest.approx(q75 - q25)
    # every speaker's hours together are the rows that have a speaker
    has_speaker = np.array([s is not None for s in speaker])
    assert table["hours"].sum() == pytest.approx(rows["duration_s"][has_speaker].sum() / 3600)
    # the speaker's levels are the bins of the speaker's medians, pitch within their gender
    for attribute, measure in (("variation", "pitch_std_st"), ("rate", "onsets_per_s"),
                               ("noise", "snr_db")):
        expected = level_names(attribute, bins.levels(attribute, table[f"{measure}_median"]))
        assert table[f"{attribute}_level"].tolist() == expected.tolist()
    pitch = bins.levels("pitch", table["pitch_median_hz_median"], table["gender"])
    assert table["pitch_level"].tolist() == level_names("pitch", pitch).tolist()
    levels = {a: np.array([LEVELS[a].index(w) for w in table[f"{a}_level"]]) for a in ATTRIBUTES}
    assert table["description"].tolist() == describe(levels).tolist()


def test_speakers_compared_with_themselves_use_the_corpus_edges():
    rows = profile_rows()
    del rows["gender"]
    bins = Bins.fit(rows, min_group_size=5)
    assert bins.pitch_group_by == "speaker"
    table = speaker_table(rows, bins)
    assert "gender" not in table
    corpus_wide = level_names("pitch", bins.levels("pitch", table["pitch_median_hz_median"]))
    assert table["pitch_level"].tolist() == corpus_wide.tolist()
    # against their own utterances, every speaker would be medium
    own = bins.levels("pitch", table["pitch_median_hz_median"], table["speaker"])
    assert level_names("pitch", own).tolist() == ["medium"] * 3
    assert corpus_wide.tolist() != ["medium"] * 3


@pytest.mark.parametrize("carried,expected", [
    (["text", "client_id", "speaker_id"], "speaker_id"),  # the earlier name of the list wins
    (["client_id", "gender"], "client_id"),
    (["spk_id", "speaker"], "speaker"),
    (["text", "gender"], None),
])
def test_the_speaker_column_is_found_among_the_names_corpora_give_it(carried, expected):
    found = find_speaker_column(carried, None)
    assert found.name == expected
    if expected:
        assert str(found) == (f"speaker column {expected!r} (found among speaker, speaker_id, "
                              "spk_id, client_id)")
    else:
        assert str(found) == ("no speaker column carried (looked for speaker, speaker_id, "
                              "spk_id, client_id)")


def test_a_configured_speaker_column_wins_and_must_be_carried():
    found = find_speaker_column(["speaker", "reader"], "reader")
    assert (found.name, str(found)) == ("reader", "speaker column 'reader' (profile.speaker_column)")
    with pytest.raises(ConfigError, match=r"speaker column 'reader' \(profile.speaker_column, "
                       r"--speaker-column\) is not carried: the tables carry speaker, text"):
        find_speaker_column(["speaker", "text"], "reader")
