"""The k-means model in the original toolkit's directory format, and nearest-centre tokens.

A model directory holds `kmeans_model.json` (keys `cluster_centers`, `n_clusters`,
`inertia`, `dtype`, `feature_importance`, `cluster_feature_importance`); the published
LibriSpeech model loads as is. Ours may add `dim_reducer`: a PCA fitted on the weighted frames,
stored as plain numbers, whose output space the centres then live in. `save` also writes
`cluster_centers.pt`, a plain tensor for the original toolkit (`torch.load(...,
weights_only=True)` reads it). Nothing here uses pickle.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numba as nb
import numpy as np

from ..documents import read_document
from ..errors import ModelFormatError
from ..features.analysis import FEATURE_NAMES

# spec section 7: the clustering input is each normalized feature times its weight
FEATURE_WEIGHTS = np.array([1.5, 1.0, 1.5, 0.75, 2.0, 1.0], dtype=np.float32)
MODEL_FILE = "kmeans_model.json"
CENTERS_FILE = "cluster_centers.pt"


def weighted_frames(features) -> np.ndarray:
    """(frames, 6) float32 clustering input from a features dict or a (frames, 6) array."""
    if isinstance(features, dict):
        x = np.stack([np.asarray(features[k], dtype=np.float32) for k in FEATURE_NAMES], axis=1)
    else:
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected (frames, 6) features, got shape {x.shape}")
    return x * FEATURE_WEIGHTS


@nb.njit(cache=True)
def _nearest(x, centers, out):
    # direct squared differences in float32, as the reference computes its float32 tokens
    for i in range(x.shape[0]):
        best = 0
        best_d = np.float32(np.inf)
        for c in range(centers.shape[0]):
            d = np.float32(0.0)
            for f in range(x.shape[1]):
                diff = x[i, f] - centers[c, f]
                d += diff * diff
            if d < best_d:
                best_d = d
                best = c
        out[i] = best


@dataclass
class PCAReducer:
    """A fitted PCA (no whitening) as plain arrays: `transform` is `(x - mean) @ components.T`."""

    mean: np.ndarray  # (dims,)
    components: np.ndarray  # (n_components, dims), orthonormal rows
    explained_variance: np.ndarray  # (n_components,)
    explained_variance_ratio: np.ndarray  # (n_components,)

    method = "pca"

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.components.shape[1]:
            raise ValueError(f"the PCA expects (frames, {self.components.shape[1]}) input, "
                             f"got shape {x.shape}")
        return (x - self.mean) @ self.components.T

    def inverse_transform(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float32) @ self.components + self.mean

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "n_components": self.n_components,
            "mean": self.mean.astype(float).tolist(),
            "components": self.components.astype(float).tolist(),
            "explained_variance": self.explained_variance.astype(float).tolist(),
            "explained_variance_ratio": self.explained_variance_ratio.astype(float).tolist(),
        }

    @classmethod
    def from_json(cls, doc: dict, where: str = "dim_reducer") -> "PCAReducer":
        if not isinstance(doc, dict) or doc.get("method") != cls.method:
            raise ModelFormatError(
                f"{where}: only a 'pca' reducer can be loaded, got {doc!r:.80}")
        try:
            reducer = cls(*(np.asarray(doc[k], dtype=np.float32) for k in (
                "mean", "components", "explained_variance", "explained_variance_ratio")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"{where}: malformed PCA ({exc!r})") from exc
        n, dims = reducer.components.shape if reducer.components.ndim == 2 else (0, 0)
        if not n or reducer.mean.shape != (dims,) or reducer.explained_variance.shape != (n,):
            raise ModelFormatError(f"{where}: inconsistent PCA array shapes")
        return reducer


@dataclass
class KMeansModel:
    cluster_centers: np.ndarray  # (k, dims) float32, in the (possibly reduced) weighted space
    inertia: float = float("nan")
    dtype: str = "torch.float32"
    feature_importance: list[float] = field(default_factory=list)
    cluster_feature_importance: list[list[float]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    reducer: PCAReducer | None = None  # maps weighted frames into the centres' space

    @property
    def n_clusters(self) -> int:
        return int(self.cluster_centers.shape[0])

    @classmethod
    def load(cls, model_dir: str) -> "KMeansModel":
        path = os.path.join(model_dir, MODEL_FILE)
        doc = read_document(path, "JSON", ModelFormatError, f"no {MODEL_FILE} in {model_dir}")
        try:
            centers = np.asarray(doc.pop("cluster_centers"), dtype=np.float32)
        except KeyError as exc:
            raise ModelFormatError(f"{path} has no 'cluster_centers'") from exc
        if centers.ndim != 2 or centers.shape[0] < 1:
            raise ModelFormatError(f"{path}: cluster_centers must be a (k, dims) list of lists")
        declared = doc.pop("n_clusters", centers.shape[0])
        if int(declared) != centers.shape[0]:
            raise ModelFormatError(
                f"{path}: n_clusters={declared} but {centers.shape[0]} centres are stored")
        reducer_doc = doc.pop("dim_reducer", None)
        reducer = None if reducer_doc is None else PCAReducer.from_json(
            reducer_doc, f"{path}: dim_reducer")
        if reducer is not None and reducer.n_components != centers.shape[1]:
            raise ModelFormatError(f"{path}: the PCA outputs {reducer.n_components} dims but the "
                                   f"centres have {centers.shape[1]}")
        return cls(
            cluster_centers=centers,
            inertia=float(doc.pop("inertia", float("nan"))),
            dtype=str(doc.pop("dtype", "torch.float32")),
            feature_importance=list(doc.pop("feature_importance", [])),
            cluster_feature_importance=list(doc.pop("cluster_feature_importance", [])),
            extra=doc,
            reducer=reducer,
        )

    def save(self, model_dir: str) -> None:
        """Write `kmeans_model.json` and `cluster_centers.pt` into model_dir."""
        import torch  # here, not at module level: loading a model for tokens needs no torch

        os.makedirs(model_dir, exist_ok=True)
        doc = {
            "cluster_centers": self.cluster_centers.astype(float).tolist(),
            "n_clusters": self.n_clusters,
            "inertia": self.inertia,
            "dtype": self.dtype,
            "feature_importance": self.feature_importance,
            "cluster_feature_importance": self.cluster_feature_importance,
            **self.extra,
        }
        if self.reducer is not None:
            doc["dim_reducer"] = self.reducer.to_json()
        with open(os.path.join(model_dir, MODEL_FILE), "w") as fh:
            json.dump(doc, fh)
        # a copy: the centres may be a read-only view (e.g. from Ray's object store)
        torch.save(torch.tensor(np.asarray(self.cluster_centers, dtype=np.float32)),
                   os.path.join(model_dir, CENTERS_FILE))

    def feature_space_centers(self) -> np.ndarray:
        """The centres in the weighted-feature space (mapped back through the PCA, if any)."""
        if self.reducer is None:
            return self.cluster_centers
        return self.reducer.inverse_transform(self.cluster_centers)

    def project(self, weighted: np.ndarray) -> np.ndarray:
        """Weighted frames in the centres' space: through the PCA if the model has one."""
        return weighted if self.reducer is None else self.reducer.transform(weighted)

    def assign(self, weighted: np.ndarray) -> np.ndarray:
        """Nearest-centre token (int16) of each row of the weighted clustering input."""
        x = np.ascontiguousarray(weighted, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.cluster_centers.shape[1]:
            raise ValueError(
                f"frames have {x.shape[-1]} dims, the model's centres "
                f"{self.cluster_centers.shape[1]}")
        out = np.empty(x.shape[0], dtype=np.int16)
        _nearest(x, self.cluster_centers, out)
        return out

    def tokens(self, features) -> np.ndarray:
        """Tokens of a features dict (or (frames, 6) array of normalized features)."""
        return self.assign(self.project(weighted_frames(features)))
