"""Per-utterance measures of a style profile, from one part's frames (plain numpy, no Ray).

Frames come flat with offsets (utterance i is frames offsets[i]:offsets[i+1]), the layout of a
Parquet list column, and every measure is computed for all utterances of the part at once
(bincount, one sort, run boundaries on the flat array): nothing loops over frames or utterances
in Python.

Two sources of "voiced". The pitch columns, the voicing, pauses and onsets read a pitch track
`pitch_hz` (Hz, 0 = unvoiced, one value per feature frame) that the caller passes: the features
table's own octave-robust track, or a synthetic one in tests. Timbrespace's `f0` feature is not
used for pitch: it is the lowest formant-like peak of the mel energies, an octave high on about
one utterance in seven. The formant and power columns summarise Timbrespace's own features
over the frames where its tracker measured them (0 means "not measured", spec sections 4-5), as
`evaluation.representations` does. The levels and the SNR come from the features table's
per-utterance `speech_level_db` and `noise_level_db`, which the features stage measures on the
samples (features/levels.py, docs/snr.md).

Every frame stands for one hop of time (16 ms at the defaults): `voiced_s`, pauses and speech
time are frame counts times the hop. A run of frames of `k` hops is `k * hop` seconds long.

| column | unit | definition |
| --- | --- | --- |
| `duration_s` | s | the length of audio analysed (the features table's `duration_s`) |
| `voiced_s` | s | voiced frames (`pitch_hz > 0`) x hop |
| `voiced_fraction` | 0-1 | voiced frames / `n_frames`; NaN for an utterance with no frames |
| `speech_s` | s | from the first voiced frame to the end of the last, minus the pauses (below); 0 if nothing is voiced |
| `pitch_median_hz` | Hz | median of `pitch_hz` over voiced frames |
| `pitch_mean_hz` | Hz | mean of `pitch_hz` over voiced frames |
| `pitch_p5_hz`, `pitch_p95_hz` | Hz | 5th and 95th percentiles of `pitch_hz` over voiced frames (linear interpolation, as `numpy.percentile`) |
| `pitch_std_st` | semitones | population standard deviation of `12 log2(pitch_hz / pitch_median_hz)` over voiced frames |
| `pitch_range_st` | semitones | `12 log2(pitch_p95_hz / pitch_p5_hz)` |
| `f1_mean_hz` | Hz | mean of `f1 * 1000 + 200` over frames where `f1 != 0` (Timbrespace's F1 was tracked) |
| `f2_mean_hz` | Hz | mean of `f2 * 2700 + 800` over frames where `f2 != 0` |
| `speech_level_db` | dB of full scale | the ITU-T P.56 active speech level of the samples (speech with the noise in it): their mean square where an envelope stands less than 15.9 dB below that level |
| `noise_level_db` | dB of full scale | the 10th percentile of the power of the utterance's 32 ms frames, at least -100 dB |
| `snr_db` | dB | `10 log10((10^(speech_level_db/10) - 10^(noise_level_db/10)) / 10^(noise_level_db/10))`: the active level with the noise power taken out, over the noise power; at least -20 dB. Higher is cleaner |
| `power_std` | 0-1 | population standard deviation of the `power` feature (F0's peak power, fourth root / 3) over frames where `f0 != 0`: how much the loudness of the voice moves |
| `onsets_per_s` | 1/s | voiced onsets / `speech_s`. An onset starts each voiced stretch, where unvoiced gaps shorter than `min_onset_gap_s` (default 30 ms: 2 frames) do not split a stretch: so the first voiced frame is an onset, and so is every voiced frame that follows at least 2 unvoiced frames |
| `pause_fraction` | 0-1 | pause time / (`speech_s` + pause time), i.e. the share of the span from the first voiced frame to the last that is pauses |
| `mean_pause_s` | s | pause time / `pause_count`; NaN without pauses |
| `pause_count` | count | pauses: runs of unvoiced frames lasting at least `min_pause_s` (default 200 ms: 13 frames of 16 ms) with voiced frames on both sides, so silence before the first voiced frame or after the last is never a pause |

Missing values are NaN (null in the table): the pitch columns, `onsets_per_s` and
`pause_fraction` for an utterance without voiced frames, `mean_pause_s` for one without pauses,
`f1_mean_hz`, `f2_mean_hz` and `power_std` where the feature was never measured,
`speech_level_db` and `snr_db` for digital silence (no sample differs from 0).

Timbrespace's own `snr` feature is not summarised: its scale (the three tracked peaks' power over
the frame's energy) differs from voice to voice more than it follows the noise (docs/snr.md).

Why pauses leave out the leading and trailing silence, and speech time too: how much silence
surrounds an utterance depends on how the corpus was cut into files or segments, not on the
speaker; counted in, it would make the same reading look slower and more hesitant in one corpus
than in another.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..features.config import FeatureConfig
from ..features.levels import LEVEL_COLUMNS, snr_db
from .grouped import grouped_mean_std, grouped_quantiles

# The features' normalised units back to Hz: value * scale + offset (spec section 6)
F1_TO_HZ = (1000.0, 200.0)
F2_TO_HZ = (2700.0, 800.0)
SEMITONES_PER_OCTAVE = 12.0

MEASURE_COLUMNS = (
    "duration_s", "voiced_s", "voiced_fraction", "speech_s",
    "pitch_median_hz", "pitch_mean_hz", "pitch_p5_hz", "pitch_p95_hz", "pitch_std_st",
    "pitch_range_st", "f1_mean_hz", "f2_mean_hz", *LEVEL_COLUMNS, "snr_db", "power_std",
    "onsets_per_s", "pause_fraction", "mean_pause_s", "pause_count",
)
# The Timbrespace features these measures read (pitch comes separately, as `pitch_hz`)
FEATURES_READ = ("f0", "f1", "f2", "power")


class MeasureConfig(BaseModel):
    """The two durations that turn runs of unvoiced frames into pauses and onsets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # 200 ms is the usual lower bound of a silent pause in fluency research (shorter silences are
    # mostly stop closures and hesitations inside a word)
    min_pause_s: float = Field(0.2, gt=0, le=10)
    # a lone unvoiced frame is a tracker dropout inside a vowel rather than a consonant; two
    # (32 ms of hop) already hold a short voiceless stop or fricative
    min_onset_gap_s: float = Field(0.03, gt=0, le=10)


