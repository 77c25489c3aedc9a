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
from ..encoder import (NORMALIZATION_FILE, EmbeddingNormalization, ProsodicSequenceEncoder,
                       embed_utterances, load_encoder, make_optimizer, save_encoder)
from ..encoder.loop import paired_batches, train_step, training_batches, validation_metrics
from ..encoder.split import is_validation, split_position
from ..encoder.memory import available_memory_bytes, plan_training_memory
from ..encoder.precision import compute_dtype
from ..errors import ConfigError
from ..storage import Location
from .base import SUCCESS, Stage
from .parts import complete_parts
from .train_progress import StepReporter, TrainProgress

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

    def save(self, model: ProsodicSequenceEncoder, optimizer, scheduler, state: dict,
             normalization: EmbeddingNormalization | None = None) -> None:
        name = f"step-{state['step']:08d}-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory() as tmp:
            save_encoder(tmp, model)
            if normalization is not None:
                with open(os.path.join(tmp, NORMALIZATION_FILE), "w") as fh:
                    fh.write(normalization.to_json())
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

    def latest(self) -> Location:
        """The folder of the latest checkpoint (its config, weights and normalisation)."""
        return self.folder.child(self.folder.child(STATE).read_json()["folder"])


def _train_loop(cfg: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch

    stage: TrainStage = cfg["stage"]
    tc: TrainStageConfig = cfg["train"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, round(tc.cpus_per_worker)))
    ckpt = EncoderCheckpoint(stage.folder)
    torch.manual_seed(tc.seed)
    if ckpt.exists():
        model, training, state = ckpt.load()
    else:
        model, training, state = ProsodicSequenceEncoder(**cfg["model"]), None, {"step": 0, "epoch": 0}
    checkpointing = cfg.get("activation_checkpointing", False)
    if device.type == "cuda":
        # the driver cannot see a GPU's memory: size the step here, before the first one, and
        # stop with the same ConfigError as on CPUs when even checkpointing cannot fit it
        rows = tc.batch_size * (2 if tc.contrastive_weight else 1)
        checkpointing, _ = plan_training_memory(cfg["model"], rows, tc.max_len,
                                                torch.cuda.mem_get_info(device)[0],
                                                tc.activation_checkpointing)
    model.activation_checkpointing = checkpointing
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
    validation = _held_out(ray.train, "validation", tc.validation_max_tokens) if rank == 0 else []
    t_start = time.perf_counter()
    board = StepReporter(cfg["board"] if rank == 0 else None, cfg["total_steps"])
    board.say(f"encoder: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
              f"{world} worker(s) on {device} in {compute_dtype(device, tc.bf16)}, "
              f"steps {step} -> {cfg['total_steps']}, "
              f"{len(validation)} validation utterances")

    def validate() -> None:
        if rank == 0 and validation:
            row = {"kind": "validation", "step": step, "epoch": epoch,
                   **validation_metrics(model, validation, tc.max_len, tc.batch_size, device,
                                        tc.seed, tc.bf16)}
            metrics.append(row)
            board.validated(row["loss"])

    while step < cfg["total_steps"]:
        # each rank repeats its shard until the common step count: DDP ranks stay in lock-step
        rng = np.random.default_rng([tc.seed, rank, epoch])
        pools = (b["tokens"] for b in shard.iter_batches(
            batch_size=tc.batch_size * tc.pool_batches, batch_format="numpy"))
        epoch_stats = []
        batches = (paired_batches if tc.contrastive_weight else training_batches)(
            pools, tc.batch_size, tc.max_len, rng)
        for batch in batches:
            m = train_step(ddp, optimizer, scheduler, batch, device, tc.grad_clip, tc.bf16,
                           tc.contrastive_weight, tc.contrastive_temperature)
            step += 1
            epoch_stats.append(m)
            board.stepped(step, m, world)
            if rank == 0 and (step % tc.log_every == 0 or step == cfg["total_steps"]):
                row = {"kind": "step", "step": step, "epoch": epoch, **m,
                       "elapsed_s": time.perf_counter() - t_start}
                metrics.append(row)
            if step >= cfg["total_steps"]:
                break
            if step % tc.checkpoint_every == 0:
                if rank == 0:
                    ckpt.save(model, optimizer, scheduler,
                              {"step": step, "epoch": epoch, "metrics": metrics})
                ray.train.report({"step": step, "loss": m["loss"]})
        if rank == 0 and epoch_stats:
            means = {k: float(np.mean([s[k] for s in epoch_stats])) for k in epoch_stats[0]
                     if k in ("loss", "accuracy", "contrastive", "padding_fraction")}
            metrics.append({"kind": "epoch", "step": step, "epoch": epoch, **means,
                            "steps": len(epoch_stats),
                            "tokens_per_s": float(np.mean([s["tokens_per_s"] for s in epoch_stats])) * world})
            validate()
        epoch += 1
    if rank == 0:
        if not any(m["kind"] == "validation" and m["step"] == step for m in metrics):
            validate()  # resumed at the last step, or it ended inside an epoch
        normalization = None
        if tc.normalization != "none":
            sample = _held_out(ray.train, "normalization", None)
            if len(sample) >= 2:
                pooled = embed_utterances(model, sample, tc.batch_size, bf16=tc.bf16)
                normalization = EmbeddingNormalization.fit(pooled, tc.normalization)
        ckpt.save(model, optimizer, scheduler, {"step": step, "epoch": epoch, "metrics": metrics},
                  normalization)
    ray.train.report({"step": step})


