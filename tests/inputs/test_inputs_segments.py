"""Segment manifests (one row per range of a long recording), metadata columns carried through
features, tokens and embeddings, WebDataset sidecars, and inputs that hold nothing."""
import json
import tarfile
import tracemalloc

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import soxr

from helpers.data import N120_MODEL
from helpers.corpus import SHORT, SPEECH, add_tar_member
from timbrespace_ray.audio import decode_ranges
from timbrespace_ray.cli import main
from timbrespace_ray.config import load_config
from timbrespace_ray.features import FEATURE_NAMES, ProsodicFeatureExtractor
from timbrespace_ray.inputs import InputError, discover
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.stages.plan import unit_batches
from timbrespace_ray.stages.tokens import TokensStage
from timbrespace_ray.storage import Location

quiet = lambda s: None  # noqa: E731


def run_features(input_uri, out, **features):
    cfg = load_config(**{f"features.{k}": v for k, v in features.items()})
    return FeaturesStage(Location.of(str(out)), str(input_uri), cfg.features).run(LocalExecutor())


def rows(out, table="features", order="utt_id"):
    return duckdb.sql(f"select * from '{out}/{table}/*.parquet' order by {order}").df()


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    """About 95 s of real speech, stereo (the two channels differ) at 44.1 kHz."""
    root = tmp_path_factory.mktemp("long")
    left, right = [], []
    for p in SPEECH:
        x, sr = sf.read(p, dtype="float32")
        x = x.mean(axis=1) if x.ndim > 1 else x
        y = soxr.resample(x, sr, 44100)
        left.append(y)
        right.append(0.5 * y[::-1])
    audio = np.stack([np.concatenate(left), np.concatenate(right)], axis=1)
    sf.write(root / "long.wav", audio, 44100, subtype="FLOAT")
    return root / "long.wav", audio.shape[0] / 44100


def whole_decoded(path):
    extractor = ProsodicFeatureExtractor()
    extractor.load_audio(str(path))
    return extractor


def assert_features_equal(row, expected):
    for name in FEATURE_NAMES:
        np.testing.assert_array_equal(np.asarray(row[name], np.float32),
                                      expected[name].astype(np.float32), err_msg=name)


def test_segments_equal_extract_with_start_and_end_on_the_whole_recording(long_recording, tmp_path):
    path, duration = long_recording
    starts = np.arange(0.0, duration - 9, 6.37)
    table = pa.table({"path": [str(path)] * len(starts), "start": starts, "end": starts + 4.913,
                      "speaker": [f"spk{i % 3}" for i in range(len(starts))]})
    pq.write_table(table, tmp_path / "m.parquet")
    out = tmp_path / "out"
    summary = run_features(tmp_path / "m.parquet", out)
    assert summary.rows == len(starts) and summary.errors == {}
    extractor = whole_decoded(path)
    got = rows(out, order="start_s")
    assert list(got.start_s) == pytest.approx(list(starts)) and got.sample_rate.eq(44100).all()
    for _, row in got.iterrows():
        expected = extractor.extract(start_ms=row.start_s * 1000, end_ms=row.end_s * 1000)
        assert_features_equal(row, expected)
        # sample boundaries as documented: int(ms * 16000 / 1000) for both ends
        n = int(row.end_s * 1000 * 16) - int(row.start_s * 1000 * 16)
        assert row.duration_s == pytest.approx(n / 16000, abs=1e-12)
    assert sorted(set(got.speaker)) == ["spk0", "spk1", "spk2"]


