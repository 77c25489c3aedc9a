"""Pooled embeddings of a padded batch, for the embedding stage."""
from __future__ import annotations

import contextlib
import warnings

import torch

from .model import ProsodicSequenceEncoder


def embed(model: ProsodicSequenceEncoder, batch: torch.Tensor,
          lengths: torch.Tensor | None = None, bf16: bool = True) -> torch.Tensor:
    """[B, hidden_dim] float32 CPU embeddings of `batch` ([B, T] ids, padding -100).

    Puts the model in eval mode (no dropout). On CUDA with `bf16`, runs under bfloat16 autocast;
    pooling is float32 either way. Moves the inputs to the model's device.
    """
    model.eval()
    device = next(model.parameters()).device
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if bf16 and device.type == "cuda" else contextlib.nullcontext())
    with torch.no_grad(), autocast, warnings.catch_warnings():
        # torch announces its padding fast path (nested tensors) as a prototype on first use
        warnings.filterwarnings("ignore", message=".*nested tensors is in prototype stage")
        out = model(batch.to(device), None if lengths is None else lengths.to(device))
    return out.float().cpu()
