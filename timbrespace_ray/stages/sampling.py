"""Uniform, reproducible frame samples across many feature part files.

The sample is exactly uniform without replacement over all frames: the number drawn from each
part follows the multivariate hypergeometric law, then each part draws its frames with its own
seeded generator. Parts are sampled independently (in parallel) and nothing is concatenated
before the sample is small.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..clustering.model import weighted_frames
from ..features.analysis import FEATURE_NAMES


def per_part_counts(frames_per_part: list[int], max_frames: int, seed: int) -> list[int]:
    """How many frames to draw from each part: all of them, or a uniform sample of max_frames."""
    total = int(sum(frames_per_part))
    if total <= max_frames:
        return [int(n) for n in frames_per_part]
    rng = np.random.default_rng(seed)
    return [int(k) for k in rng.multivariate_hypergeometric(np.asarray(frames_per_part, np.int64),
                                                            max_frames, method="marginals")]


def sample_part(table: pa.Table, k: int, seed: int, part_index: int) -> np.ndarray:
    """(k, 6) weighted clustering input: k frames drawn uniformly from one features part."""
    values = np.stack([table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
                       for name in FEATURE_NAMES], axis=1).astype(np.float32)
    if k < len(values):
        rng = np.random.default_rng([seed, part_index])
        values = values[np.sort(rng.choice(len(values), size=k, replace=False))]
    return weighted_frames(values)
