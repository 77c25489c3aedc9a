"""Encoder throughput on CPU (or a GPU) in float32 and in bfloat16, and how far bf16 moves the
embeddings: what the embed and train stages get from `bf16: true` on this machine.

Token windows come from real speech: the original toolkit's token sequences of the bundled
recordings (tests/data/vectors), repeated and cut to utterance lengths drawn uniformly from
`--min-s`..`--max-s` seconds (62.5 tokens per second, 16 ms hop), or a tokens stage's output
(`--tokens DIR`). Embedding goes through the product's `embed_windows` (windows of at most
pos_max_len in length-sorted batches of at most `--batch-tokens` padded tokens); training
through its `train_step`.

For each model (the original's 58 M encoder and the recipe's small one, random weights
unless `--model` names a saved encoder for the 58 M slot), in one process, alternating:
  - embedding tokens/s per CPU thread in float32, in bf16 weights (`inference_model`: what the
    embed stage runs) and under bf16 autocast (what the evaluation's untrained encoder runs),
    their ratios to float32, and the cosine similarity of bf16 to float32 utterance vectors;
  - training tokens/s (forward + backward + AdamW) in both, and the masked-token loss after
    `--train-steps` steps of the small model from the same start in both.
Where the device lacks native bf16 (`compute_dtype`: the stages then run float32), bf16 is
still forced for its numbers (cosine, loss curve) but not timed: PyTorch emulates it by
converting around float32 kernels, 2-50x slower.

Run: .venv/bin/python tests/benchmarks/bench_embed.py [--threads 2] [--device cuda]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.data import is_real_speech, load_vector, vector_names  # noqa: E402
from timbrespace_ray.config import ORIGINAL_RECIPE, RECIPE, EmbedStageConfig  # noqa: E402
from timbrespace_ray.encoder import (ProsodicSequenceEncoder, collate, embed_windows,  # noqa: E402
                                     inference_model, length_buckets, load_model, make_optimizer,
                                     pool_windows, random_crop, token_batches)
from timbrespace_ray.encoder import precision  # noqa: E402
from timbrespace_ray.encoder.loop import train_step  # noqa: E402

TOKENS_PER_SECOND = 62.5  # 16 kHz audio, 16 ms hop


def unsorted_padding(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> float:
    batches = np.array_split(rng.permutation(lengths), max(1, len(lengths) // batch_size))
    cells = sum(len(b) * b.max() for b in batches)
    return 1.0 - lengths.sum() / cells


def batch_padding(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Padding of these batches (windows shorter than pos_max_len: one each)."""
    cells = sum(len(b) * lengths[b].max() for b in batches)
    return 1.0 - lengths.sum() / cells


def real_sequences(tokens_dir: str | None, vocab: int) -> list[np.ndarray]:
    if tokens_dir:
        import pyarrow.parquet as pq

        table = pq.read_table(tokens_dir, columns=["tokens"])
        return [np.asarray(s, np.int64) for s in table.column("tokens").to_pylist() if s]
    seqs = [load_vector(n)["tokens_f32"].astype(np.int64) for n in vector_names()
            if is_real_speech(n)]
    return [s % vocab for s in seqs if len(s)]


def utterances(source: list[np.ndarray], n: int, min_s: float, max_s: float,
               rng: np.random.Generator) -> list[np.ndarray]:
    """`n` utterances of uniform random duration cut from the real sequences laid end to end."""
    stream = np.concatenate(source)
    lengths = np.round(rng.uniform(min_s, max_s, n) * TOKENS_PER_SECOND).astype(int)
    stream = np.tile(stream, int(np.ceil(lengths.sum() / len(stream))) + 1)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return [stream[s:s + m] for s, m in zip(starts, lengths)]


def forced(bf16: bool):
    """Make the product's autocast take bf16 (or not) whatever the CPU offers."""
    precision.native_bf16 = lambda device: bf16


def embed_run(model, seqs, batch_tokens, bf16: bool) -> tuple[float, np.ndarray]:
    """Seconds and pooled vectors of `embed_windows` on `model` as it is (float32 weights:
    autocast where `bf16`)."""
    forced(bf16)
    start = time.perf_counter()
    windows, vectors = embed_windows(model, seqs, batch_tokens, bf16)
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()
    secs = time.perf_counter() - start
    pooled = pool_windows(np.array([w[0] for w in windows]),
                          np.array([w[3] for w in windows], np.float64), vectors, len(seqs))
    return secs, pooled


