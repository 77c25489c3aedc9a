"""Pitch trackers against Praat, per utterance, on real speech; and their speed against ours.

Reference: Praat's pitch (praat-parselmouth, GPL: imported here only, never by the package),
`Sound.to_pitch()` with its defaults: autocorrelation method, floor 75 Hz, ceiling 600 Hz,
time step 0.75 / floor = 10 ms. Every candidate runs with the same 75-600 Hz range.

Corpus: the Asterisk voice prompts (asterisk_corpus.py; 7 professional voices, 7 languages,
8 kHz telephone speech; fetched into a cache at run time), `--per-speaker` utterances of each
voice (the lowest SHA-1 of their path: deterministic, spread over folders and languages), plus
the bundled real recordings in timbrespace_ray/demo_corpus/ (16-48 kHz; tests/data/vectors holds
the same recordings, so they are not counted twice). Every file is decoded to mono 16 kHz as
the features stage decodes it (soundfile + soxr HQ).

Per utterance, over the frames each tracker calls voiced (an utterance counts when Praat has
>= 10 voiced frames):
  within10%  |median(candidate) / median(Praat) - 1| <= 0.1     (target: >= 90% of utterances)
  oct.hi/lo  the ratio of the medians within a quarter octave of 2 (of 1/2)
  none       the candidate calls fewer than 3 frames voiced
  r(std)     Pearson r over utterances of the pitch's standard deviation in semitones
             (12 log2(f / median)), candidate against Praat              (target: r >= 0.8)
  r(1oct)    the same, each track's frames more than an octave from its median left out: the
             agreement of the contours once the few gross errors (either side's) are set aside
  >1oct      the share of the tracker's voiced frames more than an octave from its utterance's
             median, over all utterances (Praat's own on its row): those frames decide r(std),
             so a tracker should have about as many as Praat, in the same places
  V/UV hit   the share of Praat's voiced frames that the candidate also calls voiced, and of
             Praat's unvoiced frames it calls unvoiced (Praat's frames matched to the
             candidate's nearest frame: ours and the extractor's f0 centred at
             i * 0.016 + 0.025 s, RAPT, SWIPE', DIO and Harvest at i * 0.016 s)
and the same by voice. Speed: x real time on one core, one thread, one call per utterance (as
the stage would call it), timed in the same run as the bare feature extractor (`analyse`, the
six features) on the same audio: interleaved rounds, the best of `--repeats` (trackers slower
than 100x real time: one round). `vs ext` is that over the extractor's; `stage` the features
stage's throughput with the tracker added, as a share of the stage without it: the stage ran
at 0.75 of the bare extractor's speed (930x per CPU against 1240x, on the 2-core Xeon), so the extractor is 0.75 of
the stage's time and the share is 1 / (1 + 0.75 * t_tracker / t_extractor)  (target: >= 0.8).

Candidates: timbrespace_ray.features.pitch.pitch_track (ours, numba, no new dependency), the
extractor's own f0 feature (in Hz: output_normalize=False) for reference, Praat itself on the
audio resampled to 4 kHz (a diagnostic: how far Praat agrees with itself when it sees only the
band ours analyses, which is what the 16x cheaper autocorrelations cost), and when installed
pysptk (RAPT, SWIPE') and pyworld (DIO + StoneMask, Harvest). They have no wheels for Linux
(sdists that compile C/C++ with Cython, about a minute each on 2 cores); pysptk 1.0.1 also
imports pkg_resources, so it needs setuptools < 81 at run time. Harvest runs at a few x real
time, so it sees every `--harvest-every`-th utterance only:
    .venv/bin/pip install --target /tmp/pitchdeps pysptk pyworld decorator "setuptools<81"
    PYTHONPATH=/tmp/pitchdeps .venv/bin/python tests/benchmarks/bench_pitch.py

Run: .venv/bin/python tests/benchmarks/bench_pitch.py [--per-speaker 40] [--repeats 3]
     [--harvest-every 4] [--cache DIR]     (about 5 minutes on 2 cores)
"""
from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import hashlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from helpers.data import DEMO_CORPUS  # noqa: E402

