"""Fuzzed Parquet audio datasets as `datasets` writes them (audio struct of bytes and path, a
ClassLabel column, Hugging Face's schema metadata), changed row by row (bytes cut or random,
null cells, a missing path, a label out of range) or in their bytes; and lhotse manifests
written with lhotse's classes, changed cut by cut (bad JSON, odd field values, supervisions
outside their recording) or cut short (a truncated gzip)."""
from __future__ import annotations

import gzip
import json
import tempfile
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import example, given
from hypothesis import strategies as st

from helpers.fuzz import Case, run_and_check
from helpers.fuzz_inputs import ODD_VALUES, byte_mutations, mutate_bytes, tiny_wav

N = 3


@lru_cache(maxsize=None)
def _dataset() -> pa.Table:
    """N rows written by `datasets` (audio bytes embedded, a ClassLabel), read back as Arrow."""
    import datasets
    from datasets.table import embed_table_storage

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(N):
            paths.append(f"{d}/a{i}.wav")
            Path(paths[-1]).write_bytes(tiny_wav())
        ds = datasets.Dataset.from_dict(
            {"audio": paths, "id": [f"r{i}" for i in range(N)], "label": [i % 2 for i in range(N)]})
        ds = ds.cast_column("audio", datasets.Audio()).cast_column(
            "label", datasets.ClassLabel(names=["no", "yes"]))
        ds = ds.with_format("arrow").map(embed_table_storage, batched=True).with_format(None)
        ds.to_parquet(f"{d}/t.parquet", batch_size=2)
        return pq.read_table(f"{d}/t.parquet")


ROW_CHANGES = ["random_bytes", "cut_bytes", "null_audio", "null_bytes_and_path",
               "missing_path", "label_out_of_range", "label_negative", "null_id", "odd_id"]


@given(at=st.integers(0, N - 1), change=st.sampled_from(ROW_CHANGES),
       data=st.binary(max_size=64), odd=st.sampled_from(ODD_VALUES[:13]))
@example(at=1, change="label_out_of_range", data=b"", odd="")
def test_dataset_row_changes(at, change, data, odd):
    table = _dataset()
    rows = table.to_pylist()
    ids = [r["id"] for r in rows]
    row = rows[at]
    if change == "random_bytes":
        row["audio"] = {"bytes": data, "path": row["audio"]["path"]}
    elif change == "cut_bytes":
        row["audio"] = {"bytes": row["audio"]["bytes"][:len(data)], "path": None}
    elif change == "null_audio":
        row["audio"] = None
    elif change == "null_bytes_and_path":
        row["audio"] = {"bytes": None, "path": None}
    elif change == "missing_path":
        row["audio"] = {"bytes": None, "path": "/nonexistent/gone.wav"}
    elif change == "label_out_of_range":
        row["label"] = 7
    elif change == "label_negative":
        row["label"] = -5
    elif change == "null_id":
        row["id"] = None
    elif change == "odd_id":
        row["id"] = odd
    good = set(ids) - {ids[at]}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "in"
        folder.mkdir()
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema),
                       folder / "train-00000-of-00001.parquet", row_group_size=2)
        run_and_check(Case(folder, inputs=N, good=good), Path(d) / "out")


@given(mutation=byte_mutations())
def test_dataset_bytes_flipped_and_cut(mutation):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "in"
        folder.mkdir()
        path = folder / "train-00000-of-00001.parquet"
        pq.write_table(_dataset(), path, row_group_size=2)
        path.write_bytes(mutate_bytes(path.read_bytes(), mutation))
        run_and_check(Case(folder, inputs=None, may_refuse=True), Path(d) / "out")


def _cuts(folder: Path, n: int) -> list[dict]:
    """n cuts of one supervision each over tiny WAVs, as lhotse writes them (JSON docs)."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recs, sups = [], []
    for i in range(n):
        (folder / f"a{i}.wav").write_bytes(tiny_wav())
        rec = Recording.from_file(folder / f"a{i}.wav", recording_id=f"rec{i}")
        rec.sources[0].source = f"a{i}.wav"
        recs.append(rec)
        sups.append(SupervisionSegment(id=f"sup{i}", recording_id=rec.id, start=0.0,
                                       duration=0.2, channel=0, speaker=f"p{i}"))
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs),
                                 supervisions=SupervisionSet.from_segments(sups))
    return [c.to_dict() for c in cuts]


LHOTSE_CHANGES = ["bad_json", "start", "duration", "channel", "recording_id", "no_recording",
                  "custom_ours", "sampling_rate", "num_samples"]


@given(n=st.integers(2, 3), at=st.integers(1, 2), change=st.sampled_from(LHOTSE_CHANGES),
       value=st.one_of(st.sampled_from(ODD_VALUES[:13]), st.none(), st.integers(-9, 10**12),
                       st.floats(allow_nan=True)))
@example(n=2, at=1, change="bad_json", value=None)
@example(n=2, at=1, change="start", value="abc")
@example(n=2, at=2, change="bad_json", value="")  # the first line: the form is unknown
def test_lhotse_cut_changes(n, at, change, value):
    at %= n
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "in"
        folder.mkdir()
        docs = _cuts(folder, n)
        doc = docs[at]
        sup = doc["supervisions"][0]
        lines = [json.dumps(c) for c in docs]
        if change == "bad_json":
            lines[at] = lines[at][:len(lines[at]) // 2]
        else:
            if change in ("start", "duration", "channel", "recording_id"):
                sup[change] = value
            elif change == "no_recording":
                del doc["recording"]
            elif change == "custom_ours":
                sup["custom"] = {"pitch_hz": value, "utt_id": value}
            else:
                doc["recording"][change] = value
            lines[at] = json.dumps(doc)
        with gzip.open(folder / "cuts.jsonl.gz", "wt") as f:
            f.write("\n".join(lines) + "\n")
        good = {f"sup{i}" for i in range(n) if i != at}
        # a first line that is not JSON leaves the file's form unknown: refused, named
        run_and_check(Case(folder / "cuts.jsonl.gz", inputs=n, good=good,
                           may_refuse=change == "bad_json" and at == 0), Path(d) / "out")


@given(n=st.integers(1, 3), cut=st.floats(0.05, 0.95))
@example(n=2, cut=0.7)
def test_lhotse_gzip_cut_short(n, cut):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "in"
        folder.mkdir()
        data = gzip.compress(("\n".join(json.dumps(c) for c in _cuts(folder, n)) + "\n").encode())
        (folder / "cuts.jsonl.gz").write_bytes(data[:int(cut * len(data))])
        run_and_check(Case(folder / "cuts.jsonl.gz", inputs=None, may_refuse=True),
                      Path(d) / "out")
