"""Executors decide where a map stage's units run; stages never import Ray themselves.

`LocalExecutor` runs units in this process (the library and unit tests); `RayExecutor` runs
them on Ray actors (actor_pool.py) or tasks, on an embedded local Ray or an existing cluster.

GPUs: `cluster_gpus()` answers "does this cluster have or can it get GPUs?" (the `use_gpu: null`
decision of the k-means, tokens, train and embed stages) and counts the GPUs an autoscaler can
add, because a GPU worker group that scales from zero has no GPU in `ray.cluster_resources()`
until something asks for one. `gpu_capacity().now` (what the nodes hold now) only sizes the
first actors of a pool.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


from .actor_pool import run_on_actor_pool
from .errors import ConfigError
from .progress import StageProgress
from .ray_logging import quiet_ray, ray_init_options
from .stages.base import MapStage, Resources, StageSummary, UnitStats, WorkUnit

log = logging.getLogger("timbrespace_ray")
OnResult = Callable[[UnitStats], None]


class LocalExecutor:
    """Every unit in this process, in order."""

    live_progress = False  # the library's and the tests' executor: lines, never a bar

    def map(self, stage: MapStage, units: list[WorkUnit], on_result: OnResult) -> None:
        stage.setup()
        for unit in units:
            on_result(stage.run_unit(unit))

    def parallel(self, fn: Callable, items: list, resources: Resources, shared=None) -> list:
        """fn(item, shared) for every item, results in order."""
        return [fn(item, shared) for item in items]

    def cluster_gpus(self) -> float:
        """GPUs this executor can give work: none, units run in this process."""
        return 0.0


@dataclass(frozen=True)
class GpuCapacity:
    """The GPUs of a Ray cluster. `now`: in its nodes now (`ray.cluster_resources()`); `most`:
    the most it can have, its autoscaler's GPU node groups at their maximum size included, or
    None when unknown (an autoscaler this process cannot see); `source`: where `most` comes
    from."""

    now: float
    most: float | None
    source: str

    @property
    def possible(self) -> float:
        """GPUs the cluster has or can have: what the `use_gpu: null` (auto) decision uses."""
        return max(self.now, self.most or 0.0)

    def line(self) -> str:
        """One line: the decision and why."""
        n = _count(self.now)
        if self.most is None:
            return (f"GPUs: {n} now; the autoscaler's node groups are not visible from here "
                    f"({self.source}) -> use_gpu auto: {'GPU' if self.now else 'CPU'}"
                    + ("" if self.now else
                       "; set use_gpu: true for GPU workers that scale from zero"))
        if self.most > self.now:
            most = "unbounded" if self.most >= sys.maxsize else _count(self.most)
            return (f"GPUs: {n} now, up to {most} by autoscaling ({self.source}) -> "
                    "use_gpu auto: GPU (k-means, tokens, train, embed)")
        return (f"GPUs: {n} ({self.source}) -> use_gpu auto: "
                + ("GPU (k-means, tokens, train, embed)" if self.now else "CPU"))


def _count(gpus: float) -> str:
    return f"{gpus:g}"


def _cluster_config_max_gpus() -> float | None:
    """The most GPUs the GCS's cluster config allows (the autoscaler's node groups at their
    maximum size; what Ray Train and Ray Data read), or None when no autoscaler reported one.
    Ray 2.60's own autoscalers (v1 and v2) do not report it; later v2 autoscalers and hosted
    platforms do."""
    try:
        import ray._private.state

        most = ray._private.state.state.get_max_resources_from_cluster_config()
    except Exception:  # not connected through a GCS (Ray Client), an older Ray
        return None
    return None if most is None else float(most.get("GPU", 0))


def _monitor_config(gcs_address: str) -> tuple[bool, str | None]:
    """Look on this machine for the autoscaler (Ray's `monitor.py`, v1 or v2) of the cluster at
    `gcs_address`: (found it, the path of its --autoscaling-config or None). The cluster
    launcher (`ray up`) starts it on the head with ~/ray_bootstrap_config.yaml, where a job's
    driver runs; KubeRay runs it in its own container, out of sight."""
    try:
        import psutil  # installed with ray[default]
    except ImportError:
        return False, None
    found, path = False, None
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if not any(os.sep + "autoscaler" + os.sep in a and a.endswith("monitor.py")
                       for a in cmd[:4]):
                continue
            args = dict(a.split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
            if args.get("--gcs-address") != gcs_address:
                continue
            found, path = True, args.get("--autoscaling-config") or None
            if path:
                path = os.path.expanduser(path)
                if not os.path.isabs(path):
                    path = os.path.join(proc.cwd(), path)
                return True, path
        except (psutil.Error, OSError):
            continue
    return found, path


def autoscaling_config_max_gpus(config: dict) -> float | None:
    """The GPUs an autoscaling config's worker node types add at their maximum size (capped by
    the cluster's max_workers); the head's own GPUs are counted by Ray once it runs. None when
    a worker type that can start declares no resources (not filled in from its instance
    type): its GPUs are unknown."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    cap = config.get("max_workers")
    total = 0.0
    for name, node_type in types.items():
        if name == head:
            continue
        count = node_type.get("max_workers", cap if cap is not None else 0)
        if cap is not None:
            count = min(count, cap)
        if count <= 0:
            continue
        resources = node_type.get("resources") or {}
        if not resources:
            return None
        total += float(resources.get("GPU", 0) or 0) * int(count)
    return total


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
    """Units as Ray actors or tasks, on the cluster at `address` or an embedded local Ray."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 progress_bars: bool = True, verbose: bool = False):
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.num_cpus = num_cpus
        # a live bar where stderr is a terminal (None: decide there), else bounded lines
        self.live_progress = None if progress_bars else False
        self.verbose = verbose

    @classmethod
    def of(cls, ray_config) -> "RayExecutor":
        """The executor a config's `ray` section describes."""
        return cls(ray_config.address, ray_config.num_cpus, ray_config.progress_bars,
                   ray_config.verbose)

    def connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        quiet_ray(self.verbose)
        kwargs = ray_init_options(self.verbose)
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
        # the stages draw their own progress (progress.py), one bar or line for a stage
        ray.data.DataContext.get_current().enable_progress_bars = False

    def cluster_cpus(self) -> float:
        import ray

        self.connect()  # asked before any work runs, e.g. by `tokens` run on its own
        return float(ray.cluster_resources().get("CPU", 1))

    def gpu_capacity(self) -> GpuCapacity:
        """The cluster's GPUs now and the most it can have. The most: the GCS's cluster config
        when an autoscaler reported one, else the config file of the cluster's autoscaler
        when it runs on this machine (`ray up`: the head, where jobs' drivers run), else
        unknown; an embedded Ray, or a cluster whose head runs no autoscaler, has what it
        has now."""
        import ray

        self.connect()
        now = float(ray.cluster_resources().get("GPU", 0))
        if not self.address:
            return GpuCapacity(now, now, "embedded local Ray, no autoscaler")
        most = _cluster_config_max_gpus()
        if most is not None:
            return GpuCapacity(now, most, "the autoscaler's cluster config in the GCS")
        try:
            gcs_address = ray.get_runtime_context().gcs_address
        except Exception:  # Ray Client
            gcs_address = None
        found, path = _monitor_config(gcs_address) if gcs_address else (False, None)
        if path:
            import yaml  # a dependency of Ray

            try:
                with open(path) as f:
                    config = yaml.safe_load(f)
                most = autoscaling_config_max_gpus(config)
                return GpuCapacity(now, most, f"autoscaler config {path}" + (
                    "" if most is not None else ": a worker type without resources"))
            except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as exc:
                return GpuCapacity(now, None, f"cannot read autoscaler config {path}: {exc}")
        if found:
            return GpuCapacity(now, now, "the head runs no autoscaler")
        return GpuCapacity(now, None, "no cluster config in the GCS, no autoscaler on this "
                                      "machine")

    def cluster_gpus(self) -> float:
        """GPUs the cluster has or can have (autoscaling from zero included): the use_gpu auto
        decision. Says what it decided and why (on stderr, once until the answer changes)."""
        cap = self.gpu_capacity()
        line = cap.line()
        if line != getattr(self, "_gpu_line", None):
            self._gpu_line = line
            print(line, file=sys.stderr, flush=True)
        return cap.possible

    def _check_gpus(self, res: Resources, what: str) -> GpuCapacity:
        """The capacity, or a ConfigError when `res` asks for GPUs this cluster can never
        place (no GPUs now and, as far as is known, none by autoscaling): work that would wait
        forever."""
        cap = self.gpu_capacity()
        if res.num_gpus and cap.most is not None and cap.possible < res.num_gpus:
            raise ConfigError(
                f"{what} asks for {res.num_gpus:g} GPU(s) a worker, but the cluster has "
                f"{_count(cap.now)} and can have no more ({cap.source}); set use_gpu: false "
                "(or leave it unset: auto) for this stage")
        return cap

    def _pool_size(self, res: Resources, n_units: int, what: str = "the stage"
                   ) -> tuple[int, int]:
        """Actor pool bounds: what the cluster holds now, growing to max_workers (or one actor
        per unit) on an autoscaling cluster; an embedded Ray starts the whole pool at once.
        GPU workers with no GPU in the cluster yet start as one actor: its request is what
        makes the autoscaler add a GPU node."""
        fits_now = max(1, int(self.cluster_cpus() // max(res.num_cpus, 1e-3)))
        if res.num_gpus:
            cap = self._check_gpus(res, what)
            fits_now = max(1, min(fits_now, int(cap.now // res.num_gpus)))
        most = min(res.max_workers or (fits_now if not self.address else n_units), n_units)
        return min(fits_now, most), max(1, most)

    def parallel(self, fn: Callable, items: list, resources: Resources, shared=None) -> list:
        """fn(item, shared) for every item as Ray tasks (or one actor each when
        resources.actors), results in order; `shared` is put in the object store once."""
        import ray

        self.connect()
        if resources.num_gpus:
            self._check_gpus(resources, f"{fn.__module__.rsplit('.', 1)[-1]} work")
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
        self.connect()
        res = stage.resources
        remote_args = {"num_cpus": res.num_cpus}
        if res.num_gpus:
            remote_args["num_gpus"] = res.num_gpus
        if res.memory_bytes:
            remote_args["memory"] = res.memory_bytes
        if not res.actor_pool:
            return self._map_tasks(stage, units, on_result, remote_args)
        least, most = self._pool_size(res, len(units), stage.name)
        run_on_actor_pool(stage, units, on_result, remote_args, least, most,
                          grow=bool(self.address))

    def _map_tasks(self, stage: MapStage, units: list[WorkUnit], on_result: OnResult,
                   options: dict) -> None:
        """Each unit as a task, a bounded number in flight (twice what fits now, so a worker
        never waits for its next unit); results in the order they finish."""
        import ray

        least, most = self._pool_size(stage.resources, len(units), stage.name)
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


class UnitProgress:
    """A map stage's progress: units done, with its inputs, errors, audio and speed."""

    def __init__(self, stage: str, total_units: int, live: bool | None = None):
        self.bar = StageProgress(stage, total_units, "units", live=live)
        self.inputs = self.errors = 0
        self.audio = 0.0

    def __call__(self, stats: UnitStats) -> None:
        self.inputs += stats.inputs
        self.errors += sum(stats.errors.values())
        self.audio += stats.audio_seconds
        secs = self.bar.clock() - self.bar.t0
        self.bar.advance(1, f"{self.inputs} inputs, {self.errors} errors, "
                            f"{self.audio / 3600:.2f} h audio, "
                            f"{self.audio / secs if secs > 0 else 0:.0f}x real time")


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
    progress = UnitProgress(stage.name, len(pending), executor.live_progress)

    def on_result(stats: UnitStats) -> None:
        ran.append(stats)
        progress(stats)

    try:
        if pending:
            executor.map(stage, pending, on_result)
    finally:
        progress.bar.close()
    summary = stage.finish(units, ran, time.perf_counter() - t0)
    for line in summary.lines():
        echo(line)
    return summary
