"""Quality metrics, report files and the cluster plot."""
import json
import math

import numpy as np
import pytest
from sklearn.metrics import (calinski_harabasz_score, davies_bouldin_score, silhouette_samples,
                             silhouette_score)

from helpers.data import N120_MODEL, expected_features, is_real_speech, load_vector, vector_names
from timbrespace_ray.clustering import (KMeansModel, assessment, cluster_quality,
                                        feature_importance, plot_clusters, weighted_frames,
                                        write_quality)

SECTIONS = ("MODEL CONFIGURATION:", "CLUSTER DISTRIBUTION:", "CLUSTERING QUALITY METRICS:",
            "Cluster Balance Metrics:", "FEATURE IMPORTANCE ANALYSIS:",
            "QUALITY ASSESSMENT SUMMARY:")


@pytest.fixture(scope="module")
def partition():
    """Random frames split by nearest of 6 centres, with cluster 4's id left unused."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    centers = rng.normal(size=(6, 6))
    labels = ((x[:, None] - centers[None]) ** 2).sum(2).argmin(1)
    labels[labels == 4] = 5
    return x, labels, centers


def test_scores_equal_scikit_learns(partition):
    x, labels, centers = partition
    q = cluster_quality(x, labels, centers, silhouette_sample=10_000)
    assert q["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(x, labels), rel=1e-6)
    assert q["davies_bouldin"] == pytest.approx(davies_bouldin_score(x, labels), rel=1e-6)
    assert q["silhouette"]["mean"] == pytest.approx(silhouette_score(x, labels), rel=1e-5)
    s = silhouette_samples(x, labels)
    assert q["silhouette"]["std"] == pytest.approx(s.std(), rel=1e-5)
    assert q["silhouette"]["per_cluster"][4] is None
    assert q["silhouette"]["per_cluster"][2] == pytest.approx(s[labels == 2].mean(), rel=1e-5)
    assert q["inertia"] == pytest.approx(((x - centers[labels]) ** 2).sum(), rel=1e-9)


def test_silhouette_sample_is_seeded(partition):
    x, labels, centers = partition
    a = cluster_quality(x, labels, centers, silhouette_sample=500, seed=1)["silhouette"]
    b = cluster_quality(x, labels, centers, silhouette_sample=500, seed=1)["silhouette"]
    c = cluster_quality(x, labels, centers, silhouette_sample=500, seed=2)["silhouette"]
    assert a["sample_size"] == 500 and a == b and c["mean"] != a["mean"]
    assert a["mean"] == pytest.approx(silhouette_score(x, labels), abs=0.05)


def test_size_balance_and_entropy_by_hand():
    x = np.zeros((10, 2), np.float32)
    labels = np.array([0] * 6 + [1] * 3 + [2])
    q = cluster_quality(x, labels, np.zeros((4, 2)))
    size = q["size"]
    assert q["cluster_sizes"] == [6, 3, 1, 0]
    assert (size["min"], size["max"], size["empty_clusters"]) == (0, 6, 1)
    assert size["cv"] == pytest.approx(np.std([6, 3, 1, 0]) / 2.5)
    assert size["min_max_ratio"] == pytest.approx(1 / 6)
    assert size["largest_share"] == pytest.approx(0.6)
    entropy = -(0.6 * math.log2(0.6) + 0.3 * math.log2(0.3) + 0.1 * math.log2(0.1))
    assert q["entropy_bits"] == pytest.approx(entropy)
    assert q["effective_n_clusters"] == pytest.approx(2 ** entropy)


def test_feature_importance_reproduces_the_published_models():
    model = KMeansModel.load(str(N120_MODEL))
    overall, per_cluster = feature_importance(model.cluster_centers)
    np.testing.assert_allclose(overall, model.feature_importance, atol=1e-3)
    assert per_cluster.shape == (120, 6)
    np.testing.assert_allclose(per_cluster.sum(1), 1.0, atol=1e-12)


def test_feature_importance_follows_the_spread():
    centers = np.zeros((3, 6))
    centers[:, 2] = [0.0, 1.0, 2.0]  # only f1 separates the clusters
    overall, per_cluster = feature_importance(centers)
    np.testing.assert_allclose(overall, np.eye(6)[2])
    np.testing.assert_allclose(per_cluster[[0, 2]], np.eye(6)[[2, 2]])
    np.testing.assert_allclose(per_cluster[1], np.full(6, 1 / 6))  # centre on the mean


def test_bic_prefers_the_true_number_of_blobs():
    rng = np.random.default_rng(0)
    true = np.array([[0, 0], [5, 0], [0, 5], [5, 5]], float)
    labels = np.repeat(np.arange(4), 250)
    x = (true[labels] + rng.normal(0, 0.3, (1000, 2))).astype(np.float32)
    four = cluster_quality(x, labels, true)
    halves = (true[labels, 0] > 0).astype(int)
    two = cluster_quality(x, halves, np.array([[0, 2.5], [5, 2.5]]))
    assert four["bic"] < two["bic"] and four["aic"] < two["aic"]
    assert four["bic"] - four["aic"] > 0  # log(1000) > 2 per parameter


def test_assessment_rules():
    def q(sil, effective=100, cv=0.5, empty=0):
        return {"silhouette": {"mean": sil}, "effective_n_clusters": effective,
                "n_clusters": 120, "size": {"cv": cv, "empty_clusters": empty}}

    assert assessment(q(0.6))["rating"] == "GOOD"
    assert assessment(q(0.3))["rating"] == "FAIR"
    assert assessment(q(0.1))["rating"] == "POOR"
    underused = assessment(q(0.6, effective=40, cv=1.8, empty=2))
    assert underused["rating"] == "FAIR"
    text = " ".join(underused["observations"])
    assert "underutilized" in text and "Imbalanced" in text and "2 empty" in text


def test_published_model_on_real_speech_and_report_files(tmp_path):
    frames = np.concatenate([weighted_frames(expected_features(load_vector(n)))
                             for n in vector_names() if is_real_speech(n)])
    model = KMeansModel.load(str(N120_MODEL))
    labels = model.assign(frames)
    q = cluster_quality(frames, labels, model.cluster_centers, silhouette_sample=4000)
    # the original's report finds the all-zero (silence) cluster 33 perfectly separated
    assert np.allclose(model.cluster_centers[33], 0)
    assert q["silhouette"]["per_cluster"][33] > 0.95
    assert q["inertia"] == pytest.approx(
        ((frames - model.cluster_centers[labels]).astype(np.float64) ** 2).sum(), rel=1e-6)

    write_quality(str(tmp_path), q, {"number_of_clusters": 120, "device": "cpu (sklearn)"})
    saved = json.loads((tmp_path / "quality.json").read_text())
    assert saved["assessment"]["rating"] in ("GOOD", "FAIR", "POOR")
    assert saved["cluster_sizes"] == np.bincount(labels, minlength=120).tolist()
    report = (tmp_path / "report.txt").read_text()
    positions = [report.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert "Number of clusters: 120" in report
    share = 100 * np.mean(labels == 33)
    assert f"Cluster 33: {np.sum(labels == 33)} samples ({share:.2f}%)" in report


def test_plot_is_a_png_of_the_expected_size(tmp_path, partition):
    import matplotlib.image

    x, labels, centers = partition
    path = tmp_path / "clusters.png"
    plot_clusters(x, labels, centers, str(path), sample_size=1000)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(str(path)).shape
    assert width > 1.5 * height > 600
