"""What style profiles cost: the features stage with and without its pitch track, and the profile
stage against the features stage, on Ray, in the same process.

Corpus: the bundled real recordings copied under many names (as bench_feature_stage.py builds
it). After a warm-up run of each stage on one copy (Ray, file and numba caches warm), in rounds
that alternate the order (so a busy moment of a shared machine falls on both sides):
  features, pitch off  -> the stage as it was before the pitch track
  features, pitch on   -> today's default
  profile              -> on the pitch-on features
and prints, per configuration, the median wall time over the rounds and x real time per CPU,
with the two targets of issue 13: pitch on >= 0.8 of pitch off's throughput; the profile stage
under a tenth of the features stage. The profile's cost is given two ways: wall time (its three
steps each start an actor pool or tasks: a fixed second or two that a small corpus feels) and
worker-busy CPU seconds (what a large corpus pays per hour of audio).

Run: .venv/bin/python tests/benchmarks/bench_profile.py [--minutes 720] [--rounds 2] [--cpus 2]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_feature_stage import build_corpus  # noqa: E402

from timbrespace_ray.config import load_config  # noqa: E402
from timbrespace_ray.pipeline import run_stage  # noqa: E402
from timbrespace_ray.executors import RayExecutor  # noqa: E402


def busy_seconds(folder: Path) -> float:
    """Summed worker time of a map stage's units (their markers)."""
    return sum(json.loads(p.read_text())["busy_seconds"] for p in (folder / "done").glob("*.json"))


def run(name: str, out: Path, executor, **keys) -> float:
    cfg = load_config(output=str(out), **keys)
    t0 = time.perf_counter()
    run_stage(name, cfg, executor)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=720.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    args = ap.parse_args()
    executor = RayExecutor(num_cpus=args.cpus, progress_bars=False)
    walls: dict[str, list[float]] = {"off": [], "on": [], "profile": []}
    busy: dict[str, list[float]] = {"on": [], "profile": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm, corpus = tmp / "warm", tmp / "corpus"
        build_corpus(warm, 1)
        audio_s = build_corpus(corpus, args.minutes)
        os.sync()
        run("features", tmp / "w", executor, input=str(warm))
        run("profile", tmp / "w", executor)
        for r in range(args.rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for pitch in order:
                out = tmp / f"{pitch}{r}"
                walls[pitch].append(run("features", out, executor, input=str(corpus),
                                        **{"features.pitch": {"enabled": pitch == "on"}}))
            walls["profile"].append(run("profile", tmp / f"on{r}", executor))
            state = tmp / f"on{r}" / "_run"
            busy["on"].append(busy_seconds(state / "features"))
            busy["profile"].append(busy_seconds(state / "profile" / "measures")
                                   + busy_seconds(state / "profile"))
            rows = json.loads((state / "profile" / "summary.json").read_text())["rows"]
    med = {k: statistics.median(v) for k, v in walls.items()}
    per_cpu = {k: audio_s / v / args.cpus for k, v in med.items()}
    print(f"\nStyle profiles: cost ({audio_s / 60:.0f} min of real speech, {rows} utterances, "
          f"{args.cpus} CPUs, embedded Ray; median of {args.rounds} rounds)")
    print(f"  features stage, pitch track off  {med['off']:7.1f} s  {per_cpu['off']:6.0f} x real time per CPU")
    print(f"  features stage, pitch track on   {med['on']:7.1f} s  {per_cpu['on']:6.0f} x real time per CPU")
    ratio = med["off"] / med["on"]
    print(f"  throughput with the pitch track / without: {ratio:.2f} "
          f"(target >= 0.80: {'met' if ratio >= 0.8 else 'NOT MET'})")
    print(f"  profile stage                    {med['profile']:7.1f} s  {per_cpu['profile']:6.0f} x real time per CPU")
    share = med["profile"] / med["on"]
    cpu_share = statistics.median(busy["profile"]) / statistics.median(busy["on"])
    print(f"  profile / features, wall time: {share:.3f}; worker CPU time: {cpu_share:.3f} "
          f"(target < 0.1: {'met' if max(share, cpu_share) < 0.1 else 'NOT MET'})")


if __name__ == "__main__":
    main()
