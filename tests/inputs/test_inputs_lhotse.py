"""lhotse manifests as input: CutSets, RecordingSets with SupervisionSets, built with lhotse itself
over the bundled recordings, run through the features stage with the in-process executor."""
import shutil
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import soxr

lhotse = pytest.importorskip("lhotse")
from lhotse import (AudioSource, CutSet, MonoCut, Recording, RecordingSet,  # noqa: E402
                    SupervisionSegment, SupervisionSet)
from lhotse.cut import PaddingCut  # noqa: E402

from helpers.corpus import SHORT  # noqa: E402
from timbrespace_ray.audio import decode_audio  # noqa: E402
from timbrespace_ray.config import load_config  # noqa: E402
from timbrespace_ray.features import FEATURE_NAMES, ProsodicFeatureExtractor  # noqa: E402
from timbrespace_ray.inputs import InputError, InputOptions, discover  # noqa: E402
from timbrespace_ray.executors import LocalExecutor  # noqa: E402
from timbrespace_ray.stages.features import FeaturesStage  # noqa: E402
from timbrespace_ray.storage import Location  # noqa: E402

MONO, LEFT, RIGHT, HIGH = SHORT[2], SHORT[0], SHORT[7], SHORT[4]  # 7.1 s, 3.1 s, 4 s, 5.3 s


def make_stage(input_uri, out, storage_options=None, **features):
    cfg = load_config(**{f"features.{k}": v for k, v in features.items()})
    return FeaturesStage(Location.of(str(out)), str(input_uri), cfg.features, storage_options)


def run(input_uri, out, **features):
    return make_stage(input_uri, out, **features).run(LocalExecutor())


def rows(out) -> dict[str, dict]:
    return {r["utt_id"]: r for r in pq.read_table(out / "features").to_pylist()}


def errors(out) -> dict[str, dict]:
    if not (out / "errors").exists():
        return {}
    return {r["utt_id"]: r for r in pq.read_table(out / "errors").to_pylist()}


def expect_features(row: dict, path, start=None, end=None, channels=None) -> None:
    """The row's features equal the extractor's over the whole recording decoded at 16 kHz with
    the same channels, cut at the segment's milliseconds."""
    audio, _, _ = decode_audio(str(path), 16000, channels=channels)
    extractor = ProsodicFeatureExtractor.from_config(load_config().features.extractor_config())
    if start is None:
        expected = extractor.extract(audio_tensor=audio)
    else:
        expected = extractor.extract(audio_tensor=audio, start_ms=start * 1000, end_ms=end * 1000)
    assert row["n_frames"] == len(expected["f0"]) > 10
    for name in FEATURE_NAMES:
        np.testing.assert_array_equal(np.asarray(row[name], np.float32),
                                      expected[name].astype(np.float32),
                                      err_msg=f"{row['utt_id']} {name}")


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """A 2-channel file (LEFT | RIGHT) and a 44.1 kHz copy of HIGH, beside the mono one."""
    root = tmp_path_factory.mktemp("lhotse-audio")
    left, sr = sf.read(LEFT, dtype="float32")
    right, _ = sf.read(RIGHT, dtype="float32")
    n = min(len(left), len(right))
    sf.write(root / "stereo.wav", np.stack([left[:n], right[:n]], axis=1), sr)
    high, sr = sf.read(HIGH, dtype="float32")
    sf.write(root / "high.wav", soxr.resample(high, sr, 44100, quality="HQ"), 44100,
             subtype="FLOAT")
    shutil.copy(MONO, root / "mono.wav")
    assert sf.info(root / "stereo.wav").channels == 2
    assert sf.info(root / "high.wav").samplerate == 44100
    return root


def recordings(audio) -> list[Recording]:
    return [Recording.from_file(audio / "stereo.wav", recording_id="stereo"),
            Recording.from_file(audio / "mono.wav", recording_id="mono"),
            Recording.from_file(audio / "high.wav", recording_id="high")]


