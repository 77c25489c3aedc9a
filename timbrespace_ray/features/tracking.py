"""Voiced segments and F0/F1/F2 tracking over formant candidates (spec sections 4 and 5).

All of it is numba: one call tracks every segment of a recording.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from .candidates import DISSONANCE, FREQ, POWER, PSCALE, WIDTH

# target t: F0, F1, F2 search ranges in Hz (inclusive)
RANGES = np.array([[80.0, 400.0], [200.0, 1200.0], [800.0, 3500.0]])
F0_RANGE_CENTRE = 240.0
MAX_LOOKAHEAD = 4
MAX_MISSES = 3


@nb.njit(cache=True)
def voiced_mask(ground, energy):
    """Frames whose ground level and energy pass the recording's adaptive thresholds."""
    n = ground.shape[0]
    g_max = 0.0
    g_sum = 0.0
    g_count = 0
    for i in range(n):
        g_max = max(g_max, ground[i])
        if ground[i] > 0:
            g_sum += ground[i]
            g_count += 1
    g = g_sum / g_count if g_count > 0 else 0.0
    if g > 0:
        while g_max / g < 20 or g > 0.0001:
            g *= 0.99
    else:
        g = 0.00005
    e_sum = 0.0
    e_count = 0
    for i in range(n):
        if ground[i] > g:
            e_sum += energy[i]
            e_count += 1
    e = 0.1 * e_sum / e_count if e_count > 0 else 0.0
    if e < g:
        e = 2 * g
    out = np.empty(n, dtype=np.bool_)
    for i in range(n):
        out[i] = ground[i] > g and energy[i] > e
    return out


@nb.njit(cache=True)
def _score(t, cand, hist, h_len, window, jump, momentum):
    """Lower is better: continuity with the target's history, plus candidate weakness."""
    f = cand[FREQ]
    score = 0.0
    if h_len > 0:
        r_len = min(h_len, window)
        lf = hist[h_len - 1, FREQ]
        if t == 0:
            score += 10.0 if abs(f - lf) > jump * F0_RANGE_CENTRE else abs(f - lf) / 50
            if r_len >= 3:
                cnt = min(5, r_len)
                s0 = h_len - cnt
                wsum = 0.0
                for i in range(cnt):
                    wsum += math.exp(-1.0 + i / (cnt - 1))
                trend = 0.0
                for i in range(1, cnt):
                    w = math.exp(-1.0 + i / (cnt - 1)) / wsum
                    trend += (hist[s0 + i, FREQ] - hist[s0 + i - 1, FREQ]) * w
                score += abs(f - (lf + trend * momentum)) / 30
            if r_len >= 4:
                mean = 0.0
                for i in range(h_len - 4, h_len):
                    mean += hist[i, FREQ]
                mean /= 4
                var = 0.0
                for i in range(h_len - 4, h_len):
                    var += (hist[i, FREQ] - mean) ** 2
                var /= 4
                if var < 50:
                    score -= 2 / (1 + var / 10)
        else:
            score += abs(f - lf) / 100
            if r_len >= 2:
                score += abs(cand[POWER] - hist[h_len - 1, POWER]) / PSCALE
                cnt = min(3, r_len)
                slope = (lf - hist[h_len - cnt, FREQ]) / cnt
                score += abs(f - (lf + slope)) / 50
    score += (PSCALE - cand[POWER]) / PSCALE
    return score


@nb.njit(cache=True)
def _in_range(t, f):
    return RANGES[t, 0] <= f <= RANGES[t, 1]


@nb.njit(cache=True)
def _look_ahead(t, candidates, frame, seg_end, last_freq):
    """Index (frame, slot) of the first near-continuation of target t in the next frames, or -1."""
    tolerance = 0.4 * (RANGES[t, 1] - RANGES[t, 0])
    for j in range(frame + 1, min(frame + 1 + MAX_LOOKAHEAD, seg_end)):
        for c in range(candidates.shape[1]):
            f = candidates[j, c, FREQ]
            if f > 0 and _in_range(t, f) and abs(f - last_freq) < tolerance:
                return j, c
    return -1, -1


