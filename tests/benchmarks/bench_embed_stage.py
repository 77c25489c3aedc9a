"""The embed stage against a bare forward of its own model on the same windows: how much of the
model's speed the stage keeps (Parquet read, token translation, windowing and batching, padding,
Python per batch, normalisation, Parquet write, the actor pool's start-up and model load).

Tokens: a run's finished tokens stage (`--run OUTPUT`, e.g. the `output/` that
`bench_pipeline.py --keep DIR` leaves), else `--hours` of the bundled recordings copied under
many names (`bench_feature_stage.build_corpus`) taken through the features, kmeans and tokens
stages first. Each model embeds a copy of that run holding its first parts: the recipe's small
model (the pretrained encoder shipped with the package, so tokens are translated to its
codebook as in a run without training) all of them, the original's 58 M model (random weights)
`--big-parts`.

For each model, in one process:
  - bare: every window the stage makes (the same parts, translation, `split_windows`) forwarded
    alone (a [1, n] batch: no padding, no mask), its tensor made before the clock starts, in
    float32 and in bf16 weights where native: the model's own speed on these windows, per
    process with one process (one torch thread) and with `--cpus` processes at once (the
    stage's CPUs all busy: cores that share a chip's caches and memory, or another job, slow
    each); on a uniform sample of the windows (`--bare-tokens`, `--big-bare-tokens`), before
    and after the stage runs, the faster kept;
  - the stage: `EmbedStage` on an embedded Ray of `--cpus` CPUs (one actor per CPU, the
    product's defaults but the encoder), float32 and, where the CPU computes bf16 natively,
    bf16: tokens / (wall x CPUs), and tokens / the units' busy time (the same without the pool's
    start-up and Ray's own processes: the limit a large run tends to);
  - the ratios of those to the bare float32 forward with as many processes as the stage has
    CPUs (and to the bare bf16 forward, the stage's own precision there), and the cosine
    similarity of the stage's bf16 embeddings to its float32 ones;
  - where one unit's time goes: the stage's `process` on one part in this process under
    cProfile, one thread, in the stage's precision.

Run: .venv/bin/python tests/benchmarks/bench_embed_stage.py [--run OUTPUT] [--hours 1]
     [--cpus N] [--models small,58M] [--big-parts 2] [--bare-tokens N] [--big-bare-tokens N]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing
import os
import pstats
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_feature_stage import build_corpus  # noqa: E402
from bench_pipeline import write_manifest  # noqa: E402

from timbrespace_ray.config import ORIGINAL_RECIPE, EmbedStageConfig, load_config  # noqa: E402
from timbrespace_ray.encoder import (ProsodicSequenceEncoder, collate, inference_model,  # noqa: E402
                                     save_encoder, split_windows)
from timbrespace_ray.encoder.codebook import PRETRAINED, translate_tokens  # noqa: E402
from timbrespace_ray.encoder.precision import compute_dtype  # noqa: E402
from timbrespace_ray.executors import RayExecutor  # noqa: E402
from timbrespace_ray.pipeline import run_pipeline  # noqa: E402
from timbrespace_ray.stages.embed import (EmbedStage, codebook_translation,  # noqa: E402
                                          read_encoder)
from timbrespace_ray.storage import Location  # noqa: E402
from timbrespace_ray.tables import flat_lists, read_schema, settings_of  # noqa: E402

TOKENS_PER_SECOND = 62.5  # 16 ms hop


def subset_run(run: Path, dest: Path, n_parts: int | None) -> Path:
    """A run folder holding the first `n_parts` tokens parts of `run` (all when None) and the
    tokens stage's completion, for an embed stage of its own."""
    parts = sorted((run / "tokens").glob("part-*.parquet"))[:n_parts]
    (dest / "tokens").mkdir(parents=True)
    for p in parts:
        shutil.copy(p, dest / "tokens" / p.name)
    shutil.copytree(run / "_run" / "tokens", dest / "_run" / "tokens")
    return dest


def stage_windows(run: Path, encoder: str) -> list[np.ndarray]:
    """The token windows the embed stage makes of `run`'s parts for `encoder`."""
    parts = sorted((run / "tokens").glob("part-*.parquet"))
    codebook = settings_of(read_schema(Location.of(str(parts[0])))).get("kmeans_model")
    mapping = codebook_translation(encoder, codebook, {})
    model_len = json.loads((Path(encoder) / "config.json").read_text())["pos_max_len"]
    windows = []
    for p in parts:
        tokens, offsets = flat_lists(pq.read_table(p, columns=["tokens"]).column("tokens"))
        seqs = translate_tokens([tokens[a:b] for a, b in zip(offsets[:-1], offsets[1:])], mapping)
        windows += [np.asarray(s[start:start + n], np.int64) for s in seqs
                    for _, start, n in split_windows(len(s), model_len)]
    return windows


