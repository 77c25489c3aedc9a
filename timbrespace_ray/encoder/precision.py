"""Which number format the encoder runs in: bfloat16 autocast where the hardware computes it
natively, float32 elsewhere.

bfloat16 halves the bytes moved and, on hardware with bf16 arithmetic, doubles or more the
multiply-adds per cycle: CUDA GPUs, and CPUs with AVX512-BF16 (Cooper Lake, Sapphire Rapids and
later Xeons, AMD Zen 4 and later) or AMX tiles. On any other CPU (AVX2 alone, or AVX-512 without
BF16) PyTorch emulates bf16 by converting around float32 kernels, 2 to 50 times slower than
float32 itself (bench_embed.py), so those CPUs keep float32: same numbers as before, no slowdown.

Embeddings agree with float32 ones to cosine similarity >= 0.999 on real token sequences (tests);
pooling, losses and the optimiser's state stay float32 under autocast either way.
"""
from __future__ import annotations

import contextlib

import torch

BFLOAT16 = "bfloat16"
FLOAT32 = "float32"


def native_bf16(device: torch.device | str) -> bool:
    """True when `device` computes bfloat16 natively (a CUDA GPU that supports it, a CPU with
    AVX512-BF16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def compute_dtype(device: torch.device | str, bf16: bool) -> str:
    """"bfloat16" when `bf16` is asked for and `device` runs it natively, else "float32"."""
    return BFLOAT16 if bf16 and native_bf16(device) else FLOAT32


def autocast(device: torch.device | str, bf16: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on `device` where `compute_dtype` chooses it, otherwise no change."""
    device = torch.device(device)
    if compute_dtype(device, bf16) == BFLOAT16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
