"""End-to-end throughput of the features stage on Ray, per CPU, against the bare extractor.

Builds a corpus of real speech WAV files (the bundled recordings, copied under many names),
measures in the same process (1) the bare extractor on one core, one thread, and (2) the Ray
features stage (decode + extract + Parquet) on an embedded local Ray using every CPU, after a
warm-up run so that worker start-up is not counted. Prints both and the ratio.

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
from timbrespace_ray.features import FeatureConfig, analyse  # noqa: E402
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


def bare_extractor_xrt() -> float:
    cfg = FeatureConfig()
    waves = [sf.read(str(f), dtype="float32")[0] for f in sorted(DEMO_CORPUS.glob("*.wav"))]
    analyse(waves[0], cfg)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(3):
            for w in waves:
                analyse(w, cfg)
        best = min(best, time.perf_counter() - t0)
    return 3 * sum(len(w) for w in waves) / 16000 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=600.0,
                    help="audio to process; long enough that the pool's start-up is amortised")
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    args = ap.parse_args()

    bare = bare_extractor_xrt()
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
          f"{summary.inputs} WAV files, {args.cpus} CPUs, embedded Ray, warm workers)")
    print(f"  bare extractor, one core         {bare:8.0f} x real time")
    print(f"  Ray stage end to end, total      {audio_s / wall:8.0f} x real time ({wall:.1f} s)")
    print(f"  Ray stage end to end, per CPU    {per_cpu:8.0f} x real time")
    print(f"  ratio per CPU / bare             {per_cpu / bare:8.2f}  (target >= 0.80: "
          f"{'MET' if per_cpu / bare >= 0.8 else 'NOT MET'})")


if __name__ == "__main__":
    main()