from timbrespace_ray.audio import decode_audio  # noqa: E402
from timbrespace_ray.features import FeatureConfig, analyse  # noqa: E402
from timbrespace_ray.features.analysis import frames_count  # noqa: E402
from timbrespace_ray.features.pitch import PitchConfig, pitch_track  # noqa: E402

SR = 16000
FLOOR, CEILING = 75.0, 600.0
HOP_S = 0.016
FRAME_CENTRE_S = 0.025  # the extractor's frame i is centred at i * 0.016 + 0.025 s
STAGE_EXTRACT_SHARE = 0.75  # stage 930x per CPU, bare extractor 1240x (2-core Xeon)
MIN_PRAAT_VOICED = 10
MIN_VOICED = 3


@dataclass
class Utterance:
    name: str
    group: str  # speaker (Asterisk) or "demo"
    audio: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.audio) / SR


@dataclass
class Track:
    """Per-frame Hz (0 = unvoiced) and the frames' centre times in seconds."""

    hz: np.ndarray
    times: np.ndarray


@dataclass
class Candidate:
    name: str
    run: Callable[[np.ndarray], Track]
    note: str = ""
    stride: int = 1  # runs on every stride-th utterance (Harvest: it is slow)
    tracker: bool = True  # False: a reference row, not something the stage would run
    timings: list[float] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)


# ---------------------------------------------------------------- corpus

def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def load_corpus(per_speaker: int, cache: str | None) -> list[Utterance]:
    from asterisk_corpus import build_corpus

    manifest = build_corpus(Path(cache) if cache else None)
    by_speaker: dict[str, list[str]] = {}
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            by_speaker.setdefault(row["speaker"], []).append(row["path"])
    utts = []
    for speaker in sorted(by_speaker):
        paths = sorted(by_speaker[speaker], key=_sha)[:per_speaker]
        for p in sorted(paths):
            audio, _, _ = decode_audio(p, SR)
            utts.append(Utterance(f"{speaker}/{Path(p).name}", speaker, audio))
    for p in sorted(DEMO_CORPUS.glob("*.wav")):
        audio, _, _ = decode_audio(str(p), SR)
        utts.append(Utterance(f"demo/{p.name}", "demo", audio))
    return utts


# ---------------------------------------------------------------- trackers

def frame_times(n: int) -> np.ndarray:
    return FRAME_CENTRE_S + HOP_S * np.arange(n)


def run_ours(config: PitchConfig) -> Callable[[np.ndarray], Track]:
    features = FeatureConfig()

    def run(audio):
        n = frames_count(len(audio), features) if len(audio) else 0
        return Track(pitch_track(audio, n, config), frame_times(n))
    return run


def run_feature_f0(audio) -> Track:
    f0 = analyse(audio, FeatureConfig(output_normalize=False))["f0"]
    return Track(np.asarray(f0, dtype=np.float64), frame_times(len(f0)))


def run_extractor(audio) -> None:
    analyse(audio, FeatureConfig())


def optional_candidates() -> tuple[list[Candidate], list[str]]:
    out, missing = [], []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pysptk
    except ImportError as exc:
        missing.append(f"pysptk (RAPT, SWIPE'): {exc}")
    else:
        def rapt(audio):
            # SPTK's RAPT expects 16-bit-range samples; frame k is centred at k * hop
            f0 = pysptk.sptk.rapt(audio * np.float32(32768), SR, 256, min=FLOOR, max=CEILING,
                                  otype="f0")
            return Track(np.asarray(f0, np.float64), HOP_S * np.arange(len(f0)))

        def swipe(audio):
            f0 = pysptk.sptk.swipe(audio.astype(np.float64), SR, 256, min=FLOOR, max=CEILING,
                                   otype="f0")
            return Track(np.asarray(f0, np.float64), HOP_S * np.arange(len(f0)))

        out += [Candidate("pysptk RAPT", rapt, f"pysptk {pysptk.__version__}"),
                Candidate("pysptk SWIPE'", swipe, f"pysptk {pysptk.__version__}")]
    try:
        import pyworld
    except ImportError as exc:
        missing.append(f"pyworld (DIO+StoneMask, Harvest): {exc}")
    else:
        def dio(audio):
            x = audio.astype(np.float64)
            f0, t = pyworld.dio(x, SR, f0_floor=FLOOR, f0_ceil=CEILING, frame_period=16.0)
            return Track(pyworld.stonemask(x, f0, t, SR), t)

        def harvest(audio):
            f0, t = pyworld.harvest(audio.astype(np.float64), SR, f0_floor=FLOOR,
                                    f0_ceil=CEILING, frame_period=16.0)
            return Track(f0, t)

        out += [Candidate("pyworld DIO+StoneMask", dio, f"pyworld {pyworld.__version__}"),
                Candidate("pyworld Harvest", harvest, f"pyworld {pyworld.__version__}")]
    return out, missing


