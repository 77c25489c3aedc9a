"""Lloyd's k-means for low-dimensional float32 frames: numba kernels with distance bounds.

Each frame keeps its centre a, a second centre j, and three bounds: an upper bound u on its
distance to a, a lower bound l2 on its distance to j and a lower bound l3 on its distance to
every other centre (Hamerly 2010, "Making k-means even faster", with a second candidate as in
Drake and Hamerly 2012's adaptive bounds). When the centres move, the bounds move by their
shifts. A frame whose u stays below l2 and l3, or below half the distance from a to its nearest
other centre, keeps its centre without a distance computed; one whose u stays below l3 can only
be nearer to a or to j, which one distance settles; only the rest are searched over all
centres. l3 also never falls below (distance from a to the nearest centre other than j) - u,
which the centres' own positions give afresh each pass.

Frames are not even read while they are settled: the bounds are stored net of the centres'
summed shifts (`drift`), so they need no update, and each frame gets a due level from its
slack: its test cannot fail before its centre's drift plus the summed largest shift reaches
it. A pass reads two numbers of a settled frame. Near convergence a pass over 7 M frames looks
at about a sixth of them, computes one distance for most of those (frames on the border of
two clusters) and searches about 2% over all centres: about 0.1 s on one thread, where the
first pass (every frame searched) takes 0.5 s.

Exactness: the result is Lloyd's, not an approximation: bounds only skip distances that cannot
change a frame's centre. They are kept in float32 with a relative safety margin (`_EPS`) a few
times float32's rounding, so rounding can only make a bound looser, never wrong.

Determinism: frames are cut into fixed blocks of `BLOCK` rows whatever the thread count; each
block adds what its frames bring to (or take from) each cluster in its own float64 buffer and
the buffers are added in block order, so the centres (and everything after) are the same bit for
bit on 1, 2 or 16 threads.

Speed: the search over all centres runs on tiles of `TILE` frames, frames in SIMD lanes, one
centre at a time, with squared differences (no ||x||^2 - 2 x.c + ||c||^2 expansion, which loses
precision in float32). Six dims (the prosodic frame) are unrolled; other widths take a generic
loop, slower.
"""
from __future__ import annotations

import numba as nb
import numpy as np

BLOCK = 16384  # rows per block: the unit of parallel work and of the ordered sums
TILE = 32  # frames searched together, one per SIMD lane
# LLVM may reassociate and fuse, but not assume away NaN or infinity: _BIG stands for "none"
_FASTMATH = {"contract", "reassoc", "nsz", "arcp"}
_BIG = np.float32(3e38)
_EPS = np.float32(4e-6)  # relative slack on the bounds, > a few float32 ulps of a distance


@nb.njit(fastmath=_FASTMATH, boundscheck=False, cache=True)
def _fold(q, c, v1, v2, v3, b1, b2):
    """Fold centre c's squared distances q (one frame a lane) into each lane's three nearest
    (v1 <= v2 <= v3; centres b1, b2 as float32), without branches so that the lanes vectorise.
    Ties keep the lower centre first."""
    cf = np.float32(c)
    for p in range(TILE):
        qq = q[p]
        o1 = v1[p]
        o2 = v2[p]
        lt1 = qq < o1
        lt2 = qq < o2
        v3[p] = o2 if lt2 else (qq if qq < v3[p] else v3[p])
        v2[p] = o1 if lt1 else (qq if lt2 else o2)
        b2[p] = b1[p] if lt1 else (cf if lt2 else b2[p])
        v1[p] = qq if lt1 else o1
        b1[p] = cf if lt1 else b1[p]


