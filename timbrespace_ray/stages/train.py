"""Train stage: masked-token pretraining of the encoder on `tokens/`, as a training job the
executor runs (Ray Train on Ray, one process locally).

Our own checkpoint in `_run/train/checkpoint/` (config + weights + optimizer + step + early
stopping's state, no pickle) is written by rank 0 every `checkpoint_every` steps; a rerun (or Ray
Train restarting failed workers) resumes from it. Every `validation_every` steps rank 0 scores
the held-out utterances and decides, for every worker, whether to stop early. The finished
model (the best validation's weights where early stopping is on) goes to `encoder/` with
`metrics.jsonl` (one line per logged step, epoch and validation) and `training.json` (steps
planned and run, why it stopped, losses, the validation split).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid

import numpy as np
import torch

from ..config import TrainStageConfig
from ..encoder import (NORMALIZATION_FILE, EmbeddingNormalization, ProsodicSequenceEncoder,
                       embed_utterances, load_encoder, make_optimizer, save_encoder)
from ..clustering.model import MODEL_FILE
from ..encoder.checkpoint import WEIGHTS_FILE
from ..encoder.codebook import (PRETRAINED, PRETRAINED_NAME, SHAPE_KEYS, same_shape,
                                translated_state)
from ..encoder.early_stopping import EarlyStopping
from ..encoder.loop import paired_batches, train_step, training_batches, validation_metrics
from ..encoder.split import is_validation, split_position
from ..encoder.memory import plan_training_memory
from ..encoder.precision import compute_dtype
from ..errors import ConfigError
from ..executors.base import Executor, NodeCapacity, TrainContext, TrainJob
from ..storage import Location, redact_uri
from ..tables import read_schema, row_count, settings_of
from .base import Stage, StageSummary
from .embed import codebook_translation, read_encoder
from .parts import complete_parts

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
TRAINING_STATE = "training_state.pt"
BEST_WEIGHTS = "best.pt"  # the best validation's state dict, when early stopping keeps it
STATE = "state.json"
TRAINING_RECORD = "training.json"  # in encoder/: how it was trained, its validation split
SMALL_CORPUS_BYTES = 256 << 20
POST_INTERVAL_S = 1.0  # rank 0's progress, at most this often


class EncoderCheckpoint:
    """The latest training state under `<encoder>/checkpoint/`, on any filesystem.

    Each save writes a new `step-<n>-<id>/` folder (config, weights, optimizer and scheduler,
    the best validation's weights where kept) and then `state.json`, one atomic write naming
    that folder: a kill at any moment leaves the previous checkpoint whole and referenced.
    Folders no longer named are removed after a save.
    """

    def __init__(self, folder: Location):
        self.folder = folder

    def exists(self) -> bool:
        return self.folder.child(STATE).exists()

    def save(self, model: ProsodicSequenceEncoder, optimizer, scheduler, state: dict,
             normalization: EmbeddingNormalization | None = None,
             best: dict[str, torch.Tensor] | None = None) -> None:
        name = f"step-{state['step']:08d}-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory() as tmp:
            save_encoder(tmp, model)
            if normalization is not None:
                with open(os.path.join(tmp, NORMALIZATION_FILE), "w") as fh:
                    fh.write(normalization.to_json())
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       os.path.join(tmp, TRAINING_STATE))
            if best is not None:
                torch.save(best, os.path.join(tmp, BEST_WEIGHTS))
            self.folder.child(name).upload(tmp)
        self.folder.child(STATE).write_json({**state, "folder": name})
        for old in self.folder.list_names():
            if old.startswith("step-") and old != name:
                self.folder.child(old).remove()

    def state(self) -> dict:
        """The latest checkpoint's state.json: step, epoch, metrics, early stopping's state,
        and the folder holding its files."""
        return self.folder.child(STATE).read_json()

    def load(self) -> tuple[ProsodicSequenceEncoder, dict, dict]:
        """The model, {optimizer, scheduler[, best]} state dicts, and the state.json."""
        state = self.state()
        folder = self.folder.child(state.pop("folder"))
        with tempfile.TemporaryDirectory() as tmp:
            folder.download(["config.json", "model.pt", TRAINING_STATE], tmp)
            model = load_encoder(tmp)
            training = torch.load(os.path.join(tmp, TRAINING_STATE), weights_only=True)
            if folder.child(BEST_WEIGHTS).exists():
                folder.download([BEST_WEIGHTS], tmp)
                training["best"] = torch.load(os.path.join(tmp, BEST_WEIGHTS), weights_only=True)
        return model, training, state

    def latest(self) -> Location:
        """The folder of the latest checkpoint (its config, weights and normalisation)."""
        return self.folder.child(self.state()["folder"])


class StepReporter:
    """Rank 0's progress and messages, at most once a POST_INTERVAL_S (and at the last step)."""

    def __init__(self, ctx: TrainContext, total_steps: int):
        self.ctx, self.total = ctx, total_steps
        self.validation_loss: float | None = None
        self._posted = 0.0

    def validated(self, loss: float) -> None:
        self.validation_loss = loss

    def stepped(self, step: int, m: dict, world: int) -> None:
        now = time.monotonic()
        if now - self._posted < POST_INTERVAL_S and step < self.total:
            return
        self._posted = now
        held_out = ("" if self.validation_loss is None
                    else f", validation loss {self.validation_loss:.3f}")
        self.ctx.post(step, f"loss {m['loss']:.3f}, accuracy {m['accuracy']:.3f}"
                            f"{held_out}, {m['tokens_per_s'] * world:,.0f} tokens/s")


def _train_loop(ctx: TrainContext, cfg: dict) -> None:
    """Runs on every training worker."""
    tc: TrainStageConfig = cfg["train"]
    rank, world, device = ctx.rank, ctx.world_size, ctx.device
    torch.set_num_threads(max(1, round(tc.cpus_per_worker)))
    ckpt = EncoderCheckpoint(cfg["checkpoint"])
    torch.manual_seed(tc.seed)
    if ckpt.exists():
        model, training, state = ckpt.load()
    else:
        model, training, state = ProsodicSequenceEncoder(**cfg["model"]), {}, {"step": 0, "epoch": 0}
        if cfg.get("initial_weights") is not None:
            model.load_state_dict(cfg["initial_weights"])
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
    ddp = ctx.prepare_model(model)
    step, epoch = state["step"], state["epoch"]
    metrics: list[dict] = state.get("metrics", [])
    early = EarlyStopping.resumed(tc.early_stopping_patience, tc.early_stopping_min_delta,
                                  state.get("early_stopping"))
    # the best validation's weights (rank 0, early stopping on)
    best = training.get("best") if early.enabled else None
    stopped = state.get("stopped_early", False)
    every = cfg["validation_every"]
    validation = _held_out(ctx, "validation", tc.validation_max_tokens) if rank == 0 else []
    t_start = time.perf_counter()
    board = StepReporter(ctx, cfg["total_steps"])
    ctx.say(f"train: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
            f"{world} worker(s) on {device} in {compute_dtype(device, tc.bf16)}, "
            f"steps {step} -> {step if stopped else cfg['total_steps']}, "
            f"{len(validation)} validation utterances every {every} steps"
            + (f", early stopping after {early.patience} without improvement" if early.enabled
               else ""))

    def validate() -> None:
        nonlocal best
        if rank == 0 and validation:
            row = {"kind": "validation", "step": step, "epoch": epoch,
                   **validation_metrics(model, validation, tc.max_len, tc.batch_size, device,
                                        tc.seed, tc.bf16)}
            metrics.append(row)
            board.validated(row["loss"])
            if early.update(step, row["loss"]) and early.enabled:
                best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def save(normalization: EmbeddingNormalization | None = None) -> None:
        ckpt.save(model, optimizer, scheduler,
                  {"step": step, "epoch": epoch, "metrics": metrics, "init": cfg.get("init"),
                   "early_stopping": early.state(), "stopped_early": stopped},
                  normalization, best)

    while step < cfg["total_steps"] and not stopped:
        # each rank repeats its shard until the common step count: DDP ranks stay in lock-step
        rng = np.random.default_rng([tc.seed, rank, epoch])
        pools = (b["tokens"] for b in ctx.batches("train", tc.batch_size * tc.pool_batches))
        epoch_stats = []
        batches = (paired_batches if tc.contrastive_weight else training_batches)(
            pools, tc.batch_size, tc.max_len, rng)
        for batch in batches:
            m = train_step(ddp, optimizer, scheduler, batch, device, tc.grad_clip, tc.bf16,
                           tc.contrastive_weight, tc.contrastive_temperature)
            step += 1
            epoch_stats.append(m)
            board.stepped(step, m, world)
            step_row = {"kind": "step", "step": step, "epoch": epoch, **m,
                        "elapsed_s": time.perf_counter() - t_start}
            if rank == 0 and (step % tc.log_every == 0 or step == cfg["total_steps"]):
                metrics.append(step_row)
            if step >= cfg["total_steps"]:
                break
            if step % every == 0:
                validate()
                # rank 0 decides: every worker stops at the same step
                stopped = ctx.broadcast(early.exhausted)
                if stopped:
                    if rank == 0 and step % tc.log_every:
                        metrics.append(step_row)  # the last step is always logged
                    break
            if step % tc.checkpoint_every == 0:
                if rank == 0:
                    save()
                ctx.report({"step": step, "loss": m["loss"]})
        if rank == 0 and epoch_stats:
            means = {k: float(np.mean([s[k] for s in epoch_stats])) for k in epoch_stats[0]
                     if k in ("loss", "accuracy", "contrastive", "padding_fraction")}
            metrics.append({"kind": "epoch", "step": step, "epoch": epoch, **means,
                            "steps": len(epoch_stats),
                            "tokens_per_s": float(np.mean([s["tokens_per_s"] for s in epoch_stats])) * world})
        epoch += 1
    if rank == 0:
        if not any(m["kind"] == "validation" and m["step"] == step for m in metrics):
            validate()  # the last step, or resumed at it
        encoder = model
        if best is not None:
            encoder = ProsodicSequenceEncoder(**model.config)
            encoder.load_state_dict(best)
            encoder.to(device)
        normalization = None
        if tc.normalization != "none":
            sample = _held_out(ctx, "normalization", None)
            if len(sample) >= 2:
                pooled = embed_utterances(encoder, sample, tc.batch_size, bf16=tc.bf16)
                normalization = EmbeddingNormalization.fit(pooled, tc.normalization)
        save(normalization)
    ctx.report({"step": step})


def _held_out(ctx: TrainContext, name: str, max_tokens: int | None) -> list[np.ndarray]:
    """The token sequences of an unsplit dataset in utt_id order (so that their number does not
    depend on the order blocks arrive in), up to `max_tokens` tokens."""
    rows = []
    for batch in ctx.batches(name):
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
    name = "train"
    fits = "encoder"

    def __init__(self, output: Location, config: TrainStageConfig,
                 storage_options: dict | None = None, use_gpu: bool = False):
        super().__init__(output)
        self.folder = output.child("encoder")
        self.config = config
        self.storage_options = storage_options or {}
        self.use_gpu = use_gpu
        self.checkpoint = EncoderCheckpoint(self.layout.state(self.name).child(CHECKPOINT))

    @classmethod
    def from_config(cls, cfg, output: Location, use_gpu: bool) -> "TrainStage":
        return cls(output, cfg.train, cfg.storage.storage_options, use_gpu)

    def execute(self, executor: Executor) -> StageSummary:
        """Train (or resume) to the configured number of steps."""
        # in path order, however they were listed: one seed, the same weights
        parts = sorted(complete_parts(self.layout, "tokens", self.output.child("tokens"),
                                      "training"), key=lambda p: p.path)
        use_gpu = self.use_gpu
        nodes = executor.nodes()
        tc = self.config.resolved(use_gpu, max((n.cpus for n in nodes), default=1.0))
        tc = tc.model_copy(update={"max_len": min(tc.max_len, tc.pos_max_len)})
        schema = read_schema(parts[0])
        key = _check_key(schema, tc.validation_key)
        n_sequences = sum(row_count(p) for p in parts)  # from the footers
        n_train = round(n_sequences * (1 - tc.validation_fraction))
        steps_per_epoch = tc.steps_per_epoch(n_train)
        total_steps = tc.planned_steps(n_train)
        every = tc.validation_every or steps_per_epoch
        model_kwargs = tc.model_kwargs(int(settings_of(schema).get("n_clusters", 120)))
        # size the step before any worker starts: a batch that cannot fit is a ConfigError now,
        # not the out-of-memory killer later; each worker reserves its estimate (CPU workers:
        # the estimate is of host memory, float32; a GPU worker sizes its own step against its
        # device's free memory, see _train_loop)
        memory = ""
        checkpointing, need = bool(tc.activation_checkpointing), 0
        if not use_gpu:
            worker_memory = _worker_memory(nodes, tc.num_workers)
            # the contrastive loss sees two crops of each utterance: twice the rows
            rows = tc.batch_size * (2 if tc.contrastive_weight else 1)
            checkpointing, need = plan_training_memory(
                model_kwargs, rows, tc.max_len, worker_memory,
                tc.activation_checkpointing)
            memory = f", ~{need / 2**30:.1f} of {worker_memory / 2**30:.1f} GiB per worker"
        shape = f"{model_kwargs['hidden_dim']} x {model_kwargs['num_layers']} layers"
        log.info("train: %d sequences (%.0f%% held out by %s), %s, %d steps (%.1f epochs) of "
                 "%d x %d worker(s) on %s%s%s -> %s", n_sequences, 100 * tc.validation_fraction,
                 key, shape, total_steps, total_steps / steps_per_epoch, tc.batch_size,
                 tc.num_workers,
                 "GPU" if use_gpu else f"CPU ({tc.cpus_per_worker:g} each)", memory,
                 ", activation checkpointing" if checkpointing else "", self.folder.uri)
        validation = {"fraction": tc.validation_fraction, "key": key, "seed": tc.seed}
        ckpt = self.checkpoint
        codebook = settings_of(schema).get("kmeans_model")
        init, initial_weights = ((ckpt.state().get("init", "unknown"), None) if ckpt.exists()
                                 else self._initial_weights(tc.init, model_kwargs, codebook))
        fs = _arrow_fs(self.output)
        executor.train(TrainJob(
            loop=_train_loop,
            config={"checkpoint": ckpt.folder, "train": tc, "model": model_kwargs,
                    "total_steps": total_steps, "validation_every": every,
                    "warmup_steps": min(tc.warmup_steps, total_steps // 10),
                    "activation_checkpointing": checkpointing,
                    "init": init, "initial_weights": initial_weights},
            paths=[p.path for p in parts], filesystem=fs,
            columns=list(dict.fromkeys(["utt_id", "tokens", key])),
            splits=("train", "validation", "normalization"), split=_split_rows,
            split_args={"key": key, "fraction": tc.validation_fraction, "seed": tc.seed,
                        "sample": min(1.0, 1.5 * tc.normalization_sequences / max(1, n_train))},
            materialize=sum(p.fs.size(p.path) for p in parts) < SMALL_CORPUS_BYTES,
            num_workers=tc.num_workers, use_gpu=use_gpu, cpus_per_worker=tc.cpus_per_worker,
            memory_bytes=need, storage_path=self.layout.state(self.name).child("ray").path,
            total_steps=total_steps,
            first_step=ckpt.state()["step"] if ckpt.exists() else 0))
        state = ckpt.state()  # what the run recorded: its weights are exported, not loaded
        names = _export(ckpt.latest(), self.folder)
        if codebook is not None:  # the codebook its token ids are ids of
            self.folder.child(MODEL_FILE).write_atomic(
                Location.of(codebook, self.storage_options).child(MODEL_FILE).read_bytes())
        metrics = state.pop("metrics", [])
        self.folder.child("metrics.jsonl").write_atomic(
            "".join(json.dumps(m) + "\n" for m in metrics).encode())
        loss, kind, accuracy = _final_loss(metrics)
        early = state.get("early_stopping") or {}
        kept = early.get("best_step") if BEST_WEIGHTS in names else None
        record = {"step": state["step"], "steps_planned": total_steps, "epochs": state["epoch"],
                  "stop_reason": "early stopping" if state.get("stopped_early") else "step budget",
                  "best_step": early.get("best_step"), "best_loss": early.get("best_loss"),
                  "encoder_step": state["step"] if kept is None else kept,
                  "early_stopping": {"patience": tc.early_stopping_patience,
                                     "min_delta": tc.early_stopping_min_delta,
                                     "validation_every": every},
                  "model": model_kwargs, "init": init,
                  "final_loss": loss, "final_loss_kind": kind, "final_accuracy": accuracy,
                  "validation": validation,
                  # the run whose tokens trained it: evaluate tells another run's utterances
                  # (never seen) from this run's (held out by `validation`, or not)
                  "trained_on": redact_uri(self.output.uri),
                  "normalization": tc.normalization if NORMALIZATION_FILE in names else "none"}
        self.folder.child(TRAINING_RECORD).write_json(record)
        return StageSummary("train", detail={**record, "text": _account(record)})

    def _initial_weights(self, init: str, model_kwargs: dict, codebook: str | None
                         ) -> tuple[str, dict | None]:
        """(what training starts from, for training.json; the state dict, None: random)."""
        if init == "scratch":
            return "scratch", None
        source = str(PRETRAINED) if init == PRETRAINED_NAME else init
        model = read_encoder(source, self.storage_options)
        if not same_shape(model, model_kwargs):
            shape = {k: getattr(model, k) for k in SHAPE_KEYS}
            if init != PRETRAINED_NAME:
                raise ConfigError(f"train.init {init}: its shape {shape} is not the model's "
                                  f"{ {k: model_kwargs[k] for k in SHAPE_KEYS} }")
            log.info("train: from scratch: the model's shape is not the pretrained encoder's "
                     "(%s); train.init: scratch says so", shape)
            return "scratch", None
        mapping = codebook_translation(source, codebook, self.storage_options, "train")
        log.info("train: starting from %s%s", "the pretrained encoder" if init == PRETRAINED_NAME
                 else init, ", its token ids read in this run's codebook" if mapping is not None
                 else "")
        return (init if init == PRETRAINED_NAME else redact_uri(init),
                translated_state(model, mapping, model_kwargs["vocab_size"]))


def _export(checkpoint: Location, encoder: Location) -> list[str]:
    """The checkpoint's encoder into `encoder/`: its config and normalisation, and the best
    validation's weights where early stopping kept them (else the last). Returns the names of
    the checkpoint's files."""
    names = checkpoint.list_names()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint.download([n for n in names if n not in (TRAINING_STATE, BEST_WEIGHTS)], tmp)
        if BEST_WEIGHTS in names:
            checkpoint.download([BEST_WEIGHTS], tmp)
            os.replace(os.path.join(tmp, BEST_WEIGHTS), os.path.join(tmp, WEIGHTS_FILE))
        encoder.upload(tmp)
    return names


def _account(record: dict) -> str:
    """The stage's one line: how far it trained, why it stopped, which weights it kept."""
    loss = f"{record['final_loss_kind']} loss {record['final_loss']:.4f}"
    best = f"best {record['best_loss']:.4f} at step {record['best_step']}"
    if record["stop_reason"] == "early stopping":
        head = (f"stopped early at step {record['step']} of {record['steps_planned']} ({loss}, "
                f"{best}; patience {record['early_stopping']['patience']})")
    elif record["encoder_step"] != record["step"]:
        head = f"{record['step']} steps, {loss} ({best})"
    else:
        head = f"{record['step']} steps, {loss}"
    kept = ("" if record["encoder_step"] == record["step"]
            else f"; encoder: step {record['encoder_step']}'s weights")
    return (f"{head}, masked-token accuracy {record['final_accuracy']:.3f}{kept}; "
            f"normalisation: {record['normalization']}")


def _check_key(schema, key: str) -> str:
    if key not in schema.names:
        raise ConfigError(f"train.validation_key: no column {key!r} in tokens/; its columns "
                          f"are {', '.join(n for n in schema.names if n != 'tokens')}")
    return key


def _worker_memory(nodes: list[NodeCapacity], workers: int) -> int:
    """Bytes of memory each of `workers` training workers can have: the largest share that
    places them all on the nodes' memory."""
    memory = [n.memory_bytes for n in nodes]
    shares = [m / k for m in memory for k in range(1, workers + 1)]
    fitting = [s for s in shares if sum(int(m // s) for m in memory) >= workers]
    return int(max(fitting, default=0))


def _arrow_fs(output: Location):
    import pyarrow.fs

    if output.is_local:
        return pyarrow.fs.LocalFileSystem()
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(output.fs))


def _final_loss(metrics: list[dict]) -> tuple[float, str, float]:
    """The loss to report: the last validation, else the mean over the last epoch's steps."""
    for kind, said in (("validation", "validation"), ("epoch", "last-epoch mean")):
        rows = [m for m in metrics if m["kind"] == kind]
        if rows:
            return rows[-1]["loss"], said, rows[-1]["accuracy"]
    return float("nan"), "none", float("nan")
