"""A training job on Ray Train: the data as Ray Datasets, the loop on TorchTrainer workers, and
its progress on the driver's terminal while the steps run elsewhere.

Rank 0 posts its step, figures and messages to a small actor (the stage's loop rate-limits
them); a thread of the driver reads it and moves the stage's bar (or writes its bounded lines,
progress.py). The workers print nothing themselves: Ray Train would forward each line twice
(its print patch logs it, and the worker's captured stdout repeats it).
"""
from __future__ import annotations

import threading

from ..progress import StageProgress
from .base import TrainJob

POLL_INTERVAL_S = 1.0


class _Board:
    """The actor between rank 0 and the driver."""

    def __init__(self):
        self.step, self.facts, self.messages = None, None, []

    def post(self, step: int | None, facts: str | None, messages: list[str]) -> None:
        if step is not None:
            self.step, self.facts = step, facts
        self.messages.extend(messages)

    def take(self) -> tuple[int | None, str | None, list[str]]:
        messages, self.messages = self.messages, []
        return self.step, self.facts, messages


class _Progress:
    """The driver's side: `with _Progress(...) as p:` around trainer.fit(), passing `p.actor`
    to the workers."""

    def __init__(self, total_steps: int, first_step: int, live: bool | None):
        import ray

        self.actor = ray.remote(num_cpus=0)(_Board).remote()
        self.progress = StageProgress("train", total_steps, "steps", initial=first_step,
                                      live=live)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="train-progress", daemon=True)

    def __enter__(self) -> "_Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()
        self.progress.close()

    def _follow(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            self._poll()

    def _poll(self) -> None:
        import ray

        try:
            step, facts, messages = ray.get(self.actor.take.remote(), timeout=30)
        except Exception:  # the board is lost (a cluster being torn down): only the bar stops
            return
        for text in messages:
            self.progress.say(text)
        if step is not None and step > self.progress.done:
            self.progress.advance(step - self.progress.done, facts)


class _Context:
    """TrainContext on a Ray Train worker."""

    def __init__(self, board):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._board = board if self.rank == 0 else None

    def batches(self, split: str, batch_size: int | None = None):
        import ray.train

        kwargs = {} if batch_size is None else {"batch_size": batch_size}
        return ray.train.get_dataset_shard(split).iter_batches(batch_format="numpy", **kwargs)

    def prepare_model(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model) if self.world_size > 1 else model

    def report(self, metrics: dict) -> None:
        import ray.train

        ray.train.report(metrics)

    def broadcast(self, value):
        if self.world_size == 1:
            return value
        import torch.distributed

        # over the process group Ray Train set up for DDP (gloo on CPUs, NCCL on GPUs)
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def say(self, text: str) -> None:
        if self._board is not None:
            self._board.post.remote(None, None, [text])

    def post(self, step: int, facts: str) -> None:
        if self._board is not None:
            self._board.post.remote(step, facts, [])


def _worker(cfg: dict) -> None:
    job: TrainJob = cfg["job"]
    job.loop(_Context(cfg["board"]), job.config)


def _datasets(job: TrainJob) -> dict:
    import ray.data

    ds = ray.data.read_parquet(job.paths, filesystem=job.filesystem).select_columns(job.columns)
    # (a copy of the driver's DataContext, shared by the datasets derived from `ds`)
    # blocks in file order also when materialised here: one seed, the same weights
    ds.context.execution_options.preserve_order = True
    # the workers iterate these in Ray Train's processes, whose progress bars would be redrawn
    # into the driver's log line after line; the stage's own progress says it all
    ds.context.enable_progress_bars = False
    datasets = {part: ds.map_batches(job.split, batch_format="pyarrow",
                                     fn_kwargs={**job.split_args, "part": part})
                for part in job.splits}
    if job.materialize:
        # read and split once, before the trainer holds its CPUs (not once per epoch)
        datasets = {part: d.materialize() for part, d in datasets.items()}
    return datasets


def run_training(job: TrainJob, live: bool | None) -> None:
    from ray.train import DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    options = DataConfig.default_ingest_options()
    options.preserve_order = True  # with one worker, the same seed trains the same weights
    with _Progress(job.total_steps, job.first_step, live) as progress:
        TorchTrainer(
            _worker,
            train_loop_config={"job": job, "board": progress.actor},
            scaling_config=ScalingConfig(
                num_workers=job.num_workers, use_gpu=job.use_gpu,
                resources_per_worker={"CPU": job.cpus_per_worker,
                                      **({"memory": job.memory_bytes} if job.memory_bytes else {})}),
            run_config=RunConfig(name="ray_train", storage_path=job.storage_path,
                                 storage_filesystem=job.filesystem,
                                 failure_config=FailureConfig(max_failures=job.max_failures)),
            datasets=_datasets(job),
            dataset_config=DataConfig(datasets_to_split=[job.splits[0]], execution_options=options),
        ).fit()
