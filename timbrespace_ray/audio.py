"""Decoding any audio that libsndfile reads into the mono waveform the features expect.

Decoding streams in blocks through soxr's streaming resampler, so a long recording never
exists in memory at its original rate and channel count; the result equals a one-shot
`soxr.resample(..., quality="HQ")` of the channel mean (checked in the tests).
"""
from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioDecodeError, AudioReadError, AudioTooLongError, InvalidAudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")
SUPPORTED_FORMATS = "WAV, FLAC, OGG/Vorbis, Opus, MP3"
_BLOCK_FRAMES = 1 << 18  # ~5 s at 48 kHz per decoded block
_HEAD_BYTES = 4096  # read before libsndfile: enough for the fmt chunk after the usual others
# the source rates read: below 1 kHz or over 1 MHz a header is damaged (3 Hz would make a
# second of audio last hours); recorders write 8 kHz to 768 kHz
MIN_SOURCE_RATE, MAX_SOURCE_RATE = 1000, 1_000_000


def open_source(path: str, storage_options: dict | None = None) -> BinaryIO:
    """A binary file object for a local path or any fsspec URL, with read errors made typed."""
    from .storage import Location

    try:
        loc = Location.of(path, storage_options)
        if loc.is_local:
            audio_file_size(loc, path)
        return loc.fs.open(loc.path, "rb")
    except AudioReadError:
        raise
    except FileNotFoundError as exc:
        raise AudioReadError(f"file not found: {path}") from exc
    except PermissionError as exc:
        raise AudioReadError(f"permission denied reading {path}") from exc
    except OSError as exc:
        raise AudioReadError(f"could not read {path}: {exc}") from exc


def audio_file_size(loc, label: str) -> int:
    """The size of the audio file at `loc` (a Location), refusing a local file that is not a
    regular file (a FIFO, socket or device would be read for ever, a directory not at all)."""
    from .storage import regular_size

    size, kind = regular_size(loc)
    if kind:
        raise AudioReadError(f"{label} is not a regular file: it is {kind}; only regular files "
                             "are read (name audio files, not pipes, devices or folders)")
    return size


