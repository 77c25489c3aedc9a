"""ProsodicSequenceEncoder: the original's state-dict layout, padding, outputs, embed()."""
from __future__ import annotations

import json
import math

import pytest
import torch

from helpers.data import DATA
from timbrespace_ray.encoder import ProsodicSequenceEncoder, embed

LAYOUT = json.loads((DATA / "models" / "encoder_state_dict_layout.json").read_text())
SMALL = dict(vocab_size=122, hidden_dim=32, num_layers=2, nhead=4, pos_max_len=64)


@pytest.fixture(scope="module")
def default_model() -> ProsodicSequenceEncoder:
    return ProsodicSequenceEncoder(**LAYOUT["constructor"])


@pytest.fixture()
def small() -> ProsodicSequenceEncoder:
    torch.manual_seed(0)
    return ProsodicSequenceEncoder(**SMALL).eval()


def test_state_dict_matches_the_original_layout(default_model):
    got = {k: list(v.shape) for k, v in default_model.state_dict().items()}
    assert got == LAYOUT["state_dict"]


def test_default_model_parameter_count(default_model):
    count = sum(p.numel() for p in default_model.parameters())
    assert count == 58_169_978 == LAYOUT["parameters"]


def test_default_constructor_is_the_documented_one():
    with torch.device("meta"):
        model = ProsodicSequenceEncoder()
    assert model.config == {"vocab_size": 122, "hidden_dim": 768, "num_layers": 8, "nhead": 8,
                            "pos_max_len": 2000, "padding_token_id": -100, "dropout_rate": 0.1,
                            "mask_prob": 0.15,
                            "mask_span_dist": {10: 0.5, 5: 0.25, 3: 0.15, 1: 0.1}}
    assert (model.pad_id, model.mask_id) == (122, 123)


def test_positions_are_sinusoidal(default_model):
    pe = default_model.pos_encoder.pe
    for pos in (0, 1, 7, 1999):
        for i in (0, 5, 383):
            w = 10000.0 ** (-2 * i / 768)
            assert pe[0, pos, 2 * i].item() == pytest.approx(math.sin(pos * w), abs=1e-4)
            assert pe[0, pos, 2 * i + 1].item() == pytest.approx(math.cos(pos * w), abs=1e-4)


@pytest.mark.parametrize("grad", [False, True], ids=["fast-path", "autograd-path"])
def test_embedding_ignores_padding(small, grad):
    torch.manual_seed(1)
    short = torch.randint(0, 120, (1, 10))
    long_ = torch.randint(0, 120, (1, 30))
    padded = torch.full((2, 30), -100)
    padded[0, :10] = short
    padded[1] = long_
    # without autograd, eval mode takes torch's nested-tensor fast path
    with torch.set_grad_enabled(grad):
        alone = small(short)
        batched = small(padded)
    assert batched.shape == (2, 32)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1], small(long_)[0], atol=1e-5, rtol=1e-5)


def test_lengths_define_padding_like_the_padding_id(small):
    torch.manual_seed(2)
    x = torch.randint(0, 120, (3, 20))
    lengths = torch.tensor([20, 7, 13])
    padded = x.clone()
    for row, n in enumerate(lengths):
        padded[row, n:] = -100
    with torch.no_grad():
        torch.testing.assert_close(small(x, lengths), small(padded), atol=1e-5, rtol=1e-5)


def test_embedding_is_the_mean_of_real_hidden_states(small):
    small.update_mask_prob(0.0)
    x = torch.randint(0, 120, (2, 16))
    x[1, 9:] = -100
    with torch.no_grad():
        pooled = small(x)
        _, hidden, target, _ = small(x, training=True)
    assert not target.any()
    torch.testing.assert_close(pooled[0], hidden[0].mean(dim=0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled[1], hidden[1, :9].mean(dim=0), atol=1e-5, rtol=1e-5)


def test_training_outputs(small):
    x = torch.randint(0, 120, (4, 50))
    x[2, 30:] = -100
    small.train()
    logits, hidden, target, original = small(x, training=True,
                                             generator=torch.Generator().manual_seed(0))
    assert logits.shape == (4, 50, 122)
    assert hidden.shape == (4, 50, 32)
    assert target.dtype == torch.bool and target.shape == (4, 50)
    assert target.any() and not target[2, 30:].any()
    # originals use the internal padding id
    assert torch.equal(original[x != -100], x[x != -100])
    assert torch.all(original[2, 30:] == 122)
    assert logits.requires_grad


def test_update_mask_prob_changes_the_target_rate(small):
    x = torch.randint(0, 120, (64, 64))
    small.update_mask_prob(0.5)
    assert small.mask_prob == 0.5
    _, _, target, _ = small(x, training=True, generator=torch.Generator().manual_seed(0))
    assert abs(target.float().mean().item() - 0.5) < 0.05


def test_empty_row_gives_a_finite_zero_embedding(small):
    x = torch.randint(0, 120, (2, 8))
    x[1] = -100
    with torch.no_grad():
        out = small(x)
    assert torch.isfinite(out).all()
    assert torch.all(out[1] == 0)


@pytest.mark.parametrize("bad", [122, 500, -1])
def test_out_of_vocabulary_ids_are_rejected(small, bad):
    x = torch.zeros(1, 5, dtype=torch.long)
    x[0, 2] = bad
    with pytest.raises(ValueError, match="token ids"):
        small(x)


def test_too_long_sequences_are_rejected(small):
    with pytest.raises(ValueError, match="pos_max_len"):
        small(torch.zeros(1, 65, dtype=torch.long))


def test_embed_helper(small):
    x = torch.randint(0, 120, (3, 12), dtype=torch.int16)
    lengths = torch.tensor([12, 5, 9])
    small.train()
    out = embed(small, x, lengths, bf16=False)
    assert not small.training
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (3, 32)
    with torch.no_grad():
        torch.testing.assert_close(out, small(x.long(), lengths))
    # bfloat16 where this CPU computes it natively: the same vectors up to its rounding
    default = embed(small, x, lengths)
    assert torch.nn.functional.cosine_similarity(default, out).min() > 0.999
