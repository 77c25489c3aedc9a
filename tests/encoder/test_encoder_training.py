"""Masked-token loss/accuracy, the optimizer schedule, and a short CPU training run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from timbrespace_ray.encoder import (ProsodicSequenceEncoder, collate, make_optimizer,
                                     masked_accuracy, masked_lm_loss, warmup_cosine)
from timbrespace_ray.encoder.loop import paired_batches
from timbrespace_ray.encoder.training import contrastive_loss


def test_masked_lm_loss_is_cross_entropy_on_targets_only():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]]])
    original = torch.tensor([[0, 2, 3]])  # 3: internal padding id, never a target
    target = torch.tensor([[True, True, False]])
    # by hand: -log softmax([2,0,0])[0] and -log softmax([0,1,0])[2]
    expected = (-(2 - math.log(math.exp(2) + 2)) - (0 - math.log(2 + math.e))) / 2
    assert masked_lm_loss(logits, original, target).item() == pytest.approx(expected, rel=1e-6)


def test_loss_without_targets_is_zero_and_differentiable():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    loss = masked_lm_loss(logits, torch.zeros(2, 4, dtype=torch.long),
                          torch.zeros(2, 4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_masked_accuracy():
    logits = torch.tensor([[[9.0, 0.0], [0.0, 9.0], [9.0, 0.0], [0.0, 9.0]]])
    original = torch.tensor([[0, 0, 0, 1]])
    target = torch.tensor([[True, True, True, False]])
    assert masked_accuracy(logits, original, target).item() == pytest.approx(2 / 3)


def test_warmup_then_cosine():
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine(4, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine(10, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine(110, 10, 110) == pytest.approx(0.0)
    assert warmup_cosine(500, 10, 110) == pytest.approx(0.0)
    assert warmup_cosine(0, 0, 100) == pytest.approx(1.0)


def test_make_optimizer_groups_and_schedule():
    model = ProsodicSequenceEncoder(hidden_dim=16, num_layers=1, nhead=2, pos_max_len=32)
    optimizer, scheduler = make_optimizer(model, lr=1e-3, weight_decay=0.05, warmup_steps=4,
                                          total_steps=20)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert any(p is model.final_norm.weight for p in plain["params"])
    assert any(p is model.prediction_head[0].weight for p in decayed["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[12] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[4] > lrs[10] > lrs[19] > 0


@pytest.mark.parametrize("warmup,total", [(5, 0), (-1, 10), (11, 10)])
def test_make_optimizer_rejects_bad_schedules(warmup, total):
    with pytest.raises(ValueError):
        make_optimizer(torch.nn.Linear(2, 2), 1e-3, 0.0, warmup, total)


def patterned_sequences(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Repeated short motifs over 20 of the 122 ids, of varying lengths: learnable structure."""
    out = []
    for _ in range(n):
        motif = rng.integers(0, 20, size=rng.integers(3, 7))
        out.append(np.tile(motif, 20)[: rng.integers(40, 65)])
    return out


@pytest.fixture()
def one_thread():
    # tiny matrices: with other work on the machine, more threads only add contention
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_small_model_learns_on_cpu(one_thread):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    model = ProsodicSequenceEncoder(hidden_dim=64, num_layers=2, nhead=4, pos_max_len=64,
                                    dropout_rate=0.0).train()
    steps = 50
    optimizer, scheduler = make_optimizer(model, 5e-3, 0.01, warmup_steps=5, total_steps=steps)
    losses = []
    for _ in range(steps):
        batch = collate(patterned_sequences(rng, 32))
        logits, _, target, original = model(batch.tokens, batch.lengths, training=True,
                                            generator=gen)
        loss = masked_lm_loss(logits, original, target)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert first > math.log(20), losses  # starts near chance over 122 classes
    assert last < 0.6 * first, losses
    # below the entropy of the 20 ids alone: the model uses the context, not just frequencies
    assert last < math.log(20) - 0.3, losses


def test_contrastive_loss_picks_the_twin():
    # rows 0, 1 and their twins 2, 3: row 0 is as similar (cosine 1) to its twin as to nothing
    # else, so at temperature 1 its loss is -log(e / (e + 1 + 1)); the same for every row
    views = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    expected = -math.log(math.e / (math.e + 2))
    assert contrastive_loss(views, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # twins swapped: each row's twin is now orthogonal to it, and the loss rises
    swapped = views[[0, 1, 3, 2]]
    assert contrastive_loss(swapped, 1.0).item() > expected + 0.5
    # a sharper temperature makes a right choice cheaper
    assert contrastive_loss(views, 0.1).item() < 1e-3


def test_paired_batches_hold_two_disjoint_crops_of_each_utterance():
    rng = np.random.default_rng(0)
    # each utterance's tokens are a distinct range, so a crop tells which utterance it is from
    # and where in it (the 5-token one is too short for two views and is left out)
    utterances = [np.arange(1000 * i, 1000 * i + n) for i, n in enumerate([5, 8, 40, 90, 300, 900])]
    seen = []
    for batch in paired_batches([utterances], batch_size=2, max_len=200, rng=rng):
        rows = [t[:n].numpy() for t, n in zip(batch.tokens, batch.lengths)]
        half = len(rows) // 2
        for first, second in zip(rows[:half], rows[half:]):
            source = int(first[0]) // 1000
            n = len(utterances[source])
            assert int(second[0]) // 1000 == source
            assert first[-1] < second[0]  # the first view ends before the second begins
            cut_low, cut_high = 1000 * source + int(0.3 * n), 1000 * source + int(0.7 * n)
            assert first[-1] < cut_high and second[0] >= cut_low
            for crop in (first, second):  # contiguous, at most max_len
                assert np.all(np.diff(crop) == 1) and 2 <= len(crop) <= 200
            seen.append(source)
    assert sorted(seen) == [1, 2, 3, 4, 5]
