"""The per-utterance vectors the evaluation compares (numpy; torch for the encoders).

Utterances come as flat per-frame arrays with offsets (row i is frames offsets[i]:offsets[i+1]),
the layout of a Parquet list column, so nothing loops over frames in Python. Vectors are built
per part (`utterance_vectors`); what depends on every evaluated utterance (centring, z-scores)
is applied afterwards (`centred`, `standardised`).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..encoder import EmbeddingNormalization, ProsodicSequenceEncoder, embed_utterances
from ..features.analysis import FEATURE_NAMES

# The spec (prosodic-features.md, sections 4-5) writes 0 for every feature outside tracked voiced
# segments, and 0 for a formant the tracker did not assign: a 0 says "not measured", and
# averaging it in would measure how much of an utterance is silence. So each feature is summarised
# over the frames where it was measured: f0's width and power (F0's own power) and the snr (read
# at F0's frames) where F0 is, F1 and F2 where each is. f0 is compared with 0, not > 0, because
# smoothing can leave a tracked f0 slightly below the 80 Hz that scales to 0.
MEASURED_BY = {"f0": "f0", "f0_width": "f0", "f1": "f1", "f2": "f2", "power": "f0", "snr": "f0"}
STATISTICS_NAMES = [f"{f}_{stat}" for f in FEATURE_NAMES for stat in ("mean", "std")]
UNTRAINED_SEED = 0


def feature_statistics(frames: Mapping[str, np.ndarray], offsets: np.ndarray) -> np.ndarray:
    """[n, 12] mean and (population) standard deviation of each feature over the frames where it
    was measured (`MEASURED_BY`), in `STATISTICS_NAMES` order; NaN where it never was."""
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    row = np.repeat(np.arange(n), np.diff(offsets))
    out = np.full((n, 2 * len(FEATURE_NAMES)), np.nan)
    for k, name in enumerate(FEATURE_NAMES):
        values = np.asarray(frames[name], np.float64)
        measured = np.asarray(frames[MEASURED_BY[name]]) != 0
        rows, v = row[measured], values[measured]
        count = np.bincount(rows, minlength=n)
        has = count > 0
        mean = np.bincount(rows, weights=v, minlength=n)[has] / count[has]
        out[has, 2 * k] = mean
        # two passes (deviations from the utterance's own mean): no cancellation in E[x^2] - E[x]^2
        full_mean = np.zeros(n)
        full_mean[has] = mean
        squares = np.bincount(rows, weights=(v - full_mean[rows]) ** 2, minlength=n)
        out[has, 2 * k + 1] = np.sqrt(squares[has] / count[has])
    return out


def token_frequencies(tokens: np.ndarray, offsets: np.ndarray, vocab_size: int) -> np.ndarray:
    """[n, vocab_size] share of each utterance's frames given each token (zeros: no frames)."""
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    row = np.repeat(np.arange(n), lengths)
    counts = np.bincount(row * vocab_size + np.asarray(tokens, np.int64),
                         minlength=n * vocab_size).reshape(n, vocab_size)
    return counts / np.maximum(lengths, 1)[:, None]


def untrained_encoder(config: Mapping) -> ProsodicSequenceEncoder:
    """An encoder of the trained one's shape with its initial random weights (seeded, the same
    in every process; the caller's random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        return ProsodicSequenceEncoder(**config)


def encoder_vectors(model: ProsodicSequenceEncoder, tokens: np.ndarray, offsets: np.ndarray,
                    batch_tokens: int) -> np.ndarray:
    """[n, hidden_dim] utterance vectors as the embed stage makes them: windows embedded, then
    their token-weighted mean."""
    sequences = [tokens[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    return embed_utterances(model, sequences, batch_tokens)


def centred(vectors: np.ndarray) -> np.ndarray:
    """The evaluated utterances' mean removed."""
    return vectors - vectors.mean(axis=0)


def standardised(vectors: np.ndarray) -> np.ndarray:
    """Each column z-scored over the evaluated utterances where it has a value (a constant
    column becomes 0); a missing value (NaN: a feature never measured in that utterance)
    becomes 0, the column's mean."""
    present = ~np.isnan(vectors)
    count = np.maximum(present.sum(axis=0), 1)
    filled = np.where(present, vectors, 0.0)
    mean = filled.sum(axis=0) / count
    deviation = np.where(present, vectors - mean, 0.0)
    std = np.sqrt((deviation ** 2).sum(axis=0) / count)
    return deviation / np.where(std > 0, std, 1.0)


def hellinger(frequencies: np.ndarray) -> np.ndarray:
    """Square-rooted frequencies: dot products of unit-sum histograms become the Bhattacharyya
    coefficient, and frequent tokens no longer swamp rare ones."""
    return np.sqrt(frequencies)


def compared(vectors: Mapping[str, np.ndarray],
             normalization: EmbeddingNormalization) -> dict[str, np.ndarray]:
    """The representations the evaluation scores, from the gathered outputs of every part
    (`parts.part_vectors`); the baselines' normalisations are fitted here, on these utterances."""
    embedded, untrained = vectors["embeddings"], vectors["untrained encoder"]
    return {"embeddings": embedded,
            "embeddings, normalised": normalization.apply(embedded),
            "feature statistics": standardised(vectors["feature statistics"]),
            "bag of tokens": centred(hellinger(vectors["token frequencies"])),
            "untrained encoder": untrained,
            "untrained encoder, centred": centred(untrained)}
