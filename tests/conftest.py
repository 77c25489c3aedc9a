"""Fixtures every test folder shares: services (helpers/infra/fixtures.py), the demo run, a run
with failed inputs, the reference vectors' summary, the package's log lines."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

from helpers.data import VECTORS

pytest_plugins = ["helpers.infra.fixtures"]

# With xdist (`make test`: two workers), the modules whose tests share the session's costly
# services (one Ray cluster, the demo's run) run on one worker, one after another; the other
# modules go whole to whichever worker is free, so each module's fixtures (and tests that build
# on an earlier one's output) stay together. An S3 server starts in seconds: a worker that
# needs one and has none starts its own
SHARED_SERVICES = ("ray_cluster", "ray_s3_env", "demo")
# ... except these, which start a Ray cluster of their own on whichever worker takes them: the
# modules that share one hold about two thirds of the suite's time, and this one (about 150 s
# of killed and resumed stages) evens the two workers' loads for the cost of one cluster start
OWN_CLUSTER = ("tests/reliability/test_reliability_interrupts.py",)
TESTS = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def _uses_shared_services(module: str) -> bool:
    path = TESTS.parent / module
    text = path.read_text() if path.exists() and module not in OWN_CLUSTER else ""
    return any(re.search(rf"def \w+\([^)]*\b{name}\b", text) for name in SHARED_SERVICES)


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByServices(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            return "services" if _uses_shared_services(module) else module

    return ByServices(config, log)


@pytest.fixture(scope="session")
def summary() -> list[dict]:
    return json.loads((VECTORS / "summary.json").read_text())


@pytest.fixture
def said():
    """The package's log lines while the test runs (what the command line would print)."""
    from helpers.logs import lines_said

    with lines_said() as lines:
        yield lines


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """`timbrespace-ray demo` run once in a pseudo-terminal: (output folder, raw, screen lines)."""
    import sys

    import yaml

    from helpers.terminal import REPO, run_in_terminal, screen_lines

    tmp = tmp_path_factory.mktemp("demo")
    config = yaml.safe_load((REPO / "timbrespace_ray" / "demo.yaml").read_text())
    # the demo's 150 steps, shortened for CI's time: the tests read its screen and report, not
    # its encoder's quality; logged every 5 steps so the bar still moves
    config["train"].update(max_steps=10, log_every=5)
    (tmp / "demo.yaml").write_text(yaml.safe_dump(config))
    code, raw = run_in_terminal(
        [sys.executable, "-m", "timbrespace_ray.cli", "demo", "--output", str(tmp / "out"),
         "--config", str(tmp / "demo.yaml"), "--num-cpus", "2"], timeout_s=900)
    assert code == 0, raw[-4000:]
    return tmp / "out", raw, screen_lines(raw)


@pytest.fixture(scope="session")
def failed_manifest(tmp_path_factory):
    from helpers.runs import write_manifest

    return write_manifest(tmp_path_factory.mktemp("failed-corpus"))


@pytest.fixture(scope="session")
def failed_run(failed_manifest, tmp_path_factory):
    """features, profile and tokens over `failed_manifest`, run to the end: bad inputs are
    error rows."""
    from helpers.runs import run_with_failed_inputs

    return run_with_failed_inputs(failed_manifest, tmp_path_factory.mktemp("failed-run"))
