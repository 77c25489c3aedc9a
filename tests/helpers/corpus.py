"""Builders of small test corpora from the bundled recordings."""
from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

from helpers.data import DEMO_CORPUS

SPEECH = sorted(DEMO_CORPUS.glob("*.wav"))
SHORT = [p for p in SPEECH if "pyannote" not in p.name]  # the 30 s ones slow tests down


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def mixed_corpus(root: Path) -> dict:
    """Good files in nested folders and formats, bad files, and a tar shard; returns counts."""
    (root / "a" / "b").mkdir(parents=True)
    shutil.copy(SHORT[0], root / "one.wav")
    shutil.copy(SHORT[1], root / "a" / "TWO.WAV")
    x, sr = sf.read(SHORT[2], dtype="float32")
    sf.write(root / "a" / "b" / "three.flac", x, sr)
    (root / "a" / "corrupt.wav").write_bytes(np.random.default_rng(1).bytes(4000))
    (root / "a" / "b" / "empty.wav").write_bytes(b"")
    (root / "notes.txt").write_text("not audio, not listed")
    with tarfile.open(root / "shard-000.tar", "w") as tar:
        add_tar_member(tar, "s/four.wav", SHORT[3].read_bytes())
        add_tar_member(tar, "s/five.wav", SHORT[4].read_bytes())
        add_tar_member(tar, "s/bad.wav", b"RIFF\x00\x00garbage")
        add_tar_member(tar, "s/readme.txt", b"ignored")
    return {"inputs": 8, "rows": 5, "errors": 3}
