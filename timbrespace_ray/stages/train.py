"""Train stage: masked-token pretraining of the encoder on `tokens/` with Ray Train.

Our own checkpoint in `encoder/checkpoint/` (config + weights + optimizer + step, no pickle)
is written by rank 0 every `checkpoint_every` steps; a rerun (or Ray Train restarting failed
workers) resumes from it. `encoder/metrics.jsonl` holds one line per logged step and epoch.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
import time
import uuid

import numpy as np
import pyarrow.parquet as pq
import torch

from ..config import TrainStageConfig
from ..encoder import ProsodicSequenceEncoder, load_encoder, make_optimizer, save_encoder
from ..encoder.loop import train_step, training_batches
from ..encoder.memory import available_memory_bytes, plan_training_memory
from ..storage import Location
from .base import SUCCESS, Stage
from .parts import complete_parts

CHECKPOINT = "checkpoint"
TRAINING_STATE = "training_state.pt"
STATE = "state.json"
SMALL_CORPUS_BYTES = 256 << 20


class EncoderCheckpoint:
    """The latest training state under `<encoder>/checkpoint/`, on any filesystem.

    Each save writes a new `step-<n>-<id>/` folder (config, weights, optimizer and scheduler)
    and then `state.json`, one atomic write naming that folder: a kill at any moment leaves the
    previous checkpoint whole and referenced. Folders no longer named are removed after a save.
    """

    def __init__(self, folder: Location):
        self.folder = folder.child(CHECKPOINT)

    def exists(self) -> bool:
        return self.folder.child(STATE).exists()

    def save(self, model: ProsodicSequenceEncoder, optimizer, scheduler, state: dict) -> None:
        name = f"step-{state['step']:08d}-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory() as tmp:
            save_encoder(tmp, model)
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       os.path.join(tmp, TRAINING_STATE))
            self.folder.child(name).upload(tmp)
        self.folder.child(STATE).write_json({**state, "folder": name})
        for old in self.folder.list_names():
            if old.startswith("step-") and old != name:
                self.folder.child(old).remove()

    def load(self) -> tuple[ProsodicSequenceEncoder, dict, dict]:
        state = self.folder.child(STATE).read_json()
        with tempfile.TemporaryDirectory() as tmp:
            self.folder.child(state.pop("folder")).download(
                ["config.json", "model.pt", TRAINING_STATE], tmp)
            model = load_encoder(tmp)
            training = torch.load(os.path.join(tmp, TRAINING_STATE), weights_only=True)
        return model, training, state


def _train_loop(cfg: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch

    stage: TrainStage = cfg["stage"]
    tc: TrainStageConfig = stage.config
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(tc.cpus_per_worker)))
    ckpt = EncoderCheckpoint(stage.folder)
    torch.manual_seed(tc.seed)
    if ckpt.exists():
        model, training, state = ckpt.load()
    else:
        model, training, state = ProsodicSequenceEncoder(**cfg["model"]), None, {"step": 0, "epoch": 0}
    model.activation_checkpointing = cfg.get("activation_checkpointing", False)
    model.to(device)
    optimizer, scheduler = make_optimizer(model, tc.lr, tc.weight_decay, cfg["warmup_steps"],
                                          cfg["total_steps"])
    if training:
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
    ddp = ray.train.torch.prepare_model(model) if world > 1 else model
    shard = ray.train.get_dataset_shard("train")
    step, epoch = state["step"], state["epoch"]
    metrics: list[dict] = state.get("metrics", [])
    max_len = tc.max_len or tc.pos_max_len
    t_start = time.perf_counter()
    if rank == 0:
        print(f"[train] {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
              f"{world} worker(s) on {device}, steps {step} -> {cfg['total_steps']}", flush=True)
    while step < cfg["total_steps"]:
        # each rank repeats its shard until the common step count: DDP ranks stay in lock-step
        rng = np.random.default_rng([tc.seed, rank, epoch])
        pools = (b["tokens"] for b in shard.iter_batches(
            batch_size=tc.batch_size * tc.pool_batches, batch_format="numpy"))
        epoch_stats = []
        for batch in training_batches(pools, tc.batch_size, max_len, rng):
            m = train_step(ddp, optimizer, scheduler, batch, device, tc.grad_clip, tc.bf16)
            step += 1
            epoch_stats.append(m)
            if rank == 0 and (step % tc.log_every == 0 or step == cfg["total_steps"]):
                row = {"kind": "step", "step": step, "epoch": epoch, **m,
                       "elapsed_s": time.perf_counter() - t_start}
                metrics.append(row)
                print(f"[train] step {step}/{cfg['total_steps']} epoch {epoch} loss {m['loss']:.4f} "
                      f"acc {m['accuracy']:.3f} lr {m['lr']:.2e} {m['tokens_per_s'] * world:.0f} tok/s",
                      flush=True)
            if step % tc.checkpoint_every == 0 or step >= cfg["total_steps"]:
                if rank == 0:
                    ckpt.save(model, optimizer, scheduler,
                              {"step": step, "epoch": epoch, "metrics": metrics})
                ray.train.report({"step": step, "loss": m["loss"]})
            if step >= cfg["total_steps"]:
                break
        if rank == 0 and epoch_stats:
            metrics.append({"kind": "epoch", "step": step, "epoch": epoch,
                            "loss": float(np.mean([s["loss"] for s in epoch_stats])),
                            "accuracy": float(np.mean([s["accuracy"] for s in epoch_stats])),
                            "tokens_per_s": float(np.mean([s["tokens_per_s"] for s in epoch_stats])) * world,
                            "padding_fraction": float(np.mean([s["padding_fraction"] for s in epoch_stats]))})
        epoch += 1
    if rank == 0:
        ckpt.save(model, optimizer, scheduler, {"step": step, "epoch": epoch, "metrics": metrics})


class TrainStage(Stage):
    name = "encoder"

    def __init__(self, output: Location, config: TrainStageConfig, storage_options: dict | None = None):
        super().__init__(output)
        self.config = config
        self.storage_options = storage_options or {}

    def _token_parts(self) -> list[Location]:
        return complete_parts(self.output, "tokens", "training")

    def _n_clusters(self, parts: list[Location]) -> int:
        with parts[0].fs.open(parts[0].path, "rb") as fh:
            meta = pq.read_schema(fh).metadata or {}
        settings = json.loads(meta.get(b"timbrespace_ray.settings", b"{}"))
        return int(settings.get("n_clusters", 120))

    def run(self, executor, echo=print) -> dict:
        """Train (or resume) to the configured number of steps; returns the final state."""
        import ray
        import ray.data
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        if self.is_complete():
            state = self.folder.child(SUCCESS).read_json()
            echo(f"encoder: already trained ({state['step']} steps); nothing to do")
            return state
        parts = self._token_parts()
        executor.connect()
        tc = self.config
        n_sequences = sum(pq.read_metadata(io.BytesIO(p.read_bytes())).num_rows for p in parts)
        steps_per_epoch = max(1, math.ceil(n_sequences / (tc.batch_size * tc.num_workers)))
        total_steps = tc.max_steps or max(1, int(round(tc.epochs * steps_per_epoch)))
        use_gpu = tc.use_gpu if tc.use_gpu is not None else executor.cluster_gpus() > 0
        model_kwargs = tc.model_kwargs(self._n_clusters(parts))
        # size the step before any worker starts: a batch that cannot fit is a ConfigError now,
        # not Ray's out-of-memory killer later; each worker reserves its estimate from Ray
        # (CPU workers: the estimate is of host memory, float32; GPU memory is not sized here)
        memory = ""
        checkpointing, need = bool(tc.activation_checkpointing), 0
        if not use_gpu:
            worker_memory = self._worker_memory(executor)
            checkpointing, need = plan_training_memory(
                model_kwargs, tc.batch_size, tc.max_len or tc.pos_max_len, worker_memory,
                tc.activation_checkpointing)
            memory = f", ~{need / 2**30:.1f} of {worker_memory / 2**30:.1f} GiB per worker"
        echo(f"encoder: {n_sequences} sequences, {total_steps} steps of {tc.batch_size} x "
             f"{tc.num_workers} worker(s), {'GPU' if use_gpu else 'CPU'}{memory}"
             f"{', activation checkpointing' if checkpointing else ''} -> {self.folder.uri}")
        fs = self._arrow_fs()
        ds = ray.data.read_parquet([p.path for p in parts], filesystem=fs).select_columns(["tokens"])
        if sum(p.fs.size(p.path) for p in parts) < SMALL_CORPUS_BYTES:
            ds = ds.materialize()  # read once, not once per epoch
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={"stage": self, "model": model_kwargs, "total_steps": total_steps,
                               "warmup_steps": min(tc.warmup_steps, total_steps // 10),
                               "activation_checkpointing": checkpointing},
            scaling_config=ScalingConfig(
                num_workers=tc.num_workers, use_gpu=use_gpu,
                resources_per_worker={"CPU": tc.cpus_per_worker,
                                      **({"memory": need} if need else {})}),
            # Ray Train's own run state lives beside our checkpoint (shared by every node)
            run_config=RunConfig(name="ray_train", storage_path=self.folder.child("_ray").path,
                                 storage_filesystem=fs,
                                 failure_config=FailureConfig(max_failures=2)),
            datasets={"train": ds},
        )
        trainer.fit()
        model, _, state = EncoderCheckpoint(self.folder).load()
        with tempfile.TemporaryDirectory() as tmp:
            save_encoder(tmp, model)
            self.folder.upload(tmp)
        metrics = state.pop("metrics", [])
        self.folder.child("metrics.jsonl").write_atomic(
            "".join(json.dumps(m) + "\n" for m in metrics).encode())
        summary = {"step": state["step"], "epochs": state["epoch"], "model": model.config,
                   "final_loss": next((m["loss"] for m in reversed(metrics) if m["kind"] == "step"), None)}
        self.folder.child(SUCCESS).write_json(summary)
        echo(f"encoder: {summary['step']} steps, final loss {summary['final_loss']}")
        return summary

    def _worker_memory(self, executor) -> int:
        """Bytes of memory each of `num_workers` training workers can have: the largest share
        that places them all on the nodes' Ray `memory` resources (an embedded Ray: at most
        this machine's available memory)."""
        import ray

        nodes = [float(n["Resources"].get("memory", 0)) for n in ray.nodes() if n.get("Alive")]
        if not getattr(executor, "address", None):
            nodes = [min(m, available_memory_bytes()) if m else available_memory_bytes()
                     for m in nodes or [0.0]]
        workers = self.config.num_workers
        shares = [m / k for m in nodes for k in range(1, workers + 1)]
        fitting = [s for s in shares if sum(int(m // s) for m in nodes) >= workers]
        return int(max(fitting, default=0))

    def _arrow_fs(self):
        import pyarrow.fs

        if self.output.is_local:
            return pyarrow.fs.LocalFileSystem()
        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(self.output.fs))
