"""Parquet audio datasets as `datasets` writes them: rows, metadata, ids, shards, unit slices,
bad rows and damaged shards, and a planner that reads footers only."""
import json
import shutil

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from datasets.table import embed_table_storage

from helpers.corpus import SHORT
from timbrespace_ray.config import load_config
from timbrespace_ray.features import FEATURE_NAMES, ProsodicFeatureExtractor
from timbrespace_ray.inputs import InputError, InputOptions, ReadContext, discover, read_item
from timbrespace_ray.inputs.audio_dataset import audio_column, read_schema
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.storage import Location

datasets.disable_progress_bars()
quiet = lambda s: None  # noqa: E731


def write_dataset(path, columns: dict, *, embed=True, rows_per_group=None, features=None):
    """A shard written by `datasets`: `columns["audio"]` are file paths (or None / dicts),
    cast to the Audio feature. `Dataset.to_parquet` stores only the paths; to embed the bytes
    we do what `push_to_hub` does before writing each shard (Dataset._push_parquet_shards_to_hub):
    `shard.with_format("arrow").map(embed_table_storage, batched=True)`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = datasets.Dataset.from_dict(columns).cast_column("audio", datasets.Audio())
    for name, feature in (features or {}).items():
        ds = ds.cast_column(name, feature)
    if embed:
        ds = ds.with_format("arrow").map(embed_table_storage, batched=True,
                                         keep_in_memory=True).with_format(None)
    # an explicit batch size (= rows per row group) also keeps `datasets` from sizing the
    # files behind the paths, which fails for a path that does not exist
    ds.to_parquet(str(path), batch_size=rows_per_group or len(ds))
    if embed:
        cells = pq.read_table(path, columns=["audio"]).column("audio").to_pylist()
        assert all(c is None or c["bytes"] for c in cells), "the bytes were not embedded"
    return path


def make_stage(input_uri, out, **features):
    cfg = load_config(**{f"features.{k}": v for k, v in features.items()})
    return FeaturesStage(Location.of(str(out)), str(input_uri), cfg.features)


def run(input_uri, out, **features):
    return make_stage(input_uri, out, **features).run(LocalExecutor())


def rows(out, table="features"):
    folder = out / table
    if not folder.exists():
        return {}
    return {r["utt_id"]: r for r in pq.read_table(folder).to_pylist()}


def expected_features(path):
    extractor = ProsodicFeatureExtractor()
    extractor.load_audio(str(path))
    return extractor.extract()


def assert_same_features(row, path):
    expected = expected_features(path)
    for name in FEATURE_NAMES:
        np.testing.assert_array_equal(np.asarray(row[name], np.float32),
                                      expected[name].astype(np.float32), err_msg=name)


def test_rows_are_the_features_of_their_audio_with_metadata(tmp_path):
    flac = tmp_path / "src" / "three.flac"
    flac.parent.mkdir()
    x, sr = sf.read(SHORT[2], dtype="float32")
    sf.write(flac, x, sr)
    kept = shutil.copy(flac, tmp_path / "three.flac")  # for the extractor
    sources = [SHORT[0], SHORT[1], flac]
    shard = write_dataset(tmp_path / "ds" / "train.parquet", {
        "audio": [str(p) for p in sources], "id": ["spk1-a", "spk1-b", "spk2-a"],
        "speaker_id": ["spk1", "spk1", "spk2"], "text": ["go forward", "ten meters", "austen"],
        "gender": [1, 1, 0], "age": [31, 31, 58], "score": [0.5, 0.25, 1.0]},
        features={"gender": datasets.ClassLabel(names=["female", "male"])})
    shutil.rmtree(tmp_path / "src")  # the audio is in the shard: nothing else is read
    out = tmp_path / "out"
    summary = run(shard, out)
    assert summary.inputs == 3 and summary.rows == 3 and summary.errors == {}
    got = rows(out)
    assert sorted(got) == ["spk1-a", "spk1-b", "spk2-a"]
    for utt_id, path in zip(["spk1-a", "spk1-b", "spk2-a"], [SHORT[0], SHORT[1], kept]):
        assert_same_features(got[utt_id], path)
    assert [(got[u]["speaker_id"], got[u]["text"], got[u]["gender"], got[u]["age"],
             got[u]["score"]) for u in sorted(got)] == [
        ("spk1", "go forward", "male", 31, 0.5), ("spk1", "ten meters", "male", 31, 0.25),
        ("spk2", "austen", "female", 58, 1.0)]
    assert got["spk1-b"]["source"] == f"file://{shard}#1"
    schema = pq.read_schema(next((out / "features").glob("part-*.parquet")))
    assert schema.field("gender").type == pa.string() and schema.field("age").type == pa.int64()
    assert "id" not in schema.names and "audio" not in schema.names


def test_a_folder_of_shards_with_row_ids(tmp_path):
    root = tmp_path / "corpus"
    for s in range(2):
        write_dataset(root / "data" / f"train-{s:05d}-of-00002.parquet", {
            "audio": [str(SHORT[2 * s]), str(SHORT[2 * s + 1])],
            "speaker_id": [f"s{s}a", f"s{s}b"]})
    (root / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n")
    out = tmp_path / "out"
    summary = run(root, out)
    assert summary.inputs == 4 and summary.rows == 4
    got = rows(out)
    assert sorted(got) == [f"data/train-{s:05d}-of-00002.parquet/{r}" for s in range(2)
                           for r in range(2)]
    assert got["data/train-00001-of-00002.parquet/1"]["speaker_id"] == "s1b"
    assert_same_features(got["data/train-00001-of-00002.parquet/1"], SHORT[3])


def test_shards_missing_a_column_get_nulls_and_conflicting_types_are_refused(tmp_path):
    root = tmp_path / "c"
    write_dataset(root / "a.parquet", {"audio": [str(SHORT[0])], "speaker_id": ["x"],
                                       "age": [30]})
    write_dataset(root / "b.parquet", {"audio": [str(SHORT[1])], "speaker_id": ["y"]})
    corpus = discover(str(root))
    assert corpus.metadata == {"speaker_id": "string", "age": "int64"}
    ctx = ReadContext({}, 1 << 30)
    meta = {r.segments[0].utt_id: dict(r.segments[0].metadata)
            for item in corpus.items for r in read_item(item, ctx)}
    assert meta == {"a.parquet/0": {"speaker_id": "x", "age": 30},
                    "b.parquet/0": {"speaker_id": "y", "age": None}}
    write_dataset(root / "c.parquet", {"audio": [str(SHORT[2])], "age": ["thirty"]})
    with pytest.raises(InputError, match=r"disagree on column 'age': int64 in a.parquet, "
                                         r"string in c.parquet"):
        discover(str(root))


def test_audio_column_from_metadata_type_or_override(tmp_path):
    two = write_dataset(tmp_path / "two.parquet", {
        "audio": [str(SHORT[0])], "other": [str(SHORT[1])], "text": ["t"]},
        features={"other": datasets.Audio()})
    with pytest.raises(InputError, match="several audio columns.*--audio-column"):
        discover(str(two))
    items = discover(str(two), options=InputOptions(audio_column="other")).items
    (rec,) = read_item(items[0], ReadContext({}, 1 << 30))
    assert rec.open() == SHORT[1].read_bytes()
    with pytest.raises(InputError, match=r"'nope' .*is not a column.*audio, other, text"):
        discover(str(two), options=InputOptions(audio_column="nope"))
    with pytest.raises(InputError, match=r"'text' .* is string, not struct<bytes: binary, path: "
                                         r"string>; columns of that type: audio, other"):
        discover(str(two), options=InputOptions(audio_column="text"))
    # without the `huggingface` metadata: the only column of the audio type
    table = pq.read_table(tmp_path / "two.parquet").drop_columns(["other"])
    plain = tmp_path / "plain.parquet"
    pq.write_table(table.replace_schema_metadata(None), plain)
    assert audio_column(read_schema(Location.of(str(plain))), None, "x") == "audio"
    # metadata that says the struct column is something else (an Image has the same storage)
    hf = json.loads(table.schema.metadata[b"huggingface"])
    hf["info"]["features"]["audio"] = {"_type": "Image"}
    assert audio_column(table.schema.with_metadata({b"huggingface": json.dumps(hf)}),
                        None, "x") is None


def test_a_path_manifest_parquet_is_read_as_a_manifest_whatever_its_name(tmp_path):
    (tmp_path / "audio").mkdir()
    shutil.copy(SHORT[0], tmp_path / "audio" / "a.wav")
    # a manifest named like a dataset shard, and a dataset named like a manifest
    manifest = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"path": ["audio/a.wav"], "utt_id": ["from-manifest"]}), manifest)
    dataset = write_dataset(tmp_path / "manifest.parquet", {"audio": [str(SHORT[1])],
                                                            "utt_id": ["from-dataset"]})
    assert [i["reader"] for i in discover(str(manifest)).items] == ["manifest"]
    assert [i["reader"] for i in discover(str(dataset)).items] == ["audio_dataset"]
    out = tmp_path / "out"
    run(manifest, out)
    assert list(rows(out)) == ["from-manifest"]
    out2 = tmp_path / "out2"
    run(dataset, out2)
    assert list(rows(out2)) == ["from-dataset"]


def test_id_column_choice_and_duplicates(tmp_path):
    shard = write_dataset(tmp_path / "s.parquet", {
        "audio": [str(SHORT[0]), str(SHORT[1])], "key": ["k1", "k2"], "speaker": ["a", "a"]})
    ctx = ReadContext({}, 1 << 30)

    def ids(**options):
        corpus = discover(str(shard), options=InputOptions(**options))
        return [r.segments[0].utt_id for i in corpus.items for r in read_item(i, ctx)], corpus

    got, corpus = ids()
    assert got == ["k1", "k2"] and "key" not in corpus.metadata
    with pytest.raises(InputError, match="two rows share utt_id 'a'"):
        ids(id_column="speaker")
    with pytest.raises(InputError, match=r"id column 'speaker_id' .*is not a column"):
        ids(id_column="speaker_id")


def dataset_rows(n, **more):
    """n rows cycling over the short recordings, with their file bytes to compare."""
    paths = [SHORT[i % len(SHORT)] for i in range(n)]
    return {"audio": [str(p) for p in paths], **more}, [p.read_bytes() for p in paths]


def read_all(corpus):
    ctx = ReadContext({}, 1 << 30)
    return [(r.segments[0].utt_id, r.open() if r.open else r.error)
            for item in corpus.items for r in read_item(item, ctx)]


def test_a_large_row_group_is_cut_into_slices_by_bytes_not_by_rows(tmp_path):
    columns, data = dataset_rows(7)
    shard = write_dataset(tmp_path / "big.parquet", columns)  # one row group of 7 rows
    assert pq.ParquetFile(shard).metadata.num_row_groups == 1
    group_bytes = pq.ParquetFile(shard).metadata.row_group(0).total_byte_size
    expected = [(f"big.parquet/{r}", data[r]) for r in range(7)]
    # a slice re-reads its row group from the start: a row count alone never cuts one
    by_count = discover(str(shard), options=InputOptions(unit_count=3))
    assert [(i["first"], i["rows"]) for i in by_count.items] == [(0, 7)]
    assert read_all(by_count) == expected
    limit = group_bytes // 3
    by_size = discover(str(shard), options=InputOptions(unit_count=100, unit_bytes=limit))
    assert len(by_size.items) >= 3
    assert all(0 < i["size"] <= limit and i["count"] == i["rows"] for i in by_size.items)
    assert sum(i["rows"] for i in by_size.items) == 7
    assert read_all(by_size) == expected
    json.dumps(by_size.items)  # the plan stores them as JSON


def test_a_split_shard_is_several_units_and_every_row_once(tmp_path):
    n = 20  # about 2.7 MB of audio in one row group
    columns, _ = dataset_rows(n, speaker_id=[f"s{i}" for i in range(n)])
    shard = write_dataset(tmp_path / "big.parquet", columns)
    out = tmp_path / "out"
    summary = run(shard, out, files_per_unit=2, bytes_per_unit=1 << 20)
    chunks = sorted((out / "_run" / "features" / "plan").glob("chunk-*.parquet"))
    by_unit: dict[int, list] = {}
    for chunk in chunks:
        for row in pq.read_table(chunk).to_pylist():
            by_unit[row["unit"]] = json.loads(row["items"])
    units = [by_unit[u] for u in sorted(by_unit)]
    index = pq.read_table(out / "_run" / "features" / "plan.parquet")
    assert index.column("unit").to_pylist() == sorted(by_unit)
    slices = [(i["row_group"], i["first"], i["rows"]) for u in units for i in u]
    assert len(units) == len(slices) >= 3  # a slice each, cut by the 1 MiB bound
    assert [first for _, first, _ in slices] == [0] + list(np.cumsum([r for *_, r in slices[:-1]]))
    assert sum(r for *_, r in slices) == n
    assert summary.inputs == summary.rows == n
    got = rows(out)
    assert sorted(got) == sorted(f"big.parquet/{r}" for r in range(n))
    assert [got[f"big.parquet/{r}"]["speaker_id"] for r in range(n)] == [f"s{r}" for r in range(n)]


def test_bad_rows_are_one_error_row_each(tmp_path):
    root = tmp_path / "c"
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all" * 50)
    write_dataset(root / "embedded.parquet", {
        "audio": [str(SHORT[0]), str(garbage), None], "id": ["good", "garbage", "null-cell"]})
    (tmp_path / "audio").mkdir()  # outside the input folder, which it would join otherwise
    shutil.copy(SHORT[1], tmp_path / "audio" / "here.wav")
    # as `to_parquet` writes a dataset whose audio is not embedded: paths (relative to the shard)
    write_dataset(root / "paths.parquet", {
        "audio": [{"bytes": None, "path": "../audio/here.wav"},
                  {"bytes": None, "path": "../audio/missing.wav"},
                  {"bytes": None, "path": None}],
        "id": ["relative-path", "missing-path", "no-bytes-no-path"]}, embed=False)
    out = tmp_path / "out"
    summary = run(root, out, max_error_share=1.0)  # bad on purpose, 4 of 6
    assert summary.inputs == 6 == summary.rows + sum(summary.errors.values())
    assert sorted(rows(out)) == ["good", "relative-path"]
    assert_same_features(rows(out)["relative-path"], SHORT[1])
    errors = {u: (r["error_type"], r["message"]) for u, r in rows(out, "errors").items()}
    assert {u: e[0] for u, e in errors.items()} == {
        "garbage": "AudioDecodeError", "null-cell": "MissingAudioError",
        "missing-path": "FileNotFoundError", "no-bytes-no-path": "MissingAudioError"}
    assert "is null" in errors["null-cell"][1]
    assert "neither bytes nor a path" in errors["no-bytes-no-path"][1]
    assert "audio/missing.wav" in errors["missing-path"][1]


def corrupt_row_group(path, index):
    """Overwrite the first page header of the audio bytes of one row group."""
    chunk = pq.ParquetFile(path).metadata.row_group(index).column(0)
    assert chunk.path_in_schema == "audio.bytes"
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset:chunk.data_page_offset + 32] = b"\xff" * 32
    path.write_bytes(bytes(data))


def test_damaged_shards_are_error_rows_and_their_good_row_groups_still_count(tmp_path):
    root = tmp_path / "c"
    columns, _ = dataset_rows(6, id=[f"u{i}" for i in range(6)])
    damaged = write_dataset(root / "damaged.parquet", columns, rows_per_group=2)
    assert pq.ParquetFile(damaged).metadata.num_row_groups == 3
    corrupt_row_group(damaged, 1)
    columns, _ = dataset_rows(3, id=[f"t{i}" for i in range(3)])
    truncated = write_dataset(root / "truncated.parquet", columns)
    truncated.write_bytes(truncated.read_bytes()[:truncated.stat().st_size // 2])
    write_dataset(root / "good.parquet", {"audio": [str(SHORT[4])], "id": ["g0"]})
    corpus = discover(str(root))  # a shard without a footer does not stop the plan
    assert [i for i in corpus.items if i["source"].endswith("truncated.parquet")][0]["count"] == 1
    out = tmp_path / "out"
    summary = run(root, out)
    assert sorted(rows(out)) == ["g0", "u0", "u1", "u4", "u5"]
    errors = rows(out, "errors")
    assert {u: r["error_type"] for u, r in errors.items()} == {
        "u2": "DatasetShardError", "u3": "DatasetShardError",
        "truncated.parquet/": "DatasetShardError"}
    assert "row group 1" in errors["u2"]["message"] and "damaged" in errors["u2"]["message"]
    assert "not a readable Parquet file" in errors["truncated.parquet/"]["message"]
    assert summary.inputs == 8 == summary.rows + sum(summary.errors.values())


def test_planning_reads_the_footers_not_the_audio(tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileOpener

    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 20).astype(np.float32)
    wav = tmp_path / "noise.wav"
    sf.write(wav, noise, 16000, subtype="PCM_16")  # 640 kB
    shard = write_dataset(tmp_path / "ds" / "s.parquet",
                          {"audio": [str(wav)] * 8, "id": [f"n{i}" for i in range(8)]},
                          rows_per_group=2)
    assert shard.stat().st_size > 5_000_000
    counted = []
    read = LocalFileOpener.read

    def counting_read(self, *args, **kwargs):
        data = read(self, *args, **kwargs)
        counted.append(len(data))
        return data

    def counting_readinto(self, buffer):
        n = self.f.readinto(buffer)
        counted.append(n)
        return n

    monkeypatch.setattr(LocalFileOpener, "read", counting_read)
    monkeypatch.setattr(LocalFileOpener, "readinto", counting_readinto, raising=False)
    corpus = discover(str(tmp_path / "ds"))
    assert sum(i["count"] for i in corpus.items) == 8
    assert 0 < sum(counted) < 300_000, sum(counted)  # footer reads, the id column
    counted.clear()
    assert [u for u, _ in read_all(corpus)] == [f"n{i}" for i in range(8)]
    assert sum(counted) > 5_000_000  # the worker side does read the audio, through the same path


def test_a_storage_error_while_planning_is_not_a_damaged_shard(tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileOpener

    from timbrespace_ray.errors import StorageError

    shard = write_dataset(tmp_path / "s.parquet", {"audio": [str(SHORT[0])]})

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(LocalFileOpener, "read", denied)
    with pytest.raises(StorageError, match="Permission denied"):
        discover(str(shard))


# Through a real Ray cluster, from S3, with a kill -9 of the driver and a rerun:
# tests/reliability/test_reliability_input_forms.py (the `shards` corpus holds a Parquet audio dataset).


def test_a_label_index_that_names_no_label_is_an_error_row(tmp_path):
    # `datasets` refuses to write such an index itself: the shard is edited afterwards, as a
    # tool that knows nothing of the label names would
    shard = write_dataset(tmp_path / "ds" / "train.parquet", {
        "audio": [str(SHORT[0]), str(SHORT[1]), str(SHORT[3])], "id": ["a", "b", "c"],
        "gender": [1, 0, 0]}, features={"gender": datasets.ClassLabel(names=["female", "male"])})
    table = pq.read_table(shard)
    gender = pa.array([1, 7, -1], table.schema.field("gender").type)
    pq.write_table(table.set_column(table.schema.get_field_index("gender"), "gender", gender),
                   shard)
    out = tmp_path / "out"
    summary = run(shard, out, max_error_share=1.0)
    assert summary.rows == 2 and summary.errors == {"InputError": 1}
    message = rows(out, "errors")["b"]["message"]
    assert "'gender' holds 7" in message and "has 2 names" in message, message
    got = rows(out)
    assert got["a"]["gender"] == "male"
    assert got["c"]["gender"] is None  # -1: `datasets`'s "no label"
