"""bfloat16 where the hardware runs it natively: detection, and the numbers of the bf16 paths.

The bf16 paths are exercised on any CPU by declaring bf16 native (`force_native`): PyTorch then
emulates it here, slowly but with bf16's rounding, so the agreement with float32 measured here is
what a CPU with AVX512-BF16 or AMX gives.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.data import is_real_speech, load_vector, vector_names
from timbrespace_ray.encoder import (ProsodicSequenceEncoder, collate, embed_utterances,
                                     inference_model, make_optimizer)
from timbrespace_ray.encoder import precision
from timbrespace_ray.encoder.loop import training_batches, train_step


@pytest.fixture(scope="module")
def real_sequences() -> list[np.ndarray]:
    """The original toolkit's token sequences of the bundled real speech (120 clusters)."""
    seqs = [load_vector(n)["tokens_f32"].astype(np.int64) for n in vector_names()
            if is_real_speech(n)]
    return [s for s in seqs if len(s) > 8]


@pytest.fixture
def force_native(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def small_model(seed: int = 0) -> ProsodicSequenceEncoder:
    torch.manual_seed(seed)
    return ProsodicSequenceEncoder(vocab_size=122, hidden_dim=64, num_layers=2, nhead=4,
                                   dropout_rate=0.0)


def train(model, sequences, steps: int, bf16: bool, seed: int = 0) -> list[float]:
    optimizer, scheduler = make_optimizer(model, 1e-3, 0.01, 5, steps)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    losses = []
    while len(losses) < steps:
        for batch in training_batches([sequences], 4, 128, rng):
            m = train_step(model, optimizer, scheduler, batch, torch.device("cpu"), 1.0, bf16)
            losses.append(m["loss"])
            if len(losses) == steps:
                break
    return losses


def test_cpu_detection_agrees_with_the_kernels_cpu_flags():
    flags = cpu_flags()
    expected = bool({"avx512_bf16", "amx_tile"} & flags)
    assert precision.native_bf16("cpu") is expected
    assert precision.compute_dtype("cpu", True) == ("bfloat16" if expected else "float32")
    assert precision.compute_dtype("cpu", False) == "float32"


def test_autocast_follows_the_choice(force_native):
    with precision.autocast("cpu", True):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with precision.autocast("cpu", False):
        assert not torch.is_autocast_enabled("cpu")


def test_without_native_bf16_the_numbers_are_float32s(monkeypatch, real_sequences):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    model = small_model()
    a = embed_utterances(model, real_sequences, 4, bf16=True)
    b = embed_utterances(model, real_sequences, 4, bf16=False)
    assert np.array_equal(a, b)


def test_bf16_embeddings_agree_with_float32_on_real_sequences(real_sequences):
    model = small_model()
    train(model, real_sequences, 40, bf16=False)  # a trained model, not random weights
    reference = embed_utterances(model, real_sequences, 4, bf16=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(precision, "native_bf16", lambda device: True)
        low = embed_utterances(model, real_sequences, 4, bf16=True)
    assert not np.array_equal(low, reference)  # bf16 really ran
    assert low.dtype == np.float32
    assert cosines(low, reference).min() >= 0.999


def test_an_inference_model_of_bf16_weights_embeds_like_float32(real_sequences):
    model = small_model()
    train(model, real_sequences, 40, bf16=False)
    reference = embed_utterances(model, real_sequences, 512, bf16=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(precision, "native_bf16", lambda device: False)
        assert inference_model(model, bf16=True) is model  # float32 where bf16 is not native
        mp.setattr(precision, "native_bf16", lambda device: True)
        low_model = inference_model(model, bf16=True)
        low = embed_utterances(low_model, real_sequences, 512, bf16=True)
    assert next(low_model.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # a copy: the model is left as it was
    assert not low_model.training
    assert low.dtype == np.float32 and not np.array_equal(low, reference)
    assert cosines(low, reference).min() >= 0.9999


def test_bf16_training_step_runs_in_bf16_and_learns_like_float32(force_native, real_sequences):
    model = small_model()
    seen = []
    model.prediction_head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    batch = collate(real_sequences[:2])
    optimizer, scheduler = make_optimizer(model, 1e-3, 0.01, 0, 10)
    train_step(model, optimizer, scheduler, batch, torch.device("cpu"), 1.0, bf16=True)
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())

    steps = 60
    low = train(small_model(), real_sequences, steps, bf16=True)
    full = train(small_model(), real_sequences, steps, bf16=False)
    # same character: both fall well below the start, and end within 5 % of each other
    for losses in (low, full):
        assert np.mean(losses[-10:]) < 0.85 * np.mean(losses[:5])
    assert np.mean(low[-10:]) == pytest.approx(np.mean(full[-10:]), rel=0.05)
