"""Decoding: formats, rates, channels, streaming resampling and typed errors."""
import io

import numpy as np
import pytest
import soundfile as sf
import soxr

from helpers.data import DEMO_CORPUS, load_vector
from timbrespace_ray.audio import decode_audio
from timbrespace_ray.features import FeatureConfig, analyse
from timbrespace_ray.errors import (AudioDecodeError, AudioReadError, AudioTooLongError,
                                    InvalidAudioError)

SPEECH = DEMO_CORPUS / "pysptk__pysptk__example_audio_data__arctic_a0007.wav"


@pytest.fixture(scope="module")
def speech():
    x, sr = sf.read(SPEECH, dtype="float32")
    assert sr == 16000
    return x


def test_bundled_16k_recording_decodes_to_reference_input(speech):
    wav, rate, duration = decode_audio(str(SPEECH))
    vec = load_vector(SPEECH.stem)
    np.testing.assert_array_equal(wav, vec["wav16k"])
    assert rate == 16000 and duration == pytest.approx(len(speech) / 16000)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
def test_streaming_resampler_equals_one_shot_soxr(tmp_path, speech, rate):
    x = soxr.resample(speech, 16000, rate)
    # longer than one decode block, so the streaming path crosses block boundaries
    x = np.tile(x, 1 + (1 << 18) // len(x)).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    wav, got_rate, _ = decode_audio(str(path))
    expected = soxr.resample(x, rate, 16000, quality="HQ")
    assert got_rate == rate
    assert wav.shape == expected.shape
    np.testing.assert_allclose(wav, expected, atol=1e-6)


def test_channels_are_averaged(tmp_path, speech):
    stereo = np.stack([speech, 0.5 * speech], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    wav, _, _ = decode_audio(str(path))
    np.testing.assert_allclose(wav, 0.75 * speech, atol=1e-7)


@pytest.mark.parametrize("fmt,subtype,ext", [
    ("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg"), ("OGG", "OPUS", "opus"),
    ("MP3", "MPEG_LAYER_III", "mp3"), ("WAV", "PCM_24", "wav"), ("WAV", "PCM_U8", "wav"),
])
def test_compressed_and_integer_formats_decode(tmp_path, speech, fmt, subtype, ext):
    path = tmp_path / f"speech.{ext}"
    sf.write(path, speech, 16000, format=fmt, subtype=subtype)
    wav, _, duration = decode_audio(str(path))
    # lossy codecs add delay and padding: the speech, not the samples, must survive
    assert abs(duration - len(speech) / 16000) < 0.1
    ours, original = analyse(wav, FeatureConfig()), analyse(speech, FeatureConfig())
    assert np.mean(ours["f0"] > 0) == pytest.approx(np.mean(original["f0"] > 0), abs=0.1)
    assert np.median(ours["f0"][ours["f0"] > 0]) == pytest.approx(
        np.median(original["f0"][original["f0"] > 0]), abs=0.06)  # low-bitrate codecs move F0 a little


def test_bytes_and_file_objects_decode_like_paths(speech):
    data = SPEECH.read_bytes()
    from_bytes, _, _ = decode_audio(data)
    from_obj, _, _ = decode_audio(io.BytesIO(data))
    np.testing.assert_array_equal(from_bytes, speech)
    np.testing.assert_array_equal(from_obj, speech)


def test_errors_are_typed_and_actionable(tmp_path):
    with pytest.raises(AudioReadError, match="not found"):
        decode_audio(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioDecodeError, match="empty"):
        decode_audio(b"")
    with pytest.raises(AudioDecodeError, match="supported formats"):
        decode_audio(b"this is a text file, not audio" * 10, name="notes.wav")
    with pytest.raises(AudioDecodeError):
        decode_audio(np.random.default_rng(0).bytes(5000))
    truncated = SPEECH.read_bytes()[:30]
    with pytest.raises(AudioDecodeError):
        decode_audio(truncated)


def test_nan_samples_are_rejected(tmp_path):
    x = np.zeros(16000, dtype=np.float32)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(InvalidAudioError, match="NaN"):
        decode_audio(str(path))


def test_max_duration_is_checked_before_decoding(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16000 * 3, dtype=np.float32), 16000)
    with pytest.raises(AudioTooLongError, match="max_duration_s"):
        decode_audio(str(path), max_duration_s=2.0)
    wav, _, _ = decode_audio(str(path), max_duration_s=3.0)
    assert len(wav) == 48000
