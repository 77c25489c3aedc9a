"""Executors decide where a map stage's units run; stages never import Ray themselves.

`LocalExecutor` runs units in this process (the library and unit tests); `RayExecutor` runs
them on a Ray Data actor pool, on an embedded local Ray or an existing cluster.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from .stages.base import MapStage, Resources, StageSummary, UnitStats, WorkUnit

log = logging.getLogger("timbrespace_ray")
OnResult = Callable[[UnitStats], None]


class LocalExecutor:
    """Every unit in this process, in order."""

    def map(self, stage: MapStage, units: list[WorkUnit], on_result: OnResult) -> None:
        stage.setup()
        for unit in units:
            on_result(stage.run_unit(unit))

    def parallel(self, fn: Callable, items: list, resources: Resources, shared=None) -> list:
        """fn(item, shared) for every item, results in order."""
        return [fn(item, shared) for item in items]

    def cluster_gpus(self) -> float:
        return 0.0


def _units_to_rows(units: list[WorkUnit]) -> list[dict]:
    return [{"index": u.index, "items": json.dumps(u.items)} for u in units]


def _run_batch(stage: MapStage, batch: dict) -> dict:
    out = []
    for index, items in zip(batch["index"], batch["items"]):
        stats = stage.run_unit(WorkUnit(int(index), tuple(json.loads(items))))
        out.append(json.dumps(asdict(stats)))
    return {"stats": np.array(out, dtype=object)}


class _UnitActor:
    """Actor-pool worker: the stage's setup (model loading) runs once per actor."""

    def __init__(self, stage: MapStage):
        self.stage = stage
        stage.setup()

    def __call__(self, batch: dict) -> dict:
        return _run_batch(self.stage, batch)


def _unit_task(stage: MapStage, unit: WorkUnit) -> UnitStats:
    stage.setup()
    return stage.run_unit(unit)


def _call_task(fn, item, shared):
    return fn(item, shared)


class _Call:
    """A one-item actor: the state an item's work builds (a GPU context) dies with it."""

    def __init__(self, fn):
        self.fn = fn

    def call(self, item, shared):
        return self.fn(item, shared)


