"""k-means on 7 million weighted prosodic frames, k = 120: the CPU methods side by side.

Data: the published LibriSpeech model's 120 centres plus Gaussian noise. Real speech sets the
noise: the bundled demo corpus is run through `ProsodicFeatureExtractor`, each frame goes to its
nearest published centre, and every centre gets the per-feature std of its frames' residuals
(the global residual std where fewer than 10 real frames fell to it) and a share of the frames
proportional to its real count plus 5. Silence, which the extractor outputs as exact zeros and
the published model keeps as one all-zero centre, so stays a pile of identical frames.

Prints, per method and seed: passes over all frames (Lloyd; MiniBatch: steps of 8192 frames),
inertia and seconds; then a table against warm-Lloyd (scikit-learn, the previous default) run
in the same process, means over the seeds; and the inertia of the published centres
themselves on the same frames. Every inertia is recomputed here in float64 from the centres
(scikit-learn sums its own in float32, off by up to ~0.1% at 7 M frames). Inertia differs by
about +-0.5% from seed to seed on these frames: compare means over a few seeds (--seeds).

numba compiles the default method's kernels on first use and caches them next to the package;
the bench fits a small sample first and prints that time apart (a fresh install pays it once).

Run: .venv/bin/python tests/benchmarks/bench_kmeans.py [--frames 7000000] [--k 120]
     [--seeds 0,1,2] [--methods bounded,warm-lloyd,minibatch,lloyd] [--data FILE.npy]
"""
from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
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
TARGET_S = 10  # the default method, 7 M frames, 2 cores


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


def exact_inertia(centers: np.ndarray, x: np.ndarray) -> float:
    """Sum of squared distances of the frames to their nearest centre, summed in float64."""
    model = KMeansModel(np.asarray(centers, np.float32), 0.0)
    total = 0.0
    for i in range(0, x.shape[0], 1 << 20):
        chunk = x[i : i + (1 << 20)]
        gap = (chunk - model.cluster_centers[model.assign(chunk)]).astype(np.float64)
        total += float(np.einsum("ij,ij->", gap, gap))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=7_000_000)
    ap.add_argument("--k", type=int, default=120)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, each fitted by every method")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated; warm-lloyd, the baseline, is always run")
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--data", help="a (frames, 6) float32 .npy file to fit instead of the "
                                   "synthetic frames (e.g. real frames); --frames is ignored")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = ["warm-lloyd"] + [m for m in args.methods.split(",") if m != "warm-lloyd"]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")

    model = KMeansModel.load(str(PUBLISHED))
    t0 = time.perf_counter()
    if args.data:
        x = np.ascontiguousarray(np.load(args.data), dtype=np.float32)
        print(f"{x.shape[0]:,} x {x.shape[1]} frames from {args.data}; k = {args.k}, "
              f"{os.environ['OMP_NUM_THREADS']} threads", flush=True)
    else:
        real = real_frames()
        x = synthetic_frames(model, real, args.frames, seeds[0])
        print(f"{args.frames:,} x {x.shape[1]} frames from the published centres + noise fitted "
              f"to {real.shape[0]:,} real frames ({time.perf_counter() - t0:.1f} s to make); "
              f"k = {args.k}, {os.environ['OMP_NUM_THREADS']} threads", flush=True)
    t0 = time.perf_counter()
    fit_kmeans(x[:20_000], min(args.k, 8), seed=0, method="bounded")
    print(f"numba kernels compiled or loaded from their cache: {time.perf_counter() - t0:.1f} s "
          "(not in the times below)", flush=True)
    ref = (exact_inertia(model.cluster_centers, x)
           if args.k == model.n_clusters and not args.data else float("nan"))

    runs: dict[str, list] = {m: [] for m in methods}
    for seed in seeds:
        for method in methods:
            r = fit_kmeans(x, args.k, seed=seed, max_iter=args.max_iter, method=method)
            inertia = exact_inertia(r.centers, x)
            runs[method].append((r, inertia))
            extra = ", ".join(f"{k}={v}" for k, v in r.details.items())
            print(f"  seed {seed} {method}: {r.seconds:.1f} s, {r.n_iter} passes, inertia "
                  f"{inertia:.1f} (its own: {r.inertia:.1f})" + (f" ({extra})" if extra else ""),
                  flush=True)

    def mean(method, what):
        return float(np.mean([what(r, inertia) for r, inertia in runs[method]]))

    base_inertia = mean("warm-lloyd", lambda r, i: i)
    base_seconds = mean("warm-lloyd", lambda r, i: r.seconds)
    print()
    print(f"means over seed(s) {args.seeds}")
    print("| method | passes | inertia | inertia / warm-Lloyd | seconds | time / warm-Lloyd |")
    print("|---|---:|---:|---:|---:|---:|")
    for method in methods:
        name = method + (" (default)" if method == DEFAULT_METHOD else "")
        inertia = mean(method, lambda r, i: i)
        seconds = mean(method, lambda r, i: r.seconds)
        print(f"| {name} | {mean(method, lambda r, i: r.n_iter):.0f} | {inertia:.1f} | "
              f"{inertia / base_inertia:.4f} | {seconds:.1f} | {seconds / base_seconds:.3f} |")
    print(f"| published centres, no fit | - | {ref:.1f} | {ref / base_inertia:.4f} | - | - |")
    if DEFAULT_METHOD in runs:
        worst = max(r.seconds for r, _ in runs[DEFAULT_METHOD])
        ratio = mean(DEFAULT_METHOD, lambda r, i: i) / base_inertia
        print(f"\ndefault {DEFAULT_METHOD}: at most {worst:.1f} s "
              f"({'meets' if worst <= TARGET_S else 'MISSES'} the <= {TARGET_S} s target), "
              f"inertia {ratio:.4f} x warm-Lloyd's "
              f"({'within' if ratio <= 1.005 else 'NOT within'} 0.5 %)")


if __name__ == "__main__":
    main()
