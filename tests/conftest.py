"""Fixtures every test folder shares: services (helpers/infra/fixtures.py), the demo run, a run
with failed inputs, the reference vectors' summary, the package's log lines."""
from __future__ import annotations

import json

import pytest

from helpers.data import VECTORS

pytest_plugins = ["helpers.infra.fixtures"]

# With xdist (`make test`: two workers), the tests that share a session's services (one Ray
# cluster, one S3 server, the demo's run) run on one worker, one after another; the others go
# module by module to whichever worker is free, each module's fixtures built once
SHARED_SERVICES = {"ray_cluster", "ray_s3_env", "s3_server", "s3_bucket", "demo"}


def pytest_collection_modifyitems(items):
    for item in items:
        shared = SHARED_SERVICES & set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.xdist_group("services" if shared else item.nodeid.split("::")[0]))


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
    config["train"]["max_steps"] = 40  # the demo's 150 steps, shortened for CI's time
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
