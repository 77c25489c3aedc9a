"""pitch_track: known pitches, octave robustness, silences, and the extractor's frame grid.

Agreement with Praat on real speech is measured by tests/benchmarks/bench_pitch.py (Praat is
GPL and a benchmark-only extra), not here.
"""
import numpy as np
import pytest
from pydantic import ValidationError

from timbrespace_ray.features import FeatureConfig, analyse
from timbrespace_ray.features.analysis import frames_count
from timbrespace_ray.features.pitch import PitchConfig, pitch_track

SR = 16000
HOP_S, CENTRE0_S = 0.016, 0.025  # the extractor's frame i is centred at i * 0.016 + 0.025 s


def harmonic(f0, seconds=None, *, n_harmonics=12, amplitudes=None, phase_f0=None, seed=0):
    """A harmonic complex; f0 a number or a per-sample array (a glide)."""
    if np.ndim(f0) == 0:
        f0 = np.full(int(seconds * SR), float(f0))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    rng = np.random.default_rng(seed)
    amps = amplitudes if amplitudes is not None else [1.0 / k for k in range(1, n_harmonics + 1)]
    x = np.zeros_like(phase)
    for k, a in enumerate(amps, start=1):
        if a:
            x += a * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def track(x, **config):
    n = frames_count(len(x), FeatureConfig())
    return pitch_track(x, n, PitchConfig(**config))


def centres(n):
    return CENTRE0_S + HOP_S * np.arange(n)


def inner(p, margin=5):
    return p[margin:-margin]


@pytest.mark.parametrize("f0", [80.0, 120.0, 200.0, 310.0, 450.0])
def test_steady_harmonic_tones(f0):
    p = track(harmonic(f0, 1.5))
    assert p.dtype == np.float32
    voiced = inner(p) > 0
    assert voiced.all(), f"{np.count_nonzero(~voiced)} unvoiced frames in a steady {f0} Hz tone"
    np.testing.assert_allclose(inner(p), f0, rtol=0.01)


def test_no_subharmonics_anywhere_in_the_range():
    # every 5 Hz from 75 to 600 Hz (the default range, ends included): at 4 kHz a pitch's
    # period falls between lags while a multiple of it may fall on one, so a coarse peak
    # height would prefer f0/2 or f0/3
    wrong = []
    for f0 in np.arange(75.0, 600.1, 5.0):
        p = inner(track(harmonic(f0, 0.4)), 3)
        if not np.all(np.abs(p / f0 - 1) < 0.01):
            wrong.append((f0, float(np.median(p))))
    assert not wrong, wrong


def test_glide_follows_the_pitch_at_each_frame_centre():
    # 100 -> 400 Hz in 1.5 s (1.3 octaves/s: 2% per hop), evaluated at the frame centres, so a
    # track one frame early or late is 2% off everywhere
    t = np.arange(int(1.5 * SR)) / SR
    f = 100 * 4 ** (t / 1.5)
    p = track(harmonic(f))
    truth = 100 * 4 ** (centres(len(p)) / 1.5)
    ok = inner(p, 3)
    assert (ok > 0).all()
    err = np.abs(ok / inner(truth, 3) - 1)
    assert np.median(err) < 0.006 and err.max() < 0.03, (np.median(err), err.max())


def test_falling_glide_with_vibrato():
    t = np.arange(2 * SR) / SR
    f = 260 * 2 ** (-t / 2) * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    p = track(harmonic(f))
    c = centres(len(p))
    truth = 260 * 2 ** (-c / 2) * (1 + 0.03 * np.sin(2 * np.pi * 5 * c))
    err = np.abs(inner(p) / inner(truth) - 1)
    assert np.median(err) < 0.01 and err.max() < 0.05, (np.median(err), err.max())


@pytest.mark.parametrize("snr_db", [20, 10, 5])
def test_noisy_tone(snr_db):
    x = harmonic(160.0, 2.0)
    noise = np.random.default_rng(1).standard_normal(len(x))
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / 10 ** (snr_db / 10)) / noise.std()
    p = track((x + noise).astype(np.float32))
    v = inner(p)
    assert np.mean(v > 0) > 0.95
    assert np.all(np.abs(v[v > 0] / 160 - 1) < 0.03), "octave or other gross errors"
    assert abs(np.median(v[v > 0]) / 160 - 1) < 0.01


