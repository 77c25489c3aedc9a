"""Statistics of values that fall into groups (frames of utterances, utterances of speakers),
computed for every group at once: one sort and a few fancy-indexing steps, no Python loop over
groups, so a part of 100,000 utterances costs what one long utterance costs."""
from __future__ import annotations

import numpy as np


def grouped_quantiles(values: np.ndarray, groups: np.ndarray, n_groups: int,
                      quantiles: np.ndarray | list[float] | tuple[float, ...]) -> np.ndarray:
    """[n_groups, len(quantiles)] quantiles of the values of each group, with numpy's default
    ("linear") interpolation, so each row equals `np.quantile` of that group's values (to the last
    bit or two). NaN values are left out; a group without values gets NaN.

    `groups` holds each value's group index in 0..n_groups-1.
    """
    values = np.asarray(values, np.float64)
    groups = np.asarray(groups, np.int64)
    q = np.asarray(quantiles, np.float64)
    keep = ~np.isnan(values)
    values, groups = values[keep], groups[keep]
    ordered = _sorted_within_groups(values, groups)
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    out = np.full((n_groups, q.size), np.nan)
    has = counts > 0
    n = counts[has, None]
    position = q[None, :] * (n - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, n - 1)
    t = position - below
    a = ordered[starts[has, None] + below]
    b = ordered[starts[has, None] + above]
    # numpy's own lerp: from the nearer end, so t = 1 gives b exactly
    diff = b - a
    out[has] = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return out


def _sorted_within_groups(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The values ordered by group, then by value. One argsort of the values gives each its rank;
    group x count + rank is then a single int64 key whose plain sort orders both at once, and
    the key's remainder is the rank, so the values come back exactly. (np.lexsort on the two
    arrays does the same at about 3x the time.)"""
    n = len(values)
    by_value = np.argsort(values)
    rank = np.empty(n, np.int64)
    rank[by_value] = np.arange(n)
    keys = np.sort(groups * n + rank)
    return values[by_value][keys % max(n, 1)]


def grouped_mean_std(values: np.ndarray, groups: np.ndarray,
                     n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, population standard deviation and count of the values of each group (NaN mean and
    std for a group without values). Two passes (deviations from the group's own mean), so a
    small spread around a large mean is not lost to cancellation as in E[x^2] - E[x]^2."""
    values = np.asarray(values, np.float64)
    groups = np.asarray(groups, np.int64)
    count = np.bincount(groups, minlength=n_groups)
    has = count > 0
    mean = np.full(n_groups, np.nan)
    mean[has] = np.bincount(groups, weights=values, minlength=n_groups)[has] / count[has]
    centre = np.where(has, mean, 0.0)
    squares = np.bincount(groups, weights=(values - centre[groups]) ** 2, minlength=n_groups)
    std = np.full(n_groups, np.nan)
    std[has] = np.sqrt(squares[has] / count[has])
    return mean, std, count
