"""Work on Ray: an embedded local Ray, or a cluster (`address`, RAY_ADDRESS)."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable

from ..errors import ConfigError
from .actor_pool import run_on_actor_pool
from .base import GpuCapacity, MapWork, NodeCapacity, OnResult, Resources, TrainJob, WorkUnit
from .capacity import decision_line, ray_gpu_capacity
from .ray_logging import quiet_ray, ray_init_options

log = logging.getLogger(__name__)


def _unit_task(work: MapWork, unit: WorkUnit):
    work.setup()
    return work.run_unit(unit)


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
        self._gpu_line: str | None = None
        self._embedded = False  # this executor started the Ray it uses

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
            self._embedded = True
        # the stages draw their own progress (progress.py), one bar or line for a stage
        ray.data.DataContext.get_current().enable_progress_bars = False

    def close(self) -> None:
        """Stop the embedded Ray this executor started: the raylet's late warnings (a count of
        worker processes, say) would otherwise print after the caller's last line."""
        if self._embedded:
            import ray

            ray.shutdown()
            self._embedded = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # capacity ---------------------------------------------------------------------------
    def cluster_cpus(self) -> float:
        import ray

        self.connect()
        return float(ray.cluster_resources().get("CPU", 1))

    def nodes(self) -> list[NodeCapacity]:
        import ray

        from ..encoder.memory import available_memory_bytes

        self.connect()
        nodes = [NodeCapacity(float(n["Resources"].get("CPU", 0)),
                              float(n["Resources"].get("GPU", 0)),
                              float(n["Resources"].get("memory", 0)))
                 for n in ray.nodes() if n.get("Alive")]
        if not self.address:  # an embedded Ray: at most what this machine has free now
            free = available_memory_bytes()
            nodes = [NodeCapacity(n.cpus, n.gpus, min(n.memory_bytes, free) or free)
                     for n in nodes]
        return nodes

    def gpu_capacity(self) -> GpuCapacity:
        self.connect()
        return ray_gpu_capacity(embedded=not self.address)

    def use_gpu(self, flag: bool | None) -> bool:
        if flag is not None:
            return flag
        cap = self.gpu_capacity()
        line = decision_line(cap)
        if line != self._gpu_line:  # said once until the answer changes
            self._gpu_line = line
            log.info(line)
        return cap.possible > 0

    def _check_gpus(self, res: Resources, what: str) -> GpuCapacity:
        """The capacity, or a ConfigError when `res` asks for GPUs this cluster can never
        place (no GPUs now and, as far as is known, none by autoscaling): work that would wait
        forever."""
        cap = self.gpu_capacity()
        if res.num_gpus and cap.most is not None and cap.possible < res.num_gpus:
            raise ConfigError(
                f"{what} asks for {res.num_gpus:g} GPU(s) a worker, but the cluster has "
                f"{cap.now:g} and can have no more ({cap.source}); set use_gpu: false "
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

    # work -------------------------------------------------------------------------------
    def parallel(self, fn: Callable, items: list, resources: Resources, shared=None) -> list:
        """fn(item, shared) for every item as Ray tasks (or one actor each when
        resources.actors), results in order; `shared` is put in the object store once."""
        import ray

        self.connect()
        if resources.num_gpus:
            self._check_gpus(resources, f"{fn.__module__.rsplit('.', 1)[-1]} work")
        options = _ray_options(resources)
        shared_ref = ray.put(shared)
        if resources.actors:
            actors = [ray.remote(_Call).options(**options).remote(fn) for _ in items]
            refs = [a.call.remote(item, shared_ref) for a, item in zip(actors, items)]
        else:
            task = ray.remote(_call_task).options(**options)
            refs = [task.remote(fn, item, shared_ref) for item in items]
        return ray.get(refs)

    def map(self, work: MapWork, units: list[WorkUnit], on_result: OnResult) -> None:
        self.connect()
        res = work.resources
        options = _ray_options(res)
        least, most = self._pool_size(res, len(units), work.name)
        if not res.actor_pool:
            return self._map_tasks(work, units, on_result, options, least, most)
        run_on_actor_pool(work, units, on_result, options, least, most, grow=bool(self.address))

    def _map_tasks(self, work: MapWork, units: list[WorkUnit], on_result: OnResult,
                   options: dict, least: int, most: int) -> None:
        """Each unit as a task, a bounded number in flight (twice what fits now, so a worker
        never waits for its next unit); results in the order they finish."""
        import ray

        # on a cluster, queued tasks are the demand the autoscaler grows the cluster for
        in_flight = min(2 * (most if self.address else least), 4096)
        task = ray.remote(_unit_task).options(**options)
        work_ref = ray.put(work)
        queue, pending = list(units), []
        while queue or pending:
            while queue and len(pending) < in_flight:
                pending.append(task.remote(work_ref, queue.pop(0)))
            done, pending = ray.wait(pending, num_returns=1)
            on_result(ray.get(done[0]))

    def train(self, job: TrainJob) -> None:
        from .ray_train import run_training

        self.connect()
        run_training(job, self.live_progress)


def _ray_options(res: Resources) -> dict:
    options = {"num_cpus": res.num_cpus}
    if res.num_gpus:
        options["num_gpus"] = res.num_gpus
    if res.memory_bytes:
        options["memory"] = res.memory_bytes
    return options
