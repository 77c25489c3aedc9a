"""Fuzzed audio files beside a good one in a folder: WAV header fields, byte flips and cuts of
every container libsndfile reads, random bytes under audio names, and entries that are not
regular files. Each folder holds two inputs: the good file must be a features row, the other
one row or one error row of a documented type; the stage never hangs or raises."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from helpers.fuzz import Case, run_and_check
from helpers.fuzz_inputs import (SPECIAL_FILES, byte_mutations, encoded, make_special,
                                 mutate_bytes, tiny_wav, wav_fields, wav_with)

CONTAINERS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", None), ".ogg": ("OGG", "VORBIS"),
              ".opus": ("OGG", "OPUS"), ".mp3": ("MP3", None)}


def _folder_case(tmp: Path, name: str, data: bytes | None = None) -> Case:
    folder = tmp / "in"
    folder.mkdir()
    (folder / "good.wav").write_bytes(tiny_wav())
    if data is not None:
        (folder / name).write_bytes(data)
    return Case(folder, inputs=2, good={"good.wav"})


VALID_BITS = {8, 16, 24, 32, 64}


@given(fields=wav_fields())
@example(fields={"format_tag": 1, "channels": 1, "rate": 16000, "byte_rate": None,
                 "block_align": None, "bits": 7, "data_size": None, "riff_size": None})
@example(fields={"format_tag": 1, "channels": 1, "rate": 3, "byte_rate": None,
                 "block_align": None, "bits": 16, "data_size": None, "riff_size": None})
def test_wav_header_fields(fields):
    with tempfile.TemporaryDirectory() as d:
        case = _folder_case(Path(d), "fuzz.wav", wav_with(fields))
        got = run_and_check(case, Path(d) / "out")
        row = next((r for r in got.rows if r["utt_id"] == "fuzz.wav"), None)
        if row is not None:  # analysed: then from what the header says, not from garbage
            assert fields["bits"] in VALID_BITS and fields["channels"] > 0, (
                f"a header of {fields['bits']} bits, {fields['channels']} channels gave a row")
            assert row["sample_rate"] == fields["rate"], row["sample_rate"]
            assert math.isfinite(row["duration_s"]) and row["duration_s"] > 0


@given(ext=st.sampled_from(sorted(CONTAINERS)), mutation=byte_mutations())
@example(ext=".wav", mutation=([], 0.5))
@example(ext=".flac", mutation=([(0.5, 0)] * 3, None))
def test_containers_with_flipped_and_cut_bytes(ext, mutation):
    with tempfile.TemporaryDirectory() as d:
        data = mutate_bytes(encoded(*CONTAINERS[ext]), mutation)
        run_and_check(_folder_case(Path(d), "fuzz" + ext, data), Path(d) / "out")


@given(ext=st.sampled_from(sorted(CONTAINERS)), data=st.binary(max_size=4096))
def test_random_bytes_under_audio_names(ext, data):
    with tempfile.TemporaryDirectory() as d:
        run_and_check(_folder_case(Path(d), "fuzz" + ext, data), Path(d) / "out")


@given(kind=st.sampled_from(SPECIAL_FILES), ext=st.sampled_from([".wav", ".flac", ".tar"]),
       where=st.sampled_from(["folder", "named", "manifest"]))
@example(kind="fifo", ext=".wav", where="named")
@example(kind="fifo", ext=".wav", where="manifest")
@example(kind="symlink_loop", ext=".wav", where="folder")
@example(kind="fifo", ext=".tar", where="manifest")  # a shard's columns sniffed at planning
@example(kind="dev_zero_link", ext=".tar", where="manifest")
def test_special_files_named_as_inputs(kind, ext, where):
    """An entry that is not a regular file, under an input's name: in a folder it is one error
    row or no input at all; named as the input, one error row or the one-line refusal; named by
    a manifest row, that row's error row. Never a features row, never a wait."""
    with tempfile.TemporaryDirectory() as d:
        case = _folder_case(Path(d), "")
        odd = case.input / ("odd" + ext)
        make_special(kind, odd)
        if where == "folder":
            # a link loop is two links, each named like an input
            extra = 1 + (kind == "symlink_loop")
            case.inputs, case.optional = 1 + extra, extra
        elif where == "named":
            case = Case(odd, inputs=1, optional=1, may_refuse=True)
        else:
            manifest = Path(d) / "manifest.csv"
            manifest.write_text(f"path,utt_id\n{case.input}/good.wav,good\n{odd},odd\n")
            case = Case(manifest, inputs=2, good={"good"})
        got = run_and_check(case, Path(d) / "out")
        assert not [r for r in got.rows if "odd" in r["utt_id"]], got.rows
