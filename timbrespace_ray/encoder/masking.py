"""Span masking for masked-token pretraining, vectorised over the whole batch on its device.

Spans are placed by independent Bernoulli draws: for each configured span length `l`, every
position starts a span of length `l` with probability `r * p_l` (`p_l` from the span
distribution). Positions before the sequence start may start spans too (the draw grid is
extended to the left by `l - 1`), so every real token, the first ones included, is covered with
the same probability `1 - prod_l (1 - r p_l)^l`; `r` is solved so that this equals `mask_prob`.
The masked fraction of real tokens is therefore `mask_prob` in expectation for any sequence
length, spans of each length are started in the configured proportions, and overlapping spans
merge. Spans are cut at padding: padding is never a target.

Each selected position is then replaced by the mask token (80 %), by a random token of the base
vocabulary (10 %) or left unchanged (10 %), as in BERT.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

DEFAULT_MASK_SPAN_DIST: dict[int, float] = {10: 0.5, 5: 0.25, 3: 0.15, 1: 0.1}
MASK_TOKEN_FRACTION = 0.8
RANDOM_TOKEN_FRACTION = 0.1


def normalize_span_dist(span_dist: Mapping[int | str, float]) -> dict[int, float]:
    """Span length -> probability, lengths as ints (JSON configs give strings), summing to 1."""
    dist = {int(k): float(v) for k, v in span_dist.items()}
    if not dist or any(k < 1 for k in dist) or any(v < 0 for v in dist.values()):
        raise ValueError(f"mask_span_dist needs positive span lengths and probabilities >= 0, "
                         f"got {dict(span_dist)}")
    total = sum(dist.values())
    if total <= 0:
        raise ValueError(f"mask_span_dist probabilities sum to 0: {dict(span_dist)}")
    return {k: v / total for k, v in sorted(dist.items(), reverse=True)}


def span_start_rate(mask_prob: float, span_dist: Mapping[int, float]) -> float:
    """The `r` for which a token is covered with probability `mask_prob` (see module doc)."""
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")

    def coverage(r: float) -> float:
        uncovered = 1.0
        for length, p in span_dist.items():
            uncovered *= (1.0 - r * p) ** length
        return 1.0 - uncovered

    # coverage is increasing in r; r * p_l must stay a probability
    lo, hi = 0.0, 1.0 / max(span_dist.values())
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if coverage(mid) < mask_prob else (lo, mid)
    return hi if mask_prob > 0 else 0.0


class SpanMasker:
    """Chooses span targets and corrupts the inputs; holds no learnable state."""

    def __init__(self, vocab_size: int, mask_id: int, mask_prob: float,
                 span_dist: Mapping[int | str, float]) -> None:
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.span_dist = normalize_span_dist(span_dist)
        self.mask_prob = mask_prob

    @property
    def mask_prob(self) -> float:
        return self._mask_prob

    @mask_prob.setter
    def mask_prob(self, value: float) -> None:
        rate = span_start_rate(float(value), self.span_dist)
        self._mask_prob = float(value)
        self._start_probs = [(length, rate * p) for length, p in self.span_dist.items()]

    def select(self, real: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool [B, T] targets within `real` (bool [B, T], True on real tokens)."""
        batch, steps = real.shape
        target = torch.zeros_like(real)
        for length, start_prob in self._start_probs:
            starts = torch.rand(batch, steps + length - 1, device=real.device,
                                generator=generator) < start_prob
            # grid index j is a start at position j - (length - 1): position t is covered by
            # any start in grid[t : t + length]
            covered = F.max_pool1d(starts.unsqueeze(1).float(), length, stride=1).squeeze(1)
            target |= covered.bool()
        return target & real

    def corrupt(self, tokens: torch.Tensor, target: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Inputs with targets replaced 80/10/10 by mask / random base token / themselves."""
        u = torch.rand(tokens.shape, device=tokens.device, generator=generator)
        random_tokens = torch.randint(0, self.vocab_size, tokens.shape, device=tokens.device,
                                      generator=generator)
        out = torch.where(target & (u < MASK_TOKEN_FRACTION), self.mask_id, tokens)
        use_random = target & (u >= MASK_TOKEN_FRACTION) & (
            u < MASK_TOKEN_FRACTION + RANDOM_TOKEN_FRACTION)
        return torch.where(use_random, random_tokens, out)

    def __call__(self, tokens: torch.Tensor, real: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(corrupted inputs, target mask) for internal-id `tokens`; `generator` on their device."""
        target = self.select(real, generator)
        return self.corrupt(tokens, target, generator), target
