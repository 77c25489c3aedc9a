"""Masked-token loss, accuracy and the AdamW warm-up + cosine schedule (plain torch, no Ray).

The loss and accuracy avoid boolean indexing so that they never synchronise with the device and
stay defined (zero) for a batch without targets. Gradient clipping is left to the training loop.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_IGNORE = -100


def masked_lm_loss(logits: torch.Tensor, original_tokens: torch.Tensor,
                   target_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over target positions of `logits` [B, T, V] against the originals."""
    targets = torch.where(target_mask, original_tokens, _IGNORE)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                            ignore_index=_IGNORE, reduction="sum")
    return total / target_mask.sum().clamp(min=1)


def masked_accuracy(logits: torch.Tensor, original_tokens: torch.Tensor,
                    target_mask: torch.Tensor) -> torch.Tensor:
    """Fraction of target positions whose arg-max prediction is the original token."""
    correct = (logits.argmax(dim=-1) == original_tokens) & target_mask
    return correct.sum() / target_mask.sum().clamp(min=1)


def contrastive_loss(pooled: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over a [2B, H] batch whose rows i and i + B are two views of one utterance: each
    row must pick its twin, by cosine similarity, among the other 2B - 1 rows."""
    z = F.normalize(pooled.float(), dim=-1)
    n = z.shape[0] // 2
    sim = (z @ z.T / temperature).masked_fill(
        torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    twins = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, twins)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR factor: linear rise to 1 over `warmup_steps` (the first step already non-zero), then
    cosine decay to 0 at `total_steps`, 0 after."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, warmup_steps: int,
                   total_steps: int) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases and LayerNorm gains, i.e. 1-d parameters) + `warmup_cosine`;
    call `scheduler.step()` once per optimizer step."""
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, "
                         f"got {warmup_steps=} {total_steps=}")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps))
    return optimizer, scheduler
