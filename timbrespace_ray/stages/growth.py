"""A rerun over an input that has changed since it was planned: what is new, changed or gone.

Each planned input is known by the key of its row in the output (its utt_id; a slice of a
Parquet shard without ids, by its shard and place), with a digest of what the plan says of it
(where its audio is, a file's size, a segment's bounds and metadata). New keys are planned as
new units beside the old ones (a recording's new segments as one item); changed and gone ones
are counted and named, never processed again or dropped silently: their rows are those of the
input as it was. An input whose audio moved keeps its key, so it is changed, never a second
row.

Both plans are spilled to local disk in buckets by key, and the new inputs in buckets by
recording (inputs/spill.py), so a corpus of tens of millions of inputs is compared one bucket
at a time.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..inputs.files import segment_order
from ..inputs.spill import BUCKETS, SpilledRows

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


def identities(item: dict) -> Iterator[tuple[str, str, list | None]]:
    """(utt_id, digest, segment) of what a plan item holds: each segment of a recording read
    for its segments (None for an item read whole), keyed as the output's rows are."""
    if "segments" in item:
        for segment in item["segments"]:
            utt_id, start, end, values = segment
            yield utt_id, _digest([item["source"], start, end, values]), segment
        return
    key = item.get("utt_id") or json.dumps([item["source"], item.get("row_group"),
                                            item.get("first")])
    yield key, _digest({k: v for k, v in item.items() if k != "count"}), None


def compare(old: Iterable[dict], new: Iterable[dict], changes: Changes) -> Iterator[dict]:
    """The plan items of what `new` holds and `old` does not: inputs are compared by the key of
    their rows (utt_id), wherever their audio now is, and a recording's new segments become an
    item of their own. `changes` counts them, and the changed and gone inputs."""
    before = SpilledRows(("key", "digest"), by="key", every=BATCH)
    after = SpilledRows(("key", "digest", "template", "segment"), by="key", every=BATCH)
    fresh = SpilledRows(("source", "template", "segment"), by="source", every=BATCH)
    try:
        for item in old:
            for key, digest, _ in identities(item):
                before.add(key=key, digest=digest)
        for item in new:
            template = json.dumps({k: v for k, v in item.items() if k != "segments"})
            for key, digest, segment in identities(item):
                after.add(key=key, digest=digest, template=template,
                          segment=None if segment is None else json.dumps(segment))
        # both spilled by key into buckets of the same numbers: bucket b of each holds the
        # same keys
        before.flush()
        after.flush()
        for b in range(BUCKETS):
            known = {row["key"]: row["digest"] for row in _rows(before, b)}
            for row in _rows(after, b):
                was = known.pop(row["key"], None)
                if was is None:
                    source = json.loads(row["template"])["source"]
                    fresh.add(source=source, template=row["template"], segment=row["segment"])
                elif was != row["digest"]:
                    changes.note("changed", _named(row["key"]))
            for key in known:
                changes.note("gone", _named(key))
        for table in fresh.tables():
            yield from _items(table.to_pylist(), changes)
    finally:
        for spill in (before, after, fresh):
            spill.close()


def _rows(spilled: SpilledRows, bucket: int) -> list[dict]:
    if spilled.buckets is None:  # nothing was added
        return []
    return [row for t in spilled.buckets.tables(bucket) for row in t.to_pylist()]


def _items(rows: list[dict], changes: Changes) -> Iterator[dict]:
    """The new inputs of one bucket as plan items: an item read whole as it was, the new
    segments of each recording together, in their plan order."""
    segments: dict[str, tuple[dict, list]] = {}
    for row in rows:
        template = json.loads(row["template"])
        if row["segment"] is None:
            changes.new += template["count"]
            yield template
            continue
        segments.setdefault(template["source"], (template, []))[1].append(json.loads(row["segment"]))
    for template, found in segments.values():
        changes.new += len(found)
        yield {**template, "count": len(found), "segments": sorted(found, key=segment_order)}


def _named(key: str) -> str:
    """The name of an input key for a message."""
    if key.startswith("["):
        source, group, first = json.loads(key)
        return f"{source} row group {group} from row {first}"
    return key