def hop_seconds(features: FeatureConfig) -> float:
    """The time one feature frame stands for: the hop in samples over the rate (exactly 16 ms at
    the defaults; the hop is a whole number of samples, so not always hop_ms)."""
    return features.hop_samples / features.sample_rate


def frames_for(seconds: float, hop_s: float) -> int:
    """The fewest whole frames lasting at least `seconds` (a float-noise margin, so that 32 ms
    at a 16 ms hop is 2 frames, not 3)."""
    return max(1, math.ceil(seconds / hop_s - 1e-9))


def utterance_measures(frames: Mapping[str, np.ndarray], pitch_hz: np.ndarray,
                       offsets: np.ndarray, *, levels: Mapping[str, np.ndarray], hop_s: float,
                       duration_s: np.ndarray | None = None,
                       config: MeasureConfig = MeasureConfig()) -> dict[str, np.ndarray]:
    """The `MEASURE_COLUMNS` (module docstring) of every utterance of a part, as float64 arrays
    of length n (`pause_count` int64).

    `frames` maps each of `FEATURES_READ` to its flat per-frame array in the features' normalised
    units; `pitch_hz` is flat too (Hz, 0 unvoiced); `offsets` has n + 1 entries. `levels` maps
    each of `LEVEL_COLUMNS` to its n per-utterance values (dB, NaN where missing). `duration_s`
    defaults to n_frames x hop.
    """
    offsets = np.asarray(offsets, np.int64)
    pitch = np.asarray(pitch_hz, np.float64)
    total = _check_layout(frames, pitch, offsets)
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    row = np.repeat(np.arange(n), lengths)

    # NaN compares False: a NaN pitch is an unvoiced frame, never a number in a statistic
    voiced = pitch > 0
    out = {"duration_s": (lengths * hop_s if duration_s is None
                          else np.asarray(duration_s, np.float64).copy())}
    out.update(_pitch_measures(pitch[voiced], row[voiced], n))
    voiced_frames = np.bincount(row[voiced], minlength=n)
    out["voiced_s"] = voiced_frames * hop_s
    out["voiced_fraction"] = _ratio(voiced_frames, lengths)
    out.update(_feature_measures(frames, row, n))
    out.update(_timing_measures(voiced, row, offsets, total, voiced_frames, hop_s, config))
    out.update(_level_measures(levels, n))
    if len(out["duration_s"]) != n:
        raise ValueError(f"duration_s has {len(out['duration_s'])} values for {n} utterances")
    return {name: out[name] for name in MEASURE_COLUMNS}