def supervisions() -> list[SupervisionSegment]:
    return [
        SupervisionSegment("s-left", "stereo", 0.5, 1.0, channel=0, speaker="alice",
                           language="en", gender="f", text="left words",
                           custom={"age": 31, "score": 1, "tags": ["a", "b"], "source": "mic"}),
        SupervisionSegment("s-right", "stereo", 1.0, 1.25, channel=1, speaker="bob",
                           language="fr", gender="m", custom={"age": 40, "score": 0.5}),
        SupervisionSegment("m-2", "mono", 2.0, 2.5, custom={"age": 7}),
        SupervisionSegment("m-1", "mono", 0.25, 1.5, speaker="carol", text="one"),
        SupervisionSegment("h-1", "high", 0.5, 2.0, speaker="dave"),
    ]


# where each supervision's samples are: file, start, end, channels
EXPECTED = {"s-left": ("stereo.wav", 0.5, 1.5, [0]), "s-right": ("stereo.wav", 1.0, 2.25, [1]),
            "m-1": ("mono.wav", 0.25, 1.75, None), "m-2": ("mono.wav", 2.0, 4.5, None),
            "h-1": ("high.wav", 0.5, 2.5, None)}


@pytest.fixture(scope="module")
def cuts_run(audio, tmp_path_factory):
    root = tmp_path_factory.mktemp("lhotse-cuts")
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recordings(audio)),
                                 supervisions=SupervisionSet.from_segments(supervisions()))
    cuts.to_file(root / "cuts.jsonl.gz")
    summary = run(root / "cuts.jsonl.gz", root / "out")
    return root / "out", summary


def test_cutset_supervisions_equal_the_extractor_with_their_channels(cuts_run, audio):
    out, summary = cuts_run
    got = rows(out)
    assert summary.rows == 5 and not summary.errors
    assert sorted(got) == sorted(EXPECTED)
    for utt_id, (name, start, end, channels) in EXPECTED.items():
        row = got[utt_id]
        expect_features(row, audio / name, start, end, channels)
        assert (row["start_s"], row["end_s"]) == (start, end)
        assert row["source"] == f"file://{audio / name}"
    assert got["h-1"]["sample_rate"] == 44100 and got["m-1"]["sample_rate"] == 16000


def test_the_two_channels_are_not_their_mean(cuts_run, audio):
    # the channel selection reaches the decoder: a right-channel supervision is not the mix
    got = rows(cuts_run[0])["s-right"]
    mixed, _, _ = decode_audio(str(audio / "stereo.wav"), 16000)
    extractor = ProsodicFeatureExtractor.from_config(load_config().features.extractor_config())
    mean = extractor.extract(audio_tensor=mixed, start_ms=1000, end_ms=2250)
    assert not np.array_equal(np.asarray(got["f0"], np.float32), mean["f0"].astype(np.float32))


def test_supervision_fields_and_custom_entries_are_columns(cuts_run):
    out, _ = cuts_run
    schema = pq.read_schema(next((out / "features").glob("part-*.parquet")))
    types = {name: str(schema.field(name).type) for name in schema.names}
    # custom: scalar entries are columns of their own (ints with floats: float64); a list is
    # not carried; a key that is one of our own columns ('source') becomes custom_<key>
    assert {k: types.get(k) for k in ("recording_id", "speaker", "language", "gender", "text",
                                      "age", "score", "custom_source")} == {
        "recording_id": "string", "speaker": "string", "language": "string", "gender": "string",
        "text": "string", "age": "int64", "score": "double", "custom_source": "string"}
    assert "tags" not in types and "custom" not in types
    got = rows(out)
    meta = {u: {k: got[u][k] for k in ("recording_id", "speaker", "language", "gender", "text",
                                       "age", "score", "custom_source")} for u in got}
    assert meta["s-left"] == {"recording_id": "stereo", "speaker": "alice", "language": "en",
                              "gender": "f", "text": "left words", "age": 31, "score": 1.0,
                              "custom_source": "mic"}
    assert meta["s-right"] == {"recording_id": "stereo", "speaker": "bob", "language": "fr",
                               "gender": "m", "text": None, "age": 40, "score": 0.5,
                               "custom_source": None}
    assert meta["m-2"] == {"recording_id": "mono", "speaker": None, "language": None,
                           "gender": None, "text": None, "age": 7, "score": None,
                           "custom_source": None}
    assert meta["m-1"]["text"] == "one" and meta["h-1"]["speaker"] == "dave"


