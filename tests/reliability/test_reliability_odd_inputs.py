"""Inputs that are not what their names say: files that are not regular files (a FIFO read would
never end), WAV headers no recorder writes, an unreachable server, an infinite segment bound,
and input locations that name nothing. Each input is one features row or one error row of a
documented type; a location that cannot be read is one line and exit 2. docs/reliability.md
("Audio headers, special files, lhotse, datasets, the command line") publishes these cases.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers.features_run import run_features
from timbrespace_ray.cli import main

TONE = (0.3 * np.sin(2 * np.pi * 220 * np.arange(1600) / 16000)).astype("<f4")
PCM16 = (TONE * 32767).astype("<i2").tobytes()  # 0.1 s at 16 kHz
# a hang of the stage on a FIFO is a failed test after this long, not a stuck suite
HANG_S = 60


def wav(*, rate=16000, channels=1, bits=16, block=None, data_size=None, riff_size=None,
        subformat: bytes | None = None) -> bytes:
    """A WAV file of PCM16 samples whose header says what it is told to."""
    block = channels * ((bits + 7) // 8) if block is None else block
    if subformat is None:
        fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    else:  # WAVE_FORMAT_EXTENSIBLE
        fmt = struct.pack("<HHIIHHHHI16s", 0xFFFE, channels, rate, rate * block, block, bits, 22,
                          bits, 0, subformat)
    size = len(PCM16) if data_size is None else data_size
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
            + struct.pack("<I", size) + PCM16)
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


# kind -> (file in the folder, its bytes, expected error type or None: processed, message text)
HEADERS = {
    "wav_rate_3hz": (wav(rate=3), "AudioDecodeError", "sample rate of 3 Hz"),
    "wav_rate_0": (wav(rate=0), "AudioDecodeError", "not a readable audio file"),
    "wav_7_bits": (wav(bits=7), "AudioDecodeError", "7 bits per sample"),
    "wav_12_bits": (wav(bits=12), None, None),  # 12-bit samples in 16-bit containers: valid
    "wav_0_channels": (wav(channels=0), "AudioDecodeError", "not a readable audio file"),
    "wav_block_align": (wav(block=3), "AudioDecodeError", "contradicts itself"),
    "wav_unknown_subformat": (wav(subformat=b"\x99" * 16), "AudioDecodeError",
                              "not a readable audio file"),
    # what streaming recorders write before they know the length: still read
    "wav_data_size_past_end": (wav(data_size=0xFFFFFFF0), None, None),
    "wav_riff_size_ffffffff": (wav(riff_size=0xFFFFFFFF, data_size=0xFFFFFFFF), None, None),
}
# kind -> (expected error type, message text); the input's file is made by `folder_run`
FOLDER = {
    "fifo_in_folder": ("AudioReadError", "not a regular file: it is a FIFO"),
    "socket_in_folder": ("AudioReadError", "not a regular file: it is a socket"),
    "fifo_named_metadata": ("AudioReadError", "not a regular file: it is a FIFO"),
    "broken_link": ("FileNotFoundError", "file not found"),
}
MANIFEST = {
    "fifo_in_manifest": ("AudioReadError", "not a regular file: it is a FIFO"),
    "dev_zero": ("AudioReadError", "not a regular file: it is a character device"),
    "dev_urandom": ("AudioReadError", "not a regular file: it is a character device"),
    "folder_in_manifest": ("AudioReadError", "not a regular file: it is a directory"),
    "http_closed_port": ("AudioReadError", "the server could not be reached"),
    "segment_end_inf": ("SegmentRangeError", "infinite bound"),
}
FOLDER_FILES = {"fifo_in_folder": "pipe.wav", "socket_in_folder": "sock.wav",
                "fifo_named_metadata": "metadata.parquet", "broken_link": "broken.wav"}


def _bounded(fn, *args, **kwargs):
    """fn's result, failing (not hanging) when it takes over HANG_S."""
    result: dict = {}

    def call():
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test
            result["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(HANG_S)
    assert not thread.is_alive(), f"no answer in {HANG_S} s: the stage hangs"
    if "error" in result:
        raise result["error"]
    return result["value"]


def _release(fifo) -> None:
    """Give a reader stuck opening `fifo` (a stage that hangs) an end of file, so that its thread
    ends and the test process can exit."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # nobody is reading it: nothing to release
        pass


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd") / "corpus"
    root.mkdir()
    (root / "good.wav").write_bytes(wav())
    for kind, (data, _, _) in HEADERS.items():
        (root / f"{kind}.wav").write_bytes(data)
    os.mkfifo(root / FOLDER_FILES["fifo_in_folder"])
    os.mkfifo(root / FOLDER_FILES["fifo_named_metadata"])
    os.mkfifo(root / "notes.txt")  # not named as an input: ignored, never opened
    os.symlink(root / "gone.wav", root / FOLDER_FILES["broken_link"])
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / FOLDER_FILES["socket_in_folder"]))
    try:
        return _bounded(run_features, root, root.parent / "out", max_error_share=1.0)
    finally:
        sock.close()
        for name in (FOLDER_FILES["fifo_in_folder"], FOLDER_FILES["fifo_named_metadata"]):
            _release(root / name)


@pytest.fixture(scope="module")
def manifest_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd-manifest")
    (root / "good.wav").write_bytes(wav())
    os.mkfifo(root / "pipe.wav")
    (root / "folder.wav").mkdir()
    paths = {"fifo_in_manifest": "pipe.wav", "dev_zero": "/dev/zero",
             "dev_urandom": "/dev/urandom", "folder_in_manifest": "folder.wav",
             "http_closed_port": f"http://127.0.0.1:{_closed_port()}/x.wav"}
    lines = ["path,utt_id,start,end", "good.wav,good,,", "good.wav,segment_end_inf,0,inf"]
    lines += [f"{path},{kind},," for kind, path in paths.items()]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    try:
        return _bounded(run_features, root / "manifest.csv", root / "out", max_error_share=1.0)
    finally:
        _release(root / "pipe.wav")


def _check(run, utt_id: str, expected: str | None, text: str | None) -> None:
    summary, rows, errors = run
    assert summary.inputs == len(rows) + len(errors)
    if expected is None:
        assert utt_id in rows and utt_id not in errors, errors.get(utt_id)
        return
    assert utt_id in errors and utt_id not in rows
    error = errors[utt_id]
    assert (error["error_type"], text in error["message"]) == (expected, True), error
    assert "\n" not in error["message"] and "[Errno" not in error["message"], error


@pytest.mark.parametrize("kind", list(HEADERS) + list(FOLDER))
def test_odd_file_in_a_folder(folder_run, kind):
    if kind in HEADERS:
        _check(folder_run, f"{kind}.wav", *HEADERS[kind][1:])
    else:
        _check(folder_run, FOLDER_FILES[kind], *FOLDER[kind])
    summary, rows, errors = folder_run
    assert "good.wav" in rows and "notes.txt" not in rows and "notes.txt" not in errors
    assert summary.inputs == 1 + len(HEADERS) + len(FOLDER)


@pytest.mark.parametrize("kind", list(MANIFEST))
def test_odd_row_in_a_manifest(manifest_run, kind):
    _check(manifest_run, kind, *MANIFEST[kind])
    assert "good" in manifest_run[1]


@pytest.mark.parametrize("given", ["", "   ", "s3://", "file://", "gs:///", "fifo"])
def test_an_input_naming_nothing_readable_is_one_line_and_exit_2(given, tmp_path, capsys):
    if given == "fifo":
        given = str(tmp_path / "manifest.csv")
        os.mkfifo(given)
    try:
        code = _bounded(main, ["features", "--input", given, "--output",
                               str(tmp_path / "out"), "--dry-run"])
    finally:
        _release(given)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("timbrespace-ray: error: the input"), err
    assert not Path(tmp_path / "out" / "_run").exists()


@pytest.mark.parametrize("flag, given", [("--output", ""), ("--output", "s3://"),
                                         ("--supervisions", "fifo")])
def test_an_output_or_supervisions_naming_nothing_readable_is_one_line_and_exit_2(
        flag, given, tmp_path, capsys):
    (tmp_path / "recordings.jsonl").write_text(json.dumps(  # a lhotse RecordingSet
        {"id": "r", "sources": [{"type": "file", "channels": [0], "source": "a.wav"}],
         "sampling_rate": 16000, "num_samples": 16000, "duration": 1.0}) + "\n")
    if given == "fifo":
        given = str(tmp_path / "supervisions.jsonl")
        os.mkfifo(given)
    args = {"--input": str(tmp_path / "recordings.jsonl"), "--output": str(tmp_path / "out"),
            flag: given}
    try:
        code = _bounded(main, ["features", *(a for kv in args.items() for a in kv), "--dry-run"])
    finally:
        _release(given)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert ("the output" if flag == "--output" else "is a FIFO") in err, err
    assert not list(tmp_path.glob("**/_run"))
