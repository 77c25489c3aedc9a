"""Pictures of features, for people: contours over a spectrogram, in physical units."""
from __future__ import annotations

import numpy as np

from .config import FeatureConfig

# normalized value -> physical unit, inverting spec section 6 for display
_TO_HZ = {"f0": (320.0, 80.0), "f1": (1000.0, 200.0), "f2": (2700.0, 800.0)}


def _physical(features: dict, name: str, normalized: bool) -> np.ndarray:
    x = np.asarray(features[name], dtype=np.float64)
    voiced = x > 0
    if normalized and name in _TO_HZ:
        scale, offset = _TO_HZ[name]
        x = x * scale + offset
    return np.where(voiced, x, np.nan)


def plot_features(features: dict, config: FeatureConfig, title: str | None = None,
                  save_path: str | None = None, audio: np.ndarray | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(features["f0"])
    t = np.arange(n) * config.hop_samples / config.sample_rate + (
        config.frame_samples / 2 / config.sample_rate)
    norm = config.output_normalize
    fig, axes = plt.subplots(5, 1, figsize=(11, 10), sharex=True,
                             gridspec_kw={"height_ratios": [2.2, 1.2, 1, 1, 1]})
    ax = axes[0]
    if audio is not None and len(audio) > config.frame_samples:
        ax.specgram(audio, NFFT=512, Fs=config.sample_rate, noverlap=512 - 128,
                    cmap="Greys", scale="dB", vmin=-120)
    ax.plot(t, _physical(features, "f1", norm), ".", ms=3, color="tab:orange", label="F1")
    ax.plot(t, _physical(features, "f2", norm), ".", ms=3, color="tab:red", label="F2")
    ax.set_ylim(0, 4000)
    ax.set_ylabel("Hz")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "Prosodic features")
    panels = [
        ("f0", "F0 (Hz)" if norm else "F0 (Hz)", "tab:blue"),
        ("f0_width", "F0 width" + (" (norm.)" if norm else ""), "tab:purple"),
        ("power", "power" + (" (norm.)" if norm else ""), "tab:green"),
        ("snr", "SNR" + (" (norm.)" if norm else ""), "tab:brown"),
    ]
    for ax, (name, label, color) in zip(axes[1:], panels):
        y = _physical(features, name, norm) if name == "f0" else np.asarray(features[name], float)
        ax.plot(t, y, color=color, lw=1.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    voiced = np.asarray(features["f0"]) > 0
    fig.text(0.01, 0.005, f"{n} frames, {voiced.mean() * 100 if n else 0:.0f}% voiced; "
             f"frame {config.frame_ms:g} ms, hop {config.hop_ms:g} ms", fontsize=8)
    fig.tight_layout()
    if save_path:
        fig.savefig(save_path, dpi=110)
        plt.close(fig)
    return fig