def test_recordings_with_supervisions_give_the_same_rows_as_the_cutset(cuts_run, audio,
                                                                       tmp_path):
    # lhotse recipes' names: the SupervisionSet beside the RecordingSet is found by its name
    RecordingSet.from_recordings(recordings(audio)).to_file(
        tmp_path / "corpus_recordings_train.jsonl.gz")
    SupervisionSet.from_segments(supervisions()).to_file(
        tmp_path / "corpus_supervisions_train.jsonl.gz")
    run(tmp_path / "corpus_recordings_train.jsonl.gz", tmp_path / "out")
    assert rows(tmp_path / "out") == rows(cuts_run[0])


def test_supervisions_given_by_option_under_any_name(cuts_run, audio, tmp_path):
    RecordingSet.from_recordings(recordings(audio)).to_file(tmp_path / "recs.jsonl")
    SupervisionSet.from_segments(supervisions()).to_file(tmp_path / "segments.jsonl.gz")
    run(tmp_path / "recs.jsonl", tmp_path / "out",
        lhotse_supervisions=str(tmp_path / "segments.jsonl.gz"))
    assert rows(tmp_path / "out") == rows(cuts_run[0])


def test_a_recordingset_alone_is_one_whole_segment_per_recording(audio, tmp_path):
    RecordingSet.from_recordings(recordings(audio)).to_file(tmp_path / "x_recordings.jsonl.gz")
    summary = run(tmp_path / "x_recordings.jsonl.gz", tmp_path / "out")
    got = rows(tmp_path / "out")
    assert summary.rows == 3 and sorted(got) == ["high", "mono", "stereo"]
    for utt_id, name in (("high", "high.wav"), ("mono", "mono.wav"), ("stereo", "stereo.wav")):
        assert got[utt_id]["start_s"] is None and got[utt_id]["end_s"] is None
        assert got[utt_id]["recording_id"] == utt_id
        expect_features(got[utt_id], audio / name)  # all channels: the stereo file's mean


def test_supervisions_of_a_cut_with_an_offset(audio, tmp_path):
    rec = Recording.from_file(audio / "mono.wav", recording_id="mono")
    inside = MonoCut("inside", start=1.0, duration=1.5, channel=0, recording=rec, supervisions=[
        SupervisionSegment("in", "mono", 0.25, 0.5),  # 1.25-1.75 of the recording
        SupervisionSegment("past-end", "mono", 1.0, 1.0),  # clipped to the cut: 2.0-2.5
        SupervisionSegment("before", "mono", -0.25, 0.5),  # clipped to the cut: 1.0-1.25
        SupervisionSegment("outside", "mono", 2.0, 0.5),  # nothing of it is in the cut
    ])
    bare = MonoCut("bare", start=3.5, duration=2.25, channel=0, recording=rec)
    CutSet.from_cuts([inside, bare]).to_file(tmp_path / "cuts.jsonl")
    summary = run(tmp_path / "cuts.jsonl", tmp_path / "out")
    got = rows(tmp_path / "out")
    assert summary.rows == 4 and summary.errors == {"SegmentRangeError": 1}
    for utt_id, (start, end) in {"in": (1.25, 1.75), "past-end": (2.0, 2.5),
                                 "before": (1.0, 1.25), "bare": (3.5, 5.75)}.items():
        assert (got[utt_id]["start_s"], got[utt_id]["end_s"]) == (start, end), utt_id
        expect_features(got[utt_id], audio / "mono.wav", start, end)
    assert list(errors(tmp_path / "out")) == ["outside"]


def test_a_missing_recording_file_is_one_error_row_per_supervision(audio, tmp_path):
    shutil.copy(SHORT[3], tmp_path / "gone.wav")
    gone = Recording.from_file(tmp_path / "gone.wav", recording_id="gone")
    (tmp_path / "gone.wav").unlink()
    mono = Recording.from_file(audio / "mono.wav", recording_id="mono")
    RecordingSet.from_recordings([gone, mono]).to_file(tmp_path / "c_recordings.jsonl.gz")
    SupervisionSet.from_segments([
        SupervisionSegment("g-1", "gone", 0.0, 1.0), SupervisionSegment("g-2", "gone", 1.0, 1.0),
        SupervisionSegment("m-1", "mono", 0.25, 1.5),
    ]).to_file(tmp_path / "c_supervisions.jsonl.gz")
    summary = run(tmp_path / "c_recordings.jsonl.gz", tmp_path / "out", max_error_share=1.0)
    assert summary.rows == 1 and summary.errors == {"FileNotFoundError": 2}
    bad = errors(tmp_path / "out")
    assert sorted(bad) == ["g-1", "g-2"]
    assert all("gone.wav" in e["message"] for e in bad.values())
    expect_features(rows(tmp_path / "out")["m-1"], audio / "mono.wav", 0.25, 1.75)