@nb.njit(fastmath=_FASTMATH, boundscheck=False, cache=True)
def _search(x, rows, start, m, centers, xt, q, v1, v2, v3, b1, b2):
    """The three nearest squared distances and two nearest centres (see _fold) of the frames
    x[rows[start:start + m]], one a lane (spare lanes repeat the last frame)."""
    d = x.shape[1]
    for p in range(TILE):
        i = rows[start + min(p, m - 1)]
        for f in range(d):
            xt[f, p] = x[i, f]
        v1[p] = _BIG
        v2[p] = _BIG
        v3[p] = _BIG
        b1[p] = 0
        b2[p] = 0
    for c in range(centers.shape[0]):
        if d == 6:
            a0 = centers[c, 0]
            a1 = centers[c, 1]
            a2 = centers[c, 2]
            a3 = centers[c, 3]
            a4 = centers[c, 4]
            a5 = centers[c, 5]
            for p in range(TILE):
                t0 = xt[0, p] - a0
                t1 = xt[1, p] - a1
                t2 = xt[2, p] - a2
                t3 = xt[3, p] - a3
                t4 = xt[4, p] - a4
                t5 = xt[5, p] - a5
                q[p] = t0 * t0 + t1 * t1 + t2 * t2 + t3 * t3 + t4 * t4 + t5 * t5
        else:
            a = centers[c, 0]
            for p in range(TILE):
                t = xt[0, p] - a
                q[p] = t * t
            for f in range(1, d):
                a = centers[c, f]
                for p in range(TILE):
                    t = xt[f, p] - a
                    q[p] += t * t
        _fold(q, c, v1, v2, v3, b1, b2)


@nb.njit(fastmath=_FASTMATH, boundscheck=False, cache=True, inline="always")
def _dist2(x, i, centers, c):
    s = np.float32(0)
    for f in range(x.shape[1]):
        t = x[i, f] - centers[c, f]
        s += t * t
    return s


@nb.njit(cache=True, inline="always")
def _up(v):
    """v (float64) as a float32 no smaller (float32 rounds by at most 2**-24 relative)."""
    return np.float32(v + abs(v) * 2e-7)


@nb.njit(cache=True, inline="always")
def _down(v):
    """v (float64) as a float32 no larger."""
    return np.float32(v - abs(v) * 2e-7)


@nb.njit(fastmath=_FASTMATH, boundscheck=False, cache=True, inline="always")
def _move(s, cnt, x, i, wi, to, frm):
    """Frame i (weight wi) leaves cluster frm (none if < 0) for cluster `to`, in a block's
    sums."""
    cnt[to] += wi
    for f in range(x.shape[1]):
        s[to, f] += wi * x[i, f]
    if frm >= 0:
        cnt[frm] -= wi
        for f in range(x.shape[1]):
            s[frm, f] -= wi * x[i, f]


