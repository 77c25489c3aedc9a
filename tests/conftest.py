from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["infra.fixtures"]

DATA = Path(__file__).parent / "data"
VECTORS = DATA / "vectors"
N120_MODEL = DATA / "models" / "timbrespace_librispeech_n120"
DEMO_CORPUS = Path(__file__).parent.parent / "timbrespace_ray" / "demo_corpus"

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


@pytest.fixture(scope="session")
def summary() -> list[dict]:
    return json.loads((VECTORS / "summary.json").read_text())



@pytest.fixture
def said():
    """The package's log lines while the test runs (what the command line would print)."""
    from helpers.logs import lines_said

    with lines_said() as lines:
        yield lines
