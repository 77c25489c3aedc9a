"""Train the encoder shipped with the package (`timbrespace_ray/encoder/pretrained/`).

It is trained with the product's defaults from random weights on the train speakers of one
set of the evaluation suite (`speech_sets.py`; by default `prompts`, whose recordings' licences
allow shipping weights derived from them: CC-BY-SA-3.0, CC-BY-3.0, CC BY-SA 3.0 IT and a
BSD-style licence, see NOTICE). The held-out speakers of every set stay unseen, so
`bench_embeddings.py` measures the shipped encoder on voices it never heard.

Writes into --out: `config.json`, `model.pt`, `normalization.json`, the codebook its token ids
belong to (`kmeans_model.json`) and `training.json` (how it was trained, and on which voices,
packages and licences).

Run: .venv/bin/python tests/benchmarks/pretrain_encoder.py [--set prompts] [--work DIR]
A rerun with the same --work skips the finished stages.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_embeddings import split_manifest  # noqa: E402
from timbrespace_ray.config import load_config  # noqa: E402
from timbrespace_ray.encoder.codebook import PRETRAINED  # noqa: E402
from timbrespace_ray.executors import RayExecutor  # noqa: E402
from timbrespace_ray.pipeline import run_stage  # noqa: E402

COPIED = {"encoder": ("config.json", "model.pt", "normalization.json"),
          "kmeans": ("kmeans_model.json",)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="prompts")
    parser.add_argument("--work", type=Path, default=Path("/tmp/timbrespace_pretrain"))
    parser.add_argument("--cache", type=Path, default=None, help="the suite's cache folder")
    parser.add_argument("--out", type=Path, default=PRETRAINED)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    from speech_sets import build_suite
    from timbrespace_ray.cli import configure_output

    configure_output(progress_bars=False, verbose=False)
    manifest = build_suite(args.cache)[args.set]
    run = args.work / args.set / "train"
    splits = split_manifest(manifest, args.work / args.set)
    cfg = load_config(None, input=str(splits["train"]), output=str(run),
                      **{"ray.num_cpus": args.cpus, "ray.progress_bars": False,
                         "train.init": "scratch"})
    with RayExecutor(num_cpus=args.cpus, progress_bars=False) as executor:
        for stage in ("features", "kmeans", "tokens", "train"):
            run_stage(stage, cfg, executor)
    args.out.mkdir(parents=True, exist_ok=True)
    for folder, names in COPIED.items():
        for name in names:
            shutil.copyfile(run / folder / name, args.out / name)
    corpus = json.loads((manifest.parent / "corpus.json").read_text())
    record = json.loads((run / "encoder" / "training.json").read_text())
    record["trained_on"] = (f"timbrespace_ray's pretrained encoder: the train speakers of the "
                            f"evaluation suite's '{args.set}' set")
    record["init"] = "scratch"
    record["corpus"] = {speaker: {k: doc[k] for k in ("languages", "packages", "utterances",
                                                       "hours") if k in doc}
                        for speaker, doc in corpus["speakers"].items()
                        if doc["split"] == "train"}
    (args.out / "training.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"{args.out}: trained on {len(record['corpus'])} voices, "
          f"{sum(int(d['utterances']) for d in record['corpus'].values())} utterances, "
          f"{record['step']} steps ({record['stop_reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