@nb.njit(parallel=True, fastmath=_FASTMATH, boundscheck=False, cache=True)
def _step(x, w, centers, now, drift, drift_max, half_gap, near, near1, near2, labels, due,
          bounds, sums, counts, changed, searched, inertia, mode):
    """One E-step over all frames, and what it changes in the M-step's sums.

    drift[t, c]: how far centre c has moved up to pass t, summed over passes; drift_max[t]: the
    same for the largest shift of each pass. Per frame i: labels[i] (a), and in bounds[i] its
    second centre j (as float32) and the bounds u, l2, l3 of the module's docstring, kept in
    drift terms so that a frame's bounds need no update while it is not looked at:
    u = bounds[i, 0] + drift[now, a], l2 = bounds[i, 1] - drift[now, j],
    l3 = bounds[i, 2] - drift_max[now]. Between two passes a frame's slack (how far u is from
    failing the test) shrinks by at most the shift of its own centre plus the largest shift,
    so a frame with due[i] > drift[now, a] + drift_max[now] cannot have changed cluster and is
    skipped after reading two numbers.

    mode 0: search every frame (no labels or bounds yet); 1: use the bounds; 2: as 1, with
    every frame's distance to its centre computed exactly, and inertia[b] set to block b's
    weighted sum of squared distances (the final pass). sums[b] and counts[b]: what block b's
    frames that changed cluster add to their new cluster and take from their old one (all of
    its frames in mode 0). changed[b]: frames of block b whose cluster changed; searched[b]:
    frames searched over all centres. `w` of length 0 means every frame weighs 1.
    """
    n, d = x.shape
    weighted = w.shape[0] > 0
    n_blocks = (n + BLOCK - 1) // BLOCK
    level = drift_max[now]
    for b in nb.prange(n_blocks):
        lo = b * BLOCK
        hi = min(n, lo + BLOCK)
        rows = np.empty(hi - lo, np.int32)
        todo = np.empty(hi - lo, np.int32)
        xt = np.empty((d, TILE), np.float32)
        q = np.empty(TILE, np.float32)
        v1 = np.empty(TILE, np.float32)
        v2 = np.empty(TILE, np.float32)
        v3 = np.empty(TILE, np.float32)
        b1 = np.empty(TILE, np.float32)
        b2 = np.empty(TILE, np.float32)
        s = sums[b]
        cnt = counts[b]
        s[:, :] = 0
        cnt[:] = 0
        nq = 0
        moved = 0
        total = 0.0
        if mode == 0:
            for i in range(lo, hi):
                rows[nq] = i
                nq += 1
        else:
            # the frames due first (a tight sequential scan), then those frames in order
            n_due = 0
            if mode == 1:
                for i in range(lo, hi):
                    if due[i] <= drift[now, labels[i]] + level:
                        todo[n_due] = i
                        n_due += 1
            else:
                for i in range(lo, hi):
                    todo[n_due] = i
                    n_due += 1
            for t in range(n_due):
                i = todo[t]
                a = labels[i]
                j = np.int64(bounds[i, 3])
                ub = bounds[i, 0] + drift[now, a]  # float64 from here on
                l2 = bounds[i, 1] - drift[now, j]
                l3 = bounds[i, 2] - level
                # the centres but a and j are at least as far from a as `apart`: so at least
                # apart - ub from the frame, and that does not wear off as l3 does
                apart = near2[a] if j == near[a] else near1[a]
                geometric = apart - ub > l3
                if geometric:
                    l3 = apart - ub
                bound = max(np.float64(half_gap[a]), min(l2, l3))
                queued = False
                da = np.float32(0)
                if mode == 2 or ub > bound:
                    da = _dist2(x, i, centers, a)
                    ub = np.float64(np.sqrt(da) * (1 + _EPS))
                    if apart - ub > l3:
                        l3 = apart - ub
                        geometric = True
                    bound = max(np.float64(half_gap[a]), min(l2, l3))
                    if ub > bound:
                        if ub > l3:
                            rows[nq] = i  # a centre other than a and j may be nearer
                            nq += 1
                            queued = True
                        else:
                            # the nearest is a or j: one distance settles it
                            dj = _dist2(x, i, centers, j)
                            if dj < da:
                                wi = np.float64(w[i]) if weighted else 1.0
                                _move(s, cnt, x, i, wi, j, a)
                                moved += 1
                                labels[i] = j
                                l2 = np.float64(np.sqrt(da) * (1 - _EPS))
                                ub = np.float64(np.sqrt(dj) * (1 + _EPS))
                                da = dj
                                j = a
                                a = labels[i]
                            else:
                                l2 = np.float64(np.sqrt(dj) * (1 - _EPS))
                    if mode == 2 and not queued:
                        total += (np.float64(w[i]) if weighted else 1.0) * da
                if not queued:
                    _keep(bounds, due, i, a, j, ub, l2, l3, 3.0 if geometric else 1.0,
                          half_gap[a], drift[now, a], drift[now, j], level)
        for start in range(0, nq, TILE):
            m = min(TILE, nq - start)
            _search(x, rows, start, m, centers, xt, q, v1, v2, v3, b1, b2)
            for p in range(m):
                i = rows[start + p]
                c = np.int32(b1[p])
                j = np.int32(b2[p])
                a = labels[i]
                wi = np.float64(w[i]) if weighted else 1.0
                if mode == 2:
                    total += wi * v1[p]
                if c != a:
                    _move(s, cnt, x, i, wi, c, a)
                    moved += 1
                    labels[i] = c
                _keep(bounds, due, i, c, j, np.float64(np.sqrt(v1[p]) * (1 + _EPS)),
                      np.float64(np.sqrt(v2[p]) * (1 - _EPS)),
                      np.float64(np.sqrt(v3[p]) * (1 - _EPS)), 1.0, half_gap[c], drift[now, c],
                      drift[now, j], level)
        changed[b] = moved
        searched[b] = nq
        inertia[b] = total


