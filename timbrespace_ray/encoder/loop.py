"""One optimisation step of masked-token pretraining, and the batches it eats (plain torch)."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .batching import PaddedBatch, collate, length_buckets, random_crop
from .training import masked_accuracy, masked_lm_loss


def training_batches(pools: Iterable[Iterable[np.ndarray]], batch_size: int, max_len: int,
                     rng: np.random.Generator) -> Iterator[PaddedBatch]:
    """Random crops of at most `max_len` tokens, bucketed by length within each pool."""
    for pool in pools:
        seqs = [random_crop(np.asarray(t), max_len, rng) for t in pool if len(t) > 1]
        for idx in length_buckets([len(s) for s in seqs], batch_size, rng):
            yield collate([seqs[i] for i in idx])


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
               batch: PaddedBatch, device: torch.device, grad_clip: float,
               bf16: bool) -> dict[str, float]:
    """Forward with span masking, cross-entropy on masked positions, clipped AdamW step."""
    t0 = time.perf_counter()
    model.train()
    tokens = batch.tokens.to(device, non_blocking=True)
    lengths = batch.lengths.to(device, non_blocking=True)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and device.type == "cuda"
                else contextlib.nullcontext())
    with autocast:
        logits, _, target_mask, original = model(tokens, lengths, training=True)
        loss = masked_lm_loss(logits, original, target_mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    accuracy = masked_accuracy(logits.detach(), original, target_mask)
    n_tokens = int(batch.lengths.sum())
    secs = time.perf_counter() - t0
    return {"loss": float(loss), "accuracy": float(accuracy), "grad_norm": float(grad_norm),
            "lr": float(scheduler.get_last_lr()[0]), "tokens": n_tokens,
            "tokens_per_s": n_tokens / secs if secs > 0 else 0.0,
            "padding_fraction": batch.padding_fraction}
