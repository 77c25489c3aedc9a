"""Fitting k-means on weighted prosodic frames: numba or scikit-learn on a CPU, cuML on a GPU.

No Ray in here. The k-means stage samples frames with `sample_frames`, runs `fit_kmeans` once
per seed (seeds in parallel actors) and keeps `best_fit` of the results; `fit_restarts` does the
same in one process for the library interface.

CPU methods (benchmark: tests/benchmarks/bench_kmeans.py, 7 M frames, k = 120, 2 cores):
- "bounded" (default): warm-lloyd's schedule (k-means++ on a small uniform sample, Lloyd to
  convergence on a 10% sample, then on all frames) run by this package's numba kernels
  (lloyd.py): the same Lloyd iterations and stopping rule as scikit-learn, but distance bounds
  let a pass skip every frame that cannot change cluster (near convergence, about 5 in 6
  without reading them) and search few of the rest over all centres. 6.2 s against
  warm-lloyd's 50.9 s in the same process (3.8-4.3 s alone, 28-36 full passes); over seeds 0-2
  on a loaded machine 0.13 x warm-lloyd's time, inertia 0.997 x warm-lloyd's; on 668 k real
  frames not tuned on, k = 64, 120, 200: 0.999-1.001 x.
- "warm-lloyd": the same schedule with scikit-learn's Lloyd. The sample
  run puts the centres close to their final place for a tenth of the cost, so the full-data
  passes (about 1 s each at 7 M frames) drop from ~185 to 25-56: 51-70 s in all.
- "lloyd": scikit-learn's KMeans with k-means++ on all frames: about 205 s (k-means++ over
  7 M frames alone is slow and mostly single-threaded).
- "minibatch": scikit-learn's MiniBatchKMeans, stopping on its own early-stopping rule: about
  18 s but 6% more inertia.
"""
from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Iterable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from .model import PCAReducer

METHODS = ("bounded", "warm-lloyd", "lloyd", "minibatch")
DEFAULT_METHOD = "bounded"
DEFAULT_TOL = 1e-4  # scikit-learn's: centre shift relative to the data's mean variance
# bounded and warm-lloyd: the share of frames their first Lloyd run sees, with a floor per cluster
# so that small inputs still give every centre enough frames; and the sample size k-means++
# seeds from
WARM_FRACTION = 0.1
WARM_MIN_PER_CLUSTER = 200
SEED_FRAMES = 100_000
# bounded: its sample run stops at a tenth of `tol`. A sample pass costs a few percent of a
# full one, and a sample run brought closer to its fixed point leaves fewer full passes:
# 7.6 s of CPU against 8.4 s, and 28-36 full passes against 26-61 (3 seeds, 7 M frames)
WARM_TOL_FACTOR = 0.1
MINIBATCH_SIZE = 8192  # larger batches amortise scikit-learn's per-step overhead on 2+ cores


@dataclass(frozen=True)
class FitResult:
    """One k-means run. `inertia` is the sum of squared distances of the fitted frames to their
    nearest centre; `n_iter` counts passes over all frames (Lloyd iterations, or MiniBatch
    steps for "minibatch")."""

    centers: np.ndarray  # (k, dims) float32
    inertia: float
    n_iter: int
    seed: int
    backend: str  # "sklearn" or "cuml"
    method: str
    seconds: float
    n_frames: int
    details: dict = field(default_factory=dict)  # e.g. the warm-up run's iterations

    def summary(self) -> dict:
        """Everything but the centres, as JSON-ready values."""
        return {"inertia": float(self.inertia), "n_iter": int(self.n_iter), "seed": int(self.seed),
                "backend": self.backend, "method": self.method,
                "seconds": round(float(self.seconds), 3), "n_frames": int(self.n_frames),
                **self.details}


