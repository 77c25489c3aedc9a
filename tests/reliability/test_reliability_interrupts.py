"""Interrupted runs: the driver of each stage is killed with SIGKILL (kill -9) at chosen points,
then the same command is rerun; the result must equal a clean run's (no row twice, none lost).

Kill points are reached deterministically: either the driver freezes itself just before it
writes a given path (tests/helpers/reliability_driver.py) or the test freezes it (SIGSTOP) as soon as
the state it waits for is on disk; the state is checked while it is frozen, then it is killed.
"""
import json
import os
import re
import shutil
import signal

import numpy as np
import pytest

from helpers.reliability import (  # noqa: F401 (no_leftover_drivers: a fixture)
    CONFIG, Driver, clean_reference, cluster_actors, markers, no_leftover_drivers, rows, run_cli,
    sigkill, wait_until)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_drivers")]
_SHARED: dict = {}  # the encoder trained (through two kills) by the train test, for embed


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return clean_reference(tmp_path_factory)


def _args(ref, out, cluster):
    return ["--output", str(out), "--config", str(ref["config"]), "--address", cluster.address,
            "--no-progress"]


def _frozen_or_exited(driver: Driver):
    return lambda: driver.frozen() or driver.proc.poll() is not None


def _paused(driver: Driver, timeout_s: float = 240) -> str:
    """Wait for the driver to freeze itself at its pause point; its output so far. The caller
    checks the state on disk, then kills it."""
    wait_until(_frozen_or_exited(driver), timeout_s, what="the driver to reach its pause point")
    assert driver.frozen(), f"the driver ended before its pause point:\n{driver.output[-3000:]}"
    return driver.output


def _kill_after_units(driver: Driver, state, at_least: int, total: int, timeout_s: float = 240):
    """Freeze the driver once `at_least` units are marked done in the stage's `state` folder,
    check, kill -9. Returns the number of markers while it was frozen."""
    wait_until(lambda: markers(state) >= at_least or driver.proc.poll() is not None, timeout_s,
               what=f"{at_least} finished units")
    assert driver.proc.poll() is None, f"the driver ended first:\n{driver.output[-3000:]}"
    driver.freeze()
    done = markers(state)
    assert not (state / "summary.json").exists() and at_least <= done < total, (
        f"the kill should land mid-stage ({done} of {total} units done)\n{driver.output[-3000:]}")
    driver.kill()
    return done


def _already_done(output: str, stage: str) -> tuple[int, int]:
    m = re.search(rf"^{stage}: (\d+) units, (\d+) already done", output, re.MULTILINE)
    assert m, f"no plan line for {stage} in:\n{output[-3000:]}"
    return int(m.group(1)), int(m.group(2))


def _paused_before_summary(driver: Driver, state, n: int, first: int) -> int:
    """A rerun frozen just before its stage's summary: it resumed (the `first` units finished
    before were not redone) and marked every unit; killed there. Returns the units it found
    done when it started."""
    total, done = _already_done(_paused(driver), driver.stage)
    assert total == n and first <= done < n
    assert markers(state) == n and not (state / "summary.json").exists()
    driver.kill()
    return done


def _copy_stages(src, dst, *stages):
    """Finished stages of another run: their folders and their state."""
    from timbrespace_ray.stages.registry import SPECS

    dst.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        for name in (SPECS[stage].folder, f"_run/{stage}"):
            shutil.copytree(src / name, dst / name)
    return dst