def test_segments_out_of_range_are_one_error_row_each_and_the_rest_come_out(long_recording, tmp_path):
    path, duration = long_recording
    manifest = tmp_path / "m.csv"
    lines = ["path,utt_id,start,end",
             f"{path},ok1,1.0,3.5",
             f"{path},before,-0.5,2.0",
             f"{path},after,{duration - 2:.3f},{duration + 3:.3f}",
             f"{path},backwards,5.0,4.0",
             f"{path},no_end,6.0,",
             f"{path},clipped,{duration - 1:.3f},{duration + 0.01:.3f}",  # within 25 ms
             f"{path},ok2,50.0,52.0"]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    summary = run_features(manifest, out, max_error_share=1.0)  # 4 of 7 bad on purpose
    assert summary.inputs == 7 and summary.rows == 3
    assert summary.errors == {"SegmentRangeError": 4}
    errors = dict(duckdb.sql(f"select utt_id, message from '{out}/errors/*.parquet'").fetchall())
    assert set(errors) == {"before", "after", "backwards", "no_end"}
    assert "before the recording" in errors["before"] and "ends after" in errors["after"]
    got = rows(out)
    assert list(got.utt_id) == ["clipped", "ok1", "ok2"]
    clipped = got[got.utt_id == "clipped"].iloc[0]
    extractor = whole_decoded(path)
    assert_features_equal(clipped, extractor.extract(start_ms=clipped.start_s * 1000,
                                                     end_ms=clipped.end_s * 1000))


def test_duration_column_whole_rows_and_one_decode_per_recording(long_recording, tmp_path, monkeypatch):
    from timbrespace_ray.inputs import files

    path, _ = long_recording
    manifest = tmp_path / "m.jsonl"
    docs = [{"path": str(path), "start": 10.0 + 3 * i, "duration": 2.5, "lang": "en"} for i in range(5)]
    docs.append({"path": str(SHORT[0]), "lang": "fr"})  # a whole file beside the segments
    manifest.write_text("".join(json.dumps(d) + "\n" for d in docs))
    opened = []
    real = files.open_checked
    monkeypatch.setattr(files, "open_checked", lambda s, *a: opened.append(s) or real(s, *a))
    out = tmp_path / "out"
    summary = run_features(manifest, out, files_per_unit=2)
    assert summary.rows == 6 and summary.errors == {}
    assert sorted(opened) == sorted([f"file://{path}", f"file://{SHORT[0]}"])  # each opened once
    got = rows(out, order="start_s nulls first")
    assert got.start_s.isna().tolist() == [True] + [False] * 5
    assert got.end_s.iloc[1:].tolist() == pytest.approx([12.5 + 3 * i for i in range(5)])
    assert got.lang.tolist() == ["fr"] + ["en"] * 5
    units = list(unit_batches(discover(str(manifest)).items, 2, 1 << 30))
    segmented = [u for u in units if any(i["source"].endswith("long.wav") for i in u)]
    assert len(segmented) == 1  # all five segments of the recording in one unit


