"""Speech and noise levels of a recording, and the SNR between them (docs/snr.md).

Plain numpy/numba, no Ray. The features stage calls `speech_levels` on the samples it decoded
(before the features' own RMS normalisation), so the levels are in dB of full scale: 10 log10 of
a mean square, where a sample of 1.0 is full scale (a full-scale sine is -3.01 dB).

- `speech_level_db`: the active speech level of ITU-T P.56 (method B): the mean square over the
  samples where an envelope of the signal stands less than 15.9 dB below that level.
- `noise_level_db`: the 10th percentile of the power of the recording's 32 ms frames.
- `snr_db`: speech power over noise power, the speech power being the active level with the
  noise it contains taken out.

The envelope is followed sample by sample; activity is decided per 1 ms block (the envelope's
largest value in the block), which moves a 200 ms hangover by at most a block.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np
from scipy.ndimage import maximum_filter1d

# P.56 method B
TIME_CONSTANT_S = 0.03  # the envelope's two smoothing poles
HANGOVER_S = 0.2  # a sample stays active this long after the envelope falls below a threshold
MARGIN_DB = 15.9  # the active level stands this far above the threshold it is measured at
BLOCK_S = 0.001
# thresholds every 0.25 dB (P.56 asks for steps of at most 6 dB, then interpolates), down to
# 120 dB below the envelope's peak: past the 96 dB that 16-bit audio spans
THRESHOLD_STEP_DB = 0.25
THRESHOLD_RANGE_DB = 120.0
# the noise: 32 ms frames are short enough to fit between words and long enough to average a
# stationary noise's power; frame and percentile chosen on bench_snr.py's mixtures (docs/snr.md)
NOISE_FRAME_S = 0.032
NOISE_PERCENTILE = 10.0
# the quantisation noise of 16-bit audio is -101 dB: below this a recording's noise is digital
# silence, and no SNR of speech against it means anything
NOISE_FLOOR_DB = -100.0
# no speech stands out of the noise at all: the figure would only measure the estimates' errors
MIN_SNR_DB = -20.0
LEVEL_COLUMNS = ("speech_level_db", "noise_level_db")


def speech_levels(samples: np.ndarray, sample_rate: int) -> dict[str, float]:
    """`speech_level_db` (NaN for digital silence) and `noise_level_db` of a mono signal."""
    envelope, power, count = _blocks(samples, sample_rate)
    return {"speech_level_db": _active_level(envelope, power, count, sample_rate),
            "noise_level_db": _noise_level(power, count, sample_rate)}


def active_level_db(samples: np.ndarray, sample_rate: int) -> float:
    """The P.56 active speech level of a mono signal, dB of full scale (NaN if all zeros)."""
    return _active_level(*_blocks(samples, sample_rate), sample_rate)


def snr_db(speech_level_db, noise_level_db) -> np.ndarray:
    """SNR in dB from the active level of speech with its noise and the noise level (arrays
    of dB): 10 log10((10^(S/10) - 10^(N/10)) / 10^(N/10)), at least `MIN_SNR_DB`."""
    speech = np.asarray(speech_level_db, np.float64)
    noise = np.asarray(noise_level_db, np.float64)
    with np.errstate(over="ignore"):
        ratio = 10.0 ** ((speech - noise) / 10.0) - 1.0
    return 10.0 * np.log10(np.maximum(ratio, 10.0 ** (MIN_SNR_DB / 10.0)))


def _block_samples(sample_rate: int) -> int:
    return max(1, round(sample_rate * BLOCK_S))


def _blocks(samples: np.ndarray, sample_rate: int):
    """Per block: the envelope's peak, the sum of squares and the sample count."""
    x = np.ascontiguousarray(samples, np.float32)
    if x.ndim != 1:
        raise ValueError(f"levels need a mono signal, got shape {x.shape}")
    smoothing = math.exp(-1.0 / (TIME_CONSTANT_S * sample_rate))
    return _envelope_blocks(x, smoothing, _block_samples(sample_rate))


