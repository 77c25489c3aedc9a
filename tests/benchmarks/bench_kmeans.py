"""k-means on 7 million weighted prosodic frames, k = 120: the CPU methods side by side.

Data: the published LibriSpeech model's 120 centres plus Gaussian noise. Real speech sets the
noise: the bundled demo corpus is run through `ProsodicFeatureExtractor`, each frame goes to its
nearest published centre, and every centre gets the per-feature std of its frames' residuals
(the global residual std where fewer than 10 real frames fell to it) and a share of the frames
proportional to its real count plus 5. Silence, which the extractor outputs as exact zeros and
the published model keeps as one all-zero centre, so stays a pile of identical frames.

Prints, per method: iterations (Lloyd: passes over all frames; MiniBatch: steps of 8192
frames), inertia and seconds, each against plain Lloyd run in the same process; and the inertia
of the published centres themselves on the same frames. One seed per method: inertia differs by
about +-0.5% from seed to seed on these frames, so compare inertias at that resolution.

Run: .venv/bin/python tests/benchmarks/bench_kmeans.py [--frames 7000000] [--k 120]
"""
from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = os.environ.get("BENCH_THREADS", "2")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from timbrespace_ray.clustering import (DEFAULT_METHOD, METHODS, KMeansModel,  # noqa: E402
                                        fit_kmeans, weighted_frames)
from timbrespace_ray.features import ProsodicFeatureExtractor  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "tests" / "data" / "models" / "timbrespace_librispeech_n120"
DEMO_CORPUS = ROOT / "timbrespace_ray" / "demo_corpus"
TARGET_S = 180


def real_frames() -> np.ndarray:
    extractor = ProsodicFeatureExtractor()
    parts = []
    for wav in sorted(DEMO_CORPUS.glob("*.wav")):
        extractor.load_audio(str(wav))
        parts.append(weighted_frames(extractor.extract()))
    return np.concatenate(parts)


def synthetic_frames(model: KMeansModel, real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    centers = model.cluster_centers
    k = centers.shape[0]
    labels = model.assign(real).astype(np.int64)
    residuals = real - centers[labels]
    std = np.tile(residuals.std(axis=0), (k, 1))
    counts = np.bincount(labels, minlength=k)
    for c in np.flatnonzero(counts >= 10):
        std[c] = residuals[labels == c].std(axis=0)
    share = (counts + 5) / (counts + 5).sum()
    rng = np.random.default_rng(seed)
    z = rng.choice(k, size=n, p=share)
    x = rng.standard_normal((n, centers.shape[1]), dtype=np.float32)
    x *= std[z].astype(np.float32)
    x += centers[z]
    return x


def published_inertia(model: KMeansModel, x: np.ndarray) -> float:
    total = 0.0
    for i in range(0, x.shape[0], 1 << 20):
        chunk = x[i : i + (1 << 20)]
        gap = chunk - model.cluster_centers[model.assign(chunk)]
        total += float(np.einsum("ij,ij->", gap, gap, dtype=np.float64))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=7_000_000)
    ap.add_argument("--k", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-iter", type=int, default=1000)
    args = ap.parse_args()

    model = KMeansModel.load(str(PUBLISHED))
    real = real_frames()
    t0 = time.perf_counter()
    x = synthetic_frames(model, real, args.frames, args.seed)
    print(f"{args.frames:,} x {x.shape[1]} frames from the published centres + noise fitted to "
          f"{real.shape[0]:,} real frames ({time.perf_counter() - t0:.1f} s to make); "
          f"k = {args.k}, {os.environ['OMP_NUM_THREADS']} threads", flush=True)
    ref = published_inertia(model, x) if args.k == model.n_clusters else float("nan")

    order = ["lloyd"] + [m for m in METHODS if m != "lloyd"]
    results = {}
    for method in order:
        r = fit_kmeans(x, args.k, seed=args.seed, max_iter=args.max_iter, method=method)
        results[method] = r
        extra = ", ".join(f"{k}={v}" for k, v in r.details.items())
        print(f"  {method}: {r.seconds:.1f} s, {r.n_iter} passes, inertia {r.inertia:.1f}"
              + (f" ({extra})" if extra else ""), flush=True)

    base = results["lloyd"]
    print()
    print(f"| method | iterations | inertia | inertia / Lloyd | seconds | "
          f"time / Lloyd | < {TARGET_S} s |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for method, r in results.items():
        name = method + (" (default)" if method == DEFAULT_METHOD else "")
        print(f"| {name} | {r.n_iter} | {r.inertia:.1f} | {r.inertia / base.inertia:.4f} | "
              f"{r.seconds:.1f} | {r.seconds / base.seconds:.3f} | "
              f"{'yes' if r.seconds < TARGET_S else 'NO'} |")
    print(f"| published centres, no fit | - | {ref:.1f} | {ref / base.inertia:.4f} | - | - | - |")
    default = results[DEFAULT_METHOD]
    print(f"\ndefault {DEFAULT_METHOD}: {default.seconds:.1f} s "
          f"({'meets' if default.seconds < TARGET_S else 'MISSES'} the < {TARGET_S} s target)")


if __name__ == "__main__":
    main()
