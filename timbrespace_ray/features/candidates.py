"""Per-frame formant candidates, the "peaks of peaks" of the mel energies (spec section 3).

Everything here runs in numba over a block of frames: no per-frame Python.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

MAX_CANDIDATES = 7
# candidate fields, in this order in the last axis of the candidates array
FREQ, POWER, WIDTH, DISSONANCE = 0, 1, 2, 3
PSCALE = 10000.0
F_LOW_SENTINEL = 15.0  # F_MIN / 2
F_HIGH_SENTINEL = 6030.0  # F_MAX + F_MIN
MAX_RANKS = 14


@nb.njit(cache=True, inline="always")
def _is_peak(y, n, i, sign):
    prev = y[i - 1] if i > 0 else y[n - 1]
    nxt = y[i + 1] if i < n - 1 else y[0]
    if sign > 0:
        return y[i] > prev and y[i] > nxt
    return y[i] < prev and y[i] < nxt


@nb.njit(cache=True)
def _frame_candidates(bands, centres, out, scratch_x, scratch_y, px, py, vx, vy, order, marks):
    """Fill out[7, 4] with the frame's candidates (sorted by frequency); return the ground level."""
    nb_ = bands.shape[0]
    n1 = 0
    for m in range(nb_):
        if _is_peak(bands, nb_, m, 1):
            scratch_x[n1] = centres[m]
            scratch_y[n1] = bands[m]
            n1 += 1
    if n1 <= 3:
        return 0.0
    n_peaks = 0
    n_val = 1  # slot 0 is kept free for a low sentinel valley
    for i in range(n1):
        if _is_peak(scratch_y, n1, i, 1):
            px[n_peaks] = scratch_x[i]
            py[n_peaks] = scratch_y[i]
            n_peaks += 1
        elif _is_peak(scratch_y, n1, i, -1):
            vx[n_val] = scratch_x[i]
            vy[n_val] = scratch_y[i]
            n_val += 1
    if n_peaks == 0 or n_val - 1 < 2:
        return 0.0
    ground = vy[1]
    for i in range(2, n_val):
        if vy[i] > ground:
            ground = vy[i]
    if ground < 1e-6:
        return ground
    v0 = 1
    if px[0] < vx[1]:
        v0 = 0
        vx[0] = F_LOW_SENTINEL
        vy[0] = ground / 8
    if px[n_peaks - 1] > vx[n_val - 1]:
        vx[n_val] = F_HIGH_SENTINEL
        vy[n_val] = ground / 8
        n_val += 1
    vx = vx[v0:n_val]
    vy = vy[v0:n_val]
    n_valleys = n_val - v0

    if n_peaks < 8:
        return ground
    n_ranks = MAX_RANKS if n_peaks >= 13 else n_peaks - 1
    ascending = np.argsort(py[:n_peaks], kind="mergesort")
    for r in range(n_ranks):
        # rank r is the r-th largest; past the end it wraps to the largest, as the reference does
        order[r] = ascending[(n_peaks - 1 - r) % n_peaks]
        marks[r] = False
    big = py[order[0]]

    n_found = 0
    for r in range(n_ranks):
        if n_found >= MAX_CANDIDATES:
            break
        p = order[r]
        if marks[r] or py[p] <= big / 16 or px[p] < 30.0 or px[p] > 6000.0:
            continue
        thr = py[p] / 4
        # right edge
        vr = 0
        while vr < n_valleys - 1 and vx[vr] <= px[p]:
            vr += 1
        while vy[vr] > thr and vr < n_valleys - 1:
            q = -1
            for i in range(n_peaks):
                if px[i] > vx[vr]:
                    q = i
                    break
            if q < 0 or not py[p] > py[q]:
                break
            vr += 1
        # left edge; the reference compares peak frequencies with the valley's list index here
        vl = n_valleys - 1
        while vl > 0 and vx[vl] >= px[p]:
            vl -= 1
        while vy[vl] > thr and vl > 0:
            q = -1
            for i in range(n_peaks):
                if px[i] < vl:
                    q = i
            if q < 0 or not py[p] > py[q]:
                break
            vl -= 1
        marks[r] = True
        lo_edge = vx[vl]
        hi_edge = vx[vr]
        dissonance = 0.0
        for k in range(n_ranks):
            if k == r:
                continue
            pk = order[k]
            if lo_edge < px[pk] < hi_edge:
                marks[k] = True
                if abs(px[pk] - px[p]) > px[p] / 50:
                    dissonance += py[pk]
                else:
                    px[p] = (px[p] + px[pk]) / 2
                    py[p] = (py[p] + py[pk]) / 2
        out[n_found, FREQ] = math.trunc(px[p])
        out[n_found, POWER] = math.trunc(py[p] * PSCALE)
        out[n_found, WIDTH] = math.trunc(10 * (math.log(hi_edge) - math.log(lo_edge)))
        out[n_found, DISSONANCE] = math.trunc(100 * dissonance / py[p])
        n_found += 1
    _sort_by_frequency(out, n_found)
    return ground


@nb.njit(cache=True)
def _sort_by_frequency(out, n):
    # drop candidates with frequency 0, then a stable insertion sort (n <= 7)
    kept = 0
    for i in range(n):
        if out[i, FREQ] > 0:
            if kept != i:
                out[kept, :] = out[i, :]
            kept += 1
    for i in range(kept, n):
        out[i, :] = 0.0
    for i in range(1, kept):
        j = i
        while j > 0 and out[j - 1, FREQ] > out[j, FREQ]:
            for f in range(4):
                tmp = out[j - 1, f]
                out[j - 1, f] = out[j, f]
                out[j, f] = tmp
            j -= 1


@nb.njit(cache=True)
def frame_candidates(bands, centres, candidates, ground):
    """Candidates (frames, 7, 4) and ground (frames,) for a block of mel energies (frames, NB)."""
    nb_ = bands.shape[1]
    scratch_x = np.empty(nb_)
    scratch_y = np.empty(nb_)
    px = np.empty(nb_)
    py = np.empty(nb_)
    vx = np.empty(nb_ + 2)
    vy = np.empty(nb_ + 2)
    order = np.empty(MAX_RANKS, dtype=np.int64)
    marks = np.empty(MAX_RANKS, dtype=np.bool_)
    for i in range(bands.shape[0]):
        candidates[i, :, :] = 0.0
        ground[i] = _frame_candidates(
            bands[i], centres, candidates[i], scratch_x, scratch_y, px, py, vx, vy, order, marks
        )
