"""A zoo of bad and unusual inputs in one corpus, with what the features stage must make of each.

`build_zoo(root)` writes every kind into `root` and returns {kind name: Kind}. Each kind lists
the inputs it adds (by utt_id, the path relative to the corpus root) and, for each input, the
expected outcome: a features row, or exactly one errors row of a given type whose message holds
a given text. `docs/reliability.md` publishes the same table; tests/reliability/test_reliability_inputs.py
checks the two agree.
"""
from __future__ import annotations

import io
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from helpers.corpus import SHORT

TWO_HOURS_S = 7200
TWO_HOURS_RATE = 8000


@dataclass(frozen=True)
class Expect:
    utt_id: str
    error_type: str | None = None  # None: processed into a features row
    message: str | None = None  # a text the error message must contain
    values: tuple[tuple[str, object], ...] = ()  # columns the features row must hold

    @property
    def processed(self) -> bool:
        return self.error_type is None


@dataclass(frozen=True)
class Kind:
    name: str
    injected: str  # what was injected, in words (the doc table's second column)
    expect: tuple[Expect, ...]
    not_inputs: tuple[str, ...] = ()  # files that must be ignored: neither a row nor an error


def speech(seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    """A mono float32 clip of real speech, resampled to `rate`."""
    x, sr = sf.read(SHORT[0], dtype="float32")
    x = x[: int(seconds * sr)]
    if rate != sr:
        import soxr

        x = soxr.resample(x, sr, rate).astype(np.float32)
    return x


def wav_bytes(x: np.ndarray, rate: int = 16000, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_long_wav(path: Path, seconds: int = TWO_HOURS_S, rate: int = TWO_HOURS_RATE) -> None:
    """A long mono 16-bit WAV of low-level noise, written in one-minute chunks."""
    rng = np.random.default_rng(7)
    block = (rng.standard_normal(rate * 60) * 30).astype(np.int16)  # about -60 dBFS
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16", format="WAV") as f:
        for _ in range(seconds // 60):
            f.write(block)


def _float_wav_with(value: float) -> bytes:
    x = speech(0.5).copy()
    x[1000:1010] = value
    return wav_bytes(x, subtype="FLOAT")


def build_zoo(root: Path, long_file: bool = True) -> dict[str, Kind]:
    """Write every kind under `root`; returns the kinds by name (in the order of the doc table)."""
    root.mkdir(parents=True, exist_ok=True)
    kinds: list[Kind] = []

    def add(name: str, injected: str, files: dict[str, bytes], expect: list[Expect],
            not_inputs: tuple[str, ...] = ()) -> None:
        for rel, data in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        kinds.append(Kind(name, injected, tuple(expect), not_inputs))

    good = wav_bytes(speech(1.0))
    decode_msg = "not a readable audio file"

    # --- bytes that are not audio -------------------------------------------------------
    add("zero_byte", "a 0-byte file named .wav", {"bad/zero.wav": b""},
        [Expect("bad/zero.wav", "AudioDecodeError", "the file is empty (0 bytes)")])
    add("truncated_header", "a WAV cut after 30 bytes, inside its header",
        {"bad/truncated_header.wav": good[:30]},
        [Expect("bad/truncated_header.wav", "AudioDecodeError", decode_msg)])
    add("truncated_data", "a WAV whose header promises 1 s but the data stops after 0.5 s",
        {"bad/truncated_data.wav": good[: len(good) // 2]},
        [Expect("bad/truncated_data.wav")])
    add("random_bytes", "4 kB of random bytes named .wav",
        {"bad/random.wav": np.random.default_rng(1).bytes(4096)},
        [Expect("bad/random.wav", "AudioDecodeError", "supported formats")])
    add("text_as_wav", "a text file named .wav",
        {"bad/readme.wav": b"This is not audio.\nJust some notes saved with the wrong name.\n" * 20},
        [Expect("bad/readme.wav", "AudioDecodeError", decode_msg)])
    add("riff_garbage", "a RIFF/WAVE header followed by garbage chunks",
        {"bad/riff_garbage.wav": b"RIFF" + struct.pack("<I", 1000) + b"WAVEfmt " + bytes(range(256)) * 3},
        [Expect("bad/riff_garbage.wav", "AudioDecodeError", decode_msg)])
    add("float_nan", "a 32-bit float WAV with NaN samples", {"bad/nan.wav": _float_wav_with(np.nan)},
        [Expect("bad/nan.wav", "InvalidAudioError", "NaN or infinite samples")])
    add("float_inf", "a 32-bit float WAV with +inf samples", {"bad/inf.wav": _float_wav_with(np.inf)},
        [Expect("bad/inf.wav", "InvalidAudioError", "NaN or infinite samples")])

    # --- sample formats, channels, rates, lengths ------------------------------------------
    add("pcm_u8", "8-bit unsigned integer PCM WAV", {"formats/pcm_u8.wav": wav_bytes(speech(), subtype="PCM_U8")},
        [Expect("formats/pcm_u8.wav")])
    add("pcm_24", "24-bit integer PCM WAV", {"formats/pcm_24.wav": wav_bytes(speech(), subtype="PCM_24")},
        [Expect("formats/pcm_24.wav")])
    add("pcm_32", "32-bit integer PCM WAV", {"formats/pcm_32.wav": wav_bytes(speech(), subtype="PCM_32")},
        [Expect("formats/pcm_32.wav")])
    add("float64", "64-bit float WAV", {"formats/double.wav": wav_bytes(speech(), subtype="DOUBLE")},
        [Expect("formats/double.wav")])
    eight = np.stack([speech() * (0.2 + 0.1 * c) for c in range(8)], axis=1)
    add("channels_8", "an 8-channel WAV", {"formats/eight_channels.wav": wav_bytes(eight)},
        [Expect("formats/eight_channels.wav", values=(("duration_s", 1.0),))])
    for rate in (8000, 96000, 192000):
        add(f"rate_{rate // 1000}k", f"a {rate // 1000} kHz WAV",
            {f"rates/{rate // 1000}k.wav": wav_bytes(speech(1.0, rate), rate)},
            [Expect(f"rates/{rate // 1000}k.wav", values=(("sample_rate", rate), ("duration_s", 1.0)))])
    add("clip_10ms", "a 10 ms clip", {"lengths/ten_ms.wav": wav_bytes(speech(0.01))},
        [Expect("lengths/ten_ms.wav", values=(("duration_s", 0.01),))])
    add("no_samples", "a valid WAV header with zero samples",
        {"lengths/no_samples.wav": wav_bytes(np.zeros(0, np.float32))},
        [Expect("lengths/no_samples.wav", "EmptyAudioError", "holds no audio samples")])
    if long_file:
        write_long_wav(root / "lengths" / "two_hours.wav")
        kinds.append(Kind("two_hours", "a 2-hour 8 kHz 16-bit WAV of low noise (7200 s, the "
                          "default features.max_duration_s)",
                          (Expect("lengths/two_hours.wav", values=(("duration_s", float(TWO_HOURS_S)),
                                                                  ("sample_rate", TWO_HOURS_RATE))),)))

    # --- codecs ------------------------------------------------------------------------------
    x = speech(1.0)
    add("mp3", "MP3", {"codecs/a.mp3": wav_bytes(x, fmt="MP3", subtype="MPEG_LAYER_III")},
        [Expect("codecs/a.mp3")])
    add("ogg_vorbis", "OGG/Vorbis", {"codecs/b.ogg": wav_bytes(x, fmt="OGG", subtype="VORBIS")},
        [Expect("codecs/b.ogg")])
    add("opus", "Opus (in OGG)", {"codecs/c.opus": wav_bytes(x, fmt="OGG", subtype="OPUS")},
        [Expect("codecs/c.opus")])
    add("flac", "FLAC", {"codecs/d.flac": wav_bytes(x, fmt="FLAC", subtype="PCM_16")},
        [Expect("codecs/d.flac")])
    add("flac_named_wav", "a FLAC file named .wav", {"codecs/really_flac.wav": wav_bytes(x, fmt="FLAC", subtype="PCM_16")},
        [Expect("codecs/really_flac.wav")])

    # --- names and folders ---------------------------------------------------------------------
    add("name_spaces", "a file name with spaces", {"names/my first recording .wav": good},
        [Expect("names/my first recording .wav")])
    add("name_non_ascii", "a non-ASCII file name (accents, CJK, emoji)",
        {"names/ñandú café 日本語 🎤.wav": good}, [Expect("names/ñandú café 日本語 🎤.wav")])
    add("upper_case_ext", "upper-case extensions .WAV and .FLAC",
        {"names/LOUD.WAV": good, "names/QUIET.FLAC": wav_bytes(x, fmt="FLAC", subtype="PCM_16")},
        [Expect("names/LOUD.WAV"), Expect("names/QUIET.FLAC")])
    add("nested_folders", "a file six folders deep", {"n1/n2/n3/n4/n5/n6/deep.wav": good},
        [Expect("n1/n2/n3/n4/n5/n6/deep.wav")])
    add("same_name_two_folders", "the same file name in two folders",
        {"spk_a/utt.wav": good, "spk_b/utt.wav": wav_bytes(speech(0.8))},
        [Expect("spk_a/utt.wav"), Expect("spk_b/utt.wav")])
    add("folder_named_wav", "a folder named like audio (x.wav/) holding a file",
        {"dir.wav/inner.wav": good}, [Expect("dir.wav/inner.wav")])
    add("not_audio_ignored", "a text file, a hidden .wav and a .wav.bak beside the audio",
        {"names/notes.txt": b"notes", "names/.hidden.wav": good, "names/old.wav.bak": good},
        [], not_inputs=("names/notes.txt", "names/.hidden.wav", "names/old.wav.bak"))

    # --- tar shards -------------------------------------------------------------------------------
    shard_dir = root / "shards"
    shard_dir.mkdir(exist_ok=True)
    _tar(shard_dir / "corrupt_member.tar",
         [("s/good.wav", good), ("s/corrupt.wav", np.random.default_rng(2).bytes(3000)),
          ("s/readme.txt", b"not audio, not an input")])
    kinds.append(Kind("tar_corrupt_member", "a tar shard with a good member, a corrupt one and a "
                      "text member", (Expect("shards/corrupt_member.tar/s/good.wav"),
                                      Expect("shards/corrupt_member.tar/s/corrupt.wav",
                                             "AudioDecodeError", decode_msg))))
    _tar(shard_dir / "escape.tar", [("../escape.wav", good), ("/tmp/tsr-abs-escape.wav", good)])
    kinds.append(Kind("tar_path_traversal", "tar members named ../escape.wav and "
                      "/tmp/tsr-abs-escape.wav (read in memory, never written to disk)",
                      (Expect("shards/escape.tar/../escape.wav"),
                       Expect("shards/escape.tar//tmp/tsr-abs-escape.wav"))))
    buf = io.BytesIO()
    _tar_to(buf, [("t/first.wav", good), ("t/second.wav", good)])
    data = buf.getvalue()
    (shard_dir / "truncated.tar").write_bytes(data[: 512 + len(good) + 512 + 4000])
    kinds.append(Kind("tar_truncated", "a tar shard cut off in the middle of its second member",
                      (Expect("shards/truncated.tar/t/first.wav"),
                       Expect("shards/truncated.tar/t/second.wav", "TarShardError",
                              "truncated or corrupt in member"))))
    with tarfile.open(shard_dir / "links.tar", "w") as tar:
        info = tarfile.TarInfo("l/real.wav")
        info.size = len(good)
        tar.addfile(info, io.BytesIO(good))
        for name, link_type in (("l/soft.wav", tarfile.SYMTYPE), ("l/hard.wav", tarfile.LNKTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = link_type, "l/real.wav"
            tar.addfile(info)
    kinds.append(Kind("tar_link_members", "a tar shard with a WAV member, a symbolic link and a "
                      "hard link to it", (Expect("shards/links.tar/l/real.wav"),
                                          Expect("shards/links.tar/l/soft.wav", "TarShardError",
                                                 "is a symbolic link to 'l/real.wav'"),
                                          Expect("shards/links.tar/l/hard.wav", "TarShardError",
                                                 "is a hard link to 'l/real.wav'"))))
    (shard_dir / "not_a_tar.tar").write_bytes(np.random.default_rng(3).bytes(5000))
    kinds.append(Kind("tar_not_a_tar", "random bytes named .tar",
                      (Expect("shards/not_a_tar.tar/", "TarShardError", "not a readable tar archive"),)))
    return {k.name: k for k in kinds}


def _tar_to(fileobj, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def expectations(kinds: dict[str, Kind]) -> dict[str, Expect]:
    """Every expected input by utt_id."""
    return {e.utt_id: e for k in kinds.values() for e in k.expect}


# the kinds build_zoo writes, in order (tests are parametrized over these at collection time)
KIND_NAMES = (
    "zero_byte", "truncated_header", "truncated_data", "random_bytes", "text_as_wav",
    "riff_garbage", "float_nan", "float_inf", "pcm_u8", "pcm_24", "pcm_32", "float64",
    "channels_8", "rate_8k", "rate_96k", "rate_192k", "clip_10ms", "no_samples", "two_hours",
    "mp3", "ogg_vorbis", "opus", "flac", "flac_named_wav", "name_spaces", "name_non_ascii",
    "upper_case_ext", "nested_folders", "same_name_two_folders", "folder_named_wav",
    "not_audio_ignored", "tar_corrupt_member", "tar_path_traversal", "tar_truncated",
    "tar_link_members", "tar_not_a_tar",
)
MANIFEST_KINDS = ("manifest_missing_file", "manifest_relative_path", "two_hours_over_limit")
MANIFEST_MAX_DURATION_S = 3600.0


def build_manifest(path: Path, zoo_root: Path) -> dict[str, Kind]:
    """A CSV manifest beside the zoo: a missing file, a relative path with spaces, and the
    2-hour recording, to be run with features.max_duration_s=3600."""
    rel = zoo_root.relative_to(path.parent).as_posix()
    rows = [(f"{rel}/missing/gone.wav", "spk9/gone"),
            (f"{rel}/names/my first recording .wav", "spk9/spaces"),
            (str(zoo_root / "lengths" / "two_hours.wav"), "spk9/two_hours")]
    path.write_text("path,utt_id\n" + "".join(f"{p},{u}\n" for p, u in rows))
    kinds = [
        Kind("manifest_missing_file", "a manifest row whose file does not exist",
             (Expect("spk9/gone", "FileNotFoundError", "file not found"),)),
        Kind("manifest_relative_path", "a manifest row with a relative path holding spaces",
             (Expect("spk9/spaces"),)),
        Kind("two_hours_over_limit", "the 2-hour WAV with features.max_duration_s=3600",
             (Expect("spk9/two_hours", "AudioTooLongError", "longer than max_duration_s=3600"),)),
    ]
    return {k.name: k for k in kinds}


def outcome(kind: Kind) -> str:
    """The doc table's 'expected outcome' cell."""
    if not kind.expect:
        return "ignored: not an input (no row, no error)"
    if len(kind.expect) == 1:
        e = kind.expect[0]
        return "processed" if e.processed else f"error `{e.error_type}`: \"{e.message}\""
    parts = []
    for e in kind.expect:
        name = e.utt_id.rsplit("/", 1)[-1] or e.utt_id
        parts.append(f"`{name}` processed" if e.processed
                     else f"`{name}` error `{e.error_type}`: \"{e.message}\"")
    return "; ".join(parts)