def test_silences_and_noise_are_unvoiced():
    tone = harmonic(140.0, 0.6)
    silence = np.zeros(int(0.5 * SR), np.float32)
    noise = (0.05 * np.random.default_rng(2).standard_normal(int(0.5 * SR))).astype(np.float32)
    x = np.concatenate([silence, tone, silence, tone, noise])
    p = track(x)
    c = centres(len(p))
    half = 0.02 + 0.005  # half the 40 ms window, and a little
    tones = [(0.5, 1.1), (1.6, 2.2)]
    in_tone = np.zeros(len(p), bool)
    near = np.zeros(len(p), bool)
    for a, b in tones:
        in_tone |= (c > a + half) & (c < b - half)
        near |= (c > a - half) & (c < b + half)
    assert np.all(p[~near] == 0), f"voiced away from the tones at {c[(p > 0) & ~near]}"
    assert np.all(p[in_tone] > 0)
    np.testing.assert_allclose(p[in_tone], 140.0, rtol=0.01)
    assert np.all(track(np.zeros(SR, np.float32)) == 0)


@pytest.mark.parametrize("band", [(4200, 4600), (2500, 7000)])
def test_fricative_like_noise_is_unvoiced(band):
    # /s/-like noise with its energy far above the 4 kHz analysis's band: what little of it
    # is left after the low-pass is narrow-band and correlates, but it is a small share of
    # the frame's energy, so nothing below the full-band search's range (ceiling / 1.5 =
    # 400 Hz) is voiced. On the full band, noise B Hz wide correlates at lag t about
    # sinc(B t): for 2500-7000 Hz under 0.05 at the 1.7-2.5 ms lags searched there, and
    # a 40 ms window's estimate scatters by ~1/sqrt(B * 40 ms) ~ 0.07, far from the 0.45
    # threshold: never voiced. For 4200-4600 Hz the sinc is at most 0.41 there and the
    # scatter ~0.25, so some frames pass it: voiced near the ceiling, as Praat (which sees the
    # whole band) voices a quarter of these frames; still a minority.
    from scipy.signal import butter, sosfilt

    sos = butter(6, band, btype="band", fs=SR, output="sos")
    hiss = sosfilt(sos, np.random.default_rng(3).standard_normal(SR))
    hiss = (0.3 * hiss / np.abs(hiss).max()).astype(np.float32)
    p = track(np.concatenate([harmonic(150.0, 0.5), hiss, harmonic(150.0, 0.5)]))
    c = centres(len(p))
    in_hiss = p[(c > 0.53) & (c < 1.47)]
    if band[1] - band[0] > 1000:
        assert np.all(in_hiss == 0)
    else:
        assert np.all((in_hiss == 0) | (in_hiss >= 400.0)), in_hiss
        assert np.mean(in_hiss > 0) < 1 / 3, in_hiss
    np.testing.assert_allclose(p[(c > 0.05) & (c < 0.47)], 150.0, rtol=0.01)


@pytest.mark.parametrize("f0", [480.0, 560.0])
def test_high_pitch_above_the_low_band_is_found_on_the_full_band(f0):
    # harmonics 5-8 only (2.4-4.5 kHz): nothing of them passes the 1.8 kHz low-pass, so the
    # 4 kHz analysis sees no periodicity, but the full-band search over the top of the range
    # (400-600 Hz) does, as Praat would. A lag at 16 kHz is 1/33 of a 480 Hz period or less, so
    # even a peak placed on a lag is within 1.5 %.
    amps = [0.0] * 4 + [1.0 / k for k in range(5, 9)]
    p = inner(track(harmonic(f0, 1.0, amplitudes=amps)))
    assert np.all(p > 0)
    np.testing.assert_allclose(p, f0, rtol=0.02)


def test_quiet_stretches_are_silence():
    # a periodic stretch 48 dB below the loudest moment is below the silence threshold
    x = np.concatenate([harmonic(150.0, 0.5), 0.004 * harmonic(200.0, 0.5),
                        harmonic(150.0, 0.5)])
    for offset in (0.0, 0.2):  # a DC offset does not hide the silence
        p = track(x + offset)
        c = centres(len(p))
        assert np.all(p[(c > 0.53) & (c < 0.97)] == 0), offset
        assert np.all(p[(c > 1.03) & (c < 1.45)] > 0), offset
    # the same stretch alone is the loudest moment, and voiced
    np.testing.assert_allclose(inner(track(0.004 * harmonic(200.0, 0.5))), 200.0, rtol=0.01)