def _held_out(train_module, name: str, max_tokens: int | None) -> list[np.ndarray]:
    """The token sequences of an unsplit dataset in utt_id order (so that their number does not
    depend on the order blocks arrive in), up to `max_tokens` tokens."""
    rows = []
    for batch in train_module.get_dataset_shard(name).iter_batches(batch_format="numpy"):
        rows.extend(zip(batch["utt_id"], batch["tokens"]))
    rows.sort(key=lambda r: r[0])
    out, total = [], 0
    for _, tokens in rows:
        if max_tokens is not None and total >= max_tokens:
            break
        out.append(np.asarray(tokens))
        total += len(tokens)
    return out


def _split_rows(table, key: str, fraction: float, seed: int, part: str, sample: float = 1.0):
    """The rows of one split: `part` is "train", "validation" or "normalization" (a
    deterministic `sample` share of the training rows)."""
    import pyarrow as pa

    keys = [str(k) for k in table.column(key).to_pylist()]
    held = [is_validation(k, fraction, seed) for k in keys]
    if part == "validation":
        mask = held
    elif part == "train":
        mask = [not h for h in held]
    else:
        ids = table.column("utt_id").to_pylist()
        mask = [not h and split_position(u, seed + 1) < sample for h, u in zip(held, ids)]
    return table.filter(pa.array(mask, pa.bool_())).select(["utt_id", "tokens"])


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
        from ray.train import DataConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        if self.is_complete():
            state = self.folder.child(SUCCESS).read_json()
            echo(f"encoder: already trained ({state['step']} steps); nothing to do")
            return state
        parts = sorted(self._token_parts(), key=lambda p: p.path)
        executor.connect()
        use_gpu = (self.config.use_gpu if self.config.use_gpu is not None
                   else executor.cluster_gpus() > 0)
        tc = self.config.resolved(use_gpu, self._largest_node_cpus())
        tc = tc.model_copy(update={"max_len": min(tc.max_len, tc.pos_max_len)})
        key = self._check_key(parts[0], tc.validation_key)
        n_sequences = sum(pq.read_metadata(io.BytesIO(p.read_bytes())).num_rows for p in parts)
        n_train = round(n_sequences * (1 - tc.validation_fraction))
        steps_per_epoch = max(1, math.ceil(n_train / (tc.batch_size * tc.num_workers)))
        total_steps = tc.max_steps or max(1, int(round(tc.epochs * steps_per_epoch)))
        model_kwargs = tc.model_kwargs(self._n_clusters(parts))
        # size the step before any worker starts: a batch that cannot fit is a ConfigError now,
        # not Ray's out-of-memory killer later; each worker reserves its estimate from Ray
        # (CPU workers: the estimate is of host memory, float32; a GPU worker sizes its own
        # step against its device's free memory, see _train_loop)
        memory = ""
        checkpointing, need = bool(tc.activation_checkpointing), 0
        if not use_gpu:
            worker_memory = self._worker_memory(executor)
            # the contrastive loss sees two crops of each utterance: twice the rows
            rows = tc.batch_size * (2 if tc.contrastive_weight else 1)
            checkpointing, need = plan_training_memory(
                model_kwargs, rows, tc.max_len, worker_memory,
                tc.activation_checkpointing)
            memory = f", ~{need / 2**30:.1f} of {worker_memory / 2**30:.1f} GiB per worker"
        shape = f"{model_kwargs['hidden_dim']} x {model_kwargs['num_layers']} layers"
        echo(f"encoder: {n_sequences} sequences ({tc.validation_fraction:.0%} held out by "
             f"{key}), {shape}, {total_steps} steps of {tc.batch_size} x {tc.num_workers} "
             f"worker(s) on {'GPU' if use_gpu else f'CPU ({tc.cpus_per_worker:g} each)'}"
             f"{memory}"
             f"{', activation checkpointing' if checkpointing else ''} -> {self.folder.uri}")
        validation = {"fraction": tc.validation_fraction, "key": key, "seed": tc.seed}
        ckpt = EncoderCheckpoint(self.folder)
        first_step = ckpt.folder.child(STATE).read_json()["step"] if ckpt.exists() else 0
        progress = TrainProgress(total_steps, first_step, executor.live_progress)
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={"stage": self, "train": tc, "model": model_kwargs,
                               "total_steps": total_steps, "board": progress.actor,
                               "warmup_steps": min(tc.warmup_steps, total_steps // 10),
                               "activation_checkpointing": checkpointing},
            scaling_config=ScalingConfig(
                num_workers=tc.num_workers, use_gpu=use_gpu,
                resources_per_worker={"CPU": tc.cpus_per_worker,
                                      **({"memory": need} if need else {})}),
            # Ray Train's own run state lives beside our checkpoint (shared by every node)
            run_config=RunConfig(name="ray_train", storage_path=self.folder.child("_ray").path,
                                 storage_filesystem=self._arrow_fs(),
                                 failure_config=FailureConfig(max_failures=2)),
            datasets=self._datasets(parts, tc, key, n_train),
            # blocks in file order: with one worker, the same seed trains the same weights
            dataset_config=DataConfig(datasets_to_split=["train"],
                                      execution_options=_ordered_ingest()),
        )
        with progress:
            trainer.fit()
        _, _, state = ckpt.load()
        with tempfile.TemporaryDirectory() as tmp:
            names = [n for n in ckpt.latest().list_names() if n != TRAINING_STATE]
            ckpt.latest().download(names, tmp)
            self.folder.upload(tmp)
        metrics = state.pop("metrics", [])
        self.folder.child("metrics.jsonl").write_atomic(
            "".join(json.dumps(m) + "\n" for m in metrics).encode())
        loss, kind, accuracy = _final_loss(metrics)
        summary = {"step": state["step"], "epochs": state["epoch"], "model": model_kwargs,
                   "final_loss": loss, "final_loss_kind": kind, "final_accuracy": accuracy,
                   "validation": validation,
                   "normalization": tc.normalization if NORMALIZATION_FILE in names else "none"}
        self.folder.child(SUCCESS).write_json(summary)
        echo(f"encoder: {summary['step']} steps, {kind} loss {loss:.4f}, masked-token accuracy "
             f"{accuracy:.3f}; normalisation: {summary['normalization']}")
        return summary

    def _check_key(self, part: Location, key: str) -> str:
        with part.fs.open(part.path, "rb") as fh:
            names = pq.read_schema(fh).names
        if key not in names:
            raise ConfigError(f"train.validation_key: no column {key!r} in tokens/; its columns "
                              f"are {', '.join(n for n in names if n != 'tokens')}")
        return key

    def _datasets(self, parts: list[Location], tc: TrainStageConfig, key: str,
                  n_train: int) -> dict:
        import ray.data

        columns = list(dict.fromkeys(["utt_id", "tokens", key]))
        ds = ray.data.read_parquet([p.path for p in parts],
                                   filesystem=self._arrow_fs()).select_columns(columns)
        # (a copy of the driver's DataContext, shared by the datasets derived from `ds`)
        # blocks in file order also when materialised here: one seed, the same weights
        ds.context.execution_options.preserve_order = True
        # the workers iterate these in Ray Train's processes, whose progress bars would be
        # redrawn into the driver's log line after line; our own per-step lines say it all
        ds.context.enable_progress_bars = False
        split = {"key": key, "fraction": tc.validation_fraction, "seed": tc.seed}
        sample = min(1.0, 1.5 * tc.normalization_sequences / max(1, n_train))
        datasets = {part: ds.map_batches(_split_rows, batch_format="pyarrow",
                                         fn_kwargs={**split, "part": part, "sample": sample})
                    for part in ("train", "validation", "normalization")}
        if sum(p.fs.size(p.path) for p in parts) < SMALL_CORPUS_BYTES:
            # read and split once, before the trainer holds its CPUs (not once per epoch)
            datasets = {part: d.materialize() for part, d in datasets.items()}
        return datasets

    @staticmethod
    def _largest_node_cpus() -> float:
        import ray

        return max((float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")),
                   default=1.0)

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


def _ordered_ingest():
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def _final_loss(metrics: list[dict]) -> tuple[float, str, float]:
    """The loss to report: the last validation, else the mean over the last epoch's steps."""
    for kind, said in (("validation", "validation"), ("epoch", "last-epoch mean")):
        rows = [m for m in metrics if m["kind"] == kind]
        if rows:
            return rows[-1]["loss"], said, rows[-1]["accuracy"]
    return float("nan"), "none", float("nan")
