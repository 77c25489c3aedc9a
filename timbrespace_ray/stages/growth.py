"""A rerun over an input that has changed since it was planned: what is new, changed or gone.

Each planned input has a stable identity: a recording's segments by their utt_id (a manifest
row's key), any other item (an audio file, a tar shard, a slice of a Parquet shard) by its
source and place, each with a digest of what the plan says of it (a file's size, a segment's
bounds and metadata). New inputs are planned as new units beside the old ones; changed and
gone ones are counted and named, never processed again or dropped silently: their rows are
those of the input as it was.

Both plans are spilled to local disk in buckets by source (inputs/spill.py), so a corpus of
tens of millions of inputs is compared one bucket at a time.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from ..inputs.spill import Buckets, bucket_of

EXAMPLES = 10
BATCH = 100_000  # rows spilled at once


@dataclass
class Changes:
    new: int = 0
    changed: int = 0
    gone: int = 0
    examples: dict[str, list[str]] = field(default_factory=lambda: {"changed": [], "gone": []})

    def note(self, kind: str, utt_id: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if kind in self.examples and len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(utt_id)


def _digest(value) -> str:
    return hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=8).hexdigest()


def identities(item: dict) -> Iterator[tuple[str, str, int]]:
    """(input key, digest, utterances) of what a plan item holds: each segment of a recording
    read for its segments, else the item as a whole."""
    if "segments" in item:
        for utt_id, start, end, values in item["segments"]:
            yield utt_id, _digest([start, end, values]), 1
        return
    key = json.dumps([item["reader"], item.get("utt_id"), item.get("row_group"), item.get("first")])
    yield key, _digest({k: v for k, v in item.items() if k != "count"}), item["count"]


def _named(key: str) -> str:
    """The name of an input key for a message (a segment's utt_id, else the item's)."""
    if key.startswith("["):
        reader, utt_id, group, first = json.loads(key)
        return utt_id or f"{reader} row group {group} from row {first}"
    return key


class _Spill:
    def __init__(self, names: tuple[str, ...]):
        self.buckets = Buckets()
        self.rows: dict[str, list] = {n: [] for n in names}

    def add(self, **row) -> None:
        for name, value in row.items():
            self.rows[name].append(value)
        if len(self.rows["source"]) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.rows["source"]:
            self.buckets.add(pa.table(self.rows), bucket_of(self.rows["source"]))
            self.rows = {n: [] for n in self.rows}

    def bucket(self, b: int) -> list[dict]:
        return [row for t in self.buckets.tables(b) for row in t.to_pylist()]


def compare(old: Iterable[dict], new: Iterable[dict], changes: Changes) -> Iterator[dict]:
    """The plan items of what `new` holds and `old` does not (a recording's new segments as an
    item of their own); `changes` counts them and the changed and gone inputs as it goes."""
    before = _Spill(("source", "key", "digest"))
    after = _Spill(("source", "item"))
    try:
        for item in old:
            for key, digest, _ in identities(item):
                before.add(source=item["source"], key=key, digest=digest)
        for item in new:
            after.add(source=item["source"], item=json.dumps(item))
        before.flush()
        after.flush()
        for b in range(before.buckets.buckets):
            known: dict[str, str] = {row["key"]: row["digest"] for row in before.bucket(b)}
            for row in after.bucket(b):
                found = _new_part(json.loads(row["item"]), known, changes)
                if found is not None:
                    yield found
            for key in known:
                changes.note("gone", _named(key))
    finally:
        before.buckets.close()
        after.buckets.close()


def _new_part(item: dict, known: dict[str, str], changes: Changes) -> dict | None:
    """What of `item` is new (None: nothing), noting the changed; what it holds that was known
    is taken out of `known`, so that what is left there is gone."""
    if "segments" not in item:
        ((key, digest, count),) = identities(item)
        was = known.pop(key, None)
        if was is None:
            changes.new += count
            return item
        if was != digest:
            changes.note("changed", _named(key))
        return None
    fresh = []
    for segment, (key, digest, _) in zip(item["segments"], identities(item)):
        was = known.pop(key, None)
        if was is None:
            fresh.append(segment)
        elif was != digest:
            changes.note("changed", key)
    if not fresh:
        return None
    changes.new += len(fresh)
    return {**item, "count": len(fresh), "segments": fresh}