@nb.njit(cache=True, inline="always")
def _keep(bounds, due, i, a, j, ub, l2, l3, l3_rate, gap, drift_a, drift_j, level):
    """Store frame i's centre-independent bounds (see _step) and when it is next due: its
    slack, against the lower bounds (which it loses at the rate its centre and the fastest
    centre move, or up to 3 times as fast for a geometric l3: l3_rate) or against the half
    gap (up to 1.5 times as fast)."""
    bounds[i, 0] = _up(ub - drift_a)
    bounds[i, 1] = _down(l2 + drift_j)
    bounds[i, 2] = _down(l3 + level)
    bounds[i, 3] = np.float32(j)
    slack = max(min(l2 - ub, (l3 - ub) / l3_rate), (gap - ub) * (2.0 / 3.0))
    due[i] = _down((drift_a + level + slack) * (1 - 1e-6))


@nb.njit(boundscheck=False, cache=True)
def _farthest(x, centers, labels, how_many):
    """Rows of the `how_many` frames farthest from their centre (exact distances; ties: the
    lower row), as (rows, squared distances), farthest first; per block, then merged."""
    n = x.shape[0]
    n_blocks = (n + BLOCK - 1) // BLOCK
    best_d = np.full((n_blocks, how_many), -1.0)
    best_i = np.full((n_blocks, how_many), -1, np.int64)
    for b in range(n_blocks):
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            dd = np.float64(_dist2(x, i, centers, labels[i]))
            if dd > best_d[b, how_many - 1]:
                j = how_many - 1
                while j > 0 and best_d[b, j - 1] < dd:
                    best_d[b, j] = best_d[b, j - 1]
                    best_i[b, j] = best_i[b, j - 1]
                    j -= 1
                best_d[b, j] = dd
                best_i[b, j] = i
    flat_d = best_d.ravel()
    flat_i = best_i.ravel()
    order = np.argsort(-flat_d, kind="mergesort")  # stable: among equals, the lower block
    return flat_i[order[:how_many]], flat_d[order[:how_many]]


@nb.njit(boundscheck=False, cache=True)
def _moments(x, w):
    """Per block: total weight, and weighted sums of x and of x**2 (float64)."""
    n, d = x.shape
    weighted = w.shape[0] > 0
    n_blocks = (n + BLOCK - 1) // BLOCK
    out = np.zeros((n_blocks, 2 * d + 1))
    for b in range(n_blocks):
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            wi = np.float64(w[i]) if weighted else 1.0
            out[b, 0] += wi
            for f in range(d):
                v = np.float64(x[i, f])
                out[b, 1 + f] += wi * v
                out[b, 1 + d + f] += wi * v * v
    return out


def mean_variance(x: np.ndarray, w: np.ndarray | None) -> float:
    """The mean over dims of the (weighted) per-dim variance: scikit-learn's tol scale."""
    m = _moments(x, np.zeros(0) if w is None else np.asarray(w, np.float64)).sum(axis=0)
    d = x.shape[1]
    mean = m[1 : 1 + d] / m[0]
    var = np.maximum(m[1 + d :] / m[0] - mean * mean, 0.0)
    return float(var.mean())


