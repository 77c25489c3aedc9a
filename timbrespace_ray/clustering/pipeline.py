"""The original toolkit's clustering interface (`ClusteringPipeline`, `ArrayClass`,
`ProsodicClusterSequences`) over our fitting, quality and token code, and `write_model_dir`,
which writes a complete model directory (the Ray k-means stage calls it too).

Feature weights: these classes take the normalized features in the order f0, f0_width, f1, f2,
power, snr (as in the original README) and multiply them by the spec's weights (section 7)
themselves, before fitting and before assigning, because the centres live in the weighted space.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, InvalidAudioError
from ..features.analysis import FEATURE_NAMES, analyse, as_mono_float32
from ..features.config import FeatureConfig
from .fit import (DEFAULT_METHOD, DEFAULT_TOL, FitResult, fit_reducer, fit_restarts,
                  sample_frames, select_backend)
from .model import FEATURE_WEIGHTS, KMeansModel, PCAReducer, weighted_frames
from .plot import PLOT_FILE, plot_clusters
from .quality import SILHOUETTE_SAMPLE, cluster_quality, write_quality

SAMPLE_RATE = 16_000
MODEL_FORMAT = "timbrespace_ray.kmeans/1"


class ArrayClass:
    """A growable (frames, features_dim) float32 buffer: `add_batch` rows, then `finalize`."""

    def __init__(self, features_dim: int = 6, init_capacity: int = 10_000):
        if features_dim < 1 or init_capacity < 1:
            raise ValueError("features_dim and init_capacity must be >= 1")
        self.features_dim = features_dim
        self._buffer = np.empty((init_capacity, features_dim), dtype=np.float32)
        self._size = 0

    def add_batch(self, batch) -> None:
        """Append a (frames, features_dim) numpy array or torch tensor."""
        if hasattr(batch, "detach"):
            batch = batch.detach().cpu().numpy()
        rows = np.asarray(batch, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.features_dim:
            raise ValueError(f"expected a (frames, {self.features_dim}) batch, got {rows.shape}")
        needed = self._size + rows.shape[0]
        if needed > self._buffer.shape[0]:
            # doubling keeps appends amortised O(1) per row
            grown = np.empty((max(needed, 2 * self._buffer.shape[0]), self.features_dim),
                             dtype=np.float32)
            grown[: self._size] = self._buffer[: self._size]
            self._buffer = grown
        self._buffer[self._size : needed] = rows
        self._size = needed

    def finalize(self) -> np.ndarray:
        """Release the spare capacity; returns the (frames, features_dim) array of all rows."""
        self._buffer = self._buffer[: self._size].copy()
        return self._buffer

    @property
    def data(self) -> np.ndarray:
        """The rows added so far (a view, no copy)."""
        return self._buffer[: self._size]

    def __len__(self) -> int:
        return self._size


def _feature_parts(features) -> list[np.ndarray]:
    """Normalized-feature rows as a list of (frames, dims) arrays, without concatenating."""
    if isinstance(features, ArrayClass):
        return [features.data]
    if isinstance(features, dict):
        return [np.stack([np.asarray(features[k], dtype=np.float32) for k in FEATURE_NAMES], 1)]
    if isinstance(features, (list, tuple)):
        return [part for f in features for part in _feature_parts(f)]
    if hasattr(features, "detach"):
        features = features.detach().cpu().numpy()
    return [np.asarray(features, dtype=np.float32)]


def write_model_dir(model_dir: str, x: np.ndarray, best: FitResult, *,
                    runs: Sequence[FitResult] = (), reducer: PCAReducer | None = None,
                    device: str = "cpu", silhouette_sample: int = SILHOUETTE_SAMPLE,
                    seed: int = 0) -> tuple[KMeansModel, dict]:
    """Build the model of the best fit and write its directory: kmeans_model.json,
    cluster_centers.pt, quality.json, report.txt and clusters.png.

    `x` are the fitted frames (weighted, and reduced when `reducer` is given); `runs` all the
    restarts, for the record. Returns (model, quality dict).
    """
    model = KMeansModel(cluster_centers=best.centers, inertia=best.inertia,
                        dtype="torch.float32", reducer=reducer)
    labels = model.assign(x)
    quality = cluster_quality(x, labels, model.cluster_centers,
                              feature_centers=model.feature_space_centers(),
                              silhouette_sample=silhouette_sample, seed=seed)
    model.feature_importance = quality["feature_importance"]
    model.cluster_feature_importance = quality["cluster_feature_importance"]
    restarts = list(runs) or [best]
    model.extra = {
        "format": MODEL_FORMAT,
        "feature_names": list(FEATURE_NAMES),
        "feature_weights": FEATURE_WEIGHTS.astype(float).tolist(),
        "input_features_dim": len(FEATURE_NAMES),
        "n_training_samples": int(x.shape[0]),
        "fit": best.summary(),
        "restarts": [r.summary() for r in restarts],
    }
    model.save(model_dir)
    config = {
        "number_of_clusters": model.n_clusters,
        "input_features_dim": len(FEATURE_NAMES),
        "feature_weights": ", ".join(f"{n} {w:g}" for n, w in zip(FEATURE_NAMES, FEATURE_WEIGHTS)),
        "dimensionality_reduction": "None" if reducer is None else (
            f"pca to {reducer.n_components} dims "
            f"({100 * float(reducer.explained_variance_ratio.sum()):.1f}% of the variance)"),
        "device": f"{device} ({best.backend})",
        "fit_method": best.method,
        "restarts": f"{len(restarts)} (seeds {', '.join(str(r.seed) for r in restarts)}); "
                    f"best seed {best.seed}",
        "iterations": best.n_iter,
        "fit_seconds": round(best.seconds, 1),
        "fit": best.summary(),
    }
    write_quality(model_dir, quality, config)
    plot_clusters(x, labels, model.cluster_centers, os.path.join(model_dir, PLOT_FILE),
                  seed=seed, title=f"k-means, k = {model.n_clusters}")
    return model, quality


class ClusteringPipeline:
    """k-means over weighted prosodic frames, with the original toolkit's methods.

    `device` "cuda" uses cuML when it and a GPU are there and otherwise warns and runs on the
    CPU. Keywords beyond the original's: `n_restarts` seeds (seed, seed+1, ...) of
    which the lowest inertia wins, `max_frames` (a seeded uniform sample of the frames is
    fitted), `method` (CPU algorithm, see fit.py) and `tol`.
    """

    def __init__(self, n_clusters: int = 120, input_features_dim: int = 6, device: str = "cuda",
                 *, n_restarts: int = 1, seed: int = 0, max_frames: int | None = None,
                 method: str = DEFAULT_METHOD, tol: float = DEFAULT_TOL):
        if input_features_dim != len(FEATURE_NAMES):
            raise ConfigError(f"input_features_dim must be {len(FEATURE_NAMES)} (the features "
                              f"{', '.join(FEATURE_NAMES)}), got {input_features_dim}")
        if n_clusters < 1 or n_restarts < 1:
            raise ConfigError("n_clusters and n_restarts must be >= 1")
        self.n_clusters = n_clusters
        self.input_features_dim = input_features_dim
        self.device = device
        self.n_restarts, self.seed, self.max_frames = n_restarts, seed, max_frames
        self.method, self.tol = method, tol
        self.model: KMeansModel | None = None

    def train(self, features_collation, clustering_model_dir: str, max_iter: int = 1000,
              reduced_dims: int | None = None, dim_reducer_method: str = "pca") -> KMeansModel:
        """Fit on normalized features and write the model directory.

        `features_collation`: an ArrayClass, a (frames, 6) array or tensor, a features dict, or
        a list of those, holding the normalized (unweighted) features; the weights are applied
        here. `reduced_dims` fits a PCA on the weighted frames first and clusters in its space
        (at most 6 dims). UMAP is refused: it cannot be saved without pickle.
        """
        if reduced_dims is not None and dim_reducer_method != "pca":
            raise ConfigError(f"dim_reducer_method={dim_reducer_method!r} cannot be used for a "
                              "model directory: only 'pca' reducers can be saved without pickle")
        x = weighted_frames(sample_frames(_feature_parts(features_collation), self.max_frames,
                                          self.seed))
        reducer = None if reduced_dims is None else fit_reducer(x, "pca", reduced_dims,
                                                                 self.seed)
        if reducer is not None:
            x = reducer.transform(x)
        device = self.device
        if select_backend(device) == "sklearn":
            device = "cpu"  # warned once here, not once per restart
        best, runs = fit_restarts(x, self.n_clusters,
                                  range(self.seed, self.seed + self.n_restarts),
                                  max_iter=max_iter, tol=self.tol, method=self.method,
                                  device=device)
        self.model, _ = write_model_dir(clustering_model_dir, x, best, runs=runs,
                                        reducer=reducer, device=device, seed=self.seed)
        return self.model

    def load_model(self, clustering_model_dir: str) -> KMeansModel:
        """Load a model directory (ours or the original's); it then serves the other methods."""
        self.model = KMeansModel.load(clustering_model_dir)
        self.n_clusters = self.model.n_clusters
        return self.model

    def predict(self, features) -> np.ndarray:
        """Tokens (int16) of normalized features (same inputs as `train`), in order."""
        return self._assign(features)[1]

    def clustering_quality_analysis(self, features, silhouette_sample: int = SILHOUETTE_SAMPLE
                                    ) -> dict:
        """Quality metrics (see quality.py) of the loaded or trained model on normalized
        features, in the model's clustering space."""
        x, labels = self._assign(features)
        return cluster_quality(x, labels, self.model.cluster_centers,
                               feature_centers=self.model.feature_space_centers(),
                               silhouette_sample=silhouette_sample, seed=self.seed)

    def _assign(self, features) -> tuple[np.ndarray, np.ndarray]:
        if self.model is None:
            raise RuntimeError("no model: call train() or load_model() first")
        x = self.model.project(weighted_frames(np.concatenate(_feature_parts(features))))
        return x, self.model.assign(x)


class ProsodicClusterSequences:
    """Token sequences of waveforms with a k-means model directory, as in the original.

    Features are computed at 16 kHz with the default settings; tokens are assigned on the CPU
    (numba), so `device` other than "cpu" is accepted for compatibility and ignored.
    """

    def __init__(self, prosodic_cluster_model_dir: str, max_duration: float | None = 30,
                 device: str = "cpu"):
        self.model = KMeansModel.load(prosodic_cluster_model_dir)
        self.config = FeatureConfig()
        self.max_duration = max_duration
        self.device = device

    def resample_waveform(self, audio, sr: int) -> np.ndarray:
        """Mono float32 at 16 kHz (soxr "HQ") from a 1-D or channels-first 2-D numpy array or
        torch tensor at rate `sr`; channels are averaged."""
        import soxr

        if sr <= 0:
            raise ValueError(f"sample rate must be positive, got {sr}")
        mono = as_mono_float32(audio)
        if sr == SAMPLE_RATE:
            return mono
        return np.ascontiguousarray(soxr.resample(mono, sr, SAMPLE_RATE, quality="HQ"),
                                    dtype=np.float32)

    def prepare_audio_batch(self, audio, lengths=None) -> list[np.ndarray]:
        """The waveforms ready for token extraction: one float32 row per item, cut to its length
        and to `max_duration` (with a warning), then divided by its own RMS (spec section 7:
        the whole waveform is normalized once; extraction then skips its own normalization).

        `audio` is one 1-D waveform or a 2-D batch (items, samples) padded to the longest, with
        the true `lengths` (a sequence or tensor of ints; default: all samples).
        """
        if hasattr(audio, "detach"):
            audio = audio.detach().cpu().numpy()
        audio = np.asarray(audio)
        if audio.ndim not in (1, 2):
            raise InvalidAudioError(f"audio must be a 1-D waveform or a 2-D (batch, samples) "
                                    f"batch; got shape {audio.shape}")
        rows = [audio] if audio.ndim == 1 else list(audio)
        if lengths is None:
            lengths = [row.shape[0] for row in rows]
        elif hasattr(lengths, "detach"):
            lengths = lengths.detach().cpu().numpy()
        lengths = [int(n) for n in np.atleast_1d(np.asarray(lengths))]
        if len(lengths) != len(rows) or any(not 0 <= n <= audio.shape[-1] for n in lengths):
            raise InvalidAudioError(f"lengths must give one length in 0..{audio.shape[-1]} per "
                                    f"item ({len(rows)} items); got {lengths}")
        limit = None if self.max_duration is None else int(self.max_duration * SAMPLE_RATE)
        if limit is not None and any(n > limit for n in lengths):
            warnings.warn(f"audio longer than max_duration={self.max_duration} s is truncated",
                          RuntimeWarning, stacklevel=2)
            lengths = [min(n, limit) for n in lengths]
        return [_rms_normalized(as_mono_float32(row[:n])) for row, n in zip(rows, lengths)]

    def extract_cluster_sequences(self, audio, lengths=None, return_distances: bool = False):
        """Token ids per item: a list (one per batch row, or one for a 1-D waveform) of lists
        of ints, one per 16 ms frame. With `return_distances`, also a list of float32 arrays of
        each frame's Euclidean distance to its centre (in the model's space)."""
        sequences, distances = [], []
        for row in self.prepare_audio_batch(audio, lengths):
            x = self.model.project(weighted_frames(analyse(row, self.config,
                                                           input_normalize=False)))
            tokens = self.model.assign(x)
            sequences.append(tokens.tolist())
            if return_distances:
                gap = x - self.model.cluster_centers[tokens]
                distances.append(np.sqrt(np.einsum("ij,ij->i", gap, gap)).astype(np.float32))
        return (sequences, distances) if return_distances else sequences


def _rms_normalized(x: np.ndarray) -> np.ndarray:
    # float64 accumulation then a float32 divisor: the same numbers as the extractor's own
    # input normalization, so tokens equal those of the default whole-file path
    rms = np.float32(np.sqrt(np.dot(x.astype(np.float64), x) / x.shape[0])) if x.size else 0
    return x / rms if rms > 0 else x
