"""Dying workers: the Ray worker processes running our units are killed (SIGKILL) in the middle
of a unit, and a worker node is taken out of a multi-node cluster; the stages must finish with
the same rows as a clean run (none twice, none missing).

A victim is chosen deterministically: a unit actor whose process title says it is executing a
task (`...submit`) is frozen (SIGSTOP), its title checked again, then it is killed, so every
kill lands inside a unit, after some units are done and before the stage ends.
"""
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from helpers.infra._proc import find_processes, terminate
from helpers.reliability import (  # noqa: F401 (no_leftover_drivers: a fixture)
    REPO, UNIT_ACTOR, Driver, clean_reference, cluster_actors, cmdline, markers, no_leftover_drivers,
    rows, sigkill, wait_until)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_drivers")]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return clean_reference(tmp_path_factory)


def _kill_busy_actor(cluster, driver: Driver, timeout_s: float = 60) -> dict:
    """Freeze a unit actor that is executing a unit and SIGKILL it; what was killed."""
    deadline = time.monotonic() + timeout_s
    actors, refreshed = {}, 0.0
    while time.monotonic() < deadline:
        assert driver.proc.poll() is None, f"the stage ended first:\n{driver.output[-3000:]}"
        if time.monotonic() - refreshed > 0.5:  # restarted actors are new processes
            actors, refreshed = cluster_actors(cluster), time.monotonic()
        for pid in actors:
            if not cmdline(pid).endswith(".submit"):
                continue
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            title = cmdline(pid)
            if title.startswith(UNIT_ACTOR) and title.endswith(".submit"):
                sigkill(pid)
                return {"pid": pid, "title": title}
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.001)
    raise AssertionError("no unit actor was caught executing a unit")


def _run_with_kills(cluster, stage: str, args: list[str], folder, thresholds, n: int):
    d = Driver(stage, args, cluster.env)
    killed = []
    for at_least in thresholds:
        wait_until(lambda: markers(folder) >= at_least or d.proc.poll() is not None, 240,
                   what=f"{at_least} finished units")
        victim = _kill_busy_actor(cluster, d)
        victim["markers"] = markers(folder)
        assert victim["markers"] < n and not (folder / "summary.json").exists()
        killed.append(victim)
    rc, output = d.finish(300)
    assert rc == 0, output[-4000:]
    assert len({k["pid"] for k in killed}) == len(killed)
    return killed, output


def test_features_survive_two_killed_workers(ref, ray_cluster, tmp_path):
    out, n = tmp_path / "out", ref["counts"]["units"]
    args = ["--input", str(ref["corpus"]), "--output", str(out), "--config", str(ref["config"]),
            "--address", ray_cluster.address, "--no-progress"]
    state = out / "_run" / "features"
    killed, output = _run_with_kills(ray_cluster, "features", args, state, (2, 7), n)
    print(f"killed {killed}")
    assert f"features: {n} of {n} units run now" in output
    assert markers(state) == n
    got = rows(out, "features")
    assert got == rows(ref["out"], "features")
    assert rows(out, "errors", exclude="message") == rows(ref["out"], "errors", exclude="message")
    assert len({r[0] for r in got}) == len(got) == ref["counts"]["rows"]


def test_tokens_survive_a_killed_worker(ref, ray_cluster, tmp_path):
    out, n = tmp_path / "out", ref["counts"]["units"]
    out.mkdir()
    for name in ("features", "kmeans", "_run/features", "_run/kmeans"):
        shutil.copytree(ref["out"] / name, out / name)
    args = ["--output", str(out), "--config", str(ref["config"]), "--address", ray_cluster.address,
            "--no-progress"]
    killed, output = _run_with_kills(ray_cluster, "tokens", args, out / "_run" / "tokens", (2,), n)
    print(f"killed {killed}")
    assert f"tokens: {n} of {n} units run now" in output
    got = rows(out, "tokens")
    assert got == rows(ref["out"], "tokens")
    assert len({r[0] for r in got}) == len(got) == ref["counts"]["rows"]


def test_features_survive_losing_a_node(ref, tmp_path):
    """Head without CPUs + two one-CPU worker nodes (ray.cluster_utils, all on 127.0.0.1); the
    node whose actor is in the middle of a unit is removed after two units."""
    out, result = tmp_path / "out", tmp_path / "result.json"
    # Ray's ray_current_cluster file goes here, not in the shared /tmp/ray; a short path, as
    # Ray's unix sockets live under it (107 characters at most)
    ray_tmp = Path(tempfile.mkdtemp(prefix="tsr-mn-", dir="/tmp"))
    (ray_tmp / "ray").mkdir()
    marker = f"TSR_RELIABILITY_MULTINODE={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update({"RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                marker.split("=")[0]: marker.split("=")[1]})
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "helpers" / "reliability_multinode.py"), str(ref["corpus"]),
         str(out), str(ref["config"]), str(result)],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace", start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        sigkill(proc.pid)
        output, _ = proc.communicate()
        pytest.fail(f"the multi-node run did not finish in 240 s:\n{output[-4000:]}")
    finally:
        # Cluster.shutdown() has ended every process; give stragglers a moment, then make sure
        def leftovers():
            return find_processes(env_marker=marker, sid=proc.pid)
        try:
            wait_until(lambda: not leftovers(), 20, 0.2, "the multi-node cluster to go away")
        finally:
            terminate(list(leftovers()), grace_s=3)
            shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, output[-4000:]
    res = json.loads(result.read_text())
    print(res)
    n = ref["counts"]["units"]
    why = f"{res}\n{output[-3000:]}"
    assert res["error"] is None and res["removed"], why
    assert 2 <= res["removed"]["markers"] < n, why  # the node went away mid-stage
    assert res["cpus_before"] == 2 and res["cpus_after"] == 1, why  # ... and stayed away
    assert res["units_run"] == n and res["inputs"] == n, why
    got = rows(out, "features")
    assert got == rows(ref["out"], "features")
    assert len({r[0] for r in got}) == len(got) == ref["counts"]["rows"]
