"""k-means fitting: sampling, the scikit-learn methods, restarts, the cuML adapter, reducers."""
import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch

from timbrespace_ray import ModelFormatError
from timbrespace_ray.clustering import (METHODS, FitResult, KMeansModel, best_fit, fit_cuml,
                                        fit_kmeans, fit_reducer, fit_restarts, sample_frames,
                                        select_backend)

HAS_UMAP = importlib.util.find_spec("umap") is not None


def blobs(n_per=400, seed=0):
    """Four well-separated 6-d blobs; returns frames, true centres, true labels."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0, 0, 0, 0], [2, 0, 0, 1, 0, 0], [0, 2, 1, 0, 0, 1],
                        [1, 1, 2, 2, 2, 0]], dtype=np.float32)
    labels = np.repeat(np.arange(4), n_per)
    x = centres[labels] + rng.normal(0, 0.1, (labels.size, 6)).astype(np.float32)
    return x, centres, labels


def test_sample_frames_is_uniform_seeded_and_exact():
    # each row encodes (part, row): a sampled row must exist in the source exactly once
    sizes = [1000, 0, 10, 5000]
    parts = [np.stack([np.full(n, p), np.arange(n)], 1).astype(np.float32)
             for p, n in enumerate(sizes)]
    a = sample_frames(parts, 600, seed=3)
    assert a.shape == (600, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, sample_frames(parts, 600, seed=3))
    assert not np.array_equal(a, sample_frames(parts, 600, seed=4))
    assert len({tuple(r) for r in a}) == 600
    for part, row in a.astype(int):
        assert 0 <= row < sizes[part]
    # over many seeds, each part's share of the sample is its share of the frames
    counts = np.zeros(len(sizes))
    for seed in range(30):
        s = sample_frames(parts, 600, seed=seed)
        counts += np.bincount(s[:, 0].astype(int), minlength=len(sizes))
    share = counts / counts.sum()
    np.testing.assert_allclose(share, np.array(sizes) / sum(sizes), atol=0.01)


def test_sample_frames_keeps_everything_when_small_enough():
    parts = [np.ones((3, 6)), np.zeros((2, 6))]
    out = sample_frames(parts, 10)
    np.testing.assert_array_equal(out, np.concatenate(parts))
    assert out.dtype == np.float32
    single = np.arange(12, dtype=np.float32).reshape(2, 6)
    assert sample_frames(single, None) is single  # no copy of an already fitting matrix
    with pytest.raises(ValueError, match="same dims"):
        sample_frames([np.ones((3, 6)), np.ones((3, 5))], 2)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_recovers_separated_blobs(method):
    x, centres, labels = blobs()
    r = fit_kmeans(x, 4, seed=0, method=method)
    assert r.centers.dtype == np.float32 and r.centers.shape == (4, 6)
    backend = "numba" if method == "bounded" else "sklearn"
    assert r.backend == backend and r.method == method and r.n_iter >= 1
    assert r.n_frames == x.shape[0] and r.seed == 0
    # every true centre has a fitted centre next to it
    gaps = np.linalg.norm(centres[:, None] - r.centers[None], axis=2)
    assert gaps.min(axis=1).max() < 0.05
    true_inertia = float(((x - centres[labels]) ** 2).sum())
    assert 0.98 * true_inertia <= r.inertia <= 1.01 * true_inertia


def test_same_seed_same_centres():
    x, _, _ = blobs()
    a = fit_kmeans(x, 6, seed=5)
    b = fit_kmeans(x, 6, seed=5)
    np.testing.assert_array_equal(a.centers, b.centers)
    assert a.inertia == b.inertia


def test_init_centres_are_used():
    x, centres, _ = blobs()
    r = fit_kmeans(x, 4, init=centres, method="lloyd", max_iter=1)
    # one Lloyd step from the true centres moves each one to its blob's mean only
    gaps = np.linalg.norm(r.centers - centres, axis=1)
    assert gaps.max() < 0.02


def _result(inertia, seed):
    return FitResult(np.zeros((2, 6), np.float32), inertia, 1, seed, "sklearn", "lloyd", 0.0, 10)


def test_best_fit_picks_lowest_inertia_then_lowest_seed():
    runs = [_result(5.0, 0), _result(3.0, 4), _result(float("nan"), 1), _result(3.0, 2)]
    best = best_fit(runs)
    assert (best.inertia, best.seed) == (3.0, 2)
    with pytest.raises(ValueError):
        best_fit([_result(float("nan"), 0)])
    with pytest.raises(ValueError):
        best_fit([])


def test_restarts_run_every_seed_and_keep_the_best():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, 6)).astype(np.float32)  # no structure: seeds land apart
    best, runs = fit_restarts(x, 12, [0, 1, 2], method="lloyd")
    assert [r.seed for r in runs] == [0, 1, 2]
    assert len({r.inertia for r in runs}) > 1
    assert best.inertia == min(r.inertia for r in runs)


def test_cuda_without_gpu_warns_and_falls_back():
    x, _, _ = blobs(100)
    with pytest.warns(RuntimeWarning, match="cuML|GPU"):
        r = fit_kmeans(x, 4, device="cuda")
    assert r.backend == "numba"  # the default CPU method
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_backend("cpu") == "sklearn"
        assert select_backend("auto") == "sklearn"  # "auto" falls back silently
    with pytest.raises(ValueError, match="device"):
        select_backend("tpu")


def test_bad_inputs_are_refused():
    x, _, _ = blobs(10)
    with pytest.raises(ValueError, match="at least"):
        fit_kmeans(x[:3], 4)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_kmeans(bad, 4)
    with pytest.raises(ValueError, match="method"):
        fit_kmeans(x, 4, method="elkan")
    with pytest.raises(ValueError, match="init"):
        fit_kmeans(x, 4, init=np.zeros((3, 6)))


class _DeviceArray:
    """Stands for a cupy array: it only reaches the host through .get()."""

    def __init__(self, value):
        self._value = value

    def get(self):
        return self._value


class _FakeCumlCluster:
    """A stand-in for the `cuml.cluster` module (scikit-learn-compatible KMeans)."""

    def __init__(self, centres, wrong_shape=False):
        self.calls = []
        self._centres = centres
        self._wrong_shape = wrong_shape
        module = self

        class KMeans:
            def __init__(self, **kwargs):
                module.calls.append(kwargs)

            def fit(self, x):
                module.fitted = x
                c = module._centres[:-1] if module._wrong_shape else module._centres
                self.cluster_centers_ = _DeviceArray(c.astype(np.float64))
                self.inertia_ = np.float64(12.5)
                self.n_iter_ = np.int64(17)
                return self

        self.KMeans = KMeans


def test_cuml_adapter_passes_arguments_and_returns_float32_numpy():
    x, centres, _ = blobs(50)
    fake = _FakeCumlCluster(centres)
    r = fit_cuml(x, 4, seed=7, max_iter=55, tol=1e-3, init=centres, module=fake)
    (kwargs,) = fake.calls
    assert kwargs["n_clusters"] == 4 and kwargs["max_iter"] == 55
    assert kwargs["random_state"] == 7 and kwargs["tol"] == 1e-3 and kwargs["n_init"] == 1
    assert kwargs["init"] is centres
    assert fake.fitted is x
    assert isinstance(r.centers, np.ndarray) and r.centers.dtype == np.float32
    np.testing.assert_array_equal(r.centers, centres)
    assert (r.inertia, r.n_iter, r.backend, r.seed) == (12.5, 17, "cuml", 7)
    assert isinstance(r.inertia, float) and isinstance(r.n_iter, int)

    fit_cuml(x, 4, module=fake)
    assert fake.calls[-1]["init"] == "scalable-k-means++"
    with pytest.raises(RuntimeError, match="shape"):
        fit_cuml(x, 4, module=_FakeCumlCluster(centres, wrong_shape=True))


def test_pca_reducer_matches_the_covariance_eigenvectors():
    x, _, _ = blobs()
    pca = fit_reducer(x, "pca", 3)
    cov = np.cov(x.astype(np.float64), rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    top = np.argsort(vals)[::-1][:3]
    np.testing.assert_allclose(pca.explained_variance, vals[top], rtol=1e-4)
    np.testing.assert_allclose(pca.explained_variance_ratio, vals[top] / vals.sum(), rtol=1e-4)
    np.testing.assert_allclose(np.abs(pca.components @ vecs[:, top]), np.eye(3), atol=1e-4)
    y = pca.transform(x)
    np.testing.assert_allclose(y, (x - x.mean(0)) @ pca.components.T, atol=1e-4)
    with pytest.raises(ValueError, match="reduced dims"):
        fit_reducer(x, "pca", 7)
    with pytest.raises(ValueError, match="pca"):
        fit_reducer(x, "tsne", 2)


def test_model_with_pca_round_trips_through_json_and_pt(tmp_path):
    x, _, _ = blobs()
    pca = fit_reducer(x, "pca", 3)
    r = fit_kmeans(pca.transform(x), 4)
    KMeansModel(r.centers, r.inertia, reducer=pca).save(str(tmp_path))
    doc = json.loads((tmp_path / "kmeans_model.json").read_text())
    assert doc["dim_reducer"]["method"] == "pca" and doc["n_clusters"] == 4
    loaded = KMeansModel.load(str(tmp_path))
    np.testing.assert_array_equal(loaded.reducer.components, pca.components)
    np.testing.assert_array_equal(loaded.cluster_centers, r.centers)
    pt = torch.load(tmp_path / "cluster_centers.pt", weights_only=True)
    assert isinstance(pt, torch.Tensor) and pt.dtype == torch.float32
    np.testing.assert_array_equal(pt.numpy(), r.centers)
    # tokens of normalized features go through the weights, then the PCA
    weights = np.array([1.5, 1.0, 1.5, 0.75, 2.0, 1.0], dtype=np.float32)
    raw = x / weights
    by_hand = ((raw * weights - pca.mean) @ pca.components.T)[:, None, :] - r.centers[None]
    np.testing.assert_array_equal(loaded.tokens(raw), (by_hand ** 2).sum(2).argmin(1))


def test_malformed_reducer_is_a_model_format_error(tmp_path):
    x, _, _ = blobs()
    r = fit_kmeans(x, 4)
    KMeansModel(r.centers, r.inertia).save(str(tmp_path))
    path = tmp_path / "kmeans_model.json"
    doc = json.loads(path.read_text())
    for reducer in ({"method": "umap"}, {"method": "pca", "mean": [0.0]},
                    fit_reducer(x, "pca", 2).to_json()):  # 2 output dims, 6-d centres
        path.write_text(json.dumps({**doc, "dim_reducer": reducer}))
        with pytest.raises(ModelFormatError):
            KMeansModel.load(str(tmp_path))


@pytest.mark.skipif(HAS_UMAP, reason="umap-learn is installed")
def test_umap_without_umap_learn_says_what_to_install():
    x, _, _ = blobs(50)
    with pytest.raises(ImportError, match="umap-learn"):
        fit_reducer(x, "umap", 2)


@pytest.mark.skipif(not HAS_UMAP, reason="umap-learn is not installed")
def test_umap_reducer_works_in_memory_and_refuses_to_be_saved():
    x, _, _ = blobs(100)
    reducer = fit_reducer(x, "umap", 2)
    y = reducer.transform(x[:20])
    assert y.shape == (20, 2) and y.dtype == np.float32
    with pytest.raises(NotImplementedError, match="pickle"):
        reducer.to_json()
