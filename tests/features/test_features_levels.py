"""Speech and noise levels (timbrespace_ray.features.levels): P.56's active level of signals whose
level is known analytically, against a literal sample-by-sample P.56, and the SNR of clean speech
mixed with white noise at a known SNR."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
from scipy.ndimage import maximum_filter1d
from scipy.optimize import brentq
from scipy.signal import lfilter

from helpers.corpus import SPEECH
from helpers.noise import CLEAN, SR, load, mix_at_snr, white
from timbrespace_ray.features.levels import (
    HANGOVER_S,
    MARGIN_DB,
    TIME_CONSTANT_S,
    active_level_db,
    snr_db,
    speech_levels,
)

AMPLITUDE = 0.5
TONE_DB = 20 * math.log10(AMPLITUDE / math.sqrt(2))  # a sine's power: a^2 / 2


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return AMPLITUDE * np.sin(2 * np.pi * 1000 * t)


def zeros(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR))


def test_a_steady_sine_is_active_throughout():
    assert active_level_db(tone(3.0), SR) == pytest.approx(TONE_DB, abs=0.005)


def test_sine_bursts_count_their_hangover_and_not_their_silences():
    """Three 2 s bursts: each is followed by the time the envelope takes to fall to the threshold
    and the 200 ms hangover, active but silent; the silences beyond do not count, however long.

    After a burst the envelope (two smoothers of time constant T in cascade, settled at the mean
    of |x|, 2a/pi) falls as (2a/pi) e^(-t/T) (1 + t/T); the threshold is the level minus the
    margin. Both depend on the level: solved by a fixed point."""
    level = TONE_DB
    for _ in range(10):
        threshold = 10 ** ((level - MARGIN_DB - 20 * math.log10(2 * AMPLITUDE / math.pi)) / 20)
        fall = TIME_CONSTANT_S * brentq(lambda u: math.exp(-u) * (1 + u) - threshold, 0, 50)
        level = TONE_DB + 10 * math.log10(6 / (6 + 3 * (fall + HANGOVER_S)))
    for gap in (2.0, 10.0):
        signal = np.concatenate([zeros(1), tone(2), zeros(gap), tone(2), zeros(gap), tone(2),
                                 zeros(2)])
        # decided per 1 ms block: each burst's active time may differ by a block (0.002 dB)
        assert active_level_db(signal, SR) == pytest.approx(level, abs=0.02)
    assert level == pytest.approx(TONE_DB - 0.60, abs=0.01)  # so the hangover mattered


def literal_p56(x: np.ndarray, sample_rate: int, step_db: float = 0.25) -> float:
    """P.56 method B as the recommendation states it, sample by sample: the envelope, a sample
    active at threshold c when the envelope reached c at it or within the hangover before it, the
    active level interpolated where it stands the margin above the threshold."""
    g = math.exp(-1 / (TIME_CONSTANT_S * sample_rate))
    envelope = lfilter([1 - g], [1, -g], lfilter([1 - g], [1, -g], np.abs(x)))
    hangover = math.ceil(HANGOVER_S * sample_rate)
    reached = maximum_filter1d(envelope, size=hangover + 1, origin=hangover // 2, mode="constant")
    top = 20 * math.log10(envelope.max())
    thresholds = top - step_db * np.arange(int(120 / step_db) + 1)[::-1]
    levels = np.array([mean_square_db(x[reached >= 10 ** (c / 20)]) for c in thresholds])
    excess = levels - thresholds
    j = int(np.flatnonzero(excess <= MARGIN_DB)[0])
    t = (excess[j - 1] - MARGIN_DB) / (excess[j - 1] - excess[j])
    return levels[j - 1] + t * (levels[j] - levels[j - 1])


def mean_square_db(x: np.ndarray) -> float:
    return 10 * math.log10(np.mean(np.square(x))) if x.size else math.nan  # none: never crossed


@pytest.mark.parametrize("path", [SPEECH[1], SPEECH[2]], ids=lambda p: p.stem[-12:])
def test_the_blocks_agree_with_a_literal_p56_on_speech(path):
    x, rate = sf.read(path, dtype="float64")
    assert active_level_db(x, rate) == pytest.approx(literal_p56(x, rate), abs=0.02)


def test_levels_follow_the_gain_and_the_snr_does_not():
    clean = load(CLEAN[0])
    noisy = mix_at_snr(clean, white(len(clean), np.random.default_rng(1)), 15.0)
    quiet = speech_levels(noisy, SR)
    loud = speech_levels(noisy * np.float32(10 ** (12 / 20)), SR)
    for name in quiet:
        assert loud[name] == pytest.approx(quiet[name] + 12, abs=1e-4), name
    assert snr_db(loud["speech_level_db"], loud["noise_level_db"]) == pytest.approx(
        snr_db(quiet["speech_level_db"], quiet["noise_level_db"]), abs=1e-4)


@pytest.mark.parametrize("known", [10.0, 20.0])
def test_snr_of_clean_speech_in_white_noise(known):
    # CMU ARCTIC slt: its own noise lies 33 dB below its speech, so at 20 dB it adds 0.2 dB
    path = next(p for p in CLEAN if "a0009" in p.name)
    clean = load(path)
    noisy = mix_at_snr(clean, white(len(clean), np.random.default_rng(0)), known)
    levels = speech_levels(noisy, SR)
    assert snr_db(levels["speech_level_db"], levels["noise_level_db"]) == pytest.approx(known,
                                                                                        abs=1.0)


def test_digital_silence_has_no_speech_level_and_the_floor_for_noise():
    levels = speech_levels(np.zeros(SR, np.float32), SR)
    assert math.isnan(levels["speech_level_db"]) and levels["noise_level_db"] == -100.0
    assert math.isnan(snr_db(levels["speech_level_db"], levels["noise_level_db"]))
    # speech over digital silence: the noise is the floor, not minus infinity
    bursts = np.concatenate([zeros(1), tone(1), zeros(1)]).astype(np.float32)
    assert speech_levels(bursts, SR)["noise_level_db"] == -100.0
    # a lone click in silence: its energy comes before its envelope's peak, so the blocks
    # active at the highest thresholds hold only zeros; it still has a level, below its own
    # power over one hangover (1 / 3200 samples: -35 dB)
    click = np.zeros(SR, np.float32)
    click[SR // 2] = 1.0
    assert -60 < speech_levels(click, SR)["speech_level_db"] < -35