@nb.njit(cache=True)
def _track_segment(candidates, start, end, s, out):
    """Track F0/F1/F2 over frames [start, end); write (frame, target, field) into out."""
    window = max(7, int(10 * s))
    momentum = 0.3 * s
    jump = 0.15 * (1 - 0.5 * s)
    a = 0.4 * (1 - 0.5 * s)
    b = 0.5 * (1 - 0.3 * s)
    n_slots = candidates.shape[1]
    hist = np.zeros((3, 2 * window + MAX_MISSES + 2, 4))
    h_len = np.zeros(3, dtype=np.int64)
    misses = np.zeros(3, dtype=np.int64)
    taken = np.zeros(n_slots, dtype=np.bool_)
    assigned = np.empty(3, dtype=np.int64)
    entry = np.empty(4)
    for i in range(start, end):
        cands = candidates[i]
        taken[:] = False
        for t in range(3):
            best = -1
            best_score = 0.0
            for c in range(n_slots):
                f = cands[c, FREQ]
                if f <= 0 or taken[c] or not _in_range(t, f):
                    continue
                sc = _score(t, cands[c], hist[t], h_len[t], window, jump, momentum)
                if best < 0 or sc < best_score:
                    best = c
                    best_score = sc
            assigned[t] = best
            if best >= 0:
                taken[best] = True
        for t in range(3):
            n = h_len[t]
            if assigned[t] >= 0:
                entry[:] = cands[assigned[t]]
                if t == 0 and n > 0:
                    entry[FREQ] = a * entry[FREQ] + (1 - a) * hist[t, n - 1, FREQ]
                    entry[WIDTH] = b * entry[WIDTH] + (1 - b) * hist[t, n - 1, WIDTH]
                out[i, t, :] = entry
                hist[t, n, :] = entry
                n += 1
                misses[t] = 0
                if n > 2 * window:
                    hist[t, :window, :] = hist[t, n - window : n, :].copy()
                    n = window
                h_len[t] = n
                continue
            misses[t] += 1
            m = misses[t]
            if m <= MAX_MISSES and n > 0:
                last = hist[t, n - 1]
                j, c = _look_ahead(t, candidates, i, end, last[FREQ])
                if j >= 0:
                    nxt = candidates[j, c]
                    al = 1.0 / (m + 1)
                    for f in (POWER, WIDTH, DISSONANCE):
                        entry[f] = last[f] * (1 - al) + nxt[f] * al
                    if t == 0 and n >= 2:
                        v1 = hist[t, n - 1, FREQ] - hist[t, n - 2, FREQ]
                        v2 = nxt[FREQ] - last[FREQ]
                        h1 = 2 * al**3 - 3 * al**2 + 1
                        h2 = -2 * al**3 + 3 * al**2
                        h3 = al**3 - 2 * al**2 + al
                        h4 = al**3 - al**2
                        entry[FREQ] = (
                            h1 * last[FREQ] + h2 * nxt[FREQ] + 0.1 * h3 * v1 + 0.1 * h4 * v2
                        )
                    else:
                        entry[FREQ] = last[FREQ] * (1 - al) + nxt[FREQ] * al
                else:
                    decay = 0.9**m
                    drift = 0.0
                    if t == 0 and n >= 2:
                        cnt = min(3, n)
                        drift = (hist[t, n - 1, FREQ] - hist[t, n - cnt, FREQ]) / (cnt - 1)
                        drift *= 0.2 * 0.8**m
                    entry[FREQ] = last[FREQ] + drift
                    entry[POWER] = last[POWER] * decay
                    entry[WIDTH] = last[WIDTH]
                    entry[DISSONANCE] = last[DISSONANCE]
                out[i, t, :] = entry
                hist[t, n, :] = entry
                h_len[t] = n + 1
            else:
                out[i, t, :] = 0.0
                if m > MAX_MISSES:
                    h_len[t] = 0


@nb.njit(cache=True)
def _median_reflect(x, size):
    """scipy.ndimage.median_filter(x, size) with its default 'reflect' edges."""
    n = x.shape[0]
    half = size // 2
    out = np.empty(n)
    buf = np.empty(size)
    for i in range(n):
        for k in range(size):
            j = i + k - half
            while j < 0 or j >= n:
                j = -j - 1 if j < 0 else 2 * n - j - 1
            buf[k] = x[j]
        buf.sort()
        out[i] = buf[half]
    return out


@nb.njit(cache=True)
def _savgol_run(x, hat):
    """scipy.signal.savgol_filter(x, w, 3, mode='interp') given the fit's hat matrix (w x w)."""
    n = x.shape[0]
    w = hat.shape[0]
    half = w // 2
    out = np.empty(n)
    for i in range(n):
        if i < half:
            row, s0 = i, 0
        elif i >= n - half:
            row, s0 = w - (n - i), n - w
        else:
            row, s0 = half, i - half
        acc = 0.0
        for k in range(w):
            acc += hat[row, k] * x[s0 + k]
        out[i] = acc
    return out


@nb.njit(cache=True)
def _post_smooth(seg, s, hat):
    """Median, Savitzky-Golay and power smoothing of one segment's tracks (in place)."""
    mw = max(3, int(5 * s))
    mw += 1 - mw % 2
    sw = hat.shape[0]
    n = seg.shape[0]
    raw = seg.copy()
    for t in range(3):
        nz = raw[:, t, FREQ] > 0
        if nz.sum() > sw:
            fields = (FREQ, WIDTH) if t == 0 else (FREQ, FREQ)
            n_fields = 2 if t == 0 else 1
            for fi in range(n_fields):
                f = fields[fi]
                col = raw[:, t, f].copy()
                if t == 0:
                    med = _median_reflect(col, mw)
                    for i in range(n):
                        if nz[i]:
                            col[i] = med[i]
                i = 0
                while i < n:
                    if not nz[i]:
                        i += 1
                        continue
                    j = i
                    while j < n and nz[j]:
                        j += 1
                    if j - i >= sw + 1:
                        col[i:j] = _savgol_run(col[i:j], hat)
                    i = j
                seg[:, t, f] = col
        power = raw[:, t, POWER]
        if (power > 0).sum() > 3:
            i = 0
            while i < n:
                if power[i] <= 0:
                    i += 1
                    continue
                j = i
                while j < n and power[j] > 0:
                    j += 1
                if j - i >= 3:
                    for k in range(i, j):
                        left = power[k - 1] if k > i else 0.0
                        right = power[k + 1] if k + 1 < j else 0.0
                        seg[k, t, POWER] = left / 3 + power[k] / 3 + right / 3
                i = j


@nb.njit(cache=True)
def track(candidates, voiced, s, hat):
    """Tracks (frames, 3 targets, 4 fields) for every voiced run of two frames or more."""
    n = candidates.shape[0]
    out = np.zeros((n, 3, 4))
    i = 0
    while i < n:
        if not voiced[i]:
            i += 1
            continue
        j = i
        while j < n and voiced[j]:
            j += 1
        # a run still open at the last frame is tracked too (the reference drops it: a defect)
        if j - i >= 2:
            _track_segment(candidates, i, j, s, out)
            _post_smooth(out[i:j], s, hat)
        i = j
    return out
