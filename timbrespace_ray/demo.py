"""The demo: the bundled recordings through the extractor, with plots and a summary table."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .features import ProsodicFeatureExtractor

DEMO_CORPUS = Path(__file__).parent / "demo_corpus"


def run_demo(output: str) -> None:
    out = Path(output)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    extractor = ProsodicFeatureExtractor()
    files = sorted(DEMO_CORPUS.glob("*.wav"))
    print(f"Extracting prosodic features of {len(files)} bundled recordings -> {out}/")
    rows = []
    for i, path in enumerate(files, 1):
        t0 = time.perf_counter()
        audio = extractor.load_audio(str(path))
        feats = extractor.extract()
        secs = time.perf_counter() - t0
        voiced = feats["f0"] > 0
        f0_hz = feats["f0"][voiced] * 320 + 80
        extractor.plot_features(feats, title=path.stem, save_path=str(out / "plots" / f"{path.stem}.png"))
        rows.append((path.stem[-40:], len(audio) / 16000, len(voiced), voiced.mean(),
                     float(np.median(f0_hz)) if voiced.any() else 0.0, len(audio) / 16000 / secs))
        print(f"  [{i}/{len(files)}] {path.name}")
    print(f"\n{'recording':<40} {'sec':>6} {'frames':>7} {'voiced':>7} {'med F0':>7} {'xRT':>6}")
    for name, dur, n, v, f0, xrt in rows:
        print(f"{name:<40} {dur:6.1f} {n:7d} {v:7.0%} {f0:6.0f}Hz {xrt:6.0f}")
    print(f"\nPlots: {out / 'plots'}/")
