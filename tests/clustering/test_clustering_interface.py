"""The original's clustering interface: ArrayClass, ClusteringPipeline, ProsodicClusterSequences."""
import json
import warnings

import numpy as np
import pytest
import soxr
import torch

from helpers.data import N120_MODEL, expected_features, is_real_speech, load_vector, vector_names
from timbrespace_ray import ConfigError, InvalidAudioError
from timbrespace_ray.clustering import (ArrayClass, ClusteringPipeline, KMeansModel,
                                        ProsodicClusterSequences)
from timbrespace_ray.features import FEATURE_NAMES, FeatureConfig, analyse

WEIGHTS = np.array([1.5, 1.0, 1.5, 0.75, 2.0, 1.0], dtype=np.float32)  # spec section 7
MODEL_FILES = {"kmeans_model.json", "cluster_centers.pt", "quality.json", "report.txt",
               "clusters.png"}
SPEECH = "pocketsphinx__test__data__librivox__sense_and_sensibility_01_austen_64kb-0870"


def as_matrix(features):
    return np.stack([features[k] for k in FEATURE_NAMES], 1).astype(np.float32)


@pytest.fixture(scope="module")
def real_features():
    """Normalized features of the bundled real speech, one (frames, 6) array per file."""
    return [as_matrix(expected_features(load_vector(n))) for n in vector_names()
            if is_real_speech(n)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_features):
    out = tmp_path_factory.mktemp("kmeans8")
    collection = ArrayClass(features_dim=6, init_capacity=100)
    for f in real_features:
        collection.add_batch(torch.from_numpy(f))
    collection.finalize()
    pipeline = ClusteringPipeline(n_clusters=8, device="cpu", n_restarts=2)
    model = pipeline.train(collection, str(out))
    return pipeline, model, out


def test_array_class_grows_and_keeps_order():
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 6)) for n in (3, 0, 7, 20)]
    a = ArrayClass(features_dim=6, init_capacity=2)
    a.add_batch(batches[0])
    a.add_batch(torch.from_numpy(batches[1]))
    a.add_batch(torch.from_numpy(batches[2]))
    a.add_batch(batches[3])
    out = a.finalize()
    assert out.dtype == np.float32 and len(a) == 30
    np.testing.assert_array_equal(out, np.concatenate(batches).astype(np.float32))
    with pytest.raises(ValueError, match="frames, 6"):
        a.add_batch(np.ones((2, 5)))


def test_train_writes_the_originals_directory_format(trained):
    _, model, out = trained
    assert {p.name for p in out.iterdir()} == MODEL_FILES
    doc = json.loads((out / "kmeans_model.json").read_text())
    for key in ("cluster_centers", "n_clusters", "inertia", "dtype", "feature_importance",
                "cluster_feature_importance"):
        assert key in doc
    assert doc["n_clusters"] == 8 and doc["dtype"] == "torch.float32"
    assert len(doc["feature_importance"]) == 6
    assert sum(doc["feature_importance"]) == pytest.approx(1.0)
    assert np.allclose(np.sum(doc["cluster_feature_importance"], 1), 1.0)
    assert [r["seed"] for r in doc["restarts"]] == [0, 1]
    assert doc["inertia"] == min(r["inertia"] for r in doc["restarts"])
    centres = torch.load(out / "cluster_centers.pt", weights_only=True)
    np.testing.assert_array_equal(centres.numpy(), np.asarray(doc["cluster_centers"], np.float32))
    report = (out / "report.txt").read_text()
    assert "Number of clusters: 8" in report and "QUALITY ASSESSMENT SUMMARY" in report
    quality = json.loads((out / "quality.json").read_text())
    assert sum(quality["cluster_sizes"]) == quality["n_samples"] == model.extra[
        "n_training_samples"]


def test_train_fits_in_the_weighted_space(trained, real_features):
    pipeline, model, _ = trained
    x = np.concatenate(real_features) * WEIGHTS
    tokens = pipeline.predict(real_features)
    np.testing.assert_array_equal(
        tokens, ((x[:, None] - model.cluster_centers[None]) ** 2).sum(2).argmin(1))
    # converged Lloyd: each centre is the mean of its weighted frames
    for c in range(8):
        np.testing.assert_allclose(model.cluster_centers[c], x[tokens == c].mean(0), atol=2e-3)
    # power is weighted x 2.0: a centre's power is twice its frames' normalized power
    raw = np.concatenate(real_features)
    loud = tokens[np.argmax(raw[:, 4])]
    np.testing.assert_allclose(model.cluster_centers[loud, 4],
                               2.0 * raw[tokens == loud, 4].mean(), atol=2e-3)


def test_default_cuda_device_warns_and_trains_on_cpu(tmp_path, real_features):
    with pytest.warns(RuntimeWarning, match="CPU"):
        model = ClusteringPipeline(n_clusters=4).train(real_features[:3], str(tmp_path))
    assert model.extra["fit"]["backend"] == "numba"


def test_train_with_pca_reduction(tmp_path, real_features):
    pipeline = ClusteringPipeline(n_clusters=5, device="cpu")
    model = pipeline.train(real_features, str(tmp_path), reduced_dims=3)
    assert model.cluster_centers.shape == (5, 3)
    loaded = ClusteringPipeline(device="cpu")
    loaded.load_model(str(tmp_path))
    r = loaded.model.reducer
    y = (np.concatenate(real_features) * WEIGHTS - r.mean) @ r.components.T
    np.testing.assert_array_equal(
        loaded.predict(real_features),
        ((y[:, None] - model.cluster_centers[None]) ** 2).sum(2).argmin(1))
    assert "pca to 3 dims" in (tmp_path / "report.txt").read_text()


