"""The features stage with the in-process executor: outputs, errors, resume, inputs forms."""
import json
import shutil

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from helpers.corpus import SHORT, mixed_corpus
from timbrespace_ray.config import load_config
from timbrespace_ray.features import FEATURE_NAMES, FeatureConfig, ProsodicFeatureExtractor
from timbrespace_ray.features.levels import speech_levels
from timbrespace_ray.inputs import InputError, discover
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.stages.plan import unit_batches
from timbrespace_ray.storage import Location


def make_stage(input_uri, out, **features):
    cfg = load_config(**{f"features.{k}": v for k, v in features.items()})
    return FeaturesStage(Location.of(str(out)), str(input_uri), cfg.features)


def read(out, table="features"):
    return duckdb.sql(f"select * from '{out}/{table}/*.parquet' order by utt_id").fetchall()


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    counts = mixed_corpus(root)
    return root, counts


def test_every_input_is_a_row_or_an_error(corpus, tmp_path):
    root, counts = corpus
    out = tmp_path / "out"
    summary = make_stage(root, out).run(LocalExecutor())
    assert summary.inputs == counts["inputs"] == summary.rows + sum(summary.errors.values())
    assert summary.rows == counts["rows"]
    feats = duckdb.sql(f"select utt_id, n_frames, len(f0) as n, source from '{out}/features/*.parquet'").fetchall()
    ids = sorted(r[0] for r in feats)
    assert ids == ["a/TWO.WAV", "a/b/three.flac", "one.wav", "shard-000.tar/s/five.wav",
                   "shard-000.tar/s/four.wav"]
    assert all(r[1] == r[2] > 100 for r in feats)
    assert all(r[3].startswith("file://") for r in feats)
    errors = duckdb.sql(f"select utt_id, stage, error_type, message from '{out}/errors/*.parquet' order by 1").fetchall()
    assert [e[0] for e in errors] == ["a/b/empty.wav", "a/corrupt.wav", "shard-000.tar/s/bad.wav"]
    assert all(e[1] == "features" and e[2] == "AudioDecodeError" for e in errors)
    assert "empty" in errors[0][3] and "supported formats" in errors[1][3]
    runs = list((out / "_run" / "history").glob("features-*.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["inputs"] == counts["inputs"]


def test_numbers_equal_the_extractor_and_metadata_says_how(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    make_stage(root, out, hop_ms=10.0).run(LocalExecutor())
    table = pq.read_table(out / "features", filters=[("utt_id", "=", "one.wav")])
    extractor = ProsodicFeatureExtractor(hop_ms=10)
    extractor.load_audio(str(root / "one.wav"))
    expected = extractor.extract()
    for name in FEATURE_NAMES:
        got = np.asarray(table.column(name)[0].as_py(), dtype=np.float32)
        np.testing.assert_array_equal(got, expected[name].astype(np.float32), err_msg=name)
    assert table.column("sample_rate")[0].as_py() == 16000
    # the levels are those of the samples analysed
    for name, value in speech_levels(extractor.audio, 16000).items():
        assert table.column(name)[0].as_py() == value, name
    meta = pq.read_schema(next((out / "features").glob("part-*.parquet"))).metadata
    settings = json.loads(meta[b"timbrespace_ray.settings"])
    assert settings["features"]["hop_ms"] == 10.0 and meta[b"timbrespace_ray.stage"] == b"features"


def test_measurements_are_stored_without_a_dictionary(corpus, tmp_path):
    # floats almost never repeat: a dictionary page only costs time and space for them
    root, _ = corpus
    out = tmp_path / "out"
    make_stage(root, out).run(LocalExecutor())
    row_group = pq.ParquetFile(next((out / "features").glob("part-*.parquet"))).metadata.row_group(0)
    encodings = {row_group.column(i).path_in_schema.split(".")[0]: row_group.column(i).encodings
                 for i in range(row_group.num_columns)}
    assert all("RLE_DICTIONARY" not in encodings[name] for name in FEATURE_NAMES), encodings
    assert "RLE_DICTIONARY" in encodings["utt_id"]


class Interrupt(Exception):
    pass


class DyingExecutor(LocalExecutor):
    """Stops after n units, as a killed driver would: later units are left undone."""

    def __init__(self, n):
        self.n = n

    def map(self, stage, units, on_result):
        for i, unit in enumerate(units):
            if i == self.n:
                raise Interrupt
            on_result(stage.run_unit(unit))


def test_resume_after_interruption_equals_a_clean_run(corpus, tmp_path, said):
    root, counts = corpus
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    make_stage(root, clean).run(LocalExecutor())
    with pytest.raises(Interrupt):
        make_stage(root, resumed).run(DyingExecutor(2))
    # a unit interrupted between its part file and its marker is redone, not duplicated
    done = sorted((resumed / "_run" / "features" / "done").iterdir())
    assert len(done) == 2
    done[-1].unlink()
    assert not (resumed / "_run" / "features" / "summary.json").exists()
    summary = make_stage(root, resumed).run(LocalExecutor())
    assert summary.units_run == summary.units_total - 1
    assert summary.inputs == counts["inputs"]
    assert read(resumed) == read(clean)
    assert read(resumed, "errors") == read(clean, "errors")
    # a finished stage reruns instantly and changes nothing
    before = {p: p.stat().st_mtime_ns for p in (resumed / "features").glob("*.parquet")}
    said.clear()
    make_stage(root, resumed).run(LocalExecutor())
    assert "already complete" in said[0]
    assert before == {p: p.stat().st_mtime_ns for p in (resumed / "features").glob("*.parquet")}


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_manifest_inputs(tmp_path, fmt):
    audio = tmp_path / "audio"
    audio.mkdir()
    for p in SHORT[:3]:
        shutil.copy(p, audio / p.name)
    rows = [{"path": f"audio/{SHORT[0].name}", "utt_id": "spk1/utt1"},
            {"path": str(audio / SHORT[1].name), "utt_id": "spk1/utt2"},
            {"path": "audio/missing.wav", "utt_id": "spk2/gone"}]
    manifest = tmp_path / f"manifest.{fmt}"
    if fmt == "parquet":
        import pyarrow as pa

        pq.write_table(pa.Table.from_pylist(rows), manifest)
    elif fmt == "csv":
        manifest.write_text("path,utt_id\n" + "".join(f"{r['path']},{r['utt_id']}\n" for r in rows))
    else:
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    summary = make_stage(manifest, out).run(LocalExecutor())
    assert summary.inputs == 3 and summary.rows == 2
    assert [r[0] for r in read(out)] == ["spk1/utt1", "spk1/utt2"]
    errors = read(out, "errors")
    assert errors[0][1] == "spk2/gone" and "not found" in errors[0][4]


def test_manifest_without_path_column_is_rejected(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("wav\nx.wav\n")
    with pytest.raises(InputError, match="no audio path column .looked for path, audio_filepath"):
        discover(str(manifest))


def test_units_are_deterministic_and_keep_shards_whole(corpus):
    root, _ = corpus
    items = discover(str(root)).items
    a = list(unit_batches(items, 2, 1 << 30))
    assert a == list(unit_batches(discover(str(root)).items, 2, 1 << 30))
    shard_units = [u for u in a if any(i["reader"] == "tar" for i in u)]
    assert len(shard_units) == 1 and len(shard_units[0]) == 1
    assert sorted(i["utt_id"] for u in a for i in u) == sorted(i["utt_id"] for i in items)


def test_too_long_recording_becomes_an_error_row(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    sf.write(root / "long.wav", np.zeros(16000 * 5, np.float32), 16000)
    shutil.copy(SHORT[0], root / "ok.wav")
    out = tmp_path / "out"
    summary = make_stage(root, out, max_duration_s=4.0).run(LocalExecutor())
    assert summary.rows == 1 and summary.errors == {"AudioTooLongError": 1}
    assert "max_duration_s" in read(out, "errors")[0][4]


def test_feature_settings_reach_the_extractor():
    cfg = load_config(**{"features.smoothing_level": "heavy", "features.max_duration_s": 60})
    assert cfg.features.extractor_config() == FeatureConfig(smoothing_level="heavy")


def test_oversized_tar_member_is_a_file_too_large_row(tmp_path):
    import tarfile

    from helpers.corpus import add_tar_member

    root = tmp_path / "c"
    root.mkdir()
    with tarfile.open(root / "s.tar", "w") as tar:
        add_tar_member(tar, "big.wav", SHORT[0].read_bytes())
        add_tar_member(tar, "small.wav", SHORT[1].read_bytes()[:20000])
    limit = len(SHORT[1].read_bytes()[:20000]) + 1
    out = tmp_path / "out"
    summary = make_stage(root, out, max_file_bytes=limit).run(LocalExecutor())
    assert summary.inputs == 2 and summary.errors == {"FileTooLargeError": 1}
    assert "features.max_file_bytes" in read(out, "errors")[0][4]


def test_unreachable_storage_fails_the_unit_instead_of_blaming_the_input(tmp_path):
    import socket

    from timbrespace_ray.errors import StorageError

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,utt_id\ns3://corpus/a.wav,a\n")
    cfg = load_config(**{"storage.storage_options": {
        "endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s",
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}})
    out = tmp_path / "out"
    stage = FeaturesStage(Location.of(str(out)), str(manifest), cfg.features,
                          cfg.storage.storage_options)
    with pytest.raises(StorageError, match="could not read s3://corpus/a.wav"):
        stage.run(LocalExecutor())
    assert not (out / "_run" / "features" / "done").exists()
    assert [p.name for p in (out / "errors").iterdir()] == ["empty.parquet"]


def _one_unit_tables(root, out, **features):
    """The features and errors tables, in the order written, of one unit holding every plan
    item of the corpus (and a file that is gone), so that items are read ahead of each other."""
    from timbrespace_ray.inputs.files import AudioFileReader
    from timbrespace_ray.executors.base import WorkUnit

    stage = make_stage(root, out, **features)
    stage.plan()  # the corpus's metadata columns
    items = [*discover(str(root)).items,
             AudioFileReader.item("gone.wav", (root / "gone.wav").as_uri(), 1000)]
    stats = stage.process(WorkUnit(0, tuple(items)))
    features_table = pq.read_table(out / "features" / "part-000000.parquet")
    errors_table = pq.read_table(out / "errors" / "features-000000.parquet")
    return stats, features_table, errors_table


def test_prefetching_gives_the_tables_of_sequential_reading(corpus, tmp_path):
    root, counts = corpus
    sequential = _one_unit_tables(root, tmp_path / "seq", prefetch_items=1)
    # a budget of 1 MiB makes the threads wait on the consumer, not only run ahead
    for n, options in enumerate([{}, {"prefetch_items": 3, "prefetch_bytes": 1 << 20}]):
        stats, features_table, errors_table = _one_unit_tables(root, tmp_path / f"p{n}", **options)
        assert stats.inputs == counts["inputs"] + 1 == sequential[0].inputs
        assert features_table.equals(sequential[1])
        assert errors_table.equals(sequential[2])
    assert "file not found" in sequential[2].column("message").to_pylist()[-1]


def test_bytes_read_ahead_are_part_of_a_workers_memory_request(tmp_path):
    base = make_stage(tmp_path, tmp_path / "a", prefetch_items=1).resources.memory_bytes
    ahead = make_stage(tmp_path, tmp_path / "b", prefetch_bytes=64 << 20).resources.memory_bytes
    assert ahead == base + (64 << 20)


class _CountingFile:
    """Stands for an object store's file: every fetch is one request, counted with its bytes."""

    @staticmethod
    def make(fs, path, **kwargs):
        from fsspec.spec import AbstractBufferedFile

        class File(AbstractBufferedFile):
            def _fetch_range(self, start, end):
                data = fs.store[path].getvalue()[start:end]
                fs.requests += 1
                fs.fetched += len(data)
                return data

        return File(fs, path, "rb", **kwargs)


def _counting_fs():
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class CountingFileSystem(MemoryFileSystem):
        protocol = "countmem"
        store = {}
        pseudo_dirs = [""]
        requests = fetched = 0

        @classmethod
        def _strip_protocol(cls, path):
            return super()._strip_protocol(path.removeprefix("countmem://"))

        def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None,
                  **kwargs):
            if mode != "rb":
                return super()._open(path, mode, **kwargs)
            return _CountingFile.make(self, self._strip_protocol(path), block_size=block_size,
                                      cache_options=cache_options, **kwargs)

    fsspec.register_implementation("countmem", CountingFileSystem, clobber=True)
    return CountingFileSystem()


@pytest.mark.parametrize("streamed", [False, True])
def test_a_dataset_shard_on_a_store_is_read_about_once(monkeypatch, streamed):
    """Reading a row group's columns must not fetch the shard again for each column (a
    read-ahead cache refetches from every backward seek on); a small row group is one request."""
    import io

    import pyarrow as pa

    from timbrespace_ray.inputs import InputOptions, ReadContext, read_item
    from timbrespace_ray.inputs import audio_dataset

    if streamed:
        monkeypatch.setattr(audio_dataset, "PREFETCH_GROUP_BYTES", 1 << 20)
    fs = _counting_fs()
    audio = [p.read_bytes() for p in SHORT[:4]] * 10
    n = len(audio)
    table = pa.table({
        "audio": pa.array([{"bytes": a, "path": None} for a in audio],
                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "utt_id": [f"u{i}" for i in range(n)], "speaker": [f"s{i % 3}" for i in range(n)],
        "n": list(range(n))})
    buf = io.BytesIO()
    # pages of about 1 MiB, as `datasets` writes them; no dictionary or compression, so that
    # the bytes stored are the audio's
    pq.write_table(table, buf, row_group_size=10, data_page_size=1 << 20, write_batch_size=2,
                   use_dictionary=False, compression="none")
    path = f"/streamed-{streamed}/shard.parquet"
    fs.pipe(path, buf.getvalue())
    items = discover(f"countmem://{path}", {}, InputOptions()).items
    assert len(items) == 4  # one per row group
    fs.requests = fs.fetched = 0
    opened = [rec.open() for item in items for rec in read_item(item, ReadContext({}, 1 << 30))]
    assert opened == audio
    assert fs.fetched < 1.1 * len(buf.getvalue())
    if streamed:
        assert fs.requests > 4 * 3  # its pages, one request per MiB
    else:
        assert fs.requests <= 4 * 2  # the footer and the row group


def test_short_files_on_a_store_are_one_get_each_and_a_bad_one_is_its_own_error_row(
        s3_server, s3_bucket, tmp_path):
    """A unit of short files read ahead from S3 (through the counting proxy): the tables of the
    same files read from disk, one GET per file, and a file gone since planning and a corrupt
    one each an error row of their own."""
    from helpers.infra.proxy import FlakyProxy
    from timbrespace_ray.executors.base import WorkUnit

    root = tmp_path / "corpus"
    for i, src in enumerate(SHORT):
        (root / f"spk{i % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / f"spk{i % 3}" / f"utt{i}.wav")
    (root / "spk1" / "corrupt.wav").write_bytes(np.random.default_rng(1).bytes(4000))
    (root / "spk2" / "gone.wav").write_bytes(SHORT[0].read_bytes())
    fs = s3_server.filesystem()
    fs.put(str(root) + "/", f"{s3_bucket}/corpus/", recursive=True)
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1])

    def tables(uri, out, options):
        cfg = load_config(**{"storage.storage_options": options} if options else {})
        stage = FeaturesStage(Location.of(str(out)), uri, cfg.features, options)
        stage.plan()  # the corpus's metadata columns
        items = tuple(discover(uri, options).items)
        gone = next(i for i in items if i["utt_id"].endswith("gone.wav"))["source"]
        Location.of(gone, options).remove()
        before = proxy.stats.requests
        stats = stage.process(WorkUnit(0, items))  # one unit: its items are read ahead
        return (stats, proxy.stats.requests - before, len(items),
                pq.read_table(out / "features" / "part-000000.parquet").drop(["source"]),
                pq.read_table(out / "errors" / "features-000000.parquet"))

    with FlakyProxy(("127.0.0.1", port), mode="ok", max_lifetime_s=120) as proxy:
        on_disk = tables(str(root), tmp_path / "local", {})
        stats, requests, files, features_table, errors_table = tables(
            f"s3://{s3_bucket}/corpus", tmp_path / "s3",
            {**s3_server.storage_options, "endpoint_url": proxy.url})
    assert stats.inputs == files == len(SHORT) + 2 and stats.rows == len(SHORT)
    assert features_table.equals(on_disk[3])
    assert (errors_table.select(["utt_id", "error_type"]).to_pylist()
            == on_disk[4].select(["utt_id", "error_type"]).to_pylist())
    assert {r["utt_id"]: r["message"] for r in errors_table.to_pylist()}[
        "spk2/gone.wav"].startswith("file not found")
    # one GET per file; the gone one is asked once more, through s3fs, for its error
    assert requests == files + 1
