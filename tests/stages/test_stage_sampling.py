"""Frame sampling for k-means: exact size, uniform over parts, reproducible."""
import numpy as np
import pyarrow as pa

from timbrespace_ray.clustering import FEATURE_WEIGHTS
from timbrespace_ray.features import FEATURE_NAMES
from timbrespace_ray.stages.sampling import per_part_counts, sample_part


def test_counts_are_exact_reproducible_and_proportional():
    parts = [1000, 50_000, 0, 149_000]
    a = per_part_counts(parts, 20_000, seed=7)
    assert a == per_part_counts(parts, 20_000, seed=7)
    assert a != per_part_counts(parts, 20_000, seed=8)
    assert sum(a) == 20_000 and a[2] == 0
    expected = np.array(parts) / sum(parts) * 20_000
    assert np.all(np.abs(np.array(a) - expected) < 5 * np.sqrt(expected + 1))


def test_small_corpora_are_taken_whole():
    assert per_part_counts([3, 4], 100, seed=0) == [3, 4]


def _table(n_utts, frames):
    rng = np.random.default_rng(0)
    cols = {name: pa.array([rng.random(frames, dtype=np.float32) for _ in range(n_utts)],
                           pa.list_(pa.float32())) for name in FEATURE_NAMES}
    return pa.table(cols)


def test_sample_part_draws_distinct_weighted_frames():
    table = _table(10, 100)
    all_frames = np.stack([table.column(n).combine_chunks().flatten().to_numpy() for n in FEATURE_NAMES], 1)
    s = sample_part(table, 300, seed=1, part_index=3)
    assert s.shape == (300, 6) and s.dtype == np.float32
    np.testing.assert_array_equal(s, sample_part(table, 300, seed=1, part_index=3))
    assert not np.array_equal(s, sample_part(table, 300, seed=1, part_index=4))
    unweighted = s / FEATURE_WEIGHTS
    matches = (np.abs(unweighted[:, None, :] - all_frames[None]) < 1e-6).all(-1)
    assert np.all(matches.sum(1) == 1)  # every sampled row is one real frame
    assert len(np.unique(matches.argmax(1))) == 300  # without replacement
    np.testing.assert_allclose(sample_part(table, 10_000, 1, 0) / FEATURE_WEIGHTS, all_frames, rtol=1e-6)