def train_run(model, seqs, steps: int, batch: int, max_len: int, bf16: bool, device,
              seed: int = 0) -> tuple[float, int, list[float]]:
    forced(bf16)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer, scheduler = make_optimizer(model, 1e-3, 0.01, min(10, steps // 10), steps)
    secs, tokens, losses = 0.0, 0, []
    for step in range(steps + 1):  # the first step warms up and is not timed
        idx = rng.choice(len(seqs), batch, replace=len(seqs) < batch)
        crops = [random_crop(seqs[i], max_len, rng) for i in idx]
        m = train_step(model, optimizer, scheduler, collate(crops), device, 1.0, bf16)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            secs += m["tokens"] / m["tokens_per_s"]
            tokens += m["tokens"]
        losses.append(m["loss"])
    return secs, tokens, losses


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--utterances", type=int, default=48, help="per model and precision")
    parser.add_argument("--batch-tokens", type=int, default=EmbedStageConfig().batch_tokens,
                        help="padded tokens per forward pass (the embed stage's default)")
    parser.add_argument("--min-s", type=float, default=2.0)
    parser.add_argument("--max-s", type=float, default=20.0)
    parser.add_argument("--tokens", default=None, help="a tokens stage output folder")
    parser.add_argument("--model", default=None, help="a saved encoder for the 58 M slot")
    parser.add_argument("--train-steps", type=int, default=4, help="timed training steps")
    parser.add_argument("--emulated-utterances", type=int, default=4,
                        help="utterances embedded in emulated bf16 for the cosine (no timing)")
    parser.add_argument("--curve-steps", type=int, default=150,
                        help="small-model steps for the float32/bf16 loss comparison")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*nested tensors is in prototype stage")
    device = torch.device(args.device)
    native = precision.native_bf16(device)
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    print(f"device {device}, {threads} CPU threads; torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; bf16 native: {native} "
          f"(the stages use {precision.compute_dtype(device, True)})")

    rng = np.random.default_rng(args.seed)
    big = load_model(args.model) if args.model else ProsodicSequenceEncoder(
        **{k: ORIGINAL_RECIPE[k] for k in ("hidden_dim", "num_layers", "nhead")})
    small = ProsodicSequenceEncoder(**{k: RECIPE[k] for k in ("hidden_dim", "num_layers",
                                                                   "nhead")})
    source = real_sequences(args.tokens, big.vocab_size)
    seqs = utterances(source, args.utterances, args.min_s, args.max_s, rng)
    n_tokens = sum(len(s) for s in seqs)
    lengths = np.array([len(s) for s in seqs])
    batches = token_batches(lengths, args.batch_tokens)
    print(f"{len(seqs)} utterances of {lengths.min()}-{lengths.max()} tokens "
          f"({args.min_s:g}-{args.max_s:g} s, real token sequences), {n_tokens:,} tokens; "
          f"embed batches of at most {args.batch_tokens} padded tokens, length-sorted: "
          f"{len(batches)} batches, padding {batch_padding(lengths, batches):.0%} (8 windows a "
          f"batch: {batch_padding(lengths, length_buckets(lengths, 8)):.0%} sorted, "
          f"{unsorted_padding(lengths, 8, rng):.0%} unsorted)")
    label = {False: "float32", True: "bf16 weights " + ("native" if native else "emulated"),
             "autocast": "bf16 autocast"}
    for name, model, recipe in (("58 M (the original's)", big, ORIGINAL_RECIPE),
                                ("small (the recipe)", small, RECIPE)):
        model.to(device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"\n{name}: {params:.1f} M parameters")
        embed_run(model, seqs[:2], args.batch_tokens, False)  # warm-up
        # emulated bf16 is only for its numbers: timed where native, else a few utterances
        low_seqs = seqs if native else seqs[:args.emulated_utterances]
        forced(True)
        low_model = inference_model(model, True)  # bf16 weights, as the embed stage runs
        times = {False: []}
        for _ in range(2 if native else 1):  # alternating where both are timed
            secs, reference = embed_run(model, seqs, args.batch_tokens, False)
            times[False].append(secs)
            if native:
                secs, low = embed_run(low_model, seqs, args.batch_tokens, True)
                times.setdefault(True, []).append(secs)
                secs, _ = embed_run(model, seqs, args.batch_tokens, True)
                times.setdefault("autocast", []).append(secs)
        if not native:
            _, low = embed_run(low_model, low_seqs, args.batch_tokens, True)
        del low_model
        rates = {b: n_tokens / min(t) / threads for b, t in times.items()}
        cos = cosines(low, reference[:len(low_seqs)])
        for b, rate in rates.items():
            print(f"  embed {label[b]:>19}: {rate:9,.0f} tokens/s per thread "
                  f"({rate / TOKENS_PER_SECOND:,.0f}x real time)"
                  + (f": {rate / rates[False]:.2f}x float32" if b is not False else ""))
        print(f"  embed cosine of {label[True]} to float32 ({len(low_seqs)} utterances): "
              f"min {cos.min():.6f}, median {np.median(cos):.6f}")
        train_len = min(512, recipe["max_len"])
        state = {k: v.clone() for k, v in model.state_dict().items()}
        train_rates = {}
        for bf16 in (False, True) if native else (False,):
            model.load_state_dict(state)
            secs, tokens, _ = train_run(model, seqs, args.train_steps, 4, train_len, bf16,
                                        device, args.seed)
            train_rates[bf16] = tokens / secs / threads
            print(f"  train {'bf16 autocast' if bf16 else 'float32':>19}: {train_rates[bf16]:9,.0f} tokens/s per thread "
                  f"(batch 4 x {train_len})")
        if native:
            print(f"  train bf16 / float32: {train_rates[True] / train_rates[False]:.2f}x")
        model.load_state_dict(state)
    if args.curve_steps:
        print(f"\nloss curve, small model, {args.curve_steps} steps from the same start "
              f"(batch 8 x 256): step, float32, bf16")
        curves = {}
        for bf16 in (False, True):
            torch.manual_seed(args.seed)
            model = ProsodicSequenceEncoder(
                **{k: RECIPE[k] for k in ("hidden_dim", "num_layers", "nhead")}).to(device)
            curves[bf16] = train_run(model, seqs, args.curve_steps, 8, 256, bf16, device,
                                     args.seed)[2]
        every = max(1, args.curve_steps // 6)
        for s in list(range(0, args.curve_steps + 1, every)):
            lo = slice(max(0, s - every // 2), s + every // 2 + 1)
            print(f"  {s:5d}  {np.mean(curves[False][lo]):.3f}  {np.mean(curves[True][lo]):.3f}")
    forced(native)


if __name__ == "__main__":
    main()
