"""Feature extraction speed and memory on real speech, against the tools a user would otherwise run.

Prints x-real-time (audio seconds per wall second, one core, one thread) of:
  - timbrespace_ray's extractor on the bundled real speech, with its agreement to the reference;
  - the extractor plus the pitch track (what the features stage computes per recording);
  - librosa's pYIN and Praat's pitch tracker (praat-parselmouth) on the same audio;
and the peak memory of decoding + extracting a one-hour recording (in a child process).

Run: .venv/bin/python tests/benchmarks/bench_features.py  [--minutes 10] [--skip-memory]
"""
from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from helpers.data import expected_features, is_real_speech, load_vector, vector_names  # noqa: E402

from timbrespace_ray.features import FeatureConfig, analyse  # noqa: E402
from timbrespace_ray.features.agreement import agreement  # noqa: E402
from timbrespace_ray.features.pitch import pitch_track  # noqa: E402

SR = 16000


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def real_speech() -> list[tuple[str, np.ndarray, dict]]:
    out = []
    for name in filter(is_real_speech, vector_names()):
        vec = load_vector(name)
        out.append((name, vec["wav16k"], expected_features(vec)))
    return out


def bench_ours(corpus, minutes: float) -> tuple[float, float, str]:
    cfg = FeatureConfig()
    # fidelity in the same run: every file against the reference
    results = [agreement(analyse(w, cfg), exp) for _, w, exp in corpus]
    failing = [n for (n, _, _), r in zip(corpus, results) if not r.ok]
    fidelity = (f"{len(results) - len(failing)}/{len(results)} files within tolerance"
                + (f" (FAILING: {failing})" if failing else ""))
    # throughput per file (as the pipeline runs it) over >= `minutes` of audio
    waves = [w for _, w, _ in corpus]
    total = sum(len(w) for w in waves) / SR
    reps = max(1, int(np.ceil(minutes * 60 / total)))
    analyse(waves[0], cfg)  # compile/warm caches
    secs = best_of(lambda: [analyse(w, cfg) for _ in range(reps) for w in waves])
    return reps * total / secs, reps * total, fidelity


def bench_with_pitch(corpus, minutes: float) -> float:
    """x real time of what the features stage computes per recording: the six features and the
    pitch track beside them."""
    cfg = FeatureConfig()
    waves = [w for _, w, _ in corpus]
    total = sum(len(w) for w in waves) / SR
    reps = max(1, int(np.ceil(minutes * 60 / total)))

    def both(w):
        pitch_track(w, len(analyse(w, cfg)["f0"]), None, cfg)

    both(waves[0])
    return reps * total / best_of(lambda: [both(w) for _ in range(reps) for w in waves])


def bench_pyin(audio: np.ndarray) -> float:
    import librosa

    secs = best_of(lambda: librosa.pyin(audio, fmin=65, fmax=400, sr=SR, frame_length=1024,
                                        hop_length=256), repeats=1)
    return len(audio) / SR / secs


def bench_praat(audio: np.ndarray) -> float | None:
    try:
        import parselmouth
    except ImportError:
        return None
    sound = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=SR)
    secs = best_of(lambda: sound.to_pitch(time_step=0.016, pitch_floor=65, pitch_ceiling=400))
    return len(audio) / SR / secs


MEMORY_CHILD = r"""
import re, sys, time, numpy as np
from timbrespace_ray import ProsodicFeatureExtractor

def rss_mb(field):
    status = open("/proc/self/status").read()
    return int(re.search(field + r":\s+(\d+)", status).group(1)) / 1024

ex = ProsodicFeatureExtractor()
ex.extract(audio_tensor=np.zeros(16000, np.float32))  # imports and JIT before the baseline
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
base = rss_mb("VmRSS")
t0 = time.perf_counter()
audio = ex.load_audio(sys.argv[1])
feats = ex.extract()
secs = time.perf_counter() - t0
print(f"{len(audio) / 16000 / 3600:.3f} {len(feats['f0'])} {base:.0f} {rss_mb('VmHWM'):.0f} {secs:.1f}")
"""


def bench_memory(corpus) -> str:
    import soundfile as sf

    speech = np.concatenate([w for _, w, _ in corpus])
    hour = np.resize(speech, SR * 3600)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "one_hour.flac")
        sf.write(path, hour, SR, subtype="PCM_16")
        del hour
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, path], check=True,
                             capture_output=True, text=True).stdout.split()
    hours, frames, base, peak, secs = out
    return (f"one-hour FLAC ({hours} h, {frames} frames): peak RSS {float(peak):.0f} MB "
            f"(process baseline after imports {float(base):.0f} MB, so {float(peak) - float(base):.0f} MB "
            f"for the recording); decode+extract {secs} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="audio minutes to time ours on")
    ap.add_argument("--baseline-seconds", type=float, default=60.0,
                    help="audio seconds to time pYIN and Praat on")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()

    corpus = real_speech()
    xrt, audio_s, fidelity = bench_ours(corpus, args.minutes)
    both = bench_with_pitch(corpus, args.minutes)
    sample = np.concatenate([w for _, w, _ in corpus])[: int(args.baseline_seconds * SR)]
    pyin = bench_pyin(sample)
    praat = bench_praat(sample)

    print("\nFeature extraction, one core, one thread, real speech")
    print(f"{'extractor':<34}{'x real time':>12}{'vs ours':>10}")
    print(f"{'timbrespace_ray (6 features)':<34}{xrt:>12.0f}{1.0:>10.2f}")
    print(f"{'librosa pYIN (f0 only)':<34}{pyin:>12.1f}{pyin / xrt:>10.4f}")
    if praat is None:
        print(f"{'Praat pitch (parselmouth)':<34}{'not installed (pip install .[bench])':>22}")
    else:
        print(f"{'Praat pitch (f0 only)':<34}{praat:>12.0f}{praat / xrt:>10.3f}")
    print(f"{'timbrespace_ray (6 features + pitch)':<34}{both:>12.0f}{both / xrt:>10.2f}")
    if praat is not None:
        print(f"6 features + pitch track against Praat's pitch tracker: {both / praat:.2f}x")
    print(f"timed on {audio_s / 60:.1f} min of audio; fidelity: {fidelity}")
    print(f"target >= 1000x real time: {'MET' if xrt >= 1000 else 'NOT MET'}")
    if not args.skip_memory:
        print(bench_memory(corpus))


if __name__ == "__main__":
    main()
