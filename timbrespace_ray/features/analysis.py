"""From a mono waveform to the six prosodic features (spec sections 1 and 4-6).

Plain numpy/numba, no Ray: the pipeline stages call `analyse` on decoded audio.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import numba as nb
import numpy as np

from ..errors import InvalidAudioError
from .candidates import FREQ, MAX_CANDIDATES, POWER, PSCALE, WIDTH, frame_candidates
from .config import FeatureConfig
from .filterbank import BandEnergies, band_projection
from .tracking import track, voiced_mask

FEATURE_NAMES = ("f0", "f0_width", "f1", "f2", "power", "snr")
# Frames analysed per block: small enough for the FFT buffers to stay in cache, and it
# bounds the working memory whatever the recording's length.
BLOCK_FRAMES = 256


@dataclass
class FrameAnalysis:
    """Per-frame intermediate values; the features derive from them."""

    candidates: np.ndarray  # (frames, 7, 4): frequency, power, width, dissonance
    ground: np.ndarray  # (frames,)
    energy: np.ndarray  # (frames,)


def frames_count(n_samples: int, config: FeatureConfig) -> int:
    """Spec 1.5: the number of frames (may be 0) for a segment of n_samples."""
    fl, hop = config.frame_samples, config.hop_samples
    return math.ceil(abs(n_samples - fl) / hop)


def as_mono_float32(audio) -> np.ndarray:
    """A 1-D float32 array from a 1-D or channels-first 2-D numpy array or torch tensor."""
    if hasattr(audio, "detach"):  # torch.Tensor, without importing torch here
        audio = audio.detach().cpu().numpy()
    arr = np.asarray(audio)
    if arr.dtype.kind not in "fiu":
        raise InvalidAudioError(f"audio must hold numbers, got dtype {arr.dtype}")
    if arr.ndim == 2:
        if arr.shape[0] > arr.shape[1]:
            raise InvalidAudioError(
                f"2-D audio must be channels-first (channels, samples); got shape {arr.shape}"
            )
        arr = arr.mean(axis=0, dtype=np.float64)
    elif arr.ndim != 1:
        raise InvalidAudioError(f"audio must be 1-D or 2-D (channels, samples); got {arr.ndim}-D")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InvalidAudioError(f"audio holds {bad} NaN or infinite samples")
    return arr


def ms_to_sample(ms: float, sample_rate: int) -> int:
    """Spec 1.2: the sample index a time in milliseconds starts at (truncated, as the original)."""
    return int(ms * sample_rate / 1000)


def condition(waveform: np.ndarray, config: FeatureConfig, start_ms=0, end_ms=-1,
              input_normalize=True) -> np.ndarray:
    """Spec 1.2-1.4: the time range, RMS normalization and pre-emphasis (a new float32 array)."""
    sr = config.sample_rate
    n = waveform.shape[0]
    start = ms_to_sample(start_ms, sr) if start_ms >= 0 else 0
    end = n if (end_ms <= -1 or end_ms <= start_ms) else min(n, ms_to_sample(end_ms, sr))
    segment = waveform[start:end]
    out = np.empty(segment.shape[0], dtype=np.float32)
    _normalize_emphasize(segment, np.float32(config.emphasize_ratio), input_normalize, out)
    return out


@nb.njit(cache=True)
def _normalize_emphasize(x, ratio, input_normalize, out):
    n = x.shape[0]
    scale = np.float32(1.0)
    if input_normalize and n > 0:
        acc = 0.0
        for i in range(n):
            acc += np.float64(x[i]) * x[i]
        rms = np.float32(np.sqrt(acc / n))
        if rms > 0:
            scale = rms
    prev = np.float32(0.0)
    for i in range(n):
        cur = x[i] / scale
        out[i] = cur - ratio * prev if i > 0 else cur
        prev = cur


def analyse_frames(y: np.ndarray, config: FeatureConfig) -> FrameAnalysis:
    """Spec 1.5-3: candidates, ground and energy of every frame of a conditioned signal."""
    fl, hop = config.frame_samples, config.hop_samples
    n_frames = frames_count(y.shape[0], config) if y.size else 0
    candidates = np.zeros((n_frames, MAX_CANDIDATES, 4))
    ground = np.zeros(n_frames)
    energy = np.zeros(n_frames)
    if n_frames < 1:
        return FrameAnalysis(candidates, ground, energy)
    # frames that lie inside the signal are strided views of it; only the last few frames,
    # which run into the zero padding, get a small padded copy
    n_inside = max(0, min(n_frames, (y.shape[0] - fl) // hop + 1))
    first_tail = n_inside * hop
    tail = np.zeros((n_frames - n_inside - 1) * hop + fl if n_frames > n_inside else 0,
                    dtype=np.float32)
    tail[: max(0, y.shape[0] - first_tail)] = y[first_tail : first_tail + tail.shape[0]]
    inside = np.lib.stride_tricks.sliding_window_view(y, fl)[::hop][:n_inside] if n_inside else None
    outside = np.lib.stride_tricks.sliding_window_view(tail, fl)[::hop] if tail.size else None
    band_energies = _band_energies(config.sample_rate, fl)
    proj = band_energies.proj
    for b0 in range(0, n_frames, BLOCK_FRAMES):
        b1 = min(n_frames, b0 + BLOCK_FRAMES)
        if b1 <= n_inside:
            block = inside[b0:b1]
        elif b0 >= n_inside:
            block = outside[b0 - n_inside : b1 - n_inside]
        else:
            block = np.concatenate([inside[b0:], outside[: b1 - n_inside]])
        bands = band_energies(block, energy[b0:b1])
        frame_candidates(bands, proj.centres, candidates[b0:b1], ground[b0:b1])
    return FrameAnalysis(candidates, ground, energy)


_buffers = threading.local()


def _band_energies(sample_rate: int, frame_samples: int) -> BandEnergies:
    # one set of FFT buffers per thread and frame geometry: short files then cost no allocation
    cache = _buffers.__dict__.setdefault("by_geometry", {})
    key = (sample_rate, frame_samples)
    if key not in cache:
        cache[key] = BandEnergies(band_projection(sample_rate, frame_samples), BLOCK_FRAMES)
    return cache[key]


@lru_cache(maxsize=4)
def savgol_hat(smoothing: float) -> np.ndarray:
    """Hat matrix of a cubic least-squares fit over the Savitzky-Golay window."""
    sw = max(5, int(7 * smoothing))
    sw += 1 - sw % 2
    z = np.arange(sw, dtype=np.float64) - sw // 2
    a = np.vander(z, 4, increasing=True)
    return a @ np.linalg.pinv(a)


def features_from_frames(frames: FrameAnalysis, config: FeatureConfig) -> dict[str, np.ndarray]:
    """Spec 4-6: voiced segments, tracking, post-smoothing and output scaling."""
    voiced = voiced_mask(frames.ground, frames.energy)
    tracks = track(frames.candidates, voiced, config.smoothing, savgol_hat(config.smoothing))
    e = frames.energy
    total_power = tracks[:, 0, POWER] + tracks[:, 1, POWER] + tracks[:, 2, POWER]
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(e > 0, total_power / e / PSCALE, 0.0)
    raw = {
        "f0": tracks[:, 0, FREQ],
        "f0_width": tracks[:, 0, WIDTH],
        "f1": tracks[:, 1, FREQ],
        "f2": tracks[:, 2, FREQ],
        "power": tracks[:, 0, POWER] / PSCALE,
        "snr": snr,
    }
    if not config.output_normalize:
        return {k: np.nan_to_num(v, nan=0.0) for k, v in raw.items()}
    return normalize(raw)


def normalize(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Spec 6: scale raw features to their published [0, 1]-ish ranges."""
    with np.errstate(invalid="ignore"):
        out = {
            "f0": np.where(raw["f0"] > 0, (raw["f0"] - 80) / 320, 0.0),
            "f0_width": np.where(raw["f0_width"] > 0, np.clip(raw["f0_width"] / 50, 0, 1), 0.0),
            "f1": np.where(raw["f1"] > 0, (raw["f1"] - 200) / 1000, 0.0),
            "f2": np.where(raw["f2"] > 0, (raw["f2"] - 800) / 2700, 0.0),
            "power": np.clip(np.sqrt(np.sqrt(raw["power"])) / 3, 0, 1),
            "snr": np.clip(raw["snr"] / 50, 0, 1),
        }
    return {k: np.nan_to_num(v, nan=0.0) for k, v in out.items()}


def analyse(waveform: np.ndarray, config: FeatureConfig, start_ms=0, end_ms=-1,
            input_normalize=True) -> dict[str, np.ndarray]:
    """The six features of a mono float32 waveform at config.sample_rate."""
    y = condition(waveform, config, start_ms, end_ms, input_normalize)
    return features_from_frames(analyse_frames(y, config), config)
