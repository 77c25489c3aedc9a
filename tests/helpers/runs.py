"""A run with failed inputs: features, profile and tokens over a manifest of three good
recordings and four bad inputs (two undecodable, two missing), tokens with the published
120-cluster model (so no kmeans stage), features allowing that many failed inputs."""
from __future__ import annotations

import shutil
from pathlib import Path

from helpers.data import N120_MODEL
from helpers.corpus import SHORT

GOOD = ["a.wav", "b.wav", "c.wav"]
BAD = {"corrupt.wav": "AudioDecodeError", "empty.wav": "AudioDecodeError",
       "missing.wav": "FileNotFoundError", "sub/gone.flac": "FileNotFoundError"}
INPUTS = len(GOOD) + len(BAD)  # one input per manifest row; one unit each (fewer than 16)


def write_manifest(root: Path) -> Path:
    for name, src in zip(GOOD, SHORT):
        shutil.copy(src, root / name)
    (root / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 8)
    (root / "empty.wav").write_bytes(b"")
    lines = ["path,speaker"] + [f"{n},{'AB'[i % 2]}" for i, n in enumerate([*GOOD, *BAD])]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


# 4 of the 7 inputs fail: over the default features.max_error_share (0.5), so these runs allow
# more for the stage to finish (ACCEPTING); FAILING_SHARE makes it fail
ACCEPTING, FAILING_SHARE = 0.6, 0.5
assert FAILING_SHARE < len(BAD) / INPUTS < ACCEPTING


def failed_run_config(manifest: Path, out, storage_options: dict | None = None,
                      max_error_share: float = ACCEPTING):
    from timbrespace_ray.config import load_config

    return load_config(input=str(manifest), output=str(out), **{
        "tokens.kmeans_model": str(N120_MODEL), "storage.storage_options": storage_options,
        "features.max_error_share": max_error_share})


def run_with_failed_inputs(manifest: Path, out: Path) -> Path:
    from timbrespace_ray.executors import LocalExecutor
    from timbrespace_ray.pipeline import run_stage

    cfg = failed_run_config(manifest, out)
    for stage in ("features", "profile", "tokens"):
        run_stage(stage, cfg, LocalExecutor())
    return out
