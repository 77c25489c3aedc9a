"""k-means stage over a features stage: model directory, restarts, GPU selection, reruns."""
import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from helpers.corpus import SHORT
from timbrespace_ray.clustering import KMeansModel
from timbrespace_ray.config import load_config
from timbrespace_ray.errors import ConfigError
from timbrespace_ray.executors import GpuCapacity, LocalExecutor
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.stages.kmeans import KMeansStage
from timbrespace_ray.stages.tokens import TokensStage
from timbrespace_ray.storage import Location

quiet = lambda s: None  # noqa: E731


@pytest.fixture(scope="module")
def features_out(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus")
    for p in SHORT:
        shutil.copy(p, corpus / p.name)
    out = tmp_path_factory.mktemp("out")
    FeaturesStage(Location.of(str(out)), str(corpus), load_config().features).run(LocalExecutor())
    return out


def fresh(features_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(features_out, out)
    return out


def test_model_directory_in_the_originals_format(features_out, tmp_path, said):
    out = fresh(features_out, tmp_path)
    cfg = load_config(**{"kmeans.n_clusters": 12, "kmeans.n_init": 3, "kmeans.max_frames": 2000})
    fitted = KMeansStage(Location.of(str(out)), cfg.kmeans).run(LocalExecutor()).detail
    assert fitted["frames"] == 2000 and fitted["n_clusters"] == 12
    assert sum("seed" in line for line in said) == 3 and sum("<- best" in line for line in said) == 1
    folder = out / "kmeans"
    doc = json.loads((folder / "kmeans_model.json").read_text())
    for key in ("cluster_centers", "n_clusters", "inertia", "dtype", "feature_importance",
                "cluster_feature_importance"):
        assert key in doc
    assert len(doc["restarts"]) == 3
    assert doc["inertia"] == min(r["inertia"] for r in doc["restarts"])
    centres = torch.load(folder / "cluster_centers.pt", weights_only=True)
    np.testing.assert_allclose(centres.numpy(), np.asarray(doc["cluster_centers"]), rtol=1e-6)
    assert {"report.txt", "quality.json", "clusters.png"} <= {p.name for p in folder.iterdir()}
    quality = json.loads((folder / "quality.json").read_text())
    assert sum(quality["cluster_sizes"]) == 2000 and -1 <= quality["silhouette"]["mean"] <= 1
    # the tokens stage takes it as is
    summary = TokensStage(Location.of(str(out))).run(LocalExecutor())
    assert summary.rows == len(SHORT)
    # a rerun does nothing
    said.clear()
    KMeansStage(Location.of(str(out)), cfg.kmeans).run(LocalExecutor())
    assert said == ["kmeans: already complete (k = 12 on 2000 frames, inertia "
                    f"{fitted['inertia']:.1f}, fitted on cpu); nothing to do"]


def test_sample_is_reproducible(features_out, tmp_path):
    cfg = load_config(**{"kmeans.n_clusters": 8, "kmeans.n_init": 1, "kmeans.max_frames": 1500})
    centres = []
    for name in ("a", "b"):
        out = fresh(features_out, tmp_path / name)
        KMeansStage(Location.of(str(out)), cfg.kmeans).run(LocalExecutor())
        centres.append(KMeansModel.load(str(out / "kmeans")).cluster_centers)
    np.testing.assert_array_equal(centres[0], centres[1])


class GpuCluster(LocalExecutor):
    def gpu_capacity(self):
        return GpuCapacity(4.0, 4.0, "four GPUs")

    def use_gpu(self, flag):
        return True if flag is None else flag


def gpu_kmeans(out, cfg) -> KMeansStage:
    """The stage as `run_stage` builds it on a cluster with GPUs (use_gpu auto)."""
    return KMeansStage(Location.of(str(out)), cfg.kmeans, use_gpu=GpuCluster().use_gpu(None))


def test_gpus_without_cuml_fall_back_to_cpu(features_out, tmp_path, said):
    out = fresh(features_out, tmp_path)
    cfg = load_config(**{"kmeans.n_clusters": 8, "kmeans.n_init": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = gpu_kmeans(out, cfg).run(GpuCluster())
    assert summary.detail["device"] == "cpu"
    assert any("cuML is not installed" in str(w.message) for w in caught)
    # the driver says it (a worker's own warning is not forwarded to the driver by default)
    assert any(line.startswith("kmeans: CPU instead of cuML on GPU node(s): ")
               and "cuML is not installed" in line for line in said), said


def test_umap_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="kmeans.dim_reducer_method"):
        load_config(**{"kmeans.dim_reducer_method": "umap"})


class _CumlKMeans:
    """cuML's KMeans cannot be installed here: scikit-learn's stands in behind its interface."""

    calls: list = []

    def __init__(self, n_clusters, max_iter, tol, random_state, init, n_init, output_type):
        from sklearn.cluster import KMeans

        assert output_type == "numpy" and init == "scalable-k-means++"
        _CumlKMeans.calls.append(n_clusters)
        self._km = KMeans(n_clusters, max_iter=max_iter, tol=tol, random_state=random_state,
                          n_init=n_init)

    def fit(self, x):
        self._km.fit(x)
        self.cluster_centers_ = self._km.cluster_centers_.astype(np.float64)
        self.inertia_, self.n_iter_ = self._km.inertia_, self._km.n_iter_
        return self


def test_gpu_cluster_with_cuml_fits_on_cuml(features_out, tmp_path, monkeypatch):
    import sys
    import types

    cluster_mod = types.SimpleNamespace(KMeans=_CumlKMeans)
    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1)))
    monkeypatch.setitem(sys.modules, "cuml", types.SimpleNamespace(cluster=cluster_mod))
    monkeypatch.setitem(sys.modules, "cuml.cluster", cluster_mod)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    out = fresh(features_out, tmp_path)
    cfg = load_config(**{"kmeans.n_clusters": 8, "kmeans.n_init": 2})
    summary = gpu_kmeans(out, cfg).run(GpuCluster())
    assert summary.detail["device"] == "cuda" and _CumlKMeans.calls == [8, 8]
    doc = json.loads((out / "kmeans" / "kmeans_model.json").read_text())
    assert {r["backend"] for r in doc["restarts"]} == {"cuml"}
