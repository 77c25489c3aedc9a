"""Random crops, length buckets, padding collation and windows for long sequences."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from timbrespace_ray.encoder import (collate, length_buckets, padding_fraction, random_crop,
                                     split_windows)


def test_random_crop_short_sequences_are_untouched():
    tokens = np.arange(10, dtype=np.int16)
    assert random_crop(tokens, 10, np.random.default_rng(0)) is tokens


def test_random_crop_is_a_uniform_contiguous_slice():
    tokens = np.arange(100)
    starts = set()
    for seed in range(400):
        crop = random_crop(tokens, 90, np.random.default_rng(seed))
        assert len(crop) == 90
        assert np.array_equal(crop, np.arange(crop[0], crop[0] + 90))
        starts.add(int(crop[0]))
    assert starts == set(range(11))
    a = random_crop(tokens, 50, np.random.default_rng(7))
    b = random_crop(tokens, 50, np.random.default_rng(7))
    assert np.array_equal(a, b)


def assert_partition(batches: list[np.ndarray], n: int, batch_size: int) -> None:
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(n))
    assert all(1 <= len(b) <= batch_size for b in batches)


def test_sorted_buckets_cover_everything_in_length_order():
    lengths = np.array([5, 1, 9, 3, 7, 2, 8])
    batches = length_buckets(lengths, 3)
    assert_partition(batches, 7, 3)
    assert [lengths[b].tolist() for b in batches] == [[1, 2, 3], [5, 7, 8], [9]]


def test_shuffled_buckets_reduce_padding_and_vary():
    lengths = np.random.default_rng(0).integers(125, 1251, size=5000)
    bucketed = length_buckets(lengths, 16, np.random.default_rng(1))
    assert_partition(bucketed, 5000, 16)
    naive = np.array_split(np.random.default_rng(2).permutation(5000), 5000 // 16)

    def padded_share(batches):
        cells = sum(len(b) * lengths[b].max() for b in batches)
        return 1 - lengths.sum() / cells

    assert padded_share(bucketed) < 0.03 < 0.3 < padded_share(naive)
    again = length_buckets(lengths, 16, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again))
    other = length_buckets(lengths, 16, np.random.default_rng(3))
    assert not all(np.array_equal(a, b) for a, b in zip(bucketed, other))


def test_bucket_edge_cases():
    assert length_buckets([], 4) == []
    with pytest.raises(ValueError):
        length_buckets([1, 2], 0)


def test_collate_pads_with_minus_100():
    batch = collate([np.array([4, 5], dtype=np.int16), [1, 2, 3, 119]])
    assert batch.tokens.dtype == torch.int64
    assert batch.tokens.tolist() == [[4, 5, -100, -100], [1, 2, 3, 119]]
    assert batch.lengths.tolist() == [2, 4]
    assert batch.padding_fraction == pytest.approx(0.25)


def test_padding_fraction():
    assert padding_fraction([3, 3]) == 0.0
    assert padding_fraction([1, 4, 4, 3]) == pytest.approx(4 / 16)
    assert padding_fraction([]) == 0.0


@pytest.mark.parametrize("n,max_len,expected", [
    (0, 2000, []),
    (5, 2000, [(0, 0, 5)]),
    (2000, 2000, [(0, 0, 2000)]),
    (2001, 2000, [(0, 0, 1001), (1, 1001, 1000)]),
    (10, 3, [(0, 0, 3), (1, 3, 3), (2, 6, 2), (3, 8, 2)]),
])
def test_split_windows_examples(n, max_len, expected):
    assert split_windows(n, max_len) == expected


def test_split_windows_cover_without_overlap():
    rng = np.random.default_rng(0)
    for n in rng.integers(1, 20000, size=200):
        windows = split_windows(int(n), 2000)
        assert [w[0] for w in windows] == list(range(len(windows)))
        assert len(windows) == -(-n // 2000)
        starts = [w[1] for w in windows]
        sizes = [w[2] for w in windows]
        assert starts[0] == 0 and sum(sizes) == n
        assert all(s + k == s2 for s, k, s2 in zip(starts, sizes, starts[1:]))
        assert max(sizes) <= 2000 and max(sizes) - min(sizes) <= 1


def test_split_windows_rejects_bad_max_len():
    with pytest.raises(ValueError):
        split_windows(10, 0)