def _open_sound(source, label: str, storage_options: dict | None):
    """(file object, SoundFile) for a path/URL, bytes or binary file object, errors typed."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioDecodeError(f"{label}: the file is empty (0 bytes)")
        fileobj: BinaryIO = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        fileobj = open_source(os.fspath(source), storage_options)
    else:
        fileobj = source
    try:
        head = fileobj.read(_HEAD_BYTES)
        if not head:
            raise AudioDecodeError(f"{label}: the file is empty (0 bytes)")
        _check_wav_header(head, label)
        fileobj.seek(0)
        return fileobj, sf.SoundFile(fileobj)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        fileobj.close()
        raise AudioDecodeError(
            f"{label}: not a readable audio file ({_reason(exc)}); "
            f"supported formats: {SUPPORTED_FORMATS}") from exc
    except OSError as exc:
        fileobj.close()
        raise AudioReadError(f"{label}: could not read: {exc}") from exc
    except BaseException:
        fileobj.close()
        raise


def decode_audio(source: str | bytes | BinaryIO, sample_rate: int = 16000, *,
                 max_duration_s: float | None = None, name: str | None = None,
                 storage_options: dict | None = None,
                 channels: Sequence[int] | None = None) -> tuple[np.ndarray, int, float]:
    """Decode to mono float32 at `sample_rate`; returns (waveform, original rate, duration s).

    `source` is a path or URL, the file's bytes, or a seekable binary file object; `channels`
    are the channels averaged to mono (default: all).
    """
    label = name or (source if isinstance(source, str) else "<bytes>")
    fileobj, snd = _open_sound(source, label, storage_options)
    with fileobj, snd:
        stream = MonoStream(snd, sample_rate, label, channels)
        in_rate = stream.in_rate
        duration = snd.frames / in_rate if snd.frames > 0 else 0.0
        if max_duration_s is not None and duration > max_duration_s:
            raise AudioTooLongError(
                f"{label}: {duration / 60:.1f} min is longer than max_duration_s={max_duration_s:g} s; "
                "raise the limit in the config or split the recording"
            )
        out = np.empty(int(np.ceil(max(snd.frames, 0) * sample_rate / in_rate)) + 16, np.float32)
        filled = 0
        for chunk in stream:
            if filled + chunk.shape[0] > out.shape[0]:
                out = np.resize(out, max(2 * out.shape[0], filled + chunk.shape[0]))
            out[filled : filled + chunk.shape[0]] = chunk
            filled += chunk.shape[0]
        if max_duration_s is not None and stream.decoded / in_rate > max_duration_s:
            raise AudioTooLongError(f"{label}: longer than max_duration_s={max_duration_s:g} s")
        return out[:filled], in_rate, stream.decoded / in_rate


def _check_rate(snd: sf.SoundFile, label: str) -> int:
    in_rate = int(snd.samplerate)
    if not MIN_SOURCE_RATE <= in_rate <= MAX_SOURCE_RATE:
        raise AudioDecodeError(
            f"{label}: the header gives a sample rate of {in_rate} Hz, which no recorder writes "
            f"(read: {MIN_SOURCE_RATE} Hz to {MAX_SOURCE_RATE // 1000} kHz); the header is "
            "damaged: re-export the file")
    return in_rate


# WAVE format tags whose samples are plain integers or floats in containers of whole bytes
_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE = 1, 3, 0xFFFE


def _check_wav_header(head: bytes, label: str) -> None:
    """Refuse a WAV whose fmt chunk contradicts itself, which libsndfile reads as something:
    under 8 bits per sample (7-bit "PCM" decodes as 8-bit, i.e. noise), or a block size that
    is not the channels times the bytes of a sample. `head` is the file's first bytes; a fmt
    chunk not within them is left to libsndfile. Streaming recorders write 0xFFFFFFFF or too
    large RIFF and data sizes: those are read (libsndfile stops at the end of the file)."""
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return
    at = 12
    while at + 8 <= len(head):
        chunk, size = head[at:at + 4], int.from_bytes(head[at + 4:at + 8], "little")
        if chunk == b"fmt ":
            if size < 16 or at + 24 > len(head):
                return
            tag, channels, _, _, block, bits = struct.unpack_from("<HHIIHH", head, at + 8)
            if tag not in (_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE) or channels == 0:
                return  # codecs have blocks of their own; 0 channels libsndfile refuses
            if bits < 8:
                raise AudioDecodeError(
                    f"{label}: the WAV header gives {bits} bits per sample, which no recorder "
                    "writes (PCM has 8 to 32); the header is damaged: re-export the file")
            if block != channels * ((bits + 7) // 8):
                raise AudioDecodeError(
                    f"{label}: the WAV header contradicts itself: {channels} channel(s) of "
                    f"{bits} bits need blocks of {channels * ((bits + 7) // 8)} bytes, it says "
                    f"{block}; the header is damaged: re-export the file")
            return
        at += 8 + size + (size & 1)  # chunks are padded to an even size


class MonoStream:
    """The recording as consecutive mono float32 chunks at `sample_rate`, block by block.

    Chunks joined equal a one-shot HQ resample of the channel mean; a reader may stop early.
    """

    def __init__(self, snd: sf.SoundFile, sample_rate: int, label: str,
                 channels: Sequence[int] | None = None):
        self.snd, self.label = snd, label
        self.in_rate = _check_rate(snd, label)
        self.sample_rate = sample_rate
        self.decoded = 0  # frames read at the original rate
        self.channels = None if channels is None else list(channels)
        if self.channels is not None:
            bad = [c for c in self.channels if not 0 <= c < snd.channels]
            if bad or not self.channels:
                raise InvalidAudioError(
                    f"{label}: channel(s) {bad or self.channels} asked for, but the file has "
                    f"{snd.channels} channel(s) (0..{snd.channels - 1})")
            if self.channels == list(range(snd.channels)):
                self.channels = None

    def __iter__(self):
        snd = self.snd
        resampler = soxr.ResampleStream(self.in_rate, self.sample_rate, 1, dtype="float32",
                                        quality="HQ") if self.in_rate != self.sample_rate else None
        # only float PCM can carry NaN/inf; integer PCM and the codecs decode to finite values
        check_finite = snd.subtype in ("FLOAT", "DOUBLE")
        block = np.empty((_BLOCK_FRAMES, snd.channels), dtype=np.float32)
        try:
            while True:
                n = snd.read(out=block)
                n = n.shape[0] if isinstance(n, np.ndarray) else n
                last = n < _BLOCK_FRAMES
                self.decoded += n
                mono = self._mono(block[:n])
                if check_finite and not np.isfinite(mono).all():
                    raise InvalidAudioError(f"{self.label}: the audio holds NaN or infinite samples")
                yield resampler.resample_chunk(mono, last=last) if resampler else mono
                if last:
                    return
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioDecodeError(
                f"{self.label}: decoding failed after {self.decoded} frames ({_reason(exc)})") from exc

    def _mono(self, frames: np.ndarray) -> np.ndarray:
        if self.channels is not None:
            if len(self.channels) == 1:
                return np.ascontiguousarray(frames[:, self.channels[0]])
            return frames[:, self.channels].mean(axis=1, dtype=np.float32)
        return frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1, dtype=np.float32)


def decode_ranges(source: str | bytes | BinaryIO, ranges: Sequence[tuple[int, int]],
                  sample_rate: int = 16000, *, name: str | None = None,
                  storage_options: dict | None = None, channels: Sequence[int] | None = None
                  ) -> Iterator[tuple[int, np.ndarray, int, int]]:
    """Sample ranges [start, end) of a recording decoded at `sample_rate`, streamed.

    Yields (index into `ranges`, samples, length decoded so far, the file's own sample rate)
    as soon as each range is decoded; ranges that run past the end of the recording come last, clipped to it (the
    length then is the recording's). Only the samples from the earliest unfinished range on
    are kept, so memory is bounded by the longest range, not the recording; decoding stops
    after the last range. Every range must have 0 <= start < end.
    """
    label = name or (source if isinstance(source, str) else "<bytes>")
    pending = sorted(range(len(ranges)), key=lambda i: ranges[i][1])  # by end
    if not pending:
        return
    fileobj, snd = _open_sound(source, label, storage_options)
    with fileobj, snd:
        window = _Window()
        stream = MonoStream(snd, sample_rate, label, channels)
        for chunk in stream:
            window.append(chunk)
            while pending and ranges[pending[0]][1] <= window.end:
                i = pending.pop(0)
                yield i, window.slice(*ranges[i]), window.end, stream.in_rate
            if not pending:
                return
            window.drop_before(min(ranges[i][0] for i in pending))
        for i in pending:
            start, end = ranges[i]
            yield i, window.slice(start, min(end, window.end)), window.end, stream.in_rate


class _Window:
    """The decoded samples from some index of the recording on: appended at the end, dropped
    from the front, in one buffer grown by doubling (no copy of everything per chunk)."""

    def __init__(self):
        self.data = np.empty(1 << 16, np.float32)
        self.lo = self.hi = 0  # valid samples: data[lo:hi]
        self.offset = 0  # the recording's index of data[lo]

    @property
    def end(self) -> int:
        return self.offset + self.hi - self.lo

    def append(self, chunk: np.ndarray) -> None:
        n = chunk.shape[0]
        if self.hi + n > self.data.shape[0]:
            size = self.hi - self.lo
            if size + n > self.data.shape[0] // 2:
                grown = np.empty(max(2 * self.data.shape[0], 2 * (size + n)), np.float32)
            else:
                grown = self.data
            grown[:size] = self.data[self.lo : self.hi]
            self.data, self.lo, self.hi = grown, 0, size
        self.data[self.hi : self.hi + n] = chunk
        self.hi += n

    def drop_before(self, index: int) -> None:
        cut = min(max(0, index - self.offset), self.hi - self.lo)
        self.lo += cut
        self.offset += cut

    def slice(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) of the recording (a copy; empty where nothing is kept)."""
        a = min(max(start - self.offset, 0), self.hi - self.lo)
        b = min(max(end - self.offset, a), self.hi - self.lo)
        return self.data[self.lo + a : self.lo + b].copy()


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
