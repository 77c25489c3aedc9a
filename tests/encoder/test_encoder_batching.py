"""Random crops, length buckets, padding collation and windows for long sequences."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from timbrespace_ray.encoder import (collate, length_buckets, padding_fraction, random_crop,
                                     split_windows, token_batches)


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


def test_token_batches_fill_a_token_budget_in_length_order():
    lengths = np.array([300, 100, 100, 2000, 120, 100, 290, 310])
    batches = token_batches(lengths, 1000)
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    # sorted; 100 x 3 + 120 fits 4 x 120 <= 1000 but 290 would pad 4 x 170 of 5 x 290 cells;
    # three windows of about 300 fit 3 x 310; 2000 goes alone
    assert [lengths[b].tolist() for b in batches] == [[100, 100, 100, 120], [290, 300, 310],
                                                      [2000]]
    assert all(len(b) * lengths[b].max() <= 1000 for b in batches[:-1])


def test_token_batches_pad_little_where_window_counts_padded_much():
    # the bundled recordings' windows: a few of 30 s among many of 3-7 s
    lengths = np.tile([172, 184, 191, 203, 247, 329, 375, 441, 1872, 1872], 7)
    by_tokens = token_batches(lengths, 4096)
    by_count = length_buckets(lengths, 32)

    def padded_share(batches):
        return 1 - lengths.sum() / sum(len(b) * lengths[b].max() for b in batches)

    assert padded_share(by_tokens) < 0.05 < 0.4 < padded_share(by_count)
    assert token_batches([], 16) == []
    with pytest.raises(ValueError):
        token_batches([1, 2], 0)


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
