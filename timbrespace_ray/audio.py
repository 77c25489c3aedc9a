"""Decoding any audio that libsndfile reads into the mono waveform the features expect.

Decoding streams in blocks through soxr's streaming resampler, so a long recording never
exists in memory at its original rate and channel count; the result equals a one-shot
`soxr.resample(..., quality="HQ")` of the channel mean (checked in the tests).
"""
from __future__ import annotations

import io
import os
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioDecodeError, AudioReadError, AudioTooLongError, InvalidAudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")
SUPPORTED_FORMATS = "WAV, FLAC, OGG/Vorbis, Opus, MP3"
_BLOCK_FRAMES = 1 << 18  # ~5 s at 48 kHz per decoded block


def open_source(path: str, storage_options: dict | None = None) -> BinaryIO:
    """A binary file object for a local path or any fsspec URL, with read errors made typed."""
    from .storage import Location

    try:
        loc = Location.of(path, storage_options)
        return loc.fs.open(loc.path, "rb")
    except FileNotFoundError as exc:
        raise AudioReadError(f"file not found: {path}") from exc
    except PermissionError as exc:
        raise AudioReadError(f"permission denied reading {path}") from exc
    except OSError as exc:
        raise AudioReadError(f"could not read {path}: {exc}") from exc


def decode_audio(source: str | bytes | BinaryIO, sample_rate: int = 16000, *,
                 max_duration_s: float | None = None, name: str | None = None,
                 storage_options: dict | None = None) -> tuple[np.ndarray, int, float]:
    """Decode to mono float32 at `sample_rate`; returns (waveform, original rate, duration s).

    `source` is a path or URL, the file's bytes, or a seekable binary file object.
    """
    label = name or (source if isinstance(source, str) else "<bytes>")
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioDecodeError(f"{label}: the file is empty (0 bytes)")
        fileobj: BinaryIO = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        fileobj = open_source(os.fspath(source), storage_options)
    else:
        fileobj = source
    with fileobj:
        try:
            if not fileobj.read(1):
                raise AudioDecodeError(f"{label}: the file is empty (0 bytes)")
            fileobj.seek(0)
            snd = sf.SoundFile(fileobj)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise AudioDecodeError(
                f"{label}: not a readable audio file ({_reason(exc)}); "
                f"supported formats: {SUPPORTED_FORMATS}") from exc
        except OSError as exc:
            raise AudioReadError(f"{label}: could not read: {exc}") from exc
        with snd:
            return _decode_open(snd, sample_rate, max_duration_s, label)


def _decode_open(snd: sf.SoundFile, sample_rate: int, max_duration_s: float | None,
                 label: str) -> tuple[np.ndarray, int, float]:
    in_rate = int(snd.samplerate)
    if in_rate <= 0:
        raise AudioDecodeError(f"{label}: the header gives an invalid sample rate {in_rate}")
    duration = snd.frames / in_rate if snd.frames > 0 else 0.0
    if max_duration_s is not None and duration > max_duration_s:
        raise AudioTooLongError(
            f"{label}: {duration / 60:.1f} min is longer than max_duration_s={max_duration_s:g} s; "
            "raise the limit in the config or split the recording"
        )
    expected_out = int(np.ceil(max(snd.frames, 0) * sample_rate / in_rate)) + 16
    out = np.empty(expected_out, dtype=np.float32)
    filled = 0
    resampler = soxr.ResampleStream(in_rate, sample_rate, 1, dtype="float32", quality="HQ") \
        if in_rate != sample_rate else None
    # only float PCM can carry NaN/inf; integer PCM and the codecs decode to finite values
    check_finite = snd.subtype in ("FLOAT", "DOUBLE")
    block = np.empty((_BLOCK_FRAMES, snd.channels), dtype=np.float32)
    decoded = 0
    try:
        while True:
            n = snd.read(out=block)
            n = n.shape[0] if isinstance(n, np.ndarray) else n
            last = n < _BLOCK_FRAMES
            decoded += n
            mono = block[:n, 0] if snd.channels == 1 else block[:n].mean(axis=1, dtype=np.float32)
            if check_finite and not np.isfinite(mono).all():
                raise InvalidAudioError(f"{label}: the audio holds NaN or infinite samples")
            chunk = resampler.resample_chunk(mono, last=last) if resampler else mono
            if filled + chunk.shape[0] > out.shape[0]:
                out = np.resize(out, max(2 * out.shape[0], filled + chunk.shape[0]))
            out[filled : filled + chunk.shape[0]] = chunk
            filled += chunk.shape[0]
            if last:
                break
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioDecodeError(
            f"{label}: decoding failed after {decoded} frames ({_reason(exc)})") from exc
    if max_duration_s is not None and decoded / in_rate > max_duration_s:
        raise AudioTooLongError(f"{label}: longer than max_duration_s={max_duration_s:g} s")
    return out[:filled], in_rate, decoded / in_rate


def _reason(exc: Exception) -> str:
    # libsndfile's own words, without the repr of the file object it was handed
    reason = getattr(exc, "error_string", None) or str(exc)
    if "possibly a pipe" in reason:
        # what libsndfile says of unrecognised bytes handed over as a file object
        reason = "format not recognised"
    return reason


def load_with_librosa(path: str, sample_rate: int,
                      storage_options: dict | None = None) -> np.ndarray:
    """librosa's loader (soundfile, then audioread), resampled with soxr HQ as well."""
    import librosa

    source = path if os.path.exists(path) else open_source(path, storage_options)
    try:
        y, _ = librosa.load(source, sr=sample_rate, mono=True, res_type="soxr_hq")
    except FileNotFoundError as exc:
        raise AudioReadError(f"file not found: {path}") from exc
    except Exception as exc:  # librosa raises many unrelated types for undecodable input
        raise AudioDecodeError(f"{path}: librosa could not decode it ({exc})") from exc
    return np.ascontiguousarray(y, dtype=np.float32)