def test_unsupported_cuts_sources_and_transforms_are_error_rows(audio, tmp_path):
    mono = Recording.from_file(audio / "mono.wav", recording_id="mono")
    other = Recording.from_file(audio / "stereo.wav", recording_id="stereo")
    cx = MonoCut("cx", 0.0, 2.0, 0, recording=mono,
                 supervisions=[SupervisionSegment("x-1", "mono", 0.2, 1.0)])
    cy = MonoCut("cy", 0.0, 2.0, 0, recording=other,
                 supervisions=[SupervisionSegment("y-1", "stereo", 0.5, 1.0)])
    mixed = cx.mix(cy, offset_other_by=0.5)
    padding = PaddingCut("pad", duration=1.0, sampling_rate=16000, feat_value=-23.0,
                         num_samples=16000)
    fast = mono.perturb_speed(1.1, affix_id=False)
    sped = MonoCut("sped", 0.0, 2.0, 0, recording=fast,
                   supervisions=[SupervisionSegment("sp-1", "mono", 0.2, 1.0)])
    command = Recording("cmd", [AudioSource("command", [0], f"cat {audio / 'mono.wav'}")],
                        16000, mono.num_samples, mono.duration)
    piped = MonoCut("piped", 0.0, 2.0, 0, recording=command,
                    supervisions=[SupervisionSegment("cmd-1", "cmd", 0.2, 1.0)])
    shar = Recording("sh", [AudioSource("shar", [0], "")], 16000, mono.num_samples,
                     mono.duration)
    placeholder = MonoCut("placeholder", 0.0, 2.0, 0, recording=shar,
                          supervisions=[SupervisionSegment("sh-1", "sh", 0.2, 1.0)])
    kept = MonoCut("kept", 0.0, 2.0, 0, recording=mono,
                   supervisions=[SupervisionSegment("ok-1", "mono", 0.5, 1.0)])
    CutSet.from_cuts([mixed, padding, sped, piped, placeholder, kept]).to_file(tmp_path / "cuts.jsonl.gz")
    summary = run(tmp_path / "cuts.jsonl.gz", tmp_path / "out", max_error_share=1.0)
    assert summary.rows == 1 and summary.errors == {"UnsupportedInputError": 6}
    bad = errors(tmp_path / "out")
    assert sorted(bad) == ["cmd-1", "pad", "sh-1", "sp-1", "x-1", "y-1"]
    assert "MixedCut" in bad["x-1"]["message"] and "MixedCut" in bad["y-1"]["message"]
    assert "PaddingCut" in bad["pad"]["message"]
    assert "Speed" in bad["sp-1"]["message"] and "'command'" in bad["cmd-1"]["message"]
    assert "'shar'" in bad["sh-1"]["message"]
    expect_features(rows(tmp_path / "out")["ok-1"], audio / "mono.wav", 0.5, 1.5)


def test_one_file_per_channel_and_a_resample_to_16k(audio, tmp_path):
    # AMI-like: channel 0 in one file, channel 1 in another
    split = Recording("split", [AudioSource("file", [0], str(LEFT)),
                                AudioSource("file", [1], str(RIGHT))], 16000, 48000, 3.0)
    resampled = Recording.from_file(audio / "high.wav", recording_id="high").resample(16000)
    assert resampled.transforms  # lhotse keeps it as a transform on the 44.1 kHz file
    RecordingSet.from_recordings([split, resampled]).to_file(tmp_path / "a_recordings.jsonl")
    SupervisionSet.from_segments([
        SupervisionSegment("ch1", "split", 0.5, 1.5, channel=1),
        SupervisionSegment("ch0", "split", 0.25, 1.0, channel=0),
        SupervisionSegment("both", "split", 0.25, 1.0, channel=[0, 1]),
        SupervisionSegment("rs", "high", 1.0, 2.0),
    ]).to_file(tmp_path / "a_supervisions.jsonl")
    summary = run(tmp_path / "a_recordings.jsonl", tmp_path / "out")
    got = rows(tmp_path / "out")
    assert summary.rows == 3 and summary.errors == {"UnsupportedInputError": 1}
    expect_features(got["ch1"], RIGHT, 0.5, 2.0)
    expect_features(got["ch0"], LEFT, 0.25, 1.25)
    expect_features(got["rs"], audio / "high.wav", 1.0, 3.0)
    assert got["ch1"]["source"] == f"file://{RIGHT}"
    assert "several source files" in errors(tmp_path / "out")["both"]["message"]


