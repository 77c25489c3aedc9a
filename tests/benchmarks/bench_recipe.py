"""Does training help? The CPU training recipe on real multi-speaker speech, against baselines.

1. The Asterisk voice-prompt corpus (`asterisk_corpus.py`: 7 professional voices, 7 languages,
   about 2.2 h, fetched from Debian's archive at benchmark time, never bundled).
2. features, kmeans, tokens on an embedded local Ray (--cpus, default 2), then the train stage
   with the defaults `run` uses (`config.RECIPE`) and a validation
   split of --heldout of the utterances (by a hash of utt_id), then embed.
3. `timbrespace-ray evaluate --label speaker` over the held-out utterances: AUC, EER and 1-NN
   for the embeddings as written and normalised, feature statistics, a bag of tokens and an
   untrained encoder of the same shape.
4. The verdict against the target: the normalised embeddings' AUC at least 0.05 above the
   better of feature statistics and the untrained encoder (raw or centred), their EER below
   both, and the train stage within --budget-min minutes.

Run: .venv/bin/python tests/benchmarks/bench_recipe.py [--output DIR] [--set train.epochs=4 ...]
     (or `make bench-recipe`). A rerun with the same --output skips the finished stages, so
     `--set` overrides of train.* need a fresh --output or --retrain.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from asterisk_corpus import build_corpus  # noqa: E402

from timbrespace_ray.config import RECIPE, load_config  # noqa: E402
from timbrespace_ray.evaluation.run import run_evaluation  # noqa: E402
from timbrespace_ray.pipeline import run_stage  # noqa: E402
from timbrespace_ray.executors import RayExecutor  # noqa: E402

MARGIN = 0.05
BASELINES = ("feature statistics", "untrained encoder", "untrained encoder, centred")
OURS = "embeddings, normalised"


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def verdict(doc: dict, train_s: float, budget_s: float) -> tuple[bool, list[str]]:
    reps = doc["representations"]
    ours = reps[OURS]
    best_auc = max(reps[b]["auc"] for b in BASELINES)
    lowest_eer = min(reps[b]["eer"] for b in BASELINES)
    checks = [(ours["auc"] >= best_auc + MARGIN,
               f"AUC {ours['auc']:.3f} vs best baseline {best_auc:.3f} + {MARGIN}"),
              (ours["eer"] < lowest_eer, f"EER {ours['eer']:.3f} vs lowest baseline {lowest_eer:.3f}"),
              (train_s <= budget_s, f"training {train_s / 60:.1f} min vs {budget_s / 60:.0f} min")]
    return all(ok for ok, _ in checks), [f"{'met ' if ok else 'MISSED'}  {what}"
                                         for ok, what in checks]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="/tmp/timbrespace_bench_recipe")
    parser.add_argument("--cache", type=Path, default=None, help="corpus cache folder")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--heldout", type=float, default=0.25)
    parser.add_argument("--budget-min", type=float, default=30.0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. train.epochs=4 (repeatable)")
    parser.add_argument("--retrain", action="store_true",
                        help="train, embed and evaluate again on the existing tokens")
    args = parser.parse_args()
    from timbrespace_ray.cli import configure_output

    configure_output(progress_bars=False, verbose=False)  # the stages' lines, as the CLI shows them

    manifest = build_corpus(args.cache)
    overrides = {"train.validation_fraction": args.heldout}
    overrides.update({k: _value(v) for k, v in (s.split("=", 1) for s in args.set)})
    cfg = load_config(None, input=str(manifest), output=args.output,
                      **{"ray.num_cpus": args.cpus, "ray.progress_bars": False}, **overrides)
    out = Path(args.output)
    if args.retrain:
        for folder in ("encoder", "embeddings", "evaluation", "_run/train", "_run/embed"):
            shutil.rmtree(out / folder, ignore_errors=True)
    executor = RayExecutor(num_cpus=args.cpus, progress_bars=False)
    walls = {}
    for stage in ("features", "kmeans", "tokens", "train", "embed"):
        t0 = time.perf_counter()
        run_stage(stage, cfg, executor)
        walls[stage] = time.perf_counter() - t0
        print(f"{stage}: {walls[stage]:.0f} s", flush=True)
    doc = run_evaluation(cfg, "speaker", "heldout", executor=executor)
    summary = json.loads((out / "encoder" / "training.json").read_text())
    recipe = {**RECIPE, **{k.split(".", 1)[1]: v for k, v in overrides.items()
                               if k.startswith("train.")}}
    ok, lines = verdict(doc, walls["train"], args.budget_min * 60)
    print(f"\nrecipe: {json.dumps(recipe)}\nencoder: {summary['step']} steps, "
          f"{summary['final_loss_kind']} loss {summary['final_loss']:.3f}; train stage "
          f"{walls['train'] / 60:.1f} min on {args.cpus} CPUs")
    print("\n".join(lines))
    print("target met" if ok else "target NOT met")
    (out / "bench_recipe.json").write_text(json.dumps(
        {"recipe": recipe, "walls_s": walls, "encoder": summary, "met": ok, "checks": lines,
         "evaluation": doc["representations"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
