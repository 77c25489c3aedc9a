"""WebDataset tar shards and their sidecars under bad input: every audio member is exactly one
features row or one error row, and a shard's metadata is kept exactly or its sample says why."""
from __future__ import annotations

import gzip
import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from helpers.features_run import run_features
from timbrespace_ray.inputs.tar import SampleColumns, iter_samples

RATE = 16000


def _wav(seconds: float = 0.25, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    noise = np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 0.1
    sf.write(buf, noise.astype(np.float32), RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


GOOD = _wav()


def _js(doc) -> bytes:
    return json.dumps(doc).encode()


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


THREE = [("t/first.wav", GOOD), ("t/second.wav", GOOD), ("t/third.wav", GOOD)]
FIRST_END = 512 + -(-len(GOOD) // 512) * 512  # its header and its data, in 512-byte blocks
NOT_UTF8 = b"caf\xe9.wav".decode("utf-8", "surrogateescape")

# shard -> its members; `a_first.tar` is listed first, so its samples give the columns
SHARDS = {
    "a_first.tar": _tar([("s1.wav", GOOD), ("s1.json", _js({"speaker": "ann", "age": 30}))]),
    "dup.tar": _tar([("a.wav", GOOD), ("a.json", _js({"speaker": "x"})), ("b.wav", GOOD),
                     ("a.wav", GOOD), ("a.json", _js({"speaker": "y"}))]),
    "cut_at_member.tar": _tar(THREE)[:FIRST_END],
    "cut_past_member.tar": _tar(THREE)[:FIRST_END + 100],
    "text_only.tar": _tar([("a.txt", b"hello"), ("b.txt", b"world")]),
    "keys.tar": _tar([
        ("k1.wav", GOOD), ("k1.json", _js({"utt_id": "mine"})),
        ("k2.wav", GOOD), ("k2.json", _js({"pitch_hz": 120})),
        ("k3.wav", GOOD), ("k3.json", b"{not json"),
        ("k4.wav", GOOD), ("k4.json", _js({"age": "old"})),
        ("k5.wav", GOOD), ("k5.json", _js({"speaker": ["a", "b"]})),
        ("k6.wav", GOOD), ("k6.json", _js({"speaker": 7, "age": 41})),
        ("k7.wav", GOOD), ("k7.json", _js({"mood": "calm"})),
        ("k8.wav", GOOD), ("k8.json", _js(["speaker"])),
        ("k9.wav", GOOD), ("k9.json", _js({"speaker": "a"})), ("k9.txt", b"x"),
        ("k9.json", _js({"speaker": "b"})),
    ]),
    "odd.tar": _tar([(NOT_UTF8, GOOD), ("big.wav", GOOD), ("big.json", b" " * (2 << 20)),
                     ("orphan.json", _js({"speaker": "z"}))]),
    "whole.tar.gz": gzip.compress(_tar([("g.wav", GOOD), ("g.json", _js({"speaker": "gz"}))])),
    "concat.tar": _tar([("c1.wav", GOOD)]) + _tar([("c2.wav", GOOD)]),
    "cut.tar.gz": gzip.compress(_tar(THREE)[:FIRST_END]),
}

# utt_id -> (error_type, words of its message) or the features row's metadata
EXPECTED = {
    "a_first.tar/s1.wav": {"speaker": "ann", "age": 30},
    "dup.tar/a.wav": {"speaker": "x", "age": None},
    "dup.tar/b.wav": {"speaker": None, "age": None},
    "dup.tar/a.wav#2": ("TarShardError", "an earlier member of the shard has this name"),
    "cut_at_member.tar/t/first.wav": {"speaker": None, "age": None},
    "cut_at_member.tar/": ("TarShardError", "stops after member 't/first.wav' without the "
                                            "end-of-archive marker"),
    "cut_past_member.tar/t/first.wav": {"speaker": None, "age": None},
    "cut_past_member.tar/": ("TarShardError", "stops after member 't/first.wav'"),
    "text_only.tar/": ("TarShardError", "holds no audio member: its members are a.txt, b.txt"),
    "keys.tar/k1.wav": ("MetadataError", "field 'utt_id' of 'k1.json' has the name of a column"),
    "keys.tar/k2.wav": ("MetadataError", "field 'pitch_hz' of 'k2.json' has the name of a column"),
    "keys.tar/k3.wav": ("MetadataError", "sidecar 'k3.json' is not valid JSON"),
    "keys.tar/k4.wav": ("MetadataError", "field 'age' of 'k4.json' is \"old\" (string), where "
                                         "its column holds int64 values"),
    "keys.tar/k5.wav": ("MetadataError", "field 'speaker' of 'k5.json' is [\"a\", \"b\"] (a list)"),
    "keys.tar/k6.wav": {"speaker": "7", "age": 41},  # a string column keeps 7 as its JSON text
    "keys.tar/k7.wav": ("MetadataError", "field 'mood' of 'k7.json' is not among the metadata "
                                         "columns"),
    "keys.tar/k8.wav": ("MetadataError", "sidecar 'k8.json' holds [\"speaker\"], not a JSON object"),
    "keys.tar/k9.wav": ("MetadataError", "field 'speaker' is \"a\" in 'k9.json' and \"b\" in "
                                         "'k9.json'"),
    "odd.tar/caf\\xe9.wav": {"speaker": None, "age": None},
    "odd.tar/big.wav": ("MetadataError", "sidecar 'big.json' is 2.0 MiB, over the 1 MiB"),
    "whole.tar.gz/g.wav": {"speaker": "gz", "age": None},
    "concat.tar/c1.wav": {"speaker": None, "age": None},
    "concat.tar/": ("TarShardError", "holds data after its end-of-archive marker (which follows "
                                     "member 'c1.wav')"),
    "cut.tar.gz/t/first.wav": {"speaker": None, "age": None},
    "cut.tar.gz/": ("TarShardError", "without the end-of-archive marker"),
}


@pytest.fixture(scope="module")
def shards_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("tar")
    for name, data in SHARDS.items():
        (base / "corpus" / name).parent.mkdir(exist_ok=True)
        (base / "corpus" / name).write_bytes(data)
    return run_features(base / "corpus", base / "out", max_error_share=1.0)


@pytest.mark.parametrize("utt_id", EXPECTED)
def test_each_member_is_one_row_or_one_error_row(shards_run, utt_id):
    _, rows, errors = shards_run
    expected = EXPECTED[utt_id]
    if isinstance(expected, dict):
        assert utt_id in rows and utt_id not in errors, errors.get(utt_id)
        assert {k: rows[utt_id][k] for k in expected} == expected
    else:
        assert utt_id in errors and utt_id not in rows
        error_type, words = expected
        assert errors[utt_id]["error_type"] == error_type
        assert words in errors[utt_id]["message"] and "\n" not in errors[utt_id]["message"]


def test_every_member_is_accounted_for_once(shards_run):
    summary, rows, errors = shards_run
    assert sorted([*rows, *errors]) == sorted(EXPECTED)
    assert summary.inputs == summary.rows + sum(summary.errors.values()) == len(EXPECTED)


class _Stream(io.RawIOBase):
    """A shard read as object storage streams it: forward only, in small reads."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def readable(self):
        return True

    def readinto(self, buf):
        n = min(len(buf), 1000, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


@pytest.mark.parametrize("cut, kept", [(FIRST_END, ["first"]), (FIRST_END + 100, ["first"]),
                                       (2 * FIRST_END, ["first", "second"])])
def test_a_shard_cut_short_is_found_in_a_stream_that_cannot_seek(cut, kept):
    rows = list(iter_samples(_Stream(_tar(THREE)[:cut]), "s.tar", "file:///s.tar", 1 << 30,
                             SampleColumns({})))
    assert [(utt_id, type(data).__name__) for utt_id, _, data, _ in rows] == [
        *((f"s.tar/t/{name}.wav", "bytes") for name in kept), ("s.tar/", "TarShardError")]
    assert f"stops after member 't/{kept[-1]}.wav'" in str(rows[-1][2])


def test_a_whole_shard_of_any_writer_ends_cleanly():
    """tarfile pads to 10240-byte records; other writers stop after the two zero blocks."""
    whole = _tar(THREE)
    end = FIRST_END * 3 + 1024
    for data in (whole, whole[:end]):
        rows = list(iter_samples(_Stream(data), "s.tar", "file:///s.tar", 1 << 30,
                                 SampleColumns({})))
        assert [type(d).__name__ for _, _, d, _ in rows] == ["bytes"] * 3


def test_a_manifest_row_naming_a_shard_carries_its_metadata_and_the_sidecars(tmp_path):
    (tmp_path / "s.tar").write_bytes(_tar([
        ("a.wav", GOOD), ("a.json", _js({"speaker": "ann"})), ("a.txt", b"hi"),
        ("b.wav", GOOD), ("b.json", _js({"speaker": "bob", "lang": "de"}))]))
    (tmp_path / "m.csv").write_text("path,lang\ns.tar,en\n")
    _, rows, errors = run_features(tmp_path / "m.csv", tmp_path / "out", max_error_share=1.0)
    assert {k: (r["speaker"], r["text"], r["lang"]) for k, r in rows.items()} == {
        "s.tar/a.wav": ("ann", "hi", "en")}
    assert errors["s.tar/b.wav"]["error_type"] == "MetadataError"
    assert "where the manifest row naming the shard says \"en\"" in errors["s.tar/b.wav"]["message"]