def _forward_each(job: tuple[str, bool, list[np.ndarray]]) -> tuple[float, int]:
    """(seconds, tokens) of one process forwarding each of its windows alone, one thread."""
    encoder, bf16, windows = job
    torch.set_num_threads(1)
    model = inference_model(read_encoder(encoder, {}), bf16) if bf16 else \
        read_encoder(encoder, {}).eval()
    batches = [collate([w]).tokens for w in windows]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(batches[0])  # warm-up
        start = time.perf_counter()
        for x in batches:
            model(x)
        return time.perf_counter() - start, sum(len(w) for w in windows)


def bare_forward(encoder: str, bf16: bool, windows: list[np.ndarray], processes: int,
                 max_tokens: int | None) -> float:
    """Tokens/s per process of `processes` processes at once, each forwarding its share of the
    windows (every `processes`-th) alone, on a uniform sample (every k-th window) of at most
    `max_tokens` tokens: the model's own speed with that many CPUs busy."""
    total = sum(len(w) for w in windows)
    if max_tokens and total > max_tokens:
        windows = windows[::-(-total // max_tokens)]
    jobs = [(encoder, bf16, windows[i::processes]) for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        done = pool.map(_forward_each, jobs)
    return sum(n for _, n in done) / max(s for s, _ in done) / processes


def run_stage(run: Path, encoder: str, bf16: bool, executor) -> tuple[float, float, np.ndarray]:
    """(wall, the units' busy seconds, embeddings) of the embed stage on `run`."""
    for leftover in (run / "embeddings", run / "_run" / "embed"):
        shutil.rmtree(leftover, ignore_errors=True)
    stage = EmbedStage(Location.of(str(run)), EmbedStageConfig(bf16=bf16), encoder)
    start = time.perf_counter()
    stage.run(executor)
    wall = time.perf_counter() - start
    busy = sum(json.loads(p.read_text())["busy_seconds"]
               for p in (run / "_run" / "embed" / "done").glob("*.json"))
    table = pq.read_table(run / "embeddings", columns=["utt_id", "window", "embedding"])
    table = table.sort_by([("utt_id", "ascending"), ("window", "ascending")])
    return wall, busy, np.asarray(flat_lists(table.column("embedding"))[0]).reshape(
        table.num_rows, -1)


def unit_profile(run: Path, encoder: str, bf16: bool) -> list[tuple[str, float]]:
    """Cumulative seconds of the parts of one unit of the stage (its first part: model load,
    Parquet read, translation, batching, forward, normalisation, Parquet write), in this
    process."""
    stage = EmbedStage(Location.of(str(run)), EmbedStageConfig(bf16=bf16), encoder)
    first = stage.plan()[0]
    codebook = settings_of(read_schema(stage.upstream_folder().child(first.items[0]["part"])))
    stage.token_map = codebook_translation(encoder, codebook.get("kmeans_model"), {})
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    stage.setup()
    stage.process(first)
    prof.disable()
    total = time.perf_counter() - start
    parts = {"setup": "model load", "read_part": "Parquet read", "translate_tokens": "translation",
             "split_windows": "windowing", "token_batches": "batching", "collate": "collate",
             "embed": "forward", "apply": "normalisation", "write_table": "Parquet write"}
    found = {}
    for (path, _, name), (_, _, _, cumulative, _) in pstats.Stats(prof).stats.items():
        if name in parts and "timbrespace_ray" in path:
            found[parts[name]] = found.get(parts[name], 0.0) + cumulative
    return [("whole unit", total), *((v, found.get(v, 0.0)) for v in parts.values())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="an output folder with a finished tokens stage")
    ap.add_argument("--hours", type=float, default=1.0, help="corpus to build without --run")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the embedded Ray")
    ap.add_argument("--models", default="small,58M", help="which: small, 58M or both")
    ap.add_argument("--big-parts", type=int, default=2, help="parts the 58 M model embeds")
    ap.add_argument("--bare-tokens", type=int, default=200_000,
                    help="tokens of the small model's bare forward (a sample of the windows)")
    ap.add_argument("--big-bare-tokens", type=int, default=16_000,
                    help="tokens of the 58 M model's bare forward (a sample of the windows)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    native = compute_dtype("cpu", True) == "bfloat16"
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"bf16 native: {native}; {args.cpus} CPUs for the stage, one torch thread per process for the bare forward")
    root = Path(tempfile.mkdtemp(prefix="bench_embed_stage_"))
    try:
        executor = RayExecutor(num_cpus=args.cpus, progress_bars=False)
        if args.run:
            run = Path(args.run)
        else:
            corpus, run = root / "corpus", root / "output"
            hours = build_corpus(corpus, args.hours * 60) / 3600
            manifest, _ = write_manifest(corpus)
            cfg = load_config(input=str(manifest), output=str(run))
            t0 = time.perf_counter()
            run_pipeline(cfg, executor, stages=("features", "kmeans", "tokens"))
            print(f"built {hours:.2f} h of tokens in {time.perf_counter() - t0:.0f} s")
        executor.connect()
        big = root / "encoder-58M"
        torch.manual_seed(0)
        save_encoder(big, ProsodicSequenceEncoder(
            **{k: ORIGINAL_RECIPE[k] for k in ("hidden_dim", "num_layers", "nhead")}))
        models = [("small (the recipe's, pretrained)", str(PRETRAINED), None, args.bare_tokens),
                  ("58 M (the original's shape)", str(big), args.big_parts, args.big_bare_tokens)]
        models = [m for m, key in zip(models, ("small", "58M")) if key in args.models.split(",")]
        precisions = (False, True) if native else (False,)
        for i, (name, encoder, n_parts, bare_tokens) in enumerate(models):
            own = subset_run(run, root / f"run-{i}", n_parts)
            windows = stage_windows(own, encoder)
            n_tokens = sum(len(w) for w in windows)
            params = sum(p.numel() for p in read_encoder(encoder, {}).parameters()) / 1e6
            print(f"\n{name}: {params:.1f} M parameters; "
                  f"{len(list((own / 'tokens').glob('*.parquet')))} parts, {len(windows)} windows "
                  f"of {min(map(len, windows))}-{max(map(len, windows))} tokens, {n_tokens:,} "
                  f"tokens ({n_tokens / TOKENS_PER_SECOND / 3600:.2f} h)")
            # the bare forwards before and after the stage runs, the faster kept
            bare = {(b, n): bare_forward(encoder, b, windows, n, bare_tokens)
                    for b in precisions for n in sorted({1, args.cpus})}
            stage, vectors = {}, {}
            for bf16 in precisions:
                wall, busy, vectors[bf16] = run_stage(own, encoder, bf16, executor)
                stage[bf16] = (n_tokens / wall / args.cpus, n_tokens / busy, wall)
            for (b, n), rate in bare.items():
                bare[b, n] = max(rate, bare_forward(encoder, b, windows, n, bare_tokens))
            label = {False: "float32", True: "bf16"}
            for b in precisions:
                print(f"  bare forward {label[b]:7}, each window alone: "
                      + ", ".join(f"{bare[b, n]:,.0f} tokens/s per process with {n} at once"
                                  for n in sorted({1, args.cpus})))
            ref = bare[False, args.cpus]
            for b in precisions:
                rate, busy_rate, wall = stage[b]
                print(f"  stage {label[b]:7}: {rate:,.0f} tokens/s per CPU ({rate / TOKENS_PER_SECOND:,.0f}x "
                      f"real time, wall {wall:.1f} s): {rate / ref:.2f} of the bare float32 forward"
                      + (f", {rate / bare[b, args.cpus]:.2f} of the bare bf16 one" if b else "")
                      + f"; from the units' busy time {busy_rate:,.0f}: "
                      f"{busy_rate / bare[b, args.cpus]:.2f} of the bare {label[b]} forward")
            if native:
                a, b = vectors[True], vectors[False]
                cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
                print(f"  stage bf16 / float32: {stage[True][0] / stage[False][0]:.2f}x; its "
                      f"embeddings' cosine to float32's: min {cos.min():.6f}, median "
                      f"{np.median(cos):.6f} ({len(cos)} windows)")
            profile = unit_profile(own, encoder, native)
            print(f"  one unit in this process ({label[native]}, cumulative seconds): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in profile))
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
