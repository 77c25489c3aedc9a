"""Valid inputs of every form, small enough to build per generated case, and the mutations the
fuzz suite (tests/fuzz/) applies to them. Each builder knows what it built: the utterances it
wrote and their ids, which the harness (helpers/fuzz.py) holds the stage to."""
from __future__ import annotations

import io
import json
import os
import socket
import struct
import tarfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from hypothesis import strategies as st

from helpers.corpus import SHORT, add_tar_member

RATE = 16000
SECONDS = 0.25


@lru_cache(maxsize=None)
def speech(rate: int = RATE) -> np.ndarray:
    """SECONDS of real speech (int16), from the middle of a bundled recording."""
    x, sr = sf.read(SHORT[0], dtype="int16")
    assert sr == RATE
    x = x[RATE // 2:RATE // 2 + int(SECONDS * RATE)]
    return x if rate == RATE else np.interp(
        np.arange(int(SECONDS * rate)) * RATE / rate, np.arange(len(x)), x).astype(np.int16)


@lru_cache(maxsize=None)
def encoded(fmt: str, subtype: str | None = None) -> bytes:
    """The speech encoded by libsndfile in container `fmt` (WAV, FLAC, OGG, MP3)."""
    buf = io.BytesIO()
    sf.write(buf, speech(), RATE, format=fmt, subtype=subtype)
    return buf.getvalue()


def tiny_wav() -> bytes:
    return encoded("WAV", "PCM_16")


# --- byte-level mutations ----------------------------------------------------------------------

def byte_mutations(max_flips: int = 6) -> st.SearchStrategy:
    """(flips, cut): bytes to overwrite at fractional positions, and where to cut (a fraction of
    the length, or None). Positions are fractions so that one strategy serves any input."""
    flip = st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255))
    return st.tuples(st.lists(flip, max_size=max_flips),
                     st.one_of(st.none(), st.floats(0, 1, exclude_max=True)))


def mutate_bytes(data: bytes, mutation) -> bytes:
    flips, cut = mutation
    out = bytearray(data)
    for at, value in flips:
        if out:
            out[int(at * len(out))] = value
    return bytes(out if cut is None else out[:int(cut * len(out))])


# --- WAV headers, field by field -------------------------------------------------------------------

def wav_fields() -> st.SearchStrategy:
    """The fmt and data chunk fields of a PCM WAV: valid values, edge values and any value."""
    u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
    return st.fixed_dictionaries({
        "format_tag": st.one_of(st.sampled_from([1, 3, 0xFFFE, 0, 2, 0x55]), u16),
        "channels": st.one_of(st.sampled_from([1, 2, 0, 9, 255]), u16),
        "rate": st.one_of(st.sampled_from([16000, 8000, 0, 1, 3, 400000, 0xFFFFFFFF]), u32),
        "byte_rate": st.one_of(st.none(), u32),  # None: consistent with the others
        "block_align": st.one_of(st.none(), u16),
        "bits": st.one_of(st.sampled_from([16, 8, 24, 32, 0, 1, 7, 12, 64]), u16),
        "data_size": st.one_of(st.none(), st.sampled_from([0, 1, 0xFFFFFFFF]), u32),
        "riff_size": st.one_of(st.none(), st.sampled_from([0, 4, 0xFFFFFFFF]), u32),
    })


def wav_with(fields: dict, payload: bytes | None = None) -> bytes:
    """A 44-byte canonical WAV header of `fields` over `payload` (the speech's 16-bit samples)."""
    payload = speech().tobytes() if payload is None else payload
    channels, bits = fields["channels"], fields["bits"]
    block_align = fields["block_align"]
    if block_align is None:
        block_align = (channels * bits // 8) & 0xFFFF
    byte_rate = fields["byte_rate"]
    if byte_rate is None:
        byte_rate = (fields["rate"] * block_align) & 0xFFFFFFFF
    data_size = len(payload) if fields["data_size"] is None else fields["data_size"]
    riff_size = 36 + len(payload) if fields["riff_size"] is None else fields["riff_size"]
    return (b"RIFF" + struct.pack("<I", riff_size & 0xFFFFFFFF) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, fields["format_tag"], channels,
                                    fields["rate"], byte_rate, block_align, bits)
            + b"data" + struct.pack("<I", data_size) + payload)


# --- special files ---------------------------------------------------------------------------------

SPECIAL_FILES = ("fifo", "empty_dir", "symlink_loop", "self_symlink", "dangling_symlink",
                 "symlink_to_dir", "socket", "dev_null_link", "dev_zero_link")


def make_special(kind: str, path: Path) -> None:
    """A file system entry named `path` (an audio name) that is not a regular file."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "empty_dir":
        path.mkdir()
    elif kind == "symlink_loop":
        other = path.with_name("loop-" + path.name)
        os.symlink(other.name, path)
        os.symlink(path.name, other)
    elif kind == "self_symlink":
        os.symlink(path.name, path)
    elif kind == "dangling_symlink":
        os.symlink("nowhere/gone.wav", path)
    elif kind == "symlink_to_dir":
        (path.parent / "target-dir").mkdir()
        os.symlink("target-dir", path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif kind == "dev_null_link":
        os.symlink("/dev/null", path)
    elif kind == "dev_zero_link":  # endless: a reader must stop at max_file_bytes
        os.symlink("/dev/zero", path)
    else:
        raise ValueError(kind)


# --- manifests: rows, then a writer per format --------------------------------------------------------

# names of the stage's own output columns and of columns the readers consume
OUR_COLUMNS = ("pitch_hz", "utt_id", "source", "f0", "duration_s", "sample_rate", "n_frames",
               "stage", "error_type")
ODD_VALUES = ("", " ", "abc", "-1", "nan", "inf", "1e400", "0x10", "NULL", "\u00e9\u4e2d\U0001F600",
              "\x00", "a\tb", 'say "hi"', "x" * (2 << 20))


def write_rows(path: Path, rows: list[dict], fmt: str, columns: list[str]) -> None:
    """`rows` (values may be any JSON value, or missing) as a manifest of `fmt` with `columns`
    in that order; a column may be named twice (CSV, TSV: the header says it twice)."""
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"

        def cell(v) -> str:
            if v is None:
                return ""
            text = v if isinstance(v, str) else json.dumps(v)
            if fmt == "csv" and any(c in text for c in ',"\n\r'):
                return '"' + text.replace('"', '""') + '"'
            return text
        lines = [sep.join(columns)] + [sep.join(cell(r.get(c)) for c in columns) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({c: r[c] for c in columns if c in r}) + "\n"
                                for r in rows))
    elif fmt == "parquet":
        names = list(dict.fromkeys(columns))
        arrays = []
        for c in names:
            values = [r.get(c) for r in rows]
            try:
                array = pa.array(values)
                if pa.types.is_struct(array.type) and array.type.num_fields == 0:
                    raise pa.ArrowInvalid("Parquet holds no struct without fields")  # `{}`
                arrays.append(array)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed: as text
                arrays.append(pa.array([None if v is None else str(v) for v in values]))
        pq.write_table(pa.table(arrays, names=names), path)
    else:
        raise ValueError(fmt)


# --- tar shards ----------------------------------------------------------------------------------------

def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            add_tar_member(tar, name, data)
    return buf.getvalue()


def member_ends(members: list[tuple[str, bytes]]) -> list[int]:
    """The offset at which each member's data (padded to 512) ends in `tar_bytes(members)`."""
    ends, at = [], 0
    for _, data in members:
        at += 512 + -(-len(data) // 512) * 512
        ends.append(at)
    return ends
