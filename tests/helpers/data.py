"""The data the tests read: reference vectors of the original toolkit, the published
120-cluster model, the bundled demo corpus."""
from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
VECTORS = DATA / "vectors"
N120_MODEL = DATA / "models" / "timbrespace_librispeech_n120"
DEMO_CORPUS = REPO / "timbrespace_ray" / "demo_corpus"

SYNTHETIC_SUFFIXES = ("_1s", "_2s", "_3s", "_4s", "_12s", "tiny_10ms", "exactly_one_frame",
                      "short_0p2s")


def vector_names() -> list[str]:
    return sorted(p.stem for p in VECTORS.glob("*.npz"))


def is_real_speech(name: str) -> bool:
    return not name.endswith(SYNTHETIC_SUFFIXES)


def load_vector(name: str) -> dict[str, np.ndarray]:
    with np.load(VECTORS / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def expected_features(vec: dict, prefix: str = "expected") -> dict[str, np.ndarray]:
    from timbrespace_ray.features import FEATURE_NAMES

    return {k: vec[f"{prefix}_{k}"] for k in FEATURE_NAMES}