def test_umap_and_wrong_dims_are_refused_up_front(tmp_path, real_features):
    with pytest.raises(ConfigError, match="pickle"):
        ClusteringPipeline(device="cpu").train(real_features, str(tmp_path / "m"),
                                               reduced_dims=2, dim_reducer_method="umap")
    assert not (tmp_path / "m").exists()
    with pytest.raises(ConfigError, match="input_features_dim"):
        ClusteringPipeline(input_features_dim=4)


def test_quality_analysis_of_the_published_model(real_features):
    pipeline = ClusteringPipeline(device="cpu")
    with pytest.raises(RuntimeError, match="load_model"):
        pipeline.clustering_quality_analysis(real_features)
    pipeline.load_model(str(N120_MODEL))
    assert pipeline.n_clusters == 120
    q = pipeline.clustering_quality_analysis(real_features, silhouette_sample=2000)
    x = np.concatenate(real_features).astype(np.float64) * WEIGHTS
    nearest = ((x[:, None] - pipeline.model.cluster_centers[None]) ** 2).sum(2).min(1)
    assert q["inertia"] == pytest.approx(nearest.sum(), rel=1e-5)
    assert q["n_samples"] == x.shape[0] and -1 <= q["silhouette"]["mean"] <= 1


@pytest.fixture(scope="module")
def sequences():
    return ProsodicClusterSequences(str(N120_MODEL), max_duration=None)


@pytest.mark.parametrize("name", [n for n in vector_names() if load_vector(n)["tokens_f32"].size])
def test_tokens_reproduce_the_reference(sequences, name):
    vec = load_vector(name)
    (tokens,) = sequences.extract_cluster_sequences(vec["wav16k"])
    assert len(tokens) == vec["tokens_f32"].size
    assert np.mean(np.array(tokens) == vec["tokens_f32"]) >= 0.99, name


def test_tokens_equal_the_default_whole_file_path(sequences):
    wav = load_vector(SPEECH)["wav16k"]
    (tokens,) = sequences.extract_cluster_sequences(wav * 0.01)  # the level must not matter
    default = sequences.model.tokens(analyse(wav, FeatureConfig()))
    np.testing.assert_array_equal(tokens, default)


def test_padded_batch_equals_single_items(sequences):
    a, b = load_vector(SPEECH)["wav16k"], load_vector("male_3s")["wav16k"]
    batch = np.zeros((2, max(a.size, b.size)), np.float32)
    batch[0, : a.size], batch[1, : b.size] = a, b
    singles = [sequences.extract_cluster_sequences(w)[0] for w in (a, b)]
    assert sequences.extract_cluster_sequences(batch, lengths=[a.size, b.size]) == singles
    assert sequences.extract_cluster_sequences(
        torch.from_numpy(batch), lengths=torch.tensor([a.size, b.size])) == singles
    with pytest.raises(InvalidAudioError, match="lengths"):
        sequences.prepare_audio_batch(batch, lengths=[a.size])
    with pytest.raises(InvalidAudioError, match="lengths"):
        sequences.prepare_audio_batch(batch, lengths=[a.size, batch.shape[1] + 1])


def test_prepared_rows_have_unit_rms(sequences):
    rows = sequences.prepare_audio_batch(np.stack([np.linspace(-3, 3, 800)] * 2),
                                         lengths=[800, 400])
    assert [r.size for r in rows] == [800, 400]
    for r in rows:
        assert r.dtype == np.float32 and np.sqrt(np.mean(r.astype(np.float64) ** 2)) == \
            pytest.approx(1.0, rel=1e-6)
    silent = sequences.prepare_audio_batch(np.zeros(1000, np.float32))
    assert not silent[0].any()


def test_max_duration_truncates_with_a_warning():
    wav = load_vector(SPEECH)["wav16k"]
    short = ProsodicClusterSequences(str(N120_MODEL), max_duration=1.0)
    with pytest.warns(RuntimeWarning, match="max_duration"):
        (tokens,) = short.extract_cluster_sequences(wav)
    (expected,) = ProsodicClusterSequences(str(N120_MODEL)).extract_cluster_sequences(wav[:16000])
    assert tokens == expected and len(tokens) == 60
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short.extract_cluster_sequences(wav[:16000])


def test_distances_are_to_the_nearest_centre(sequences):
    wav = load_vector(SPEECH)["wav16k"]
    (tokens,), (dist,) = sequences.extract_cluster_sequences(wav, return_distances=True)
    x = as_matrix(analyse(wav, FeatureConfig())) * WEIGHTS
    all_d = np.linalg.norm(x[:, None] - sequences.model.cluster_centers[None], axis=2)
    assert dist.dtype == np.float32 and dist.shape == (len(tokens),)
    np.testing.assert_allclose(dist, all_d[np.arange(len(tokens)), tokens], atol=1e-5)
    np.testing.assert_allclose(dist, all_d.min(1), atol=1e-5)


def test_resample_waveform_to_mono_16k(sequences):
    rng = np.random.default_rng(0)
    stereo = rng.normal(size=(2, 8000)).astype(np.float32)
    out = sequences.resample_waveform(torch.from_numpy(stereo), 8000)
    expected = soxr.resample(stereo.mean(0), 8000, 16000, quality="HQ")
    assert out.dtype == np.float32 and out.ndim == 1
    np.testing.assert_allclose(out, expected, atol=1e-6)
    mono = stereo[0]
    np.testing.assert_array_equal(sequences.resample_waveform(mono, 16000), mono)
    with pytest.raises(ValueError, match="sample rate"):
        sequences.resample_waveform(mono, 0)


def test_loaded_published_model_is_unchanged():
    model = KMeansModel.load(str(N120_MODEL))
    assert model.reducer is None and model.n_clusters == 120