def test_segment_decoding_keeps_only_what_unfinished_segments_need(tmp_path):
    # an hour at 8 kHz: decoded whole at 16 kHz it would be 230 MB of float32
    rate, seconds = 8000, 3600
    t = np.arange(rate * 60, dtype=np.float32) / rate
    minute = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    with sf.SoundFile(tmp_path / "hour.wav", "w", rate, 1, "PCM_16") as fh:
        for _ in range(seconds // 60):
            fh.write(minute)
    ranges = [(int(s * 16000), int((s + 0.5) * 16000)) for s in np.linspace(0, seconds - 1, 5000)]
    tracemalloc.start()
    try:
        seen = {i: len(samples) for i, samples, _, _ in decode_ranges(str(tmp_path / "hour.wav"), ranges)}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == {i: 8000 for i in range(5000)}
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB"


def test_metadata_columns_reach_tokens_and_embeddings(tmp_path):
    import torch

    from timbrespace_ray.config import EmbedStageConfig
    from timbrespace_ray.encoder import ProsodicSequenceEncoder
    from timbrespace_ray.encoder.checkpoint import save_encoder
    from timbrespace_ray.stages.embed import EmbedStage

    manifest = tmp_path / "m.csv"
    manifest.write_text("path,speaker,age,score\n" + "".join(
        f"{p},spk{i % 2},{20 + i},{i / 4}\n" for i, p in enumerate(SHORT[:4])))
    out = tmp_path / "out"
    run_features(manifest, out)
    loc = Location.of(str(out))
    TokensStage(loc, str(N120_MODEL)).run(LocalExecutor())
    torch.manual_seed(0)
    save_encoder(tmp_path / "enc", ProsodicSequenceEncoder(hidden_dim=16, num_layers=1, nhead=2,
                                                           pos_max_len=64))
    EmbedStage(loc, EmbedStageConfig(), str(tmp_path / "enc")).run(LocalExecutor())
    for table in ("features", "tokens", "embeddings"):
        schema = pq.read_schema(next((out / table).glob("part-*.parquet")))
        assert {"speaker": pa.string(), "age": pa.int64(), "score": pa.float64()}.items() <= \
            {f.name: f.type for f in schema}.items(), table
        assert json.loads(schema.metadata[b"timbrespace_ray.metadata_columns"]) == ["speaker", "age", "score"]
    per_speaker = duckdb.sql(f"select speaker, count(distinct utt_id), min(age) from "
                             f"'{out}/embeddings/*.parquet' group by speaker order by 1").fetchall()
    assert per_speaker == [("spk0", 2, 20), ("spk1", 2, 21)]


def test_metadata_column_names_that_collide_and_the_columns_to_keep(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,duration_s,speaker\n{SHORT[0]},3.0,a\n")
    with pytest.raises(InputError, match="'duration_s'.*features.metadata_columns"):
        discover(str(manifest))
    out = tmp_path / "out"
    run_features(manifest, out, metadata_columns=["speaker"])
    assert "duration_s" in rows(out).columns and rows(out).speaker.tolist() == ["a"]
    with pytest.raises(InputError, match="'gender'.*is not in"):
        run_features(manifest, tmp_path / "out2", metadata_columns=["gender"])


def test_webdataset_sidecars_are_metadata(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    with tarfile.open(root / "shard-000.tar", "w") as tar:
        add_tar_member(tar, "utt/0001.flac", _flac(SHORT[0]))
        add_tar_member(tar, "utt/0001.json", json.dumps({"speaker": "s1", "age": 31,
                                                         "tags": ["x"]}).encode())
        add_tar_member(tar, "utt/0001.txt", b"hello there\n")
        add_tar_member(tar, "utt/0002.cls", b"7")  # sidecars may come first
        add_tar_member(tar, "utt/0002.wav", SHORT[1].read_bytes())
        add_tar_member(tar, "utt/0003.wav", SHORT[2].read_bytes())
    out = tmp_path / "out"
    summary = run_features(root, out)
    assert summary.rows == 3
    got = rows(out)
    assert got.utt_id.tolist() == ["shard-000.tar/utt/0001.flac", "shard-000.tar/utt/0002.wav",
                                   "shard-000.tar/utt/0003.wav"]
    assert got.speaker.tolist()[0] == "s1" and got.age.tolist()[0] == 31
    assert got.text.tolist()[0] == "hello there"
    assert got.cls.tolist()[1] == "7" and got.speaker.isna().tolist() == [False, True, True]
    assert "tags" not in got.columns  # not a scalar


def _flac(path) -> bytes:
    import io

    x, sr = sf.read(path, dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="FLAC")
    return buf.getvalue()


def test_a_location_with_no_input_is_an_error_that_says_what_was_looked_for(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("nothing to read")
    assert main(["features", "--input", str(empty), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "holds no input" in err and "Parquet audio datasets" in err and "lhotse" in err
    # a folder holding only a manifest: say so, and how to read it
    (empty / "m.csv").write_text(f"path\n{SHORT[0]}\n")
    with pytest.raises(InputError, match="m.csv.*pass the manifest file itself"):
        discover(str(empty))
    assert not (tmp_path / "out" / "_run" / "features" / "summary.json").exists()
