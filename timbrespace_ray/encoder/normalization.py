"""Embedding normalisation fitted on a corpus: mean removal, optionally whitening, then unit
length (plain numpy).

Mean-pooled transformer states share a large common direction (every utterance's embedding
points roughly the same way), so raw cosine similarities crowd near 1 and say little; removing
the corpus mean, and whitening the remaining directions so that no few of them dominate, is what
makes cosine scoring between utterances meaningful (as in speaker verification back-ends). The
fit is stored beside the encoder's weights as JSON and applied by the embed stage.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import numpy as np

NORMALIZATION_FILE = "normalization.json"
Method = Literal["center", "whiten"]


@dataclass(frozen=True)
class EmbeddingNormalization:
    mean: np.ndarray               # [H]
    transform: np.ndarray | None   # [H, H] whitening, applied after centring; None: centre only
    fitted_on: int                 # vectors the fit saw

    @property
    def method(self) -> Method:
        return "center" if self.transform is None else "whiten"

    @classmethod
    def fit(cls, vectors: np.ndarray, method: Method = "center",
            shrinkage: float = 0.1) -> "EmbeddingNormalization":
        """Fit on `vectors` [N, H]. Whitening shrinks the covariance towards its mean variance
        (`shrinkage` of it added to every eigenvalue), so a fit on fewer vectors than dimensions
        stays finite and weak directions are not blown up into noise."""
        x = np.asarray(vectors, np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need at least 2 vectors [N, H] to fit, got shape {x.shape}")
        if method not in ("center", "whiten"):
            raise ValueError(f"method must be 'center' or 'whiten', got {method!r}")
        mean = x.mean(axis=0)
        transform = None
        if method == "whiten":
            centred = x - mean
            cov = centred.T @ centred / (len(x) - 1)
            eigvals, eigvecs = np.linalg.eigh(cov)
            eigvals = np.clip(eigvals, 0.0, None) + shrinkage * max(float(eigvals.mean()), 1e-12)
            transform = (eigvecs / np.sqrt(eigvals)) @ eigvecs.T  # ZCA: stays in the same axes
        return cls(mean.astype(np.float32),
                   None if transform is None else transform.astype(np.float32), len(x))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """[N, H] float32 vectors centred (and whitened) and scaled to unit length."""
        x = np.asarray(vectors, np.float32) - self.mean
        if self.transform is not None:
            x = x @ self.transform
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return (x / np.maximum(norms, 1e-12)).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps({"method": self.method, "fitted_on": self.fitted_on,
                           "dim": int(self.mean.shape[0]), "mean": self.mean.tolist(),
                           "transform": None if self.transform is None else self.transform.tolist()})

    @classmethod
    def from_json(cls, text: str) -> "EmbeddingNormalization":
        doc = json.loads(text)
        try:
            mean = np.asarray(doc["mean"], np.float32)
            transform = doc["transform"]
            transform = None if transform is None else np.asarray(transform, np.float32)
            fitted_on = int(doc["fitted_on"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an embedding normalisation document: {exc}") from exc
        if mean.ndim != 1 or (transform is not None and transform.shape != (len(mean), len(mean))):
            raise ValueError(f"normalisation shapes disagree: mean {mean.shape}, "
                             f"transform {None if transform is None else transform.shape}")
        return cls(mean, transform, fitted_on)
