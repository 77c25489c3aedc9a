"""Span masking: rate, placement, span lengths, 80/10/10 corruption, reproducibility."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from timbrespace_ray.encoder.masking import SpanMasker, span_start_rate

VOCAB = 122
MASK_ID = VOCAB + 1
DEFAULT_DIST = {10: 0.5, 5: 0.25, 3: 0.15, 1: 0.1}


def real_mask(lengths: list[int], steps: int) -> torch.Tensor:
    return torch.arange(steps).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def runs(row: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True in a 1-d bool array."""
    padded = np.concatenate([[False], row, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(s), int(e - s)) for s, e in zip(edges[::2], edges[1::2])]


@pytest.fixture(scope="module")
def big_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = np.random.default_rng(0)
    lengths = gen.integers(125, 1251, size=256).tolist()
    real = real_mask(lengths, 1250)
    tokens = torch.where(real, torch.randint(0, 120, real.shape, generator=torch.Generator()
                                             .manual_seed(1)), VOCAB)
    return tokens, real


def test_masked_fraction_of_real_tokens_is_mask_prob(big_batch):
    tokens, real = big_batch
    for prob in (0.15, 0.3, 0.05):
        masker = SpanMasker(VOCAB, MASK_ID, prob, DEFAULT_DIST)
        target = masker.select(real, torch.Generator().manual_seed(2))
        frac = target.sum().item() / real.sum().item()
        assert abs(frac - prob) < 0.01, (prob, frac)


def test_short_sequences_are_masked_at_the_same_rate():
    # the first and last tokens of short sequences must not be under-masked
    real = real_mask([12] * 20000, 12)
    target = SpanMasker(VOCAB, MASK_ID, 0.15, DEFAULT_DIST).select(
        real, torch.Generator().manual_seed(3))
    per_position = target.float().mean(dim=0)
    assert torch.all((per_position - 0.15).abs() < 0.015), per_position


def test_never_masks_padding(big_batch):
    tokens, real = big_batch
    masker = SpanMasker(VOCAB, MASK_ID, 0.5, DEFAULT_DIST)
    inputs, target = masker(tokens, real, torch.Generator().manual_seed(4))
    assert target.any()
    assert not (target & ~real).any()
    assert torch.equal(inputs[~real], tokens[~real])


def test_corruption_split_is_80_10_10(big_batch):
    tokens, real = big_batch
    masker = SpanMasker(VOCAB, MASK_ID, 0.15, DEFAULT_DIST)
    inputs, target = masker(tokens, real, torch.Generator().manual_seed(5))
    n = target.sum().item()
    masked = (inputs == MASK_ID)
    assert not (masked & ~target).any()
    assert torch.equal(inputs[~target], tokens[~target])
    changed = target & ~masked & (inputs != tokens)
    unchanged = target & (inputs == tokens)
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    # a random replacement equals the original with probability 1/122
    assert abs(changed.sum().item() / n - 0.1 * (1 - 1 / VOCAB)) < 0.01
    assert abs(unchanged.sum().item() / n - 0.1 * (1 + 1 / VOCAB)) < 0.01
    replaced = inputs[changed]
    assert replaced.min() >= 0 and replaced.max() < VOCAB
    # random tokens span the base vocabulary, not just the ids present in the data (0..119)
    assert (replaced >= 120).any()


@pytest.mark.parametrize("length", [1, 3, 5, 10])
def test_single_length_spans(length):
    real = real_mask([400] * 200, 400)
    target = SpanMasker(VOCAB, MASK_ID, 0.02, {length: 1.0}).select(
        real, torch.Generator().manual_seed(6))
    interior = [n for row in target.numpy() for s, n in runs(row) if s > 0 and s + n < 400]
    counts = np.bincount(interior)
    assert counts.argmax() == length
    # sparse spans rarely merge
    assert counts[length] / len(interior) > 0.9


def test_span_lengths_follow_the_distribution():
    real = real_mask([1000] * 512, 1000)
    target = SpanMasker(VOCAB, MASK_ID, 0.01, DEFAULT_DIST).select(
        real, torch.Generator().manual_seed(7))
    interior = [n for row in target.numpy() for s, n in runs(row) if s > 0 and s + n < 1000]
    assert len(interior) > 500
    share = np.bincount(interior, minlength=11) / len(interior)
    for length, p in DEFAULT_DIST.items():
        assert abs(share[length] - p) < 0.05, (length, share[length], p)


def test_seeded_generator_is_reproducible(big_batch):
    tokens, real = big_batch
    masker = SpanMasker(VOCAB, MASK_ID, 0.15, DEFAULT_DIST)
    a = masker(tokens, real, torch.Generator().manual_seed(8))
    b = masker(tokens, real, torch.Generator().manual_seed(8))
    c = masker(tokens, real, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_start_rate_closed_forms():
    # one length-1 span kind: coverage is the start rate itself
    assert span_start_rate(0.15, {1: 1.0}) == pytest.approx(0.15, abs=1e-9)
    # length 2: 1 - (1 - r)^2 = m
    assert span_start_rate(0.15, {2: 1.0}) == pytest.approx(1 - np.sqrt(0.85), abs=1e-9)
    assert span_start_rate(0.0, DEFAULT_DIST) == 0.0


def test_mask_prob_extremes():
    real = real_mask([50, 20], 50)
    assert not SpanMasker(VOCAB, MASK_ID, 0.0, DEFAULT_DIST).select(real).any()
    assert torch.equal(SpanMasker(VOCAB, MASK_ID, 1.0, DEFAULT_DIST).select(real), real)


def test_string_keys_and_unnormalised_weights_are_accepted():
    masker = SpanMasker(VOCAB, MASK_ID, 0.15, {"10": 5, "1": 5})
    assert masker.span_dist == {10: 0.5, 1: 0.5}


@pytest.mark.parametrize("dist", [{}, {0: 1.0}, {3: -1.0}, {3: 0.0}])
def test_bad_span_distributions_are_rejected(dist):
    with pytest.raises(ValueError):
        SpanMasker(VOCAB, MASK_ID, 0.15, dist)


def test_bad_mask_prob_is_rejected():
    with pytest.raises(ValueError):
        SpanMasker(VOCAB, MASK_ID, 1.5, DEFAULT_DIST)