def _geometry(centers: np.ndarray):
    """Per centre: half the distance to its nearest other centre (float32), that centre, and
    the distances to it and to the next nearest (float64); all lower bounds, _BIG where there
    is no such centre."""
    c = centers.astype(np.float64)
    k = c.shape[0]
    dd = ((c[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(dd, np.inf)
    order = np.argsort(dd, axis=1, kind="stable")[:, :2]
    rows = np.arange(k)
    slack = 1 - 2 * float(_EPS)
    first = np.sqrt(dd[rows, order[:, 0]]) * slack if k > 1 else np.full(k, float(_BIG))
    second = np.sqrt(dd[rows, order[:, 1]]) * slack if k > 2 else np.full(k, float(_BIG))
    near = order[:, 0].astype(np.int64) if k > 1 else np.zeros(k, np.int64)
    return (np.minimum(0.5 * first, float(_BIG)).astype(np.float32), near, first, second)


def lloyd(x: np.ndarray, w: np.ndarray | None, init: np.ndarray, *, max_iter: int,
          tol: float) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Lloyd's algorithm from `init` on (n, d) float32 frames `x` with optional frame weights
    `w`, stopping like scikit-learn: when no frame changes cluster, or when the sum of squared
    centre shifts falls to `tol` (absolute: scikit-learn's tol times the data's mean variance),
    or after `max_iter` passes.

    An empty cluster moves to the frame farthest from its centre (as scikit-learn does), unless
    every frame sits on its centre (fewer distinct frames than clusters): it then stays.

    Returns (centres float32, labels int32, inertia, passes); the labels and inertia are those
    of the returned centres.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if n >= 2**31 - BLOCK:
        raise ValueError(f"at most {2**31 - BLOCK - 1} frames, got {n}")
    weights = np.zeros(0, np.float64) if w is None else np.ascontiguousarray(w, np.float64)
    centers = np.array(init, dtype=np.float32, order="C", copy=True)
    k = centers.shape[0]
    n_blocks = (n + BLOCK - 1) // BLOCK
    labels = np.full(n, -1, np.int32)
    bounds = np.zeros((n, 4), np.float32)
    sums = np.zeros((n_blocks, k, d))
    counts = np.zeros((n_blocks, k))
    changed = np.zeros(n_blocks, np.int64)
    searched = np.zeros(n_blocks, np.int64)
    inertia = np.zeros(n_blocks)
    total = np.zeros((k, d))
    weight = np.zeros(k)
    due = np.zeros(n, np.float32)
    drift = np.zeros((max_iter + 2, k))
    drift_max = np.zeros(max_iter + 2)
    gaps, near, near1, near2 = _geometry(centers)
    mode, n_iter, fixed = 0, 0, False
    while True:
        _step(x, weights, centers, n_iter, drift, drift_max, gaps, near, near1, near2, labels,
              due, bounds, sums, counts, changed, searched, inertia, mode)
        n_iter += 1
        mode = 1
        total += sums.sum(axis=0)
        weight += counts.sum(axis=0)
        full = weight > 0
        new = centers.astype(np.float64)
        new[full] = total[full] / weight[full, None]
        relocated = False
        if not full.all():
            relocated = _relocate(x, weights, centers, labels, due, bounds, new, total, weight,
                                  np.flatnonzero(~full))
        if changed.sum() == 0 and not relocated:
            fixed = True  # Lloyd's fixed point: the centres are their clusters' means already
            break
        new = new.astype(np.float32)
        moved = np.sqrt(((new.astype(np.float64) - centers) ** 2).sum(axis=1))
        shift = moved * (1 + 4 * float(_EPS))
        drift[n_iter] = drift[n_iter - 1] + shift
        drift_max[n_iter] = drift_max[n_iter - 1] + shift.max()
        centers = new
        gaps, near, near1, near2 = _geometry(centers)
        if float((moved ** 2).sum()) <= tol or n_iter >= max_iter:
            break
    if fixed:  # nothing moved: the bounds hold as they are
        drift[n_iter] = drift[n_iter - 1]
        drift_max[n_iter] = drift_max[n_iter - 1]
    # labels and inertia of the final centres
    _step(x, weights, centers, n_iter, drift, drift_max, gaps, near, near1, near2, labels, due,
          bounds, sums, counts, changed, searched, inertia, 2)
    return centers, labels, float(inertia.sum()), n_iter


def _relocate(x, weights, centers, labels, due, bounds, new, total, weight, empty) -> bool:
    """scikit-learn's rule for empty clusters: each takes one of the frames farthest from their
    centre, which leaves its old cluster. Frames at distance 0 are not taken: a centre with no
    frame to gain stays where it was. Updates labels, bounds, sums and `new`; True if any
    cluster took a frame."""
    rows, dist = _farthest(x, centers, labels, empty.size)
    took = False
    for c, i, dd in zip(empty, rows, dist):
        if dd <= 0 or i < 0:
            continue
        wi = 1.0 if weights.size == 0 else float(weights[i])
        old = labels[i]
        xi = x[i].astype(np.float64)
        total[old] -= wi * xi
        weight[old] -= wi
        if weight[old] > 0:
            new[old] = total[old] / weight[old]
        total[c] = wi * xi
        weight[c] = wi
        new[c] = xi
        labels[i] = c
        # bounds that hold whatever moves next: the frame is searched on the next pass
        bounds[i] = (_BIG, -_BIG, -_BIG, old)
        due[i] = -_BIG
        took = True
    return took


@nb.njit(fastmath=_FASTMATH, boundscheck=False, cache=True)
def _plusplus(x, w, k, first, draws):
    """Greedy k-means++ on x with weights w: the first centre is the frame at `first` (a
    uniform draw in [0, 1) times the total weight); each next one is the best (lowest
    potential) of draws.shape[1] candidates drawn with probability proportional to weight x
    squared distance to the nearest chosen centre (draws: uniform in [0, 1)). One thread: the
    sample it runs on is small. Returns the chosen rows."""
    n, d = x.shape
    trials = draws.shape[1]
    chosen = np.empty(k, np.int64)
    cum = np.cumsum(w)
    chosen[0] = min(np.searchsorted(cum, first * cum[-1], side="right"), n - 1)
    closest = np.empty(n, np.float32)
    c = chosen[0]
    for i in range(n):
        s = np.float32(0)
        for f in range(d):
            u = x[i, f] - x[c, f]
            s += u * u
        closest[i] = s
    trial = np.empty((trials, n), np.float32)
    cands = np.empty(trials, np.int64)
    for step in range(1, k):
        total = 0.0
        for i in range(n):
            total += w[i] * closest[i]
            cum[i] = total
        for t in range(trials):
            cands[t] = min(np.searchsorted(cum, draws[step, t] * total, side="left"), n - 1)
        best_t = 0
        best_pot = np.inf
        for t in range(trials):
            c = cands[t]
            pot = 0.0
            for i in range(n):
                s = np.float32(0)
                for f in range(d):
                    u = x[i, f] - x[c, f]
                    s += u * u
                s = min(s, closest[i])
                trial[t, i] = s
                pot += w[i] * s
            if pot < best_pot:
                best_pot = pot
                best_t = t
        chosen[step] = cands[best_t]
        closest[:] = trial[best_t]
    return chosen


def kmeans_plusplus(x: np.ndarray, w: np.ndarray | None, k: int, seed: int) -> np.ndarray:
    """Greedy k-means++ (Arthur and Vassilvitskii; scikit-learn's variant: 2 + ln k candidates
    a centre, the one that lowers the potential most kept) on float32 frames with optional
    weights: k centres, deterministic per seed."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    weights = np.ones(n) if w is None else np.ascontiguousarray(w, np.float64)
    rng = np.random.default_rng(seed)
    first = rng.random()
    draws = rng.random((k, 2 + int(np.log(k))))
    return x[_plusplus(x, weights, k, first, draws)].copy()
