"""How much memory one training worker needs, and whether the configured batch fits.

`training_memory_bytes` is a linear model: a fixed part (the torch runtime, weights, gradients,
AdamW's two moments, the optimizer's temporaries, one block of chunked attention weights) plus a
part per token of the batch (activations kept for the backward pass: every layer's without
activation checkpointing; with it, each layer's input plus one layer's activations while it is
recomputed). Attention adds nothing per T^2 (see `model.EncoderLayer`).

Calibration (CPU, float32, torch 2.13, 2 threads; peak RSS, i.e. VmHWM, of a fresh process
making two `train_step`s of the default 58 M shape, 768 x 8 layers, with AdamW): 1 x 16 tokens
1.38 GB (the fixed part: ~16 bytes per parameter + ~450 MB runtime); 1 x 2,000 tokens 3.18 GB
without checkpointing (~35 floats per hidden unit per token and layer), 2.22 GB with it
(tests/encoder/test_encoder_memory.py checks this run against the estimate, 2.55 GB). The constants below round those up, so the estimate errs high.
Before the SDPA layer the stock layer's attention kept B x 8 x T x T weights: 1 x 2,000 tokens
peaked at 6.12 GB (~2.4 MB per token at T = 2,000: batch 16 would need ~80 GB).
GPU workers (bf16 autocast, fused attention) are not sized by this host-memory estimate.
"""
from __future__ import annotations

import os

# bytes per parameter: weights, gradients, AdamW exp_avg/exp_avg_sq (4 x 4) + foreach temporaries
BYTES_PER_PARAMETER = 20
# torch runtime, embedding/head buffers, one block of chunked attention weights (x ~4 copies)
RUNTIME_BYTES = 768 << 20
# float32 values kept per token, per hidden unit, per layer (without checkpointing)
FLOATS_PER_TOKEN_LAYER = 40
# float32 values per token per hidden unit for the embedding, head and loss
FLOATS_PER_TOKEN_HEAD = 48


def count_parameters(vocab_size: int, hidden_dim: int, num_layers: int, **_) -> int:
    """Parameters of `ProsodicSequenceEncoder(vocab_size, hidden_dim, num_layers, ...)`."""
    h = hidden_dim
    layer = 4 * h * h + 4 * h + 2 * (4 * h * h) + 4 * h + h + 4 * h  # attention, FFN, 2 norms
    embed = (vocab_size + 2) * h + 2 * h
    head = h * 2 * h + 2 * h + 2 * h * vocab_size + vocab_size
    return num_layers * layer + embed + head + 2 * h


def bytes_per_token(hidden_dim: int, num_layers: int, checkpointing: bool) -> int:
    """Activation bytes one token of the batch costs during forward + backward."""
    kept = num_layers * (1 + FLOATS_PER_TOKEN_LAYER) if not checkpointing \
        else num_layers + FLOATS_PER_TOKEN_LAYER
    return 4 * hidden_dim * (kept + FLOATS_PER_TOKEN_HEAD)


def training_memory_bytes(model_kwargs: dict, batch_tokens: int, checkpointing: bool) -> int:
    """Estimated peak memory of a worker training `model_kwargs` on `batch_tokens` per step."""
    fixed = RUNTIME_BYTES + BYTES_PER_PARAMETER * count_parameters(**model_kwargs)
    per_token = bytes_per_token(model_kwargs["hidden_dim"], model_kwargs["num_layers"],
                                checkpointing)
    return fixed + batch_tokens * per_token


def largest_batch(model_kwargs: dict, max_len: int, memory_bytes: int,
                  checkpointing: bool = True) -> int:
    """The most sequences of `max_len` tokens whose step fits `memory_bytes` (0: none)."""
    fixed = training_memory_bytes(model_kwargs, 0, checkpointing)
    per_seq = max_len * bytes_per_token(model_kwargs["hidden_dim"], model_kwargs["num_layers"],
                                        checkpointing)
    return max(0, (memory_bytes - fixed) // per_seq)


def available_memory_bytes() -> int:
    """This machine's MemAvailable (Linux), or its physical memory elsewhere."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def plan_training_memory(model_kwargs: dict, batch_size: int, max_len: int,
                         worker_memory: int, checkpointing: bool | None = None
                         ) -> tuple[bool, int]:
    """(activation checkpointing on?, estimated bytes) for `batch_size` x `max_len` tokens in
    `worker_memory`: checkpointing only when needed unless forced (`checkpointing` not None).

    Raises `ConfigError` naming the settings to lower when even that does not fit.
    """
    from ..errors import ConfigError

    tokens = batch_size * max_len
    choices = [checkpointing] if checkpointing is not None else [False, True]
    for ckpt in choices:
        need = training_memory_bytes(model_kwargs, tokens, ckpt)
        if need <= worker_memory:
            return ckpt, need
    fits = largest_batch(model_kwargs, max_len, worker_memory, choices[-1])
    hint = (f"lower train.batch_size to {fits} or less" if fits else
            "lower train.max_len (or the model size: train.hidden_dim, train.num_layers)")
    raise ConfigError(
        f"training needs ~{need / 2**30:.1f} GiB per worker for train.batch_size={batch_size} x "
        f"train.max_len={max_len} tokens{' with activation checkpointing' if choices[-1] else ''}"
        f", more than the {worker_memory / 2**30:.1f} GiB a worker has: {hint}")


__all__ = ["training_memory_bytes", "largest_batch", "plan_training_memory",
           "available_memory_bytes", "count_parameters", "bytes_per_token"]
