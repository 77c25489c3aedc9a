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
                  save_path: str | None = None, audio: np.ndarray | None = None,
                  pitch_hz: np.ndarray | None = None):
    """The contours over time, each panel naming the column it plots; with `pitch_hz` (the
    features table's pitch track) the pitch panel draws it beside the f0 feature, which is the
    lowest formant-like peak rather than the pitch (an octave high on some utterances)."""
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
    ax.plot(t, _physical(features, "f1", norm), ".", ms=3, color="tab:orange", label="f1 feature")
    ax.plot(t, _physical(features, "f2", norm), ".", ms=3, color="tab:red", label="f2 feature")
    ax.set_ylim(0, 4000)
    ax.set_ylabel("Hz")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "Prosodic features")
    ax = axes[1]
    if pitch_hz is not None:
        pitch = np.asarray(pitch_hz, np.float64)
        ax.plot(t[:len(pitch)], np.where(pitch > 0, pitch, np.nan), color="tab:blue", lw=1.4,
                label="pitch_hz (pitch track)")
    f0_label = "f0 feature × 320 + 80" if norm else "f0 feature"
    ax.plot(t, _physical(features, "f0", norm), ".", ms=3, color="tab:cyan", label=f0_label)
    ax.set_ylabel("Hz")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    unit = " (normalised)" if norm else ""
    for ax, (name, color) in zip(axes[2:], [("f0_width", "tab:purple"), ("power", "tab:green"),
                                            ("snr", "tab:brown")]):
        ax.plot(t, np.asarray(features[name], float), color=color, lw=1.2)
        ax.set_ylabel(name + unit)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    voiced, which = ((np.asarray(features["f0"]) > 0, "with an f0 feature") if pitch_hz is None
                     else (np.asarray(pitch_hz) > 0, "voiced (pitch_hz > 0)"))
    fig.text(0.01, 0.005, f"{n} frames, {voiced.mean() * 100 if n else 0:.0f}% {which}; "
             f"frame {config.frame_ms:g} ms, hop {config.hop_ms:g} ms", fontsize=8)
    fig.tight_layout()
    if save_path:
        fig.savefig(save_path, dpi=110)
        plt.close(fig)
    return fig