@nb.njit(cache=True)
def _envelope_blocks(x, g, block):
    n = x.shape[0]
    n_blocks = (n + block - 1) // block
    peak = np.zeros(n_blocks)
    power = np.zeros(n_blocks)
    count = np.zeros(n_blocks)
    q = 0.0
    p = 0.0
    for b in range(n_blocks):
        end = min(n, (b + 1) * block)
        top = 0.0
        squares = 0.0
        for i in range(b * block, end):
            v = np.float64(x[i])
            # P.56's envelope: two first-order smoothers in cascade over |x|
            q = g * q + (1.0 - g) * abs(v)
            p = g * p + (1.0 - g) * q
            top = max(top, p)
            squares += v * v
        peak[b] = top
        power[b] = squares
        count[b] = end - b * block
    return peak, power, count


def _active_level(envelope: np.ndarray, power: np.ndarray, count: np.ndarray,
                  sample_rate: int) -> float:
    """P.56 method B on blocks: at each threshold c the active blocks are those where the
    envelope reached c within the hangover; the level is where A(c) - 20 log10 c = the margin,
    found going up from the lowest threshold and interpolated between two thresholds."""
    if envelope.size == 0 or envelope.max() <= 0:
        return math.nan
    hangover = round(HANGOVER_S * sample_rate / _block_samples(sample_rate))
    # the largest envelope over this block and the `hangover` blocks before it
    reached = maximum_filter1d(envelope, size=hangover + 1, origin=hangover // 2,
                               mode="constant", cval=0.0)
    top_db = 20.0 * math.log10(envelope.max())
    n_thresholds = int(THRESHOLD_RANGE_DB / THRESHOLD_STEP_DB) + 1
    with np.errstate(divide="ignore"):
        below_top = (top_db - 20.0 * np.log10(reached)) / THRESHOLD_STEP_DB
    # threshold j (top_db - j * step) holds the blocks whose `reached` is at least it
    first = np.minimum(np.ceil(np.maximum(below_top, 0.0)), n_thresholds).astype(np.int64)
    samples = np.cumsum(np.bincount(first, weights=count, minlength=n_thresholds + 1))
    squares = np.cumsum(np.bincount(first, weights=power, minlength=n_thresholds + 1))
    samples, squares = samples[n_thresholds - 1::-1], squares[n_thresholds - 1::-1]
    thresholds = top_db - THRESHOLD_STEP_DB * np.arange(n_thresholds)[::-1]  # rising
    with np.errstate(divide="ignore", invalid="ignore"):
        level = 10.0 * np.log10(squares / samples)
    excess = level - thresholds  # NaN where no block is active: never the crossing
    crossed = np.flatnonzero(excess <= MARGIN_DB)
    j = int(crossed[0]) if crossed.size else n_thresholds - 1
    if crossed.size == 0 or j == 0 or not np.isfinite(level[j]):
        # no crossing, or none below the lowest threshold; or the blocks active above it hold
        # only zeros (a lone click: its energy comes before its envelope's peak)
        found = level[j] if np.isfinite(level[j]) else level[max(j - 1, 0)]
    else:
        t = (excess[j - 1] - MARGIN_DB) / (excess[j - 1] - excess[j])
        found = level[j - 1] + t * (level[j] - level[j - 1])
    return float(found) if np.isfinite(found) else math.nan


def _noise_level(power: np.ndarray, count: np.ndarray, sample_rate: int) -> float:
    """The `NOISE_PERCENTILE` of the power of the whole `NOISE_FRAME_S` frames (the one,
    shorter frame of a shorter signal), dB, at least `NOISE_FLOOR_DB`."""
    per_frame = max(1, round(NOISE_FRAME_S / (_block_samples(sample_rate) / sample_rate)))
    n_frames = len(power) // per_frame
    if n_frames == 0:
        frames = np.array([power.sum() / max(count.sum(), 1.0)])
    else:
        whole = n_frames * per_frame
        frames = (power[:whole].reshape(n_frames, per_frame).sum(axis=1)
                  / count[:whole].reshape(n_frames, per_frame).sum(axis=1))
    noise = float(np.percentile(frames, NOISE_PERCENTILE))
    return max(10.0 * math.log10(noise) if noise > 0 else -math.inf, NOISE_FLOOR_DB)
