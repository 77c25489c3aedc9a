"""Pooled embeddings of padded batches and of whole token sequences (windowed), for the embed
stage and the evaluation."""
from __future__ import annotations

import contextlib
import copy
import warnings

import numpy as np
import torch

from .batching import collate, split_windows, token_batches
from .model import ProsodicSequenceEncoder
from .precision import BFLOAT16, autocast, compute_dtype


def embed(model: ProsodicSequenceEncoder, batch: torch.Tensor,
          lengths: torch.Tensor | None = None, bf16: bool = True) -> torch.Tensor:
    """[B, hidden_dim] float32 CPU embeddings of `batch` ([B, T] ids, padding -100).

    Puts the model in eval mode (no dropout). A model of float32 weights runs, with `bf16`,
    under bfloat16 autocast where the device computes it natively (`precision.py`: GPUs, CPUs
    with AVX512-BF16 or AMX); one of bfloat16 weights (`inference_model`) runs as it is.
    Pooling is float32 either way. Moves the inputs to the model's device.
    """
    model.eval()
    param = next(model.parameters())
    precision = autocast(param.device, bf16) if param.dtype == torch.float32 \
        else contextlib.nullcontext()
    with torch.no_grad(), precision, warnings.catch_warnings():
        # torch announces its padding fast path (nested tensors) as a prototype on first use
        warnings.filterwarnings("ignore", message=".*nested tensors is in prototype stage")
        out = model(batch.to(param.device),
                    None if lengths is None else lengths.to(param.device))
    return out.float().cpu()


def inference_model(model: ProsodicSequenceEncoder, bf16: bool = True) -> ProsodicSequenceEncoder:
    """`model` in eval mode for embedding many batches: where `compute_dtype` chooses bfloat16,
    a copy with bfloat16 weights, cast once (autocast casts every weight at every call and
    keeps layer norms in float32: the small model embeds about 5 % faster so, the 58 M one
    about 15 %, bench_embed.py on a Xeon with AMX),
    else `model` itself. Its embeddings agree with float32 ones to cosine similarity >= 0.9999
    (tests); pooling stays float32."""
    model.eval()
    if compute_dtype(next(model.parameters()).device, bf16) != BFLOAT16:
        return model
    return copy.deepcopy(model).to(torch.bfloat16).eval()


def embed_windows(model: ProsodicSequenceEncoder, sequences: list, batch_tokens: int,
                  bf16: bool = True) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    """Every sequence cut into windows of at most `pos_max_len` tokens (`split_windows`) and
    embedded in length-sorted batches of at most `batch_tokens` padded tokens
    (`token_batches`; a longer window alone).

    Returns `(windows, vectors)`: `windows[i] = (sequence, window_index, start, n_tokens)` and
    `vectors[i]` its [hidden_dim] float32 embedding.
    """
    windows = [(row, w, start, n) for row, seq in enumerate(sequences)
               for w, start, n in split_windows(len(seq), model.pos_max_len)]
    vectors = np.zeros((len(windows), model.hidden_dim), np.float32)
    for idx in token_batches([n for *_, n in windows], batch_tokens):
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


def embed_utterances(model: ProsodicSequenceEncoder, sequences: list, batch_tokens: int,
                     bf16: bool = True) -> np.ndarray:
    """[len(sequences), hidden_dim] utterance vectors as the embed stage's windows add up to:
    `embed_windows`, then `pool_windows` with each window's token count as its weight."""
    windows, vectors = embed_windows(model, sequences, batch_tokens, bf16)
    return pool_windows(np.array([w[0] for w in windows], np.int64),
                        np.array([w[3] for w in windows], np.float64), vectors, len(sequences))
