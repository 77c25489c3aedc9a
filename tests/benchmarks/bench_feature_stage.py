"""End-to-end throughput of the features stage on Ray, per CPU, against the bare extractor.

Builds a corpus of real speech WAV files (the bundled recordings, copied under many names) and
measures in the same process:
  (1) the bare extractor on one core, one thread, doing the stage's job without Ray:
      `ProsodicFeatureExtractor.load_audio(file)` + `extract()` + `pitch_track()` (the stage
      writes the pitch track beside the six features) in one pass over every 5th folder
      of the same corpus, once before and once after the stage run (the mean is the baseline:
      both sides are then averages over tens of seconds on the same files, so a quiet or a
      busy moment of this shared machine does not decide the ratio). For reference also the
      best of 3 short runs over the bundled recordings, the same and extract + pitch_track
      alone on waveforms already in memory;
  (2) the Ray features stage end to end (plan, actor pool start-up, decode, extract, Parquet,
      markers, summary) on an embedded local Ray using every CPU, after a warm-up run of the
      same stage (Ray itself, file and compilation caches warm).
Prints both, the ratio, and where the stage's time goes: the actor pool's start-up (a fixed cost
of about two seconds, whatever the corpus) and the steady state after it.

Run: .venv/bin/python tests/benchmarks/bench_feature_stage.py [--minutes 1440] [--cpus 2]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Ray starts its workers at nice 15: beside other jobs they would get a fraction of the CPU that
# a baseline run in this process (nice 0) gets, and the ratios would measure the scheduler
os.environ.setdefault("RAY_worker_niceness", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import ray  # noqa: E402
import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.data import DEMO_CORPUS  # noqa: E402

from timbrespace_ray.config import load_config  # noqa: E402
from timbrespace_ray.features import FeatureConfig, ProsodicFeatureExtractor, analyse  # noqa: E402
from timbrespace_ray.features.pitch import pitch_track  # noqa: E402
from timbrespace_ray.executors import RayExecutor  # noqa: E402
from timbrespace_ray.stages.features import FeaturesStage  # noqa: E402
from timbrespace_ray.storage import Location  # noqa: E402


def build_corpus(root: Path, minutes: float) -> float:
    files = sorted(DEMO_CORPUS.glob("*.wav"))
    per_copy = sum(sf.info(str(f)).duration for f in files)
    copies = max(1, int(minutes * 60 / per_copy + 0.999))
    for c in range(copies):
        folder = root / f"speaker{c:03d}"
        folder.mkdir(parents=True)
        for f in files:
            shutil.copy(f, folder / f.name)
    return copies * per_copy


def _best_xrt(work, audio_s: float, repeats: int = 3) -> float:
    work()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t0)
    return audio_s / best


def bare_on_corpus(corpus: Path) -> float:
    """load_audio + extract + pitch_track x real time (the stage's job without Ray), one pass
    over every 5th folder of the corpus (each folder holds one copy of every recording, so the
    sample has the corpus's own mix)."""
    files = [f for folder in sorted(corpus.iterdir())[::5] for f in sorted(folder.glob("*.wav"))]
    extractor = ProsodicFeatureExtractor()
    audio_s = 0.0
    t0 = time.perf_counter()
    for f in files:
        audio = extractor.load_audio(str(f))
        audio_s += len(audio) / extractor.sample_rate
        pitch_track(audio, len(extractor.extract()["f0"]))
    return audio_s / (time.perf_counter() - t0)


def bare_extractor_xrt() -> tuple[float, float]:
    """(load_audio + extract + pitch_track, extract + pitch_track alone) x real time, best of 3
    short runs on the bundled recordings."""
    files = sorted(DEMO_CORPUS.glob("*.wav"))
    extractor = ProsodicFeatureExtractor()
    cfg = FeatureConfig()
    waves = [sf.read(str(f), dtype="float32")[0] for f in files]
    audio_s = 3 * sum(len(w) for w in waves) / 16000

    def from_files():
        for _ in range(3):
            for f in files:
                audio = extractor.load_audio(str(f))
                pitch_track(audio, len(extractor.extract()["f0"]))

    return (_best_xrt(from_files, audio_s),
            _best_xrt(lambda: [pitch_track(w, len(analyse(w, cfg)["f0"]))
                               for _ in range(3) for w in waves], audio_s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1440.0,
                    help="audio to process (default a day of it: a small corpus for this tool, "
                         "and long enough that the pool's fixed start-up is a small part)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    args = ap.parse_args()

    best_files, best_in_memory = bare_extractor_xrt()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm, corpus = tmp / "warm", tmp / "corpus"
        build_corpus(warm, 1)
        audio_s = build_corpus(corpus, args.minutes)
        os.sync()  # the copies' write-back must not run during the measurements
        bare_before = bare_on_corpus(corpus)
        executor = RayExecutor(num_cpus=args.cpus, progress_bars=False)
        cfg = load_config().features
        FeaturesStage(Location.of(str(tmp / "o1")), str(warm), cfg).run(executor)
        started = time.time()
        t0 = time.perf_counter()
        summary = FeaturesStage(Location.of(str(tmp / "o2")), str(corpus), cfg).run(executor)
        wall = time.perf_counter() - t0
        units = [json.loads(p.read_text()) for p in (tmp / "o2" / "_run" / "features" / "done").glob("*.json")]
        ray.shutdown()
        time.sleep(3)  # Ray's processes exit in the background
        bare_after = bare_on_corpus(corpus)
    assert summary.rows == summary.inputs, summary
    bare = (bare_before + bare_after) / 2
    first_start = min(u["started_at"] for u in units) - started
    last_end = max(u["started_at"] + u["busy_seconds"] for u in units) - started
    steady = last_end - first_start
    per_cpu = audio_s / wall / args.cpus
    print(f"\nFeatures stage throughput ({audio_s / 60:.0f} min of real speech, "
          f"{summary.inputs} WAV files, {args.cpus} CPUs, embedded Ray; the actor pool's "
          "start-up is inside the timed run)")
    print(f"  bare extractor, one core, same files {bare:6.0f} x real time (load_audio + extract + pitch; "
          f"{bare_before:.0f} before, {bare_after:.0f} after the stage)")
    print(f"    (best of 3 short runs: load_audio + extract + pitch {best_files:.0f}x, "
          f"extract + pitch alone on audio in memory {best_in_memory:.0f}x)")
    print(f"  Ray stage end to end, total          {audio_s / wall:6.0f} x real time ({wall:.1f} s)")
    print(f"  Ray stage end to end, per CPU        {per_cpu:6.0f} x real time")
    print(f"  ratio per CPU / bare                 {per_cpu / bare:6.2f}  (target >= 0.80: "
          f"{'MET' if per_cpu / bare >= 0.8 else 'NOT MET'}); against the best of 3 short "
          f"runs {per_cpu / best_files:.2f}, against extract alone {per_cpu / best_in_memory:.2f}")
    print(f"  where the time goes: {first_start:.1f} s until the first unit starts (plan, actor "
          f"pool start-up), {steady:.1f} s of units, {wall - last_end:.1f} s to finish")
    print(f"  steady state (first unit start to last unit end): "
          f"{audio_s / steady / args.cpus:.0f} x real time per CPU = "
          f"{audio_s / steady / args.cpus / bare:.2f} of bare; workers busy "
          f"{summary.busy_seconds / (steady * args.cpus):.0%} of it (the rest: Ray itself)")


if __name__ == "__main__":
    main()
