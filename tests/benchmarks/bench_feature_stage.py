"""End-to-end throughput of the features stage on Ray, per CPU, against the bare extractor.

Builds a corpus of real speech WAV files (the bundled recordings, copied under many names) and
measures in the same process:
  (1) the bare extractor on one core, one thread: `ProsodicFeatureExtractor.load_audio(file)` +
      `extract()` over the same recordings (and, for reference, `extract()` alone on waveforms
      already in memory);
  (2) the Ray features stage end to end (plan, actor pool start-up, decode, extract, Parquet,
      markers, summary) on an embedded local Ray using every CPU, after a warm-up run of the
      same stage (Ray itself, file and compilation caches warm).
Prints both, the ratio, and the stage's utilisation (start-up, busy share).

Run: .venv/bin/python tests/benchmarks/bench_feature_stage.py [--minutes 600] [--cpus 2]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import DEMO_CORPUS  # noqa: E402

from timbrespace_ray.config import load_config  # noqa: E402
from timbrespace_ray.features import FeatureConfig, ProsodicFeatureExtractor, analyse  # noqa: E402
from timbrespace_ray.runner import RayExecutor, run_map_stage  # noqa: E402
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


def bare_extractor_xrt() -> tuple[float, float]:
    """(load_audio + extract, extract alone) x real time on the bundled recordings."""
    files = sorted(DEMO_CORPUS.glob("*.wav"))
    extractor = ProsodicFeatureExtractor()
    cfg = FeatureConfig()
    waves = [sf.read(str(f), dtype="float32")[0] for f in files]
    audio_s = 3 * sum(len(w) for w in waves) / 16000

    def from_files():
        for _ in range(3):
            for f in files:
                extractor.load_audio(str(f))
                extractor.extract()

    return (_best_xrt(from_files, audio_s),
            _best_xrt(lambda: [analyse(w, cfg) for _ in range(3) for w in waves], audio_s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=600.0,
                    help="audio to process; long enough that the pool's start-up is amortised")
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    args = ap.parse_args()

    bare, in_memory = bare_extractor_xrt()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm, corpus = tmp / "warm", tmp / "corpus"
        build_corpus(warm, 1)
        audio_s = build_corpus(corpus, args.minutes)
        executor = RayExecutor(num_cpus=args.cpus, progress_bars=False)
        cfg = load_config().features
        quiet = lambda s: None  # noqa: E731
        run_map_stage(FeaturesStage(Location.of(str(tmp / "o1")), str(warm), cfg), executor, quiet)
        t0 = time.perf_counter()
        summary = run_map_stage(FeaturesStage(Location.of(str(tmp / "o2")), str(corpus), cfg),
                                executor, quiet)
        wall = time.perf_counter() - t0
    assert summary.rows == summary.inputs, summary
    per_cpu = audio_s / wall / args.cpus
    print(f"\nFeatures stage throughput ({audio_s / 60:.0f} min of real speech, "
          f"{summary.inputs} WAV files, {args.cpus} CPUs, embedded Ray; the actor pool's "
          "start-up is inside the timed run)")
    print(f"  bare extractor, one core         {bare:8.0f} x real time (load_audio + extract)")
    print(f"    (extract alone, audio in memory {in_memory:7.0f} x real time)")
    print(f"  Ray stage end to end, total      {audio_s / wall:8.0f} x real time ({wall:.1f} s)")
    print(f"  Ray stage end to end, per CPU    {per_cpu:8.0f} x real time")
    print(f"  ratio per CPU / bare             {per_cpu / bare:8.2f}  (target >= 0.80: "
          f"{'MET' if per_cpu / bare >= 0.8 else 'NOT MET'}); "
          f"against extract alone {per_cpu / in_memory:.2f}")
    print(f"  workers busy {summary.busy_seconds / (wall * args.cpus):.0%} of the CPU time "
          f"(the rest: pool start-up, the last units, Ray itself)")


if __name__ == "__main__":
    main()
