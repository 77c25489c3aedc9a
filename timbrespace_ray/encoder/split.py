"""The deterministic validation split: a stable hash of a key (utt_id, or a label such as
speaker so that whole groups are held out) decides, the same on every worker, run and machine."""
from __future__ import annotations

import hashlib


def split_position(key: str, seed: int = 0) -> float:
    """A uniform number in [0, 1) fixed by `key` and `seed` (blake2b, not Python's salted hash)."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def is_validation(key: str, fraction: float, seed: int = 0) -> bool:
    """Whether `key` falls in the held-out `fraction` (0: nothing is held out)."""
    return fraction > 0 and split_position(key, seed) < fraction
