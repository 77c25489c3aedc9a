"""k-means stage: a uniform frame sample of `features/` -> `kmeans/` in the original's format.

Parts are counted and sampled in parallel tasks; restarts (seeds) fit in parallel actors, the
lowest inertia wins. The driver decides whether each fit asks Ray for a GPU (use_gpu, or on
auto: the cluster has or can get GPUs); each fit picks its backend on the node that got the GPU:
cuML, or the CPU method with a warning where cuML or the GPU is not usable there.
"""
from __future__ import annotations

import logging
import socket
import tempfile

import numpy as np

from ..clustering.fit import FitResult, _cuml_problem, best_fit, fit_kmeans, fit_reducer
from ..clustering.pipeline import write_model_dir
from ..config import KMeansStageConfig
from ..errors import UpstreamIncompleteError
from ..executors.base import Executor, Resources
from ..features.analysis import FEATURE_NAMES
from ..storage import Location
from ..tables import read_part
from .base import Stage, StageSummary
from .parts import complete_parts
from .sampling import per_part_counts, sample_part

log = logging.getLogger(__name__)


def _count_frames(part: str, shared) -> int:
    table = read_part(Location.of(part, shared["storage_options"]), ["n_frames"])
    return int(np.sum(table.column("n_frames").to_numpy()))


def _sample(item, shared) -> np.ndarray:
    index, part, k = item
    if k == 0:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32)
    table = read_part(Location.of(part, shared["storage_options"]), list(FEATURE_NAMES))
    return sample_part(table, k, shared["seed"], index)


def _fit(seed: int, shared) -> tuple[FitResult, str | None]:
    """One restart, and why it ran on the CPU although it asked for a GPU (None if not)."""
    cfg: KMeansStageConfig = shared["config"]
    # fit_kmeans chooses the backend here, on the node that runs the fit (and holds its GPU):
    # cuML, or the CPU method with a warning where cuML or a GPU is not usable on it; `threads`
    # holds numba's (and scikit-learn's) threads to the CPUs Ray gave this actor
    result = fit_kmeans(shared["x"], cfg.n_clusters, seed=seed, max_iter=cfg.max_iter,
                        method=cfg.method, device=shared["device"],
                        threads=max(1, int(cfg.cpus_per_fit)))
    fallback = None
    if shared["device"] != "cpu" and result.backend != "cuml":
        fallback = f"{socket.gethostname()}: {_cuml_problem() or 'cuML is not usable'}"
    return result, fallback


class KMeansStage(Stage):
    name = "kmeans"
    fits = "k-means model"

    def __init__(self, output: Location, config: KMeansStageConfig,
                 storage_options: dict | None = None, use_gpu: bool = False):
        """`use_gpu`: each fit asks for a GPU (an autoscaler adds GPU nodes for them); cuML is
        looked up in the fit, on its node, never here on the driver (often a head with no GPU
        and no cuML)."""
        super().__init__(output)
        self.folder = output.child("kmeans")
        self.config = config
        self.storage_options = storage_options or {}
        self.device = "cuda" if use_gpu else "cpu"

    @classmethod
    def from_config(cls, cfg, output: Location, use_gpu: bool) -> "KMeansStage":
        return cls(output, cfg.kmeans, cfg.storage.storage_options, use_gpu)

    def execute(self, executor: Executor) -> StageSummary:
        cfg = self.config
        parts = [p.uri for p in complete_parts(self.layout, "features",
                                               self.output.child("features"), "k-means")]
        shared = {"storage_options": self.storage_options, "seed": cfg.seed}
        light = Resources(num_cpus=0.5)
        frames = executor.parallel(_count_frames, parts, light, shared)
        counts = per_part_counts(frames, cfg.max_frames, cfg.seed)
        log.info("kmeans: sampling %d of %d frames from %d parts", sum(counts), sum(frames),
                 len(parts))
        samples = executor.parallel(_sample, [(i, p, k) for i, (p, k) in enumerate(zip(parts, counts))],
                                    light, shared)
        x = np.concatenate(samples) if samples else np.zeros((0, len(FEATURE_NAMES)), np.float32)
        if len(x) < cfg.n_clusters:
            raise UpstreamIncompleteError(
                f"only {len(x)} frames for {cfg.n_clusters} clusters: too little audio, or lower "
                "kmeans.n_clusters")
        reducer = None
        if cfg.reduced_dims:
            reducer = fit_reducer(x, cfg.dim_reducer_method, cfg.reduced_dims, cfg.seed)
            x = reducer.transform(x).astype(np.float32)
        seeds = [cfg.seed + i for i in range(cfg.n_init)]
        where = ("GPU actors (cuML, or the CPU where a node lacks it)" if self.device == "cuda"
                 else f"CPU ({cfg.method})")
        log.info("kmeans: k = %d, %d restart(s) in parallel on %s", cfg.n_clusters, len(seeds),
                 where)
        fit_resources = Resources(num_cpus=cfg.cpus_per_fit,
                                  num_gpus=1.0 if self.device == "cuda" else 0.0, actors=True)
        fits = executor.parallel(_fit, seeds, fit_resources,
                                 {"x": x, "config": cfg, "device": self.device})
        runs = [run for run, _ in fits]
        best = best_fit(runs)
        for r in runs:
            log.info("  seed %d: inertia %.1f, %d iterations, %.1f s, %s%s", r.seed, r.inertia,
                     r.n_iter, r.seconds, r.backend, "  <- best" if r is best else "")
        fallbacks = sorted({why for _, why in fits if why})
        if fallbacks:
            log.warning("kmeans: CPU instead of cuML on GPU node(s): %s",
                        "; ".join(fallbacks))
        # what the model was fitted on, not what was asked for
        device = "cuda" if best.backend == "cuml" else "cpu"
        with tempfile.TemporaryDirectory() as tmp:
            model, quality = write_model_dir(tmp, x, best, runs=runs, reducer=reducer, device=device,
                                             silhouette_sample=cfg.silhouette_sample, seed=cfg.seed)
            self.folder.upload(tmp)
        log.info("kmeans: wrote %s (inertia %.1f)", self.folder.uri, best.inertia)
        detail = {"n_clusters": model.n_clusters, "frames": int(len(x)), "inertia": best.inertia,
                  "best_seed": best.seed, "n_iter": best.n_iter, "device": device,
                  "silhouette": (quality.get("silhouette") or {}).get("mean"),
                  "effective_n_clusters": quality.get("effective_n_clusters"),
                  "text": f"k = {model.n_clusters} on {len(x)} frames, inertia "
                          f"{best.inertia:.1f}, fitted on {device}"}
        return StageSummary("kmeans", frames=int(len(x)), detail=detail)