def praat_track(audio) -> Track:
    import parselmouth

    pitch = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=SR).to_pitch()
    return Track(pitch.selected_array["frequency"], pitch.xs())


def seconds(utts: list[Utterance]) -> float:
    return sum(u.seconds for u in utts)


def praat_4k_track(audio) -> Track:
    """Diagnostic: Praat itself on the band ours analyses (the audio resampled to 4 kHz)."""
    import parselmouth

    sound = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=SR).resample(4000)
    pitch = sound.to_pitch()
    return Track(pitch.selected_array["frequency"], pitch.xs())


def time_pass(fn, utts: list[Utterance], keep: list | None = None) -> float:
    t0 = time.perf_counter()
    for u in utts:
        result = fn(u.audio)
        if keep is not None:
            keep.append(result)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- agreement

def std_semitones(hz: np.ndarray, within_octave: bool = False) -> float:
    v = hz[hz > 0]
    st = 12 * np.log2(v / np.median(v))
    if within_octave:
        st = st[np.abs(st) <= 12]
    return float(np.std(st))


def pearson(a: list[float], b: list[float]) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 else float("nan")


def voicing_agreement(track: Track, ref: Track) -> tuple[int, int, int, int]:
    """(Praat voiced & ours voiced, Praat voiced, Praat unvoiced & ours unvoiced, Praat
    unvoiced), Praat's frames matched to the candidate's nearest frame by time."""
    if len(track.hz) == 0:
        ours = np.zeros(len(ref.hz), bool)
    elif len(track.hz) == 1:
        ours = np.full(len(ref.hz), track.hz[0] > 0)
    else:
        idx = np.clip(np.searchsorted(track.times, ref.times), 1, len(track.times) - 1)
        idx -= (ref.times - track.times[idx - 1]) < (track.times[idx] - ref.times)
        ours = track.hz[idx] > 0
    pv = ref.hz > 0
    return (int(np.sum(ours & pv)), int(pv.sum()), int(np.sum(~ours & ~pv)), int((~pv).sum()))


@dataclass
class Scores:
    n: int
    within10: float
    octave_hi: float
    octave_lo: float
    no_pitch: float
    r_std: float
    r_std_octave: float
    beyond_octave: float
    voiced_hit: float
    unvoiced_hit: float
    by_group: dict[str, tuple[int, int, float]]  # within 10%, utterances, r(std st)


def score(tracks: list[Track], refs: list[Track], utts: list[Utterance]) -> Scores:
    within = hi = lo = none = 0
    std_c, std_p, oct_c, oct_p, std_group = [], [], [], [], []
    vh = vn = uh = un = 0
    far = voiced = 0
    counts: dict[str, list[int]] = {}
    n = 0
    for track, ref, utt in zip(tracks, refs, utts):
        p = ref.hz[ref.hz > 0]
        if len(p) < MIN_PRAAT_VOICED:
            continue
        n += 1
        g = counts.setdefault(utt.group, [0, 0])
        g[1] += 1
        a, b, c, d = voicing_agreement(track, ref)
        vh, vn, uh, un = vh + a, vn + b, uh + c, un + d
        v = track.hz[track.hz > 0]
        if len(v) < MIN_VOICED:
            none += 1
            continue
        far += int(np.sum(np.abs(np.log2(v / np.median(v))) > 1))
        voiced += len(v)
        ratio = np.median(v) / np.median(p)
        if abs(ratio - 1) <= 0.1:
            within += 1
            g[0] += 1
        octaves = np.log2(ratio)
        hi += abs(octaves - 1) < 0.25
        lo += abs(octaves + 1) < 0.25
        std_c.append(std_semitones(track.hz))
        std_p.append(std_semitones(ref.hz))
        oct_c.append(std_semitones(track.hz, within_octave=True))
        oct_p.append(std_semitones(ref.hz, within_octave=True))
        std_group.append(utt.group)
    by_group = {}
    for k, (w, total) in counts.items():
        idx = [i for i, gr in enumerate(std_group) if gr == k]
        by_group[k] = (w, total, pearson([std_c[i] for i in idx], [std_p[i] for i in idx]))
    return Scores(n, within / n, hi / n, lo / n, none / n, pearson(std_c, std_p),
                  pearson(oct_c, oct_p), far / max(voiced, 1), vh / max(vn, 1), uh / max(un, 1),
                  by_group)