def test_relative_sources_are_read_from_the_manifest_folder(audio, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    (corpus / "wav").mkdir(parents=True)
    shutil.copy(audio / "stereo.wav", corpus / "wav" / "st.wav")
    rec = Recording.from_file(corpus / "wav" / "st.wav", recording_id="st")
    rec.sources[0].source = "wav/st.wav"
    cut = MonoCut("c", 0.0, rec.duration, channel=1, recording=rec, supervisions=[
        SupervisionSegment("right", "st", 0.5, 1.0)])  # lhotse's default channel 0: the cut's 1
    CutSet.from_cuts([cut]).to_file(corpus / "cuts.jsonl.gz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    summary = run(corpus / "cuts.jsonl.gz", tmp_path / "out")
    assert summary.rows == 1, errors(tmp_path / "out")
    row = rows(tmp_path / "out")["right"]
    assert row["source"] == f"file://{corpus / 'wav' / 'st.wav'}"
    expect_features(row, audio / "stereo.wav", 0.5, 1.5, channels=[1])


def test_segments_of_one_file_and_channel_are_one_plan_item(audio, tmp_path):
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recordings(audio)),
                                 supervisions=SupervisionSet.from_segments(supervisions()))
    cuts.to_file(tmp_path / "cuts.jsonl")
    items = discover(str(tmp_path / "cuts.jsonl")).items
    found = {(i["source"].rsplit("/", 1)[-1], tuple(i["channels"])): [s[0] for s in i["segments"]]
             for i in items}
    assert found == {("stereo.wav", (0,)): ["s-left"], ("stereo.wav", (1,)): ["s-right"],
                     ("mono.wav", (0,)): ["m-1", "m-2"], ("high.wav", (0,)): ["h-1"]}
    assert all(i["reader"] == "lhotse" and i["count"] == len(i["segments"]) for i in items)


def test_a_supervision_in_overlapping_cuts_is_one_row_unless_the_copies_differ(audio, tmp_path):
    rec = Recording.from_file(audio / "mono.wav", recording_id="mono")
    sup = SupervisionSegment("s", "mono", 1.0, 1.0)
    a = MonoCut("a", 0.0, 3.0, 0, recording=rec, supervisions=[sup])
    b = MonoCut("b", 0.5, 3.0, 0, recording=rec, supervisions=[sup.with_offset(-0.5)])
    CutSet.from_cuts([a, b]).to_file(tmp_path / "same.jsonl")
    items = discover(str(tmp_path / "same.jsonl")).items
    assert [s[:3] for i in items for s in i["segments"]] == [["s", 1.0, 2.0]]
    c = MonoCut("c", 0.0, 1.5, 0, recording=rec, supervisions=[sup])  # clips it to 1.0-1.5
    CutSet.from_cuts([a, c]).to_file(tmp_path / "differ.jsonl")
    with pytest.raises(InputError, match="'s' is two different segments"):
        discover(str(tmp_path / "differ.jsonl"))


def test_metadata_columns_can_be_chosen(audio, tmp_path):
    RecordingSet.from_recordings(recordings(audio)).to_file(tmp_path / "k_recordings.jsonl")
    SupervisionSet.from_segments(supervisions()).to_file(tmp_path / "k_supervisions.jsonl")
    manifest = str(tmp_path / "k_recordings.jsonl")
    corpus = discover(manifest, options=InputOptions(metadata_columns=("speaker", "age")))
    assert corpus.metadata == {"speaker": "string", "age": "int64"}
    assert {i["columns"] == ["speaker", "age"] for i in corpus.items} == {True}
    with pytest.raises(InputError, match="'tags'.*not a scalar"):
        discover(manifest, options=InputOptions(metadata_columns=("tags",)))
    with pytest.raises(InputError, match="'nope'.*is not in"):
        discover(manifest, options=InputOptions(metadata_columns=("nope",)))


