"""Fuzzed WebDataset tar shards: samples (audio + .json + .txt) with members duplicated,
removed or renamed, sidecars holding invalid JSON, JSON of another type or keys named like our
output columns, a shard cut at or inside a member, and flipped bytes. The generator knows each
sample it wrote: every audio member is one row or one error row, and a cut shard keeps the
samples wholly before the cut and says (one TarShardError row) that the rest is gone."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from helpers.fuzz import Case, run_and_check
from helpers.fuzz_inputs import (OUR_COLUMNS, byte_mutations, member_ends, mutate_bytes,
                                 tar_bytes, tiny_wav)

SIDECARS = [b"{", b"[1, 2]", b"1", b'"text"', b"null", b"\xff\xfe", b'{"a": {"b": 1}}']


def _members(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        out += [(f"s/k{i}.wav", tiny_wav()), (f"s/k{i}.json", json.dumps({"speaker": f"p{i}"}).encode()),
                (f"s/k{i}.txt", f"text {i}".encode())]
    return out


def _ids(n: int) -> list[str]:
    return [f"shard.tar/s/k{i}.wav" for i in range(n)]


@given(n=st.integers(1, 3), at=st.integers(0, 2),
       change=st.sampled_from(["duplicate_audio", "remove_audio", "remove_sidecars",
                               "rename_to_txt", "bad_json", "json_key_ours", "big_txt"]),
       sidecar=st.sampled_from(SIDECARS), ours=st.sampled_from(OUR_COLUMNS))
@example(n=2, at=0, change="duplicate_audio", sidecar=b"{", ours="pitch_hz")
@example(n=2, at=0, change="json_key_ours", sidecar=b"{", ours="pitch_hz")
@example(n=2, at=0, change="bad_json", sidecar=b"{", ours="pitch_hz")
@example(n=1, at=0, change="rename_to_txt", sidecar=b"{", ours="pitch_hz")
def test_sample_changes(n, at, change, sidecar, ours):
    at %= n
    members, ids = _members(n), _ids(n)
    audio, meta, text = members[3 * at:3 * at + 3]
    inputs, good, optional, duplicated = n, set(ids) - {ids[at]}, 0, False
    if change == "duplicate_audio":
        members.insert(3 * at + 1, audio)
        inputs, duplicated = n + 1, True
    elif change == "remove_audio":
        members.remove(audio)
        inputs, optional = n, 1  # a sample without audio may be no input
    elif change == "remove_sidecars":
        members.remove(meta)
        members.remove(text)
        good = set(ids)
    elif change == "rename_to_txt":
        members[members.index(audio)] = (f"s/k{at}.wav.txt", audio[1])
        optional = 1  # no audio name: no input, but then the shard is none either
    elif change == "bad_json":
        members[members.index(meta)] = (meta[0], sidecar)
    elif change == "json_key_ours":
        members[members.index(meta)] = (meta[0], json.dumps({ours: 1.5}).encode())
    elif change == "big_txt":
        members[members.index(text)] = (text[0], b"x" * (2 << 20))
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "in"
        folder.mkdir()
        (folder / "shard.tar").write_bytes(tar_bytes(members))
        case = Case(folder, inputs=inputs, good=good, optional=optional,
                    may_refuse=change == "rename_to_txt" and n == 1)
        if duplicated:
            case.duplicated = {ids[at]}
        run_and_check(case, Path(d) / "out")


@given(n=st.integers(1, 3), cut_member=st.integers(0, 8), inside=st.booleans())
@example(n=3, cut_member=2, inside=False)
def test_cut_shard_keeps_what_is_before_the_cut_and_says_so(n, cut_member, inside):
    members = _members(n)
    data = tar_bytes(members)
    ends = member_ends(members)
    cut_member %= len(members)
    cut = ends[cut_member] - (300 if inside else 0)
    ids = _ids(n)
    # samples whose three members all end before the cut are whole
    whole = {ids[i] for i in range(n) if ends[3 * i + 2] <= cut}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "in"
        folder.mkdir()
        (folder / "shard.tar").write_bytes(data[:cut])
        got = run_and_check(Case(folder, inputs=None, good=whole), Path(d) / "out")
        assert [e for e in got.errors if e["error_type"] == "TarShardError"], (
            f"a shard cut at byte {cut} of {len(data)}: no TarShardError row; rows "
            f"{[r['utt_id'] for r in got.rows]}")


@given(n=st.integers(1, 3), mutation=byte_mutations())
def test_shard_bytes_flipped(n, mutation):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "in"
        folder.mkdir()
        (folder / "shard.tar").write_bytes(mutate_bytes(tar_bytes(_members(n)), mutation))
        run_and_check(Case(folder, inputs=None), Path(d) / "out")