def beyond_octave_share(refs: list[Track]) -> float:
    """Praat's own >1oct: the share of its voiced frames more than an octave from the median
    of its utterance (utterances with >= MIN_PRAAT_VOICED voiced frames)."""
    far = voiced = 0
    for ref in refs:
        p = ref.hz[ref.hz > 0]
        if len(p) >= MIN_PRAAT_VOICED:
            far += int(np.sum(np.abs(np.log2(p / np.median(p))) > 1))
            voiced += len(p)
    return far / max(voiced, 1)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-speaker", type=int, default=40,
                    help="Asterisk utterances per voice (7 voices)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed rounds (trackers slower than 100x real time: one)")
    ap.add_argument("--harvest-every", type=int, default=4,
                    help="Harvest (a few x real time) runs on every N-th utterance; 0: not at all")
    ap.add_argument("--cache", default=None, help="Asterisk cache folder")
    args = ap.parse_args()

    t_start = time.perf_counter()
    utts = load_corpus(args.per_speaker, args.cache)
    audio_s = seconds(utts)
    groups = sorted({u.group for u in utts}, key=lambda g: (g == "demo", g))
    print(f"corpus: {len(utts)} utterances, {audio_s / 60:.1f} min "
          f"({len(groups) - 1} Asterisk voices x {args.per_speaker} + "
          f"{sum(u.group == 'demo' for u in utts)} bundled recordings)")

    candidates = [Candidate("ours: pitch_track (numba)", run_ours(PitchConfig()),
                            "timbrespace_ray.features.pitch"),
                  Candidate("timbrespace f0 feature", run_feature_f0, "the method's f0, in Hz",
                            tracker=False),
                  Candidate("Praat on 4 kHz (diagnostic)", praat_4k_track,
                            "Praat's own agreement when it sees only ours' band", tracker=False)]
    extra, missing = optional_candidates()
    for c in extra:
        if c.name == "pyworld Harvest":
            c.stride = args.harvest_every
    if args.harvest_every <= 0:
        extra = [c for c in extra if c.name != "pyworld Harvest"]
        missing.append("pyworld Harvest: skipped (--harvest-every 0)")
    candidates += extra

    # warm-up: numba compilation and caches, outside every timing
    for fn in [run_extractor, praat_track] + [c.run for c in candidates]:
        fn(utts[0].audio)

    # interleaved rounds: the extractor, Praat and every tracker in turn, so a busy moment of
    # this shared machine slows all of them alike; the best round counts
    refs: list[Track] = []
    extractor_t, praat_t = [], []
    for rnd in range(args.repeats):
        extractor_t.append(time_pass(run_extractor, utts))
        praat_t.append(time_pass(praat_track, utts, refs if rnd == 0 else None))
        for c in candidates:
            mine = utts[:: c.stride]
            if rnd == 0:
                c.timings.append(time_pass(c.run, mine, c.tracks))
            elif seconds(mine) / c.timings[0] > 100:
                c.timings.append(time_pass(c.run, mine))
    ext_xrt = audio_s / min(extractor_t)
    praat_xrt = audio_s / min(praat_t)

    def stage_share(xrt: float) -> float:
        return 1 / (1 + STAGE_EXTRACT_SHARE * ext_xrt / xrt)

    print(f"\nPitch against Praat (to_pitch() defaults: ac, {FLOOR:.0f}-{CEILING:.0f} Hz, 10 ms), "
          "per utterance; speed on one core, one thread")
    head = (f"{'tracker':<27}{'utts':>5}{'within10%':>10}{'oct.hi':>7}{'oct.lo':>7}"
            f"{'none':>6}{'r(std)':>7}{'r(1oct)':>8}{'>1oct':>7}{'V hit':>7}{'UV hit':>7}"
            f"{'x rt':>7}{'vs ext':>7}{'stage':>6}")
    print(head)
    print("-" * len(head))
    results = {}
    for c in candidates:
        mine = utts[:: c.stride]
        s = score(c.tracks, refs[:: c.stride], mine)
        results[c.name] = s
        xrt = seconds(mine) / min(c.timings)
        stage_txt = f"{stage_share(xrt):.2f}" if c.tracker else "-"
        print(f"{c.name:<27}{s.n:>5}{s.within10 * 100:>9.1f}%{s.octave_hi * 100:>6.1f}%"
              f"{s.octave_lo * 100:>6.1f}%{s.no_pitch * 100:>5.1f}%{s.r_std:>7.2f}"
              f"{s.r_std_octave:>8.2f}{s.beyond_octave * 100:>6.1f}%"
              f"{s.voiced_hit * 100:>6.1f}%{s.unvoiced_hit * 100:>6.1f}%"
              f"{xrt:>7.0f}{xrt / ext_xrt:>7.2f}{stage_txt:>6}")
    blank = f"{'':>5}{'':>10}{'':>7}{'':>7}{'':>6}{'':>7}{'':>8}"
    print(f"{'Praat to_pitch (reference)':<27}{blank}{beyond_octave_share(refs) * 100:>6.1f}%"
          f"{'':>7}{'':>7}{praat_xrt:>7.0f}{praat_xrt / ext_xrt:>7.2f}"
          f"{stage_share(praat_xrt):>6.2f}")
    blank += f"{'':>7}{'':>7}{'':>7}"
    print(f"{'bare extractor (6 features)':<27}{blank}{ext_xrt:>7.0f}{1.0:>7.2f}")
    for m in missing:
        print(f"not run: {m}")
    print("within10%: median within 10% of Praat's; oct.hi/lo: an octave above/below it; none: "
          "< 3 voiced frames; r(std): Pearson r of the\nstd of pitch in semitones; r(1oct): the "
          "same over each track's frames within an octave of its median (gross errors\nleft "
          "out); >1oct: the share of its voiced frames beyond that octave (Praat's own on its "
          "row); V/UV hit: Praat's\nvoiced/unvoiced frames called the same; x rt: x real time; "
          "vs ext: that / the bare extractor's; stage: the features\nstage's throughput with the "
          "tracker added, share of today's (target >= 0.8)")

    print("\nby voice: within 10% / utterances, r(std)")
    print(f"{'tracker':<27}" + "".join(f"{g[:13]:>14}" for g in groups))
    for c in candidates:
        by = results[c.name].by_group
        print(f"{c.name:<27}" + "".join(
            f"{f'{by[g][0]}/{by[g][1]} {by[g][2]:.2f}':>14}" if g in by else f"{'-':>14}"
            for g in groups))

    ours = results[candidates[0].name]
    ours_stage = stage_share(audio_s / min(candidates[0].timings))
    print(f"\ntargets for ours: within 10% >= 90%: "
          f"{'MET' if ours.within10 >= 0.9 else 'NOT MET'} ({ours.within10 * 100:.1f}%); "
          f"r(std) >= 0.8: {'MET' if ours.r_std >= 0.8 else 'NOT MET'} ({ours.r_std:.2f}); "
          f"stage >= 0.8: {'MET' if ours_stage >= 0.8 else 'NOT MET'} ({ours_stage:.2f})")
    print(f"timings: best of {args.repeats} interleaved rounds (trackers under 100x real time: "
          f"1) over {audio_s / 60:.1f} min of audio (Harvest: every {args.harvest_every}th "
          f"utterance); the benchmark took "
          f"{time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
