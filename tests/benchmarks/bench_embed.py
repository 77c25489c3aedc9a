"""Embedding throughput of the encoder on windows of realistic utterance lengths.

Utterances of `--min-s`..`--max-s` seconds (uniform) become token windows at 62.5 tokens per
second of audio (16 ms hop), with random ids; windows are batched by length (sorted buckets, as
the embedding stage does). Prints windows/s, tokens/s, hours of audio embedded per second and
the padding fraction (and what unsorted batches would have padded). The default 58 M model with
random weights unless `--model` names a saved encoder directory or an original checkpoint.

Run: .venv/bin/python tests/benchmarks/bench_embed.py  [--device cuda --bf16] [--windows 40]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from timbrespace_ray.encoder import (ProsodicSequenceEncoder, collate, embed, length_buckets,
                                     load_model, padding_fraction)

TOKENS_PER_SECOND = 62.5  # 16 kHz audio, 16 ms hop


def unsorted_padding(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> float:
    batches = np.array_split(rng.permutation(lengths), max(1, len(lengths) // batch_size))
    cells = sum(len(b) * b.max() for b in batches)
    return 1.0 - lengths.sum() / cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--min-s", type=float, default=2.0)
    parser.add_argument("--max-s", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--model", default=None, help="encoder directory or checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    model = load_model(args.model) if args.model else ProsodicSequenceEncoder()
    model = model.to(args.device)
    seconds = rng.uniform(args.min_s, args.max_s, size=args.windows)
    lengths = np.minimum(np.round(seconds * TOKENS_PER_SECOND).astype(int), model.pos_max_len)
    windows = [rng.integers(0, model.vocab_size, size=n) for n in lengths]
    batches = [collate([windows[i] for i in idx])
               for idx in length_buckets(lengths, args.batch_size)]

    # torch's notice that its eval fast path (padding skipped) uses prototype nested tensors
    warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors")
    warm_up = collate([windows[0][:64]])
    embed(model, warm_up.tokens, warm_up.lengths, args.bf16)
    start = time.perf_counter()
    for batch in batches:
        embed(model, batch.tokens, batch.lengths, args.bf16)
    elapsed = time.perf_counter() - start

    tokens = int(lengths.sum())
    cells = sum(b.tokens.numel() for b in batches)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.1f} M parameters, device {args.device}"
          f"{' bf16' if args.bf16 and args.device.startswith('cuda') else ''}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"windows: {len(windows)} of {lengths.min()}-{lengths.max()} tokens "
          f"({args.min_s:g}-{args.max_s:g} s), mean {lengths.mean():.0f}; "
          f"{len(batches)} batches of <= {args.batch_size}")
    print(f"padding: {1 - tokens / cells:.1%} length-sorted "
          f"(unsorted batches: {unsorted_padding(lengths, args.batch_size, rng):.1%}; "
          f"a single padded batch: {padding_fraction(lengths):.1%})")
    print(f"time: {elapsed:.1f} s -> {len(windows) / elapsed:.2f} windows/s, "
          f"{tokens / elapsed:,.0f} tokens/s, "
          f"{tokens / TOKENS_PER_SECOND / 3600 / elapsed:.4f} h of audio per s "
          f"({tokens / TOKENS_PER_SECOND / elapsed:.0f}x real time)")


if __name__ == "__main__":
    main()