class RayExecutor:
    """Units as Ray Data work, on the cluster at `address` or an embedded local Ray."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 progress_bars: bool = True):
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.num_cpus = num_cpus
        self.progress_bars = progress_bars

    def connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        kwargs = {"logging_level": logging.WARNING, "log_to_driver": True}
        if self.address:
            ray.init(address=self.address, **kwargs)
        else:
            # An embedded Ray is this machine alone: keep all its traffic on loopback. Ray maps
            # 127.0.0.1 to the outward address unless it runs in its single-machine mode, which
            # this variable (read when Ray is imported) selects on Linux too.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            ray._private.ray_constants.ENABLE_RAY_CLUSTER = (
                os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] not in ("0", "false", "False"))
            ray.init(num_cpus=self.num_cpus, include_dashboard=False,
                     _node_ip_address="127.0.0.1", **kwargs)
        ray.data.DataContext.get_current().enable_progress_bars = self.progress_bars

    def cluster_cpus(self) -> float:
        import ray

        self.connect()  # asked before any work runs, e.g. by `tokens` run on its own
        return float(ray.cluster_resources().get("CPU", 1))

    def cluster_gpus(self) -> float:
        import ray

        self.connect()
        return float(ray.cluster_resources().get("GPU", 0))

    def _pool_size(self, res: Resources, n_units: int) -> tuple[int, int]:
        """Actor pool bounds: what the cluster holds now, growing to max_workers (or one actor
        per unit) on an autoscaling cluster; an embedded Ray starts the whole pool at once."""
        fits_now = max(1, int(self.cluster_cpus() // max(res.num_cpus, 1e-3)))
        if res.num_gpus:
            fits_now = max(1, min(fits_now, int(self.cluster_gpus() // res.num_gpus)))
        most = min(res.max_workers or (fits_now if not self.address else n_units), n_units)
        return min(fits_now, most), max(1, most)

    def parallel(self, fn: Callable, items: list, resources: Resources, shared=None) -> list:
        """fn(item, shared) for every item as Ray tasks (or one actor each when
        resources.actors), results in order; `shared` is put in the object store once."""
        import ray

        self.connect()
        options = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
        if resources.memory_bytes:
            options["memory"] = resources.memory_bytes
        shared_ref = ray.put(shared)
        if resources.actors:
            actors = [ray.remote(_Call).options(**options).remote(fn) for _ in items]
            refs = [a.call.remote(item, shared_ref) for a, item in zip(actors, items)]
        else:
            task = ray.remote(_call_task).options(**options)
            refs = [task.remote(fn, item, shared_ref) for item in items]
        return ray.get(refs)

    def map(self, stage: MapStage, units: list[WorkUnit], on_result: OnResult) -> None:
        import ray

        self.connect()
        res = stage.resources
        remote_args = {"num_cpus": res.num_cpus}
        if res.num_gpus:
            remote_args["num_gpus"] = res.num_gpus
        if res.memory_bytes:
            remote_args["memory"] = res.memory_bytes
        if not res.actor_pool:
            return self._map_tasks(stage, units, on_result, remote_args)
        # one unit per block: units are the scheduling grain, and a failed one retries alone
        ds = ray.data.from_items(_units_to_rows(units), override_num_blocks=len(units))
        # an actor pool: setup() once per actor, and each actor has its next unit queued, so
        # no worker waits between units (Ray Data's task dispatch leaves gaps of ~0.15 s)
        least, most = self._pool_size(res, len(units))
        ds = ds.map_batches(_UnitActor, fn_constructor_args=(stage,), batch_size=1,
                            compute=ray.data.ActorPoolStrategy(min_size=least, max_size=most),
                            **remote_args)
        for row in ds.iter_rows():
            on_result(UnitStats(**json.loads(row["stats"])))


    def _map_tasks(self, stage: MapStage, units: list[WorkUnit], on_result: OnResult,
                   options: dict) -> None:
        """Each unit as a task, a bounded number in flight (twice what fits now, so a worker
        never waits for its next unit); results in the order they finish."""
        import ray

        least, most = self._pool_size(stage.resources, len(units))
        # on a cluster, queued tasks are the demand the autoscaler grows the cluster for
        in_flight = min(2 * (most if self.address else least), 4096)
        task = ray.remote(_unit_task).options(**options)
        stage_ref = ray.put(stage)
        queue, pending = list(units), []
        while queue or pending:
            while queue and len(pending) < in_flight:
                pending.append(task.remote(stage_ref, queue.pop(0)))
            done, pending = ray.wait(pending, num_returns=1)
            on_result(ray.get(done[0]))


class Progress:
    """One line per finished unit: units, inputs, errors, audio, speed."""

    def __init__(self, stage: str, total_units: int, stream=sys.stderr):
        self.stage, self.total, self.stream = stage, total_units, stream
        self.done = self.inputs = self.errors = 0
        self.audio = 0.0
        self.t0 = time.perf_counter()

    def __call__(self, stats: UnitStats) -> None:
        self.done += 1
        self.inputs += stats.inputs
        self.errors += sum(stats.errors.values())
        self.audio += stats.audio_seconds
        secs = time.perf_counter() - self.t0
        print(f"[{self.stage}] {self.done}/{self.total} units | {self.inputs} inputs, "
              f"{self.errors} errors | {self.audio / 3600:.2f} h audio | "
              f"{self.audio / secs if secs > 0 else 0:.0f}x real time | {secs:.0f} s",
              file=self.stream, flush=True)


def run_map_stage(stage: MapStage, executor, echo: Callable[[str], None] = print,
                  started: float | None = None) -> StageSummary:
    """Run the units that are not done yet, then write the stage's summary and _SUCCESS.
    `started` (a perf_counter time): when the stage's work began, if before this step's."""
    t0 = time.perf_counter() if started is None else started
    if stage.is_complete():
        summary = StageSummary(**stage.folder.child("_SUCCESS").read_json())
        echo(f"{stage.name}: already complete ({summary.inputs} inputs, {summary.rows} rows); "
             "nothing to do")
        return summary
    units = stage.plan()
    done = stage.done_units()
    pending = [u for u in units if u.index not in done]
    echo(f"{stage.name}: {len(units)} units, {len(units) - len(pending)} already done, "
         f"{len(pending)} to run -> {stage.folder.uri}")
    ran: list[UnitStats] = []
    progress = Progress(stage.name, len(pending))

    def on_result(stats: UnitStats) -> None:
        ran.append(stats)
        progress(stats)

    if pending:
        executor.map(stage, pending, on_result)
    summary = stage.finish(units, ran, time.perf_counter() - t0)
    for line in summary.lines():
        echo(line)
    return summary