def test_features_killed_while_planning_after_some_units_and_before_success(ref, ray_cluster, tmp_path):
    out, n = tmp_path / "out", ref["counts"]["units"]
    args = ["--input", str(ref["corpus"]), *_args(ref, out, ray_cluster)]
    env, state = ray_cluster.env, out / "_run" / "features"

    # 1. while planning: the inputs are listed, the plan is about to be written
    d = Driver("features", args, env, pause_before_write="*/_run/features/plan.parquet")
    _paused(d)
    assert not (state / "plan.parquet").exists() and markers(state) == 0
    d.kill()

    # 2. after a few units
    d = Driver("features", args, env)
    first = _kill_after_units(d, state, 3, n)

    # 3. every unit done, just before the summary
    done = _paused_before_summary(Driver("features", args, env, pause_before_write=
                                         "*/_run/features/summary.json"), state, n, first)

    print(f"features killed: while planning; after {first} units; before its summary ({done} done "
          "when that run started)")
    output = run_cli("features", args, env)
    assert f"features: {n} units, {n} already done, 0 to run" in output
    assert f"inputs seen {n} = rows {ref['counts']['rows']} + errors 1" in output
    got = rows(out, "features")
    assert got == rows(ref["out"], "features")
    assert rows(out, "errors", exclude="message") == rows(ref["out"], "errors", exclude="message")
    ids = [r[0] for r in got]
    assert len(ids) == len(set(ids)) == ref["counts"]["rows"]


def test_kmeans_killed_while_fitting_and_before_success(ref, ray_cluster, tmp_path):
    from timbrespace_ray.clustering import KMeansModel

    out = _copy_stages(ref["out"], tmp_path / "out", "features")
    args, env, folder = _args(ref, out, ray_cluster), ray_cluster.env, out / "kmeans"

    # 1. while the restarts are fitting: nothing written yet
    d = Driver("kmeans", args, env)
    wait_until(lambda: d.printed("restart(s) in parallel") or d.proc.poll() is not None, 240,
               what="the k-means fits to start")
    d.freeze()
    assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())
    d.kill()

    # 2. model files written, just before the summary
    summary = out / "_run" / "kmeans" / "summary.json"
    d = Driver("kmeans", args, env, pause_before_write="*/_run/kmeans/summary.json")
    _paused(d)
    assert (folder / "kmeans_model.json").exists() and (folder / "cluster_centers.pt").exists()
    assert not summary.exists()
    d.kill()

    output = run_cli("kmeans", args, env)
    assert "restart(s) in parallel" in output  # no summary: fitted again, from the same sample
    assert summary.exists()
    # seeded: the same centres as the clean run's
    np.testing.assert_array_equal(KMeansModel.load(str(folder)).cluster_centers,
                                  KMeansModel.load(str(ref["out"] / "kmeans")).cluster_centers)
    assert "kmeans: already complete (k = " in run_cli("kmeans", args, env)


def test_tokens_killed_after_some_units_and_before_success(ref, ray_cluster, tmp_path):
    out = _copy_stages(ref["out"], tmp_path / "out", "features", "kmeans")
    args, env, state = _args(ref, out, ray_cluster), ray_cluster.env, out / "_run" / "tokens"
    n = ref["counts"]["units"]  # one tokens unit per features part

    first = _kill_after_units(Driver("tokens", args, env), state, 3, n)

    done = _paused_before_summary(Driver("tokens", args, env, pause_before_write=
                                         "*/_run/tokens/summary.json"), state, n, first)

    print(f"tokens killed: after {first} units; before its summary ({done} done when that run "
          "started)")
    output = run_cli("tokens", args, env)
    assert f"tokens: {n} units, {n} already done, 0 to run" in output
    got = rows(out, "tokens")
    assert got == rows(ref["out"], "tokens")
    assert len({r[0] for r in got}) == len(got) == ref["counts"]["rows"]