def sample_indices(total: int, max_frames: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a uniform sample without replacement of min(total, max_frames) items."""
    if max_frames is None or total <= max_frames:
        return np.arange(total)
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    return np.sort(np.random.default_rng(seed).choice(total, size=max_frames, replace=False))


def sample_frames(frames: np.ndarray | Sequence[np.ndarray], max_frames: int | None,
                  seed: int = 0) -> np.ndarray:
    """A uniform, seeded sample of at most max_frames rows, as one (n, dims) float32 array.

    `frames` is one (n, dims) array or a sequence of them (one per utterance); a sequence is
    sampled in place, so only the sample is ever copied into one array. Rows keep their order.
    When nothing needs dropping, a single float32 contiguous input comes back as is.
    """
    parts = [frames] if isinstance(frames, np.ndarray) else list(frames)
    if not parts:
        raise ValueError("no frames to sample from")
    shapes = [np.shape(p) for p in parts]
    if any(len(s) != 2 or s[1] != shapes[0][1] for s in shapes):
        raise ValueError(f"every part must be (frames, dims) with the same dims; got {shapes[:5]}")
    lengths = np.array([s[0] for s in shapes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if max_frames is None or offsets[-1] <= max_frames:
        return (np.ascontiguousarray(parts[0], dtype=np.float32) if len(parts) == 1
                else np.concatenate(parts, dtype=np.float32))
    picks = sample_indices(int(offsets[-1]), max_frames, seed)
    out = np.empty((picks.size, shapes[0][1]), dtype=np.float32)
    # picks are sorted, so each part's picks form one contiguous run
    bounds = np.searchsorted(picks, offsets)
    for part, start, lo, hi in zip(parts, offsets, bounds[:-1], bounds[1:]):
        if hi > lo:
            out[lo:hi] = np.asarray(part)[picks[lo:hi] - start]
    return out


def select_backend(device: str = "cpu") -> str:
    """"cuml" when `device` asks for a GPU ("cuda", "cuda:N", "gpu", "auto") and cuML and a GPU
    are usable, else "sklearn" (the CPU: numba or scikit-learn, as `method` says). Asking
    explicitly for a GPU that is not usable warns."""
    wanted = device.lower()
    if wanted == "cpu":
        return "sklearn"
    if not (wanted in ("auto", "gpu") or wanted.startswith("cuda")):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'gpu' or 'auto', got {device!r}")
    problem = _cuml_problem()
    if problem is None:
        return "cuml"
    if wanted != "auto":
        warnings.warn(f"device={device!r}: {problem}; fitting k-means on the CPU instead",
                      RuntimeWarning, stacklevel=2)
    return "sklearn"


def _cuml_problem() -> str | None:
    """Why cuML cannot run here, or None when it can."""
    try:
        importlib.import_module("cuml.cluster")
    except ImportError:
        return "cuML is not installed (pip install 'timbrespace-ray[gpu]')"
    try:
        import cupy  # cuML depends on it, so it is there whenever cuML imports

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return None
    except Exception:  # cupy raises its own CUDA error types when no driver or device exists
        pass
    return "no CUDA GPU is visible"


def fit_kmeans(x: np.ndarray, n_clusters: int, *, seed: int = 0, max_iter: int = 300,
               tol: float = DEFAULT_TOL, method: str = DEFAULT_METHOD, device: str = "cpu",
               init: np.ndarray | None = None, threads: int | None = None) -> FitResult:
    """Fit k-means with one seed on a (frames, dims) float32 matrix.

    `init` gives starting centres instead of k-means++ seeding. `threads` bounds the CPU
    threads numba and scikit-learn use (a Ray actor sets it to its CPUs; None: numba's own
    setting, NUMBA_NUM_THREADS or every core). On cuML, `method` is ignored: cuML runs Lloyd
    from scalable k-means++ on all frames.
    """
    x = _checked_frames(x, n_clusters)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if init is not None:
        init = np.asarray(init, dtype=np.float32)
        if init.shape != (n_clusters, x.shape[1]):
            raise ValueError(f"init must be ({n_clusters}, {x.shape[1]}), got {init.shape}")
    if select_backend(device) == "cuml":
        return fit_cuml(x, n_clusters, seed=seed, max_iter=max_iter, tol=tol, init=init)
    if method == "bounded":
        with _numba_threads(threads):
            return _fit_bounded(x, n_clusters, seed, max_iter, tol, init)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads) if threads else nullcontext():
        return _fit_sklearn(x, n_clusters, seed, max_iter, tol, method, init)


@contextmanager
def _numba_threads(threads: int | None):
    """numba's parallel kernels on at most `threads` threads (and no more than it started
    with), as they were afterwards."""
    import numba

    before = numba.get_num_threads()
    if threads:
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _fit_bounded(x, k, seed, max_iter, tol, init) -> FitResult:
    from . import lloyd

    t0 = time.perf_counter()
    details: dict = {}
    if init is None:
        n_warm = max(int(WARM_FRACTION * x.shape[0]), WARM_MIN_PER_CLUSTER * k)
        warm = sample_frames(x, n_warm, seed)
        init = lloyd.kmeans_plusplus(sample_frames(warm, max(SEED_FRAMES, k), seed + 1), None,
                                     k, seed)
        if warm.shape[0] < x.shape[0]:
            init, _, _, warm_iter = lloyd.lloyd(
                warm, None, init, max_iter=max_iter,
                tol=WARM_TOL_FACTOR * tol * lloyd.mean_variance(warm, None))
            details = {"warm_frames": int(warm.shape[0]), "warm_iter": int(warm_iter)}
    centers, _, inertia, n_iter = lloyd.lloyd(x, None, init, max_iter=max_iter,
                                              tol=tol * lloyd.mean_variance(x, None))
    return FitResult(centers, inertia, n_iter, seed, "numba", "bounded",
                     time.perf_counter() - t0, x.shape[0], details)


def _checked_frames(x, n_clusters: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"frames must be a (frames, dims) matrix, got shape {x.shape}")
    if n_clusters < 1 or x.shape[0] < n_clusters:
        raise ValueError(f"k-means with n_clusters={n_clusters} needs at least that many frames; "
                         f"got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("frames hold NaN or infinite values")
    return x


def _fit_sklearn(x, k, seed, max_iter, tol, method, init) -> FitResult:
    from sklearn.cluster import KMeans, MiniBatchKMeans, kmeans_plusplus

    t0 = time.perf_counter()
    details: dict = {}
    if method == "minibatch":
        km = MiniBatchKMeans(k, init="k-means++" if init is None else init, n_init=1,
                             max_iter=max_iter, tol=tol, batch_size=MINIBATCH_SIZE,
                             random_state=seed).fit(x)
        return FitResult(km.cluster_centers_.astype(np.float32), float(km.inertia_),
                         int(km.n_steps_), seed, "sklearn", method,
                         time.perf_counter() - t0, x.shape[0], {"epochs": int(km.n_iter_)})
    if method == "warm-lloyd" and init is None:
        n_warm = max(int(WARM_FRACTION * x.shape[0]), WARM_MIN_PER_CLUSTER * k)
        warm = sample_frames(x, n_warm, seed)
        init, _ = kmeans_plusplus(sample_frames(warm, max(SEED_FRAMES, k), seed + 1), k,
                                  random_state=seed)
        if warm.shape[0] < x.shape[0]:
            pre = KMeans(k, init=init, n_init=1, max_iter=max_iter, tol=tol, algorithm="lloyd",
                         random_state=seed).fit(warm)
            init = pre.cluster_centers_
            details = {"warm_frames": int(warm.shape[0]), "warm_iter": int(pre.n_iter_)}
    km = KMeans(k, init="k-means++" if init is None else init, n_init=1, max_iter=max_iter,
                tol=tol, algorithm="lloyd", random_state=seed).fit(x)
    return FitResult(km.cluster_centers_.astype(np.float32), float(km.inertia_), int(km.n_iter_),
                     seed, "sklearn", method, time.perf_counter() - t0, x.shape[0], details)


def fit_cuml(x: np.ndarray, n_clusters: int, *, seed: int = 0, max_iter: int = 300,
             tol: float = DEFAULT_TOL, init: np.ndarray | None = None,
             module=None) -> FitResult:
    """cuML's KMeans on the current CUDA device (Ray picks it through CUDA_VISIBLE_DEVICES).

    `module` is the `cuml.cluster` module, imported when None. Its KMeans has scikit-learn's
    interface; results come back to the host as float32 numpy.
    """
    if module is None:
        module = importlib.import_module("cuml.cluster")
    t0 = time.perf_counter()
    km = module.KMeans(n_clusters=n_clusters, max_iter=max_iter, tol=tol, random_state=seed,
                       init="scalable-k-means++" if init is None else init, n_init=1,
                       output_type="numpy")
    km.fit(x)
    centers = _host_float32(km.cluster_centers_)
    if centers.shape != (n_clusters, x.shape[1]):
        raise RuntimeError(f"cuML returned centres of shape {centers.shape}, "
                           f"expected {(n_clusters, x.shape[1])}")
    return FitResult(centers, float(_host_float32(km.inertia_)), int(km.n_iter_), seed, "cuml",
                     "lloyd", time.perf_counter() - t0, x.shape[0])


def _host_float32(value) -> np.ndarray:
    # cuML hands back numpy with output_type="numpy", but older releases may return cupy arrays
    # (`.get()`) or cuDF objects (`.to_numpy()`)
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    elif hasattr(value, "get") and not isinstance(value, np.ndarray):
        value = value.get()
    return np.asarray(value, dtype=np.float32)


def best_fit(results: Iterable[FitResult]) -> FitResult:
    """The run with the lowest inertia (ties: the lowest seed)."""
    finite = [r for r in results if np.isfinite(r.inertia)]
    if not finite:
        raise ValueError("no k-means run with a finite inertia to choose from")
    return min(finite, key=lambda r: (r.inertia, r.seed))


def fit_restarts(x: np.ndarray, n_clusters: int, seeds: Sequence[int], **kwargs
                 ) -> tuple[FitResult, list[FitResult]]:
    """Run `fit_kmeans` once per seed, one after another; returns (best, all runs)."""
    runs = [fit_kmeans(x, n_clusters, seed=s, **kwargs) for s in seeds]
    return best_fit(runs), runs


class UMAPReducer:
    """umap-learn's UMAP, in memory only.

    A fitted UMAP's `transform` needs its training data, its nearest-neighbour search index
    (pynndescent) and internal state that umap-learn only knows how to persist with pickle, so
    this package cannot store one and refuses to: a model directory can hold a PCA reducer only.
    """

    method = "umap"

    def __init__(self, model):
        self._model = model

    @property
    def n_components(self) -> int:
        return int(self._model.n_components)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.transform(np.asarray(x, dtype=np.float32)), dtype=np.float32)

    def to_json(self) -> dict:
        raise NotImplementedError(
            "a UMAP reducer cannot be saved without pickle; use dim_reducer_method='pca' for a "
            "model directory")


def fit_reducer(x: np.ndarray, method: str, n_components: int, seed: int = 0
                ) -> PCAReducer | UMAPReducer:
    """Fit a dimensionality reducer on (frames, dims) frames: "pca" (storable) or "umap"
    (needs umap-learn; in memory only)."""
    x = np.asarray(x, dtype=np.float32)
    if not 1 <= n_components <= min(x.shape):
        raise ValueError(f"reduced dims must be in 1..{min(x.shape)} for frames of shape "
                         f"{x.shape}, got {n_components}")
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=n_components, random_state=seed).fit(x)
        return PCAReducer(pca.mean_.astype(np.float32), pca.components_.astype(np.float32),
                          pca.explained_variance_.astype(np.float32),
                          pca.explained_variance_ratio_.astype(np.float32))
    if method == "umap":
        try:
            import umap
        except ImportError as exc:
            raise ImportError("dim_reducer_method='umap' needs umap-learn "
                              "(pip install umap-learn)") from exc
        return UMAPReducer(umap.UMAP(n_components=n_components, random_state=seed).fit(x))
    raise ValueError(f"dim_reducer_method must be 'pca' or 'umap', got {method!r}")
