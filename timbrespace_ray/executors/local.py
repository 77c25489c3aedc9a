"""Every piece of work in this process, in order: the library's and the unit tests' executor."""
from __future__ import annotations

import os
from collections.abc import Callable

from ..progress import StageProgress
from .base import (GpuCapacity, MapWork, NodeCapacity, OnResult, Resources, TrainJob,
                   WorkUnit)


class LocalExecutor:
    live_progress = False  # lines, never a bar

    def map(self, work: MapWork, units: list[WorkUnit], on_result: OnResult) -> None:
        work.setup()
        for unit in units:
            on_result(work.run_unit(unit))

    def parallel(self, fn: Callable, items: list, resources: Resources, shared=None) -> list:
        return [fn(item, shared) for item in items]

    def close(self) -> None:
        pass  # nothing started

    def nodes(self) -> list[NodeCapacity]:
        from ..encoder.memory import available_memory_bytes

        cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")  # Linux
                else os.cpu_count() or 1)
        return [NodeCapacity(float(cpus), 0.0, float(available_memory_bytes()))]

    def gpu_capacity(self) -> GpuCapacity:
        return GpuCapacity(0.0, 0.0, "this process: units run here, on CPUs")

    def use_gpu(self, flag: bool | None) -> bool:
        return bool(flag)

    def train(self, job: TrainJob) -> None:
        """One worker, here: the splits read whole, the loop run in this process."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables(pq.read_table(path, columns=job.columns,
                                               filesystem=job.filesystem) for path in job.paths)
        splits = {part: job.split(table, part=part, **job.split_args) for part in job.splits}
        progress = StageProgress("train", job.total_steps, "steps", initial=job.first_step,
                                 live=self.live_progress)
        try:
            job.loop(_Context(splits, progress), job.config)
        finally:
            progress.close()


class _Context:
    """TrainContext of the single worker."""

    rank, world_size = 0, 1

    def __init__(self, splits: dict, progress: StageProgress):
        import torch

        self.device = torch.device("cpu")
        self._splits, self._progress = splits, progress

    def batches(self, split: str, batch_size: int | None = None):
        for batch in self._splits[split].to_batches(max_chunksize=batch_size):
            yield {name: column.to_numpy(zero_copy_only=False)
                   for name, column in zip(batch.schema.names, batch.columns)}

    def prepare_model(self, model):
        return model

    def report(self, metrics: dict) -> None:
        pass

    def broadcast(self, value):
        return value

    def say(self, text: str) -> None:
        self._progress.say(text)

    def post(self, step: int, facts: str) -> None:
        if step > self._progress.done:
            self._progress.advance(step - self._progress.done, facts)
