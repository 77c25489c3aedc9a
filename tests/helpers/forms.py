"""Small corpora in each input form, built with the formats' own libraries from the bundled
recordings. Every path inside a corpus is relative, so the folder can be copied to S3 as it is.

Each builder returns (the input, relative to the folder; expected counts). The counts are
known by construction, not computed by the code under test.
"""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

from helpers.corpus import SHORT, add_tar_member

# short enough that a unit is a fraction of a second, many enough that a kill lands mid-stage
N = 24


def _recordings(root: Path) -> list[str]:
    (root / "audio").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(N):
        name = f"audio/rec{i:02d}.wav"
        shutil.copy(SHORT[i % len(SHORT)], root / name)
        names.append(name)
    return names


def segment_manifest(root: Path) -> tuple[str, dict]:
    """Two segments of each recording, and one that ends after its recording."""
    lines = ["path,start,end,speaker"]
    for i, name in enumerate(_recordings(root)):
        lines += [f"{name},0.2,1.2,spk{i % 3}", f"{name},1.0,2.4,spk{i % 3}"]
    lines.append("audio/rec00.wav,1.5,60.0,spk0")
    (root / "segments.csv").write_text("\n".join(lines) + "\n")
    return "segments.csv", {"inputs": 2 * N + 1, "rows": 2 * N, "errors": 1, "units": N}


def shards(root: Path) -> tuple[str, dict]:
    """One folder holding both kinds of shard a corpus ships in: WebDataset tar shards and a
    Parquet audio dataset, each with `speaker` and `text` metadata."""
    (root / "shards").mkdir(parents=True)
    _webdataset(root / "shards")
    _audio_dataset(root / "shards")
    # units: a tar shard each, and a row group each (row groups are not cut by row count)
    return "shards", {"inputs": N + N, "rows": N - 1 + N - 1, "errors": 2,
                      "units": N // 2 + N // 2}


def _webdataset(folder: Path) -> None:
    """N/2 shards of two samples (audio + .json + .txt), one member undecodable."""
    for i in range(N // 2):
        with tarfile.open(folder / f"shard-{i:03d}.tar", "w") as tar:
            for j in range(2):
                key = f"s{i:03d}_{j}"
                data = SHORT[(i + j) % len(SHORT)].read_bytes()
                if i == 5 and j == 1:
                    data = b"RIFF\x00\x00not audio"
                add_tar_member(tar, f"{key}.wav", data)
                add_tar_member(tar, f"{key}.json", json.dumps({"speaker": f"spk{i % 3}"}).encode())
                add_tar_member(tar, f"{key}.txt", f"utterance {i} {j}".encode())


def _audio_dataset(folder: Path) -> None:
    """Three shards written by `datasets` with the bytes embedded, row groups of two rows; one
    row's bytes are not audio."""
    import datasets
    from datasets.table import embed_table_storage

    per_shard = N // 3
    for s in range(3):
        paths = [str(SHORT[(s * per_shard + r) % len(SHORT)]) for r in range(per_shard)]
        ds = datasets.Dataset.from_dict({
            "audio": paths, "speaker": [f"spk{r % 3}" for r in range(per_shard)],
            "text": [f"row {r}" for r in range(per_shard)]}).cast_column("audio", datasets.Audio())
        # what `push_to_hub` does before writing: the files' bytes go into the table
        ds = ds.with_format("arrow").map(embed_table_storage, batched=True).with_format(None)
        if s == 1:
            ds = ds.cast_column("audio", datasets.Audio(decode=False))
            ds = ds.map(lambda row, i: {"audio": {"bytes": b"not audio" if i == 3 else row["audio"]["bytes"],
                                                  "path": row["audio"]["path"]}}, with_indices=True)
            ds = ds.cast_column("audio", datasets.Audio())
        ds.to_parquet(str(folder / f"train-{s:05d}-of-00003.parquet"), batch_size=2)


def lhotse_cuts(root: Path) -> tuple[str, dict]:
    """A CutSet over N recordings, two supervisions each; one recording's file is gone."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    names = _recordings(root)
    recordings, supervisions = [], []
    for i, name in enumerate(names):
        rec = Recording.from_file(root / name, recording_id=f"rec{i:02d}")
        # relative to the manifest's folder, so the corpus can move (to S3) as one folder
        rec.sources[0].source = name
        recordings.append(rec)
        for j, (start, duration) in enumerate([(0.2, 1.0), (1.0, 1.4)]):
            supervisions.append(SupervisionSegment(
                id=f"rec{i:02d}-{j}", recording_id=rec.id, start=start, duration=duration,
                channel=0, speaker=f"spk{i % 3}", language="en", text=f"text {i} {j}"))
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recordings),
                                 supervisions=SupervisionSet.from_segments(supervisions))
    cuts.to_file(root / "cuts.jsonl.gz")
    (root / names[7]).unlink()
    return "cuts.jsonl.gz", {"inputs": 2 * N, "rows": 2 * N - 2, "errors": 2, "units": N}


FORMS = {"segments": segment_manifest, "shards": shards, "lhotse": lhotse_cuts}