def _step(out) -> int:
    try:
        return json.loads((out / "_run" / "train" / "checkpoint" / "state.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_train_killed_mid_training_and_before_success(ref, ray_cluster, tmp_path):
    out = _copy_stages(ref["out"], tmp_path / "out", "tokens")
    args, env = _args(ref, out, ray_cluster), ray_cluster.env
    max_steps, every = CONFIG["train"]["max_steps"], CONFIG["train"]["checkpoint_every"]
    log_every = CONFIG["train"]["log_every"]

    # 1. mid-training: once a checkpoint exists, freeze the training worker (it trains on
    # while the driver waits), kill -9 the driver, then the frozen worker
    d = Driver("train", args, env)
    wait_until(lambda: _step(out) >= every or d.proc.poll() is not None, 300,
               what="the first training checkpoint")
    workers = cluster_actors(ray_cluster, "ray::RayTrainWorker")
    assert workers, "no Ray Train worker found"
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    d.freeze()
    frozen_step = _step(out)
    d.kill()
    for pid in workers:
        sigkill(pid)
    assert every <= frozen_step < max_steps, f"the kill should land mid-training ({frozen_step})"
    assert not (out / "_run" / "train" / "summary.json").exists()

    # 2. training finished, just before its summary: the rerun resumed, it did not start over
    d = Driver("train", args, env, pause_before_write="*/_run/train/summary.json")
    output = _paused(d, 300)
    resumed = re.search(r"steps (\d+) -> (\d+)", output)
    assert resumed, output[-3000:]
    assert int(resumed.group(1)) >= frozen_step and int(resumed.group(2)) == max_steps
    assert _step(out) == max_steps
    d.kill()

    print(f"train killed: at checkpoint step {frozen_step}; resumed from step "
          f"{resumed.group(1)}; killed again before its summary")
    output = run_cli("train", args, env)
    assert f"steps {max_steps} -> {max_steps}" in output  # nothing left to train
    summary = json.loads((out / "_run" / "train" / "summary.json").read_text())
    assert summary["detail"]["step"] == max_steps
    for name in ("config.json", "model.pt", "metrics.jsonl", "training.json"):
        assert (out / "encoder" / name).exists()
    metrics = map(json.loads, (out / "encoder" / "metrics.jsonl").read_text().splitlines())
    steps = [m["step"] for m in metrics if m["kind"] == "step"]
    assert steps == list(range(log_every, max_steps + 1, log_every))  # no step trained twice
    assert f"train: already complete ({max_steps} steps, " in run_cli("train", args, env)
    _SHARED["encoder"] = out / "encoder"


def test_embed_killed_after_some_units_and_before_success(ref, ray_cluster, tmp_path):
    from timbrespace_ray.config import load_config
    from timbrespace_ray.executors import LocalExecutor
    from timbrespace_ray.stages.embed import EmbedStage
    from timbrespace_ray.storage import Location

    encoder = _SHARED.get("encoder")
    if encoder is None or not (encoder / "training.json").exists():
        pytest.fail("needs the encoder trained by the test above")
    out = _copy_stages(ref["out"], tmp_path / "out", "tokens")
    shutil.copytree(encoder, out / "encoder")
    clean = _copy_stages(out, tmp_path / "clean", "tokens")
    shutil.copytree(encoder, clean / "encoder")
    cfg = load_config(str(ref["config"]))
    EmbedStage(Location.of(str(clean)), cfg.embed).run(LocalExecutor())

    args, env, state = _args(ref, out, ray_cluster), ray_cluster.env, out / "_run" / "embed"
    n = ref["counts"]["units"]
    first = _kill_after_units(Driver("embed", args, env), state, 3, n)

    d = Driver("embed", args, env, pause_before_write="*/_run/embed/summary.json")
    output = _paused(d)
    total, done = _already_done(output, "embed")
    assert total == n and first <= done < n
    d.kill()

    print(f"embed killed: after {first} units; before its summary ({done} done when that run "
          "started)")
    output = run_cli("embed", args, env)
    assert f"embed: {n} units, {n} already done, 0 to run" in output
    order = 'utt_id, "window"'
    got, want = rows(out, "embeddings", order), rows(clean, "embeddings", order)
    assert [r[:-1] for r in got] == [r[:-1] for r in want]  # utt_id, source, window, frames
    assert len({(r[0], r[2]) for r in got}) == len(got)
    np.testing.assert_allclose(np.array([r[-1] for r in got]), np.array([r[-1] for r in want]),
                               rtol=1e-5, atol=1e-6)