def test_quiet_but_not_silent_stretches_stay_voiced():
    # 28 dB down (a quiet syllable) is above the silence threshold: still voiced
    x = np.concatenate([harmonic(150.0, 0.5), 0.04 * harmonic(200.0, 0.5), harmonic(150.0, 0.5)])
    p = track(x)
    c = centres(len(p))
    np.testing.assert_allclose(p[(c > 0.53) & (c < 0.97)], 200.0, rtol=0.01)


def test_skipping_quiet_frames_changes_nothing():
    # frames too quiet for any voiced candidate to be on the path skip the autocorrelation;
    # the track equals the one computed with every frame analysed
    from timbrespace_ray.features import pitch as P

    level = np.repeat(10.0 ** -np.linspace(0, 3, 30), SR // 10).astype(np.float32)
    x = harmonic(180.0, 3.0) * level
    n = frames_count(len(x), FeatureConfig())
    fast = pitch_track(x, n)
    cfg = PitchConfig()
    window, window16, window_ac, window16_ac = P._windows(cfg.floor_hz)
    freq, strength = P._candidates(x, P._fir(), window, window16, window_ac, window16_ac,
                                   100.0, 64.0, n,
                                   cfg.floor_hz, cfg.ceiling_hz, cfg.voicing_threshold,
                                   cfg.silence_threshold, cfg.octave_cost, 1e9)
    full = np.zeros(n, np.float32)
    P._viterbi(freq, strength, 0.35 * 0.625, 0.14 * 0.625, full)
    np.testing.assert_array_equal(fast, full)
    assert 0 < np.count_nonzero(fast) < n  # both voiced and silent frames were exercised


def test_voiced_span_is_where_the_extractor_frames_are():
    # a 200 ms tone burst at 1.0 s: the voiced frames of our track and of the extractor's f0
    # sit at the same frame indices (same grid), centred on the burst
    x = np.zeros(2 * SR, np.float32)
    x[SR : SR + SR // 5] = harmonic(150.0, 0.2)
    f0 = analyse(x, FeatureConfig())["f0"]
    p = pitch_track(x, len(f0))
    assert len(p) == len(f0) == frames_count(len(x), FeatureConfig())
    ours = np.flatnonzero(p > 0)
    theirs = np.flatnonzero(f0 > 0)
    assert len(ours) >= 10 and len(theirs) >= 10
    mid = np.mean(centres(len(p))[ours])
    assert abs(mid - 1.1) < 0.008, f"voiced frames centred at {mid:.4f} s, burst at 1.1 s"
    assert abs(ours.mean() - theirs.mean()) <= 1.0, (ours, theirs)


@pytest.mark.parametrize("seconds", [0.3, 1.0, 3.7])
def test_length_equals_the_extractors_f0(seconds):
    x = harmonic(120.0, seconds)
    f0 = analyse(x, FeatureConfig())["f0"]
    p = pitch_track(x, len(f0))
    assert p.shape == f0.shape and p.dtype == np.float32
    # the extractor's last frames run into its zero padding; ours are zeros there too
    longer = pitch_track(x, len(f0) + 20)
    np.testing.assert_array_equal(longer[: len(f0)], p)
    assert np.all(longer[len(f0) + 3 :] == 0)


@pytest.mark.parametrize("f0", [100.0, 130.0, 220.0])
def test_missing_and_weak_fundamental_is_not_an_octave_up(f0):
    # telephone-band speech often has no energy at f0: harmonics 2-12 only, or f0 at -30 dB
    missing = [0.0] + [1.0 / k for k in range(2, 13)]
    weak = [0.03] + [1.0 / k for k in range(2, 13)]
    for amps in (missing, weak):
        p = inner(track(harmonic(f0, 1.5, amplitudes=amps)))
        assert np.all(p > 0)
        np.testing.assert_allclose(p, f0, rtol=0.02)


def test_strong_even_harmonics_are_not_an_octave_up():
    # even harmonics 10x the odd ones: the autocorrelation at half the period is almost as
    # high as at the period; the track must stay at f0
    amps = [0.1 / k if k % 2 else 1.0 / k for k in range(1, 13)]
    p = inner(track(harmonic(110.0, 1.5, amplitudes=amps)))
    np.testing.assert_allclose(p, 110.0, rtol=0.02)


def test_a_short_glitch_does_not_flip_the_octave():
    # a tone whose period doubles for 30 ms (a creaky glitch): the path must not jump an
    # octave for longer than the glitch
    x = harmonic(180.0, 1.2)
    t = np.arange(len(x)) / SR
    glitch = (t > 0.6) & (t < 0.63)
    x = np.where(glitch, harmonic(90.0, 1.2), x).astype(np.float32)
    p = track(x)
    c = centres(len(p))
    away = (np.abs(c - 0.615) > 0.05) & (c > 0.1) & (c < 1.1)
    np.testing.assert_allclose(p[away], 180.0, rtol=0.02)


def test_floor_ceiling_and_disable():
    x = harmonic(500.0, 1.0)
    assert np.median(inner(track(x))) == pytest.approx(500.0, rel=0.01)
    # above the ceiling: never reported as 500 Hz
    low = inner(track(x, ceiling_hz=400.0))
    assert not np.any(np.abs(low / 500.0 - 1) < 0.05)
    assert np.all(low <= 400.0)
    y = harmonic(65.0, 1.5)
    assert np.median(inner(track(y, floor_hz=55.0))) == pytest.approx(65.0, rel=0.01)
    assert not np.any(np.abs(inner(track(y)) / 65.0 - 1) < 0.05)  # default floor is 75 Hz
    assert np.all(track(x, enabled=False) == 0)


def test_amplitude_and_dc_offset_do_not_matter():
    x = harmonic(150.0, 1.0)
    np.testing.assert_allclose(track(x * 300), track(x), rtol=1e-4)
    np.testing.assert_allclose(track(x / 300), track(x), rtol=1e-4)
    # a constant offset (some recordings carry one) is removed per window
    x = np.concatenate([np.zeros(SR // 2, np.float32), x])
    np.testing.assert_allclose(track(x + 0.5), track(x), rtol=1e-3)


def test_edge_cases_and_bad_arguments():
    assert pitch_track(np.zeros(0, np.float32), 0).shape == (0,)
    assert np.all(pitch_track(np.zeros(0, np.float32), 5) == 0)
    assert pitch_track(harmonic(100.0, 0.5), 0).shape == (0,)
    assert np.all(pitch_track(np.zeros(10, np.float32), 3) == 0)
    with pytest.raises(ValueError, match="n_frames"):
        pitch_track(np.zeros(100, np.float32), -1)
    with pytest.raises(ValueError, match="1-D"):
        pitch_track(np.zeros((2, 100), np.float32), 3)
    with pytest.raises(ValidationError):
        PitchConfig(floor_hz=300.0, ceiling_hz=400.0)
    with pytest.raises(ValidationError):
        PitchConfig(flor_hz=60.0)


def test_other_hops_keep_the_grid():
    # a 10 ms hop: frame i centred at i * 0.010 + 0.025 s; the glide test's reasoning
    features = FeatureConfig(hop_ms=10.0)
    t = np.arange(int(1.5 * SR)) / SR
    x = harmonic(100 * 4 ** (t / 1.5))
    n = frames_count(len(x), features)
    p = pitch_track(x, n, features=features)
    truth = 100 * 4 ** ((0.025 + 0.010 * np.arange(n)) / 1.5)
    err = np.abs(p[5:-5] / truth[5:-5] - 1)
    assert np.median(err) < 0.006, np.median(err)


def test_extractor_at_another_rate_places_frames_in_seconds():
    # features at 22.05 kHz: hop 352 samples (15.96 ms), frame 1102 (49.98 ms); the pitch track
    # still reads 16 kHz samples and puts frame i at (i * 352 + 551) / 22050 s
    features = FeatureConfig(sample_rate=22050)
    t = np.arange(int(1.5 * SR)) / SR
    x = harmonic(100 * 4 ** (t / 1.5))
    n = frames_count(int(1.5 * 22050), features)
    p = pitch_track(x, n, features=features)
    truth = 100 * 4 ** (((551 + 352 * np.arange(n)) / 22050) / 1.5)
    err = np.abs(p[5:-5] / truth[5:-5] - 1)
    assert np.median(err) < 0.006, np.median(err)
    # read with the 16 kHz grid instead, the late frames would be ~0.3 % off per second of drift:
    # the right grid is measurably closer
    wrong = 100 * 4 ** ((0.025 + 0.016 * np.arange(n)) / 1.5)
    assert np.median(np.abs(p[-30:-5] / wrong[-30:-5] - 1)) > np.median(err[-25:])
