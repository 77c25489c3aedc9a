"""speech_sets.py without the network: the split by speaker, the cap and the silence check."""
from __future__ import annotations

import numpy as np
import soundfile as sf

import speech_sets
from helpers.corpus import SHORT


def test_a_third_of_the_voices_held_out_every_speaker_in_one_split():
    voices = {"words": {f"v{i}": f"id{i}" for i in range(9)}}
    splits = speech_sets.assign_splits(voices)["words"]
    assert sorted(splits) == sorted(voices["words"])
    assert sorted(splits.values()).count("heldout") == 3  # 9 / 3
    assert set(splits.values()) == {"train", "heldout"}


def test_at_least_three_held_out_and_three_in_training():
    splits = speech_sets.assign_splits({"s": {f"v{i}": f"id{i}" for i in range(7)}})["s"]
    assert list(splits.values()).count("heldout") == 3  # round(7 / 3) = 2, raised to 3
    assert list(splits.values()).count("train") == 4


def test_the_split_is_deterministic_whatever_the_order_of_the_voices():
    voices = {f"v{i}": f"id{i}" for i in range(12)}
    first = speech_sets.assign_splits({"s": voices})
    reversed_order = speech_sets.assign_splits({"s": dict(reversed(list(voices.items())))})
    assert first == reversed_order
    # a voice's split depends on its identity, not on its label
    renamed = speech_sets.assign_splits({"s": {f"w{i}": f"id{i}" for i in range(12)}})["s"]
    assert [first["s"][f"v{i}"] for i in range(12)] == [renamed[f"w{i}"] for i in range(12)]


def test_voices_that_may_be_one_person_share_a_split_in_every_set():
    # "shared" is in both sets and twice in the second: all three get one split
    voices = {"a": {**{f"a{i}": f"a{i}" for i in range(6)}, "a_shared": "shared"},
              "b": {**{f"b{i}": f"b{i}" for i in range(6)}, "b_x": "shared", "b_y": "shared"}}
    splits = speech_sets.assign_splits(voices)
    assert splits["a"]["a_shared"] == splits["b"]["b_x"] == splits["b"]["b_y"]
    for name, members in voices.items():
        # the target, 3 of 7 and 3 of 8, is met: "shared" counts twice in "b"
        assert [splits[name][s] for s in members].count("heldout") == 3


def test_the_cap_keeps_speech_in_hash_order_and_drops_silence(tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    found = [(f"rel/{p.name}", p, 1.0) for p in SHORT[:3]] + [("rel/silent.wav", silent, 1.0)]
    by_hash = sorted(found, key=lambda r: speech_sets.stable_hash(r[0]))
    info = {}
    kept = speech_sets._cap(found, 2, info)
    assert kept == [r for r in by_hash if r[1] != silent][:2]
    everything = speech_sets._cap(found, 0, info)
    assert [r[1] for r in everything] == [r[1] for r in by_hash if r[1] != silent]
    assert info["silent_dropped"] == 1