def _check_layout(frames: Mapping[str, np.ndarray], pitch: np.ndarray,
                  offsets: np.ndarray) -> int:
    if offsets.ndim != 1 or offsets.size == 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must start at 0 and never decrease")
    total = int(offsets[-1])
    for name in FEATURES_READ:
        if name not in frames:
            raise ValueError(f"frames lack the {name!r} feature")
        if len(frames[name]) != total:
            raise ValueError(f"{name} has {len(frames[name])} frames, offsets say {total}")
    if len(pitch) != total:
        raise ValueError(f"pitch_hz has {len(pitch)} frames, offsets say {total}")
    return total


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (the measure has no meaning)."""
    out = np.full(len(denominator), np.nan)
    has = denominator > 0
    out[has] = numerator[has] / denominator[has]
    return out


def _pitch_measures(pitch: np.ndarray, row: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Pitch statistics from the voiced frames' pitch and their utterance indices."""
    p5, median, p95 = grouped_quantiles(pitch, row, n, (0.05, 0.5, 0.95)).T
    mean, _, _ = grouped_mean_std(pitch, row, n)
    # semitones around the utterance's own median: the unit phoneticians compare voices in, so
    # that the same intonation gives the same number in a high and in a low voice
    semitones = SEMITONES_PER_OCTAVE * np.log2(pitch / median[row])
    _, std_st, _ = grouped_mean_std(semitones, row, n)
    with np.errstate(invalid="ignore"):
        range_st = SEMITONES_PER_OCTAVE * np.log2(p95 / p5)
    return {"pitch_median_hz": median, "pitch_mean_hz": mean, "pitch_p5_hz": p5,
            "pitch_p95_hz": p95, "pitch_std_st": std_st, "pitch_range_st": range_st}


def _feature_measures(frames: Mapping[str, np.ndarray], row: np.ndarray,
                      n: int) -> dict[str, np.ndarray]:
    """Formant means and power from Timbrespace's features, each over the frames where it was
    measured (averaging in the zeros would measure how much of an utterance is silence)."""
    # selected first, widened to float64 after: the features are float32 and mostly zeros
    f0_measured = np.asarray(frames["f0"]) != 0
    out = {}
    for name, (scale, offset) in (("f1", F1_TO_HZ), ("f2", F2_TO_HZ)):
        values = np.asarray(frames[name])
        measured = values != 0
        hz = values[measured].astype(np.float64) * scale + offset
        out[f"{name}_mean_hz"], _, _ = grouped_mean_std(hz, row[measured], n)
    power = np.asarray(frames["power"])[f0_measured].astype(np.float64)
    _, out["power_std"], _ = grouped_mean_std(power, row[f0_measured], n)
    return out


def _level_measures(levels: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The utterances' levels as they are, and the SNR between them."""
    out = {}
    for name in LEVEL_COLUMNS:
        if name not in levels:
            raise ValueError(f"levels lack {name!r}")
        out[name] = np.asarray(levels[name], np.float64).copy()
        if len(out[name]) != n:
            raise ValueError(f"{name} has {len(out[name])} values for {n} utterances")
    out["snr_db"] = snr_db(out["speech_level_db"], out["noise_level_db"])
    return out


def _timing_measures(voiced: np.ndarray, row: np.ndarray, offsets: np.ndarray, total: int,
                     voiced_frames: np.ndarray, hop_s: float,
                     config: MeasureConfig) -> dict[str, np.ndarray]:
    """Pauses, speech time and onsets from the runs of unvoiced frames inside each utterance."""
    n = len(offsets) - 1
    # runs of equal voicing on the flat array; one may run on from one utterance into the next,
    # but such a run never has voiced frames of its own utterance after it, so it is never a gap
    starts_run = np.ones(total, bool)
    starts_run[1:] = voiced[1:] != voiced[:-1]
    starts = np.flatnonzero(starts_run)
    ends = np.append(starts[1:], total)
    run_row = row[starts]
    run_length = ends - starts
    # an unvoiced run with voiced frames on both sides: runs alternate inside an utterance, so
    # that is one that neither starts nor ends the utterance
    inside = (~voiced[starts]) & (starts > offsets[run_row]) & (ends < offsets[run_row + 1])
    gap_row, gap_length = run_row[inside], run_length[inside]

    is_pause = gap_length >= frames_for(config.min_pause_s, hop_s)
    pause_count = np.bincount(gap_row[is_pause], minlength=n)
    pause_frames = np.bincount(gap_row[is_pause], weights=gap_length[is_pause], minlength=n)
    # the span from the first voiced frame to the last = voiced frames + the gaps inside it
    span_frames = voiced_frames + np.bincount(gap_row, weights=gap_length, minlength=n)
    speech_frames = span_frames - pause_frames

    splits = gap_length >= frames_for(config.min_onset_gap_s, hop_s)
    onsets = (voiced_frames > 0) + np.bincount(gap_row[splits], minlength=n)
    speech_s = speech_frames * hop_s
    return {"speech_s": speech_s,
            "onsets_per_s": _ratio(onsets.astype(np.float64), speech_s),
            "pause_fraction": _ratio(pause_frames, span_frames.astype(np.float64)),
            "mean_pause_s": _ratio(pause_frames * hop_s, pause_count),
            "pause_count": pause_count.astype(np.int64)}
