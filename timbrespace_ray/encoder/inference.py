"""Pooled embeddings of padded batches and of whole token sequences (windowed), for the embed
stage and the evaluation."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .batching import collate, length_buckets, split_windows
from .model import ProsodicSequenceEncoder
from .precision import autocast


def embed(model: ProsodicSequenceEncoder, batch: torch.Tensor,
          lengths: torch.Tensor | None = None, bf16: bool = True) -> torch.Tensor:
    """[B, hidden_dim] float32 CPU embeddings of `batch` ([B, T] ids, padding -100).

    Puts the model in eval mode (no dropout). With `bf16`, runs under bfloat16 autocast where
    the device computes it natively (`precision.py`: GPUs, CPUs with AVX512-BF16 or AMX);
    pooling is float32 either way. Moves the inputs to the model's device.
    """
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), autocast(device, bf16), warnings.catch_warnings():
        # torch announces its padding fast path (nested tensors) as a prototype on first use
        warnings.filterwarnings("ignore", message=".*nested tensors is in prototype stage")
        out = model(batch.to(device), None if lengths is None else lengths.to(device))
    return out.float().cpu()


def embed_windows(model: ProsodicSequenceEncoder, sequences: list, batch_size: int,
                  bf16: bool = True) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    """Every sequence cut into windows of at most `pos_max_len` tokens (`split_windows`) and
    embedded in length-sorted batches.

    Returns `(windows, vectors)`: `windows[i] = (sequence, window_index, start, n_tokens)` and
    `vectors[i]` its [hidden_dim] float32 embedding.
    """
    windows = [(row, w, start, n) for row, seq in enumerate(sequences)
               for w, start, n in split_windows(len(seq), model.pos_max_len)]
    vectors = np.zeros((len(windows), model.hidden_dim), np.float32)
    for idx in length_buckets([n for *_, n in windows], batch_size):
        batch = collate([sequences[windows[i][0]][windows[i][2]:windows[i][2] + windows[i][3]]
                         for i in idx])
        vectors[idx] = embed(model, batch.tokens, batch.lengths, bf16=bf16).numpy()
    return windows, vectors


def pool_windows(sequence_of_window: np.ndarray, n_tokens: np.ndarray, vectors: np.ndarray,
                 n_sequences: int) -> np.ndarray:
    """[n_sequences, H] utterance vectors: the token-weighted mean of each one's windows (what
    one pass over the whole utterance would pool, were it short enough)."""
    out = np.zeros((n_sequences, vectors.shape[1]), np.float64)
    np.add.at(out, sequence_of_window, vectors * n_tokens[:, None])
    totals = np.bincount(sequence_of_window, weights=n_tokens, minlength=n_sequences)
    return (out / np.maximum(totals, 1)[:, None]).astype(np.float32)


def embed_utterances(model: ProsodicSequenceEncoder, sequences: list, batch_size: int,
                     bf16: bool = True) -> np.ndarray:
    """[len(sequences), hidden_dim] utterance vectors as the embed stage's windows add up to:
    `embed_windows`, then `pool_windows` with each window's token count as its weight."""
    windows, vectors = embed_windows(model, sequences, batch_size, bf16)
    return pool_windows(np.array([w[0] for w in windows], np.int64),
                        np.array([w[3] for w in windows], np.float64), vectors, len(sequences))