def test_a_supervisionset_alone_asks_for_the_recordings(tmp_path):
    SupervisionSet.from_segments(supervisions()).to_file(tmp_path / "x_supervisions.jsonl.gz")
    with pytest.raises(InputError, match="pass the RecordingSet.*--supervisions"):
        discover(str(tmp_path / "x_supervisions.jsonl.gz"))


def test_supervisions_option_on_a_cutset_is_refused(tmp_path):
    cuts = CutSet.from_manifests(supervisions=None, recordings=RecordingSet.from_recordings(
        [Recording.from_file(MONO, recording_id="mono")]))
    cuts.to_file(tmp_path / "cuts.jsonl")
    with pytest.raises(InputError, match="--supervisions is for a RecordingSet"):
        discover(str(tmp_path / "cuts.jsonl"), options=InputOptions(supervisions="x.jsonl"))


def test_a_supervision_of_an_unknown_recording_is_an_error_row(tmp_path):
    RecordingSet.from_recordings([Recording.from_file(MONO, recording_id="mono")]).to_file(
        tmp_path / "u_recordings.jsonl")
    SupervisionSet.from_segments([SupervisionSegment("m", "mono", 0.5, 1.0),
                                  SupervisionSegment("lost", "nowhere", 0.5, 1.0)]).to_file(
        tmp_path / "u_supervisions.jsonl")
    summary = run(tmp_path / "u_recordings.jsonl", tmp_path / "out")
    assert summary.rows == 1 and summary.errors == {"InputError": 1}
    assert "'nowhere' is not in the RecordingSet" in errors(tmp_path / "out")["lost"]["message"]


def test_without_lhotse_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    CutSet.from_manifests(recordings=RecordingSet.from_recordings(
        [Recording.from_file(MONO, recording_id="mono")])).to_file(tmp_path / "cuts.jsonl.gz")
    monkeypatch.setitem(sys.modules, "lhotse", None)  # `import lhotse` now raises ImportError
    with pytest.raises(InputError, match=r"pip install 'timbrespace-ray\[lhotse\]'"):
        discover(str(tmp_path / "cuts.jsonl.gz"))


@pytest.mark.slow
def test_manifest_and_audio_on_s3(s3_server, s3_bucket, audio, tmp_path):
    fs = s3_server.filesystem()
    fs.put(str(audio / "mono.wav"), f"{s3_bucket}/corpus/wav/mono.wav")
    fs.put(str(audio / "stereo.wav"), f"{s3_bucket}/elsewhere/stereo.wav")
    mono = Recording.from_file(audio / "mono.wav", recording_id="mono")
    mono.sources[0].source = "wav/mono.wav"  # relative: read beside the manifest, on s3
    stereo = Recording.from_file(audio / "stereo.wav", recording_id="stereo")
    stereo.sources[0] = AudioSource("url", [0, 1], f"s3://{s3_bucket}/elsewhere/stereo.wav")
    RecordingSet.from_recordings([mono, stereo]).to_file(tmp_path / "s3_recordings.jsonl.gz")
    SupervisionSet.from_segments([SupervisionSegment("m", "mono", 0.5, 1.0),
                                  SupervisionSegment("r", "stereo", 1.0, 1.0, channel=1)]
                                 ).to_file(tmp_path / "s3_supervisions.jsonl.gz")
    for name in ("s3_recordings.jsonl.gz", "s3_supervisions.jsonl.gz"):
        fs.put(str(tmp_path / name), f"{s3_bucket}/corpus/{name}")
    stage = make_stage(f"s3://{s3_bucket}/corpus/s3_recordings.jsonl.gz", tmp_path / "out",
                       storage_options=s3_server.storage_options)
    summary = stage.run(LocalExecutor())
    got = rows(tmp_path / "out")
    assert summary.rows == 2, errors(tmp_path / "out")
    assert got["m"]["source"] == f"s3://{s3_bucket}/corpus/wav/mono.wav"
    expect_features(got["m"], audio / "mono.wav", 0.5, 1.5)
    expect_features(got["r"], audio / "stereo.wav", 1.0, 2.0, channels=[1])
    assert (got["r"]["start_s"], got["r"]["end_s"]) == (1.0, 2.0)


