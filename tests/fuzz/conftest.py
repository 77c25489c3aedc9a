"""Hypothesis profiles of the fuzz suite: `ci` (the default: derandomized, a fixed small budget,
the same cases on every run) and `long` (random, many examples, for a local hunt):

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest -q tests/fuzz/

(`hunt`: `long` without the kept examples, so that only new failures are reported;
FUZZ_EXAMPLES sets the number of examples of any profile.)

A failure found by either is kept as an `@example(...)` beside its test, so that it runs on
every CI run whatever hypothesis generates."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

from helpers.fuzz import Case, run_case
from helpers.fuzz_inputs import tiny_wav

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=int(os.environ.get("FUZZ_EXAMPLES", 12)),
                          derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", 400)),
                          **_COMMON)
# `hunt`: as `long`, without the kept examples: the failures not yet known
settings.register_profile("hunt", parent=settings.get_profile("long"),
                          phases=[Phase.generate, Phase.target, Phase.shrink])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def warm_stage():
    """One run of the stage over a good file, unbounded: the first run of a process compiles the
    numba kernels, which would count against the first case's timeout."""
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "in"
        folder.mkdir()
        (folder / "a.wav").write_bytes(tiny_wav())
        run_case(Case(folder, 1, {"a.wav"}), Path(d) / "out", timeout_s=None)
