"""Cropping, length bucketing, padding and windowing of token sequences (numpy / torch only).

Training crops long utterances at random; embedding instead cuts them into windows that each
fit the encoder's positions (`split_windows`). Batches group similar lengths so that little of
each padded [B, T] tensor is padding: training's hold a number of sequences (`length_buckets`),
embedding's a number of tokens (`token_batches`), so that a batch of long windows is as large
as one of short ones and a few short windows are not padded to a long one's length.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .model import PADDING_TOKEN_ID


def random_crop(tokens: np.ndarray, max_len: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed contiguous slice of `max_len` tokens, or `tokens` if not longer."""
    if len(tokens) <= max_len:
        return tokens
    start = int(rng.integers(0, len(tokens) - max_len + 1))
    return tokens[start:start + max_len]


def length_buckets(lengths: Sequence[int] | np.ndarray, batch_size: int,
                   rng: np.random.Generator | None = None,
                   pool_batches: int = 64) -> list[np.ndarray]:
    """Index batches of at most `batch_size` with similar lengths, covering every index once.

    Without `rng`: sorted by length (deterministic, least padding: for embedding). With `rng`:
    shuffled, sorted within pools of `pool_batches` batches, batches in random order (for
    training, so that a batch's companions and the batch order vary between epochs).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
    else:
        order = rng.permutation(len(lengths))
        pool = batch_size * pool_batches
        order = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                                for chunk in np.split(order, range(pool, len(order), pool))])
    batches = np.split(order, range(batch_size, len(order), batch_size))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return [b for b in batches if len(b)]


# the most of an embedding batch's cells that may be padding: a window that would pad the batch
# more starts the next one (padded positions cost as much as real ones, attention's quadratically)
MAX_PADDING = 0.125


def token_batches(lengths: Sequence[int] | np.ndarray, max_tokens: int,
                  max_padding: float = MAX_PADDING) -> list[np.ndarray]:
    """Index batches of length-sorted windows (deterministic, every index once) for embedding:
    each as many windows as fit `max_tokens` padded cells (count x its longest window; a
    longer window goes alone), cut early where the next window would make more than
    `max_padding` of the batch's cells padding."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    lengths = np.asarray(lengths, np.int64)
    order = np.argsort(lengths, kind="stable")
    batches, start, total = [], 0, 0
    for end, i in enumerate(order):
        n, longest = end - start, int(lengths[i])  # sorted: the window added is the longest
        if n and ((n + 1) * longest > max_tokens
                  or n * longest - total > max_padding * (n + 1) * longest):
            batches.append(order[start:end])
            start, total = end, 0
        total += longest
    if start < len(order):
        batches.append(order[start:])
    return batches


def padding_fraction(lengths: Sequence[int] | np.ndarray) -> float:
    """Share of a [B, max(lengths)] batch that is padding."""
    lengths = np.asarray(lengths)
    cells = len(lengths) * int(lengths.max(initial=0))
    return 1.0 - float(lengths.sum()) / cells if cells else 0.0


@dataclass(frozen=True)
class PaddedBatch:
    tokens: torch.Tensor   # [B, T] int64, padding_token_id after each sequence
    lengths: torch.Tensor  # [B] int64

    @property
    def padding_fraction(self) -> float:
        return padding_fraction(self.lengths.numpy())


def collate(sequences: Sequence[Sequence[int] | np.ndarray],
            padding_token_id: int = PADDING_TOKEN_ID) -> PaddedBatch:
    """Right-pad int sequences (any int dtype, e.g. int16 from Parquet) into a [B, T] batch."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    tokens = np.full((len(sequences), int(lengths.max(initial=0))), padding_token_id, np.int64)
    for row, seq in zip(tokens, sequences):
        row[:len(seq)] = seq
    return PaddedBatch(torch.from_numpy(tokens), torch.from_numpy(lengths))


def split_windows(n_tokens: int, pos_max_len: int) -> list[tuple[int, int, int]]:
    """(window_index, start_frame, n_frames) of non-overlapping windows covering `n_tokens`.

    Uses the fewest windows of at most `pos_max_len` and makes them as equal as possible (sizes
    differ by at most one), so no window is a near-empty remainder. No tokens, no windows.
    """
    if pos_max_len < 1:
        raise ValueError(f"pos_max_len must be >= 1, got {pos_max_len}")
    if n_tokens <= 0:
        return []
    n_windows = -(-n_tokens // pos_max_len)
    base, extra = divmod(n_tokens, n_windows)
    windows, start = [], 0
    for i in range(n_windows):
        size = base + (i < extra)
        windows.append((i, start, size))
        start += size
    return windows