def test_a_cut_without_a_channel_is_all_channels(audio, tmp_path):
    import json

    rec = Recording.from_file(audio / "stereo.wav", recording_id="stereo")
    every = MonoCut("every", 0.5, 1.0, channel=0, recording=rec).to_dict()
    del every["channel"]  # absent: all the recording's channels
    every["type"] = "MultiCut"
    none = {**MonoCut("none", 1.5, 1.0, channel=0, recording=rec).to_dict(), "channel": None}
    right = MonoCut("right", 1.0, 1.0, channel=1, recording=rec).to_dict()
    (tmp_path / "cuts.jsonl").write_text("".join(json.dumps(c) + "\n"
                                                 for c in (every, none, right)))
    summary = run(tmp_path / "cuts.jsonl", tmp_path / "out")
    got = rows(tmp_path / "out")
    assert summary.rows == 3, errors(tmp_path / "out")
    expect_features(got["every"], audio / "stereo.wav", 0.5, 1.5)
    expect_features(got["none"], audio / "stereo.wav", 1.5, 2.5)
    expect_features(got["right"], audio / "stereo.wav", 1.0, 2.0, channels=[1])


@pytest.mark.parametrize("form", ["cuts", "recordings"])
def test_a_supervision_on_a_channel_its_recording_lacks_is_an_error_row(form, tmp_path):
    mono = Recording.from_file(MONO, recording_id="mono")
    sups = [SupervisionSegment("ok", "mono", 0.5, 0.5, channel=0),
            SupervisionSegment("ch9", "mono", 1.0, 0.5, channel=9)]
    if form == "cuts":  # a cut of channel 0 holding a supervision on channel 9
        CutSet.from_manifests(recordings=RecordingSet.from_recordings([mono]),
                              supervisions=SupervisionSet.from_segments(sups)
                              ).to_file(tmp_path / "cuts.jsonl")
        assert '"channel": 9' in (tmp_path / "cuts.jsonl").read_text()
    else:
        RecordingSet.from_recordings([mono]).to_file(tmp_path / "cuts.jsonl")
        SupervisionSet.from_segments(sups).to_file(tmp_path / "s.jsonl")
    summary = run(tmp_path / "cuts.jsonl", tmp_path / "out", max_error_share=1.0,
                  lhotse_supervisions=None if form == "cuts" else str(tmp_path / "s.jsonl"))
    assert summary.rows == 1 and summary.errors == {"SegmentRangeError": 1}
    assert "channel(s) [9]" in errors(tmp_path / "out")["ch9"]["message"]
    assert "has channel(s) [0]" in errors(tmp_path / "out")["ch9"]["message"]
    expect_features(rows(tmp_path / "out")["ok"], MONO, 0.5, 1.0)


@pytest.mark.parametrize("damaged", ["cuts", "recordings", "supervisions"])
@pytest.mark.parametrize("keep", [0.5, 0.02])  # cut in its records, or in its first line
def test_a_gzipped_manifest_cut_short_is_one_line_and_exit_2(damaged, keep, tmp_path, capsys):
    from timbrespace_ray.cli import main

    recs = RecordingSet.from_recordings([Recording.from_file(MONO, recording_id="mono")])
    sups = SupervisionSet.from_segments(
        [SupervisionSegment(f"m-{i}", "mono", i * 0.01, 0.5) for i in range(200)])
    if damaged == "cuts":
        CutSet.from_manifests(recordings=recs, supervisions=sups).to_file(
            tmp_path / "cuts.jsonl.gz")
    else:
        recs.to_file(tmp_path / "recordings.jsonl.gz")
        sups.to_file(tmp_path / "supervisions.jsonl.gz")
    path = tmp_path / f"{damaged}.jsonl.gz"
    data = path.read_bytes()
    path.write_bytes(data[: max(20, int(len(data) * keep))])
    given = "cuts" if damaged == "cuts" else "recordings"
    code = main(["features", "--input", str(tmp_path / f"{given}.jsonl.gz"),
                 "--output", str(tmp_path / "out"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{path.name} cannot be read to its end" in err and "cut short" in err, err
