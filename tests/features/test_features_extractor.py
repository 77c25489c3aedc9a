"""ProsodicFeatureExtractor: the original's interface, edge cases and typed errors."""
import numpy as np
import pytest
import soundfile as sf
import torch

from helpers.data import DEMO_CORPUS, N120_MODEL, load_vector
from timbrespace_ray import (ConfigError, InvalidAudioError, ProsodicFeatureExtractor,
                             UnsupportedSampleRateError)
from timbrespace_ray.clustering import KMeansModel
from timbrespace_ray.features import FEATURE_NAMES

SPEECH = "pocketsphinx__test__data__librivox__sense_and_sensibility_01_austen_64kb-0870"


@pytest.fixture(scope="module")
def vec():
    return load_vector(SPEECH)


@pytest.fixture()
def extractor():
    return ProsodicFeatureExtractor()


def _same(a, b):
    assert set(a) == set(b) == set(FEATURE_NAMES)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_load_audio_then_extract_matches_reference(extractor, vec):
    audio = extractor.load_audio(str(DEMO_CORPUS / f"{SPEECH}.wav"))
    np.testing.assert_array_equal(audio, vec["wav16k"])
    feats = extractor.extract()
    assert all(feats[k].dtype == np.float64 and feats[k].ndim == 1 for k in FEATURE_NAMES)
    np.testing.assert_allclose(feats["f0"], vec["expected_f0"], atol=1e-4)
    assert len(feats["f0"]) == extractor.get_frames_count(len(audio))


def test_librosa_loader_gives_the_same_audio(extractor, vec):
    audio = extractor.load_audio(str(DEMO_CORPUS / f"{SPEECH}.wav"), loader="librosa")
    np.testing.assert_allclose(audio, vec["wav16k"], atol=1e-6)
    with pytest.raises(ValueError, match="loader"):
        extractor.load_audio("x.wav", loader="torchaudio")


def test_file_url_and_resampled_input(tmp_path, extractor, vec):
    import soxr

    x8k = soxr.resample(vec["wav16k"], 16000, 8000)
    path = tmp_path / "speech 8k.wav"
    sf.write(path, x8k, 8000, subtype="FLOAT")
    audio = extractor.load_audio(f"file://{path}")
    np.testing.assert_allclose(audio, soxr.resample(x8k, 8000, 16000), atol=1e-6)


def test_numpy_torch_and_channels_first_inputs_agree(extractor, vec):
    x = vec["wav16k"]
    ref = extractor.extract(audio_tensor=x)
    _same(ref, extractor.extract(audio_tensor=torch.from_numpy(x)))
    _same(ref, extractor.extract(audio_tensor=np.stack([x, x])))
    _same(ref, extractor.extract(audio_tensor=x.astype(np.float64)))


def test_time_range_selects_a_segment(extractor, vec):
    x = vec["wav16k"]
    part = extractor.extract(start_ms=1000, end_ms=3000, audio_tensor=x)
    _same(part, extractor.extract(audio_tensor=x[16000:48000]))
    assert len(part["f0"]) == extractor.get_frames_count(32000)
    # end before start means "to the end"
    _same(extractor.extract(start_ms=1000, end_ms=500, audio_tensor=x),
          extractor.extract(audio_tensor=x[16000:]))


def test_input_normalize_false_matches_whole_file_after_one_rms_normalization(extractor, vec):
    x = vec["wav16k"]
    scaled = x / np.sqrt(np.mean(x.astype(np.float64) ** 2))
    a = extractor.extract(audio_tensor=x)
    b = extractor.extract(audio_tensor=scaled.astype(np.float32), input_normalize=False)
    for k in FEATURE_NAMES:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)


def test_batch_equals_single_calls(extractor):
    waves = [load_vector(n)["wav16k"] for n in (SPEECH, "male_3s", "tiny_10ms", "silence_2s")]
    batch = extractor.extract_batch(waves)
    assert len(batch) == len(waves)
    for w, got in zip(waves, batch):
        _same(got, extractor.extract(audio_tensor=w))


def test_empty_and_exactly_one_frame_give_empty_arrays(extractor):
    # spec 1.5: N = ceil(|len - FL| / HOP), so only these two lengths yield no frames
    for n in (0, 800):
        feats = extractor.extract(audio_tensor=np.zeros(n, dtype=np.float32) + 0.1)
        assert all(len(v) == 0 for v in feats.values()), n
    assert extractor.get_frames_count(0) == 4 and extractor.get_frames_count(800) == 1
    tiny = extractor.extract(audio_tensor=np.full(160, 0.1, dtype=np.float32))
    assert all(len(v) == 3 and np.all(v == 0) for v in tiny.values())


def test_silence_gives_zeros(extractor):
    feats = extractor.extract(audio_tensor=np.zeros(32000, dtype=np.float32))
    assert len(feats["f0"]) == extractor.get_frames_count(32000)
    assert all(np.all(v == 0) for v in feats.values())


def test_bad_samples_and_shapes_raise_typed_errors(extractor):
    x = np.ones(4000, dtype=np.float32)
    x[5] = np.inf
    with pytest.raises(InvalidAudioError, match="NaN or infinite"):
        extractor.extract(audio_tensor=x)
    with pytest.raises(InvalidAudioError, match="1-D or 2-D"):
        extractor.extract(audio_tensor=np.zeros((2, 2, 100)))
    with pytest.raises(InvalidAudioError, match="channels-first"):
        extractor.extract(audio_tensor=np.zeros((16000, 2)))
    with pytest.raises(InvalidAudioError, match="numbers"):
        extractor.extract(audio_tensor=np.array(["a", "b"]))
    with pytest.raises(InvalidAudioError, match="load_audio"):
        ProsodicFeatureExtractor().extract()


@pytest.mark.parametrize("rate", [0, -16000, 8000, 96000, 16000.5])
def test_unsupported_sample_rates_are_rejected(rate):
    with pytest.raises(UnsupportedSampleRateError, match="sample_rate"):
        ProsodicFeatureExtractor(sample_rate=rate)


def test_bad_settings_name_the_setting():
    with pytest.raises(ConfigError, match="smoothing_level"):
        ProsodicFeatureExtractor(smoothing_level="extreme")
    with pytest.raises(ConfigError, match="frame_ms"):
        ProsodicFeatureExtractor(frame_ms=0.01)


@pytest.mark.parametrize("level", ["light", "heavy"])
def test_other_smoothing_levels_and_rates_run(level, vec):
    for rate in (16000, 22050):
        ex = ProsodicFeatureExtractor(sample_rate=rate, smoothing_level=level, hop_ms=10)
        feats = ex.extract(audio_tensor=vec["wav16k"])
        assert len(feats["f0"]) == ex.get_frames_count(len(vec["wav16k"]))
        assert 0.3 < np.mean(feats["f0"] > 0) < 0.95


def test_plot_writes_a_png(tmp_path, extractor):
    extractor.load_audio(str(DEMO_CORPUS / f"{SPEECH}.wav"))
    path = tmp_path / "f.png"
    extractor.plot_features(extractor.extract(), title="t", save_path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20000


def test_published_model_loads_without_pickle():
    model = KMeansModel.load(str(N120_MODEL))
    assert model.n_clusters == 120 and model.cluster_centers.shape == (120, 6)
    assert model.dtype == "torch.bfloat16"
