"""What an executor is to a stage: the one interface between the pipeline and where work runs.

Stages describe their work (units, resources, a function over items, a training job) and hand it
to an `Executor`; they never import Ray. `LocalExecutor` (local.py) runs everything in this
process, for the library and unit tests; `RayExecutor` (ray.py) runs it on an embedded local Ray
or a cluster: map stages on an actor pool (actor_pool.py), other work as tasks, training with Ray
Train (ray_train.py), and it answers what the cluster holds and can grow to (capacity.py).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; an executor turns this into its own requests."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_bytes: int | None = None
    max_workers: int | None = None
    actors: bool = False  # Executor.parallel(): one actor per item instead of a task
    # Executor.map(): a pool of workers that run setup() once each (model loading, compiled
    # kernels); False: plain tasks on reusable workers, for work without a setup, which then
    # costs no worker start-up (seconds: more than a small corpus's whole work)
    actor_pool: bool = True


@dataclass(frozen=True)
class WorkUnit:
    index: int
    items: tuple[dict[str, Any], ...]
    # where a unit whose items are not carried reads them: (chunk, row group) of its stage's
    # plan (a planned corpus of millions of items is not held by the driver)
    plan_ref: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        return f"{self.index:06d}"


EXAMPLE_CHARS = 300


@dataclass
class UnitStats:
    unit: int
    inputs: int = 0
    rows: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    audio_seconds: float = 0.0
    frames: int = 0
    busy_seconds: float = 0.0
    started_at: float = 0.0  # wall-clock time.time(), for utilisation figures
    # error type -> [utt_id, message] of its first input here: what a failed stage shows
    error_examples: dict[str, list[str]] = field(default_factory=dict)

    def add_error(self, error_type: str, utt_id: str, message: str) -> None:
        self.errors[error_type] = self.errors.get(error_type, 0) + 1
        # clipped: markers stay small whatever a message holds
        self.error_examples.setdefault(error_type, [utt_id, message[:EXAMPLE_CHARS]])


class MapWork(Protocol):
    """A map stage as an executor sees it."""

    name: str
    resources: Resources

    def setup(self) -> None: ...

    def run_unit(self, unit: WorkUnit) -> UnitStats: ...


OnResult = Callable[[UnitStats], None]


@dataclass(frozen=True)
class NodeCapacity:
    cpus: float
    gpus: float
    memory_bytes: float  # what work may reserve on it (Ray's `memory` resource)


@dataclass(frozen=True)
class GpuCapacity:
    """The GPUs of a cluster. `now`: in its nodes now; `most`: the most it can have, its
    autoscaler's GPU node groups at their maximum size included, or None when unknown (an
    autoscaler this process cannot see); `source`: where `most` comes from."""

    now: float
    most: float | None
    source: str

    @property
    def possible(self) -> float:
        """GPUs the cluster has or can have: what the `use_gpu` auto decision uses."""
        return max(self.now, self.most or 0.0)


class TrainContext(Protocol):
    """What a training loop sees on each of its workers."""

    rank: int
    world_size: int
    device: Any  # torch.device

    def batches(self, split: str, batch_size: int | None = None) -> Iterator[dict]:
        """The worker's share of a split ("train"), or all of an unsplit one, as numpy dicts."""

    def prepare_model(self, model):
        """The model as the workers train it together (wrapped for data parallelism)."""

    def report(self, metrics: dict) -> None:
        """After a checkpoint: every worker at the same step."""

    def broadcast(self, value):
        """Rank 0's `value` (a picklable object), on every worker: a decision all of them
        follow (every worker calls it at the same step)."""

    def say(self, text: str) -> None:
        """A line for the driver's output (rank 0's; the others say nothing)."""

    def post(self, step: int, facts: str) -> None:
        """The step reached and its figures, for the driver's progress bar (rank 0's)."""


@dataclass
class TrainJob:
    """A data-parallel training run: `loop(context, config)` on `num_workers` workers, over
    Parquet tables split into named datasets by `split(table, part=name, **split_args)`."""

    loop: Callable[[TrainContext, dict], None]
    config: dict
    paths: list[str]
    filesystem: Any  # a pyarrow filesystem the paths are on
    columns: list[str]
    splits: tuple[str, ...]  # the first is divided among the workers; every worker reads the rest
    split: Callable
    split_args: dict
    materialize: bool  # read and split once before training (a small corpus)
    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    memory_bytes: int
    storage_path: str  # the training run's own state, on `filesystem`
    total_steps: int
    first_step: int  # where a resumed run starts, for the progress
    max_failures: int = 2


@runtime_checkable
class Executor(Protocol):
    # a live progress bar (None: where stderr is a terminal), else bounded lines
    live_progress: bool | None

    def map(self, work: MapWork, units: list[WorkUnit], on_result: OnResult) -> None:
        """Every unit through `work.run_unit`, `on_result` as each finishes."""

    def parallel(self, fn: Callable, items: list, resources: Resources, shared=None) -> list:
        """fn(item, shared) for every item, results in order."""

    def nodes(self) -> list[NodeCapacity]:
        """The nodes work can run on now."""

    def gpu_capacity(self) -> GpuCapacity:
        """The GPUs there are and can be."""

    def use_gpu(self, flag: bool | None) -> bool:
        """The one `use_gpu` decision: `flag` when set, else whether GPUs are or can be had."""

    def train(self, job: TrainJob) -> None:
        """Run a training job to its end, showing its steps as progress."""

    def close(self) -> None:
        """Let go of what the executor started (an embedded Ray), so that nothing it runs
        speaks after the caller's last line."""
