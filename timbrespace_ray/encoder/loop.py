"""One optimisation step of masked-token pretraining, and the batches it eats (plain torch)."""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .batching import PaddedBatch, collate, length_buckets, random_crop, split_windows
from .precision import autocast
from .training import contrastive_loss, masked_accuracy, masked_lm_loss


def positions_before(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """Bool [B, steps]: True at positions < each row's length (its real tokens)."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def training_batches(pools: Iterable[Iterable[np.ndarray]], batch_size: int, max_len: int,
                     rng: np.random.Generator) -> Iterator[PaddedBatch]:
    """Random crops of at most `max_len` tokens, bucketed by length within each pool."""
    for pool in pools:
        seqs = [random_crop(np.asarray(t), max_len, rng) for t in pool if len(t) > 1]
        for idx in length_buckets([len(s) for s in seqs], batch_size, rng):
            yield collate([seqs[i] for i in idx])


def paired_batches(pools: Iterable[Iterable[np.ndarray]], batch_size: int, max_len: int,
                   rng: np.random.Generator, min_fraction: float = 0.5) -> Iterator[PaddedBatch]:
    """Two views of every utterance for the contrastive loss. The utterance is cut at a random
    point between 30 % and 70 % of its length and each view is a random crop of one side
    (`min_fraction`..1 of it, at most `max_len` tokens): the views share the voice and the
    recording, never the same stretch of speech, so matching them cannot rest on the words.
    Rows 0..B-1 are the first views, B..2B-1 the second, in the same order."""
    for pool in pools:
        seqs = [np.asarray(t) for t in pool if len(t) >= 8]
        for idx in length_buckets([len(s) for s in seqs], batch_size, rng):
            first, second = [], []
            for i in idx:
                seq = seqs[i]
                cut = int(rng.integers(int(0.3 * len(seq)), int(0.7 * len(seq)) + 1))
                for side, views in ((seq[:cut], first), (seq[cut:], second)):
                    full = min(len(side), max_len)
                    n = int(rng.integers(max(2, int(min_fraction * full)), full + 1))
                    views.append(random_crop(side, n, rng))
            yield collate(first + second)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
               batch: PaddedBatch, device: torch.device, grad_clip: float,
               bf16: bool, contrastive_weight: float = 0.0,
               temperature: float = 0.1) -> dict[str, float]:
    """Forward with span masking, cross-entropy on masked positions (plus, for a batch of
    `paired_batches`, `contrastive_weight` times the contrastive loss of the pooled states),
    clipped AdamW step. With `bf16`, the forward pass and losses run under bfloat16 autocast
    where `device` computes it natively (`precision.py`); weights, gradients and the
    optimiser's state stay float32."""
    t0 = time.perf_counter()
    model.train()
    tokens = batch.tokens.to(device, non_blocking=True)
    lengths = batch.lengths.to(device, non_blocking=True)
    with autocast(device, bf16):
        logits, hidden, target_mask, original = model(tokens, lengths, training=True)
        loss = masked_lm_loss(logits, original, target_mask)
        total = loss
        if contrastive_weight > 0:
            real = positions_before(lengths, tokens.shape[1]).unsqueeze(-1).float()
            pooled = (hidden.float() * real).sum(dim=1) / real.sum(dim=1).clamp(min=1.0)
            nce = contrastive_loss(pooled, temperature)
            total = loss + contrastive_weight * nce
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    accuracy = masked_accuracy(logits.detach(), original, target_mask)
    n_tokens = int(batch.lengths.sum())
    # float() waits for the device: on a GPU the time then covers the step's kernels, not
    # only their launch
    extra = {"contrastive": float(nce.detach())} if contrastive_weight > 0 else {}
    out = {**extra, "loss": float(loss.detach()), "accuracy": float(accuracy),
           "grad_norm": float(grad_norm), "lr": float(scheduler.get_last_lr()[0]),
           "tokens": n_tokens, "padding_fraction": batch.padding_fraction}
    secs = time.perf_counter() - t0
    return {**out, "tokens_per_s": n_tokens / secs if secs > 0 else 0.0}


def validation_metrics(model: nn.Module, sequences: list[np.ndarray], max_len: int,
                       batch_size: int, device: torch.device, seed: int,
                       bf16: bool = False) -> dict[str, float]:
    """Masked-token loss and accuracy over every window of `sequences`, token-weighted, in the
    precision training runs in (`bf16`, see `train_step`).

    The same sequences give the same number at every epoch: windows instead of random crops,
    batches sorted by length, masking from a generator seeded with `seed`, no dropout.
    """
    windows = [seq[start:start + n] for seq in sequences
               for _, start, n in split_windows(len(seq), max_len) if n > 1]
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    loss_sum = correct = targets = 0.0
    with torch.no_grad(), autocast(device, bf16):
        for idx in length_buckets([len(w) for w in windows], batch_size):
            batch = collate([windows[i] for i in idx])
            logits, _, target_mask, original = model(
                batch.tokens.to(device), batch.lengths.to(device), training=True,
                generator=generator)
            n = float(target_mask.sum())
            loss_sum += float(masked_lm_loss(logits, original, target_mask)) * n
            correct += float(masked_accuracy(logits, original, target_mask)) * n
            targets += n
    return {"loss": loss_sum / max(targets, 1.0), "accuracy": correct / max(targets, 1.0),
            "targets": int(targets), "sequences": len(sequences)}
