"""The features stage's plan, written in chunks as it is built, so that the driver holds no more
of a corpus of tens of millions of utterances than one chunk.

    _run/features/plan.parquet              the index: one row per unit (its chunk and row
                                            group, and what it holds: utterances, items,
                                            bytes and seconds where known)
    _run/features/plan/chunk-NNNNNN.parquet the units' plan items, a JSON array per unit,
                                            in row groups of GROUP_UNITS units

The driver reads the index alone (a few dozen bytes per unit); a worker reads the row group
that holds its unit (two ranged reads).
"""
from __future__ import annotations

import io
import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from ..executors.base import WorkUnit
from ..storage import Location
from ..tables import read_part, write_table

MIN_UNITS = 16  # small corpora are still split so that every worker gets work
CHUNK_UNITS = 4096  # units per chunk file
GROUP_UNITS = 16  # units per row group: what a worker reads to find its own
CHUNK_CHARS = 64 << 20  # a chunk is written early once its items' JSON reaches this
CREATED_KEY = b"timbrespace_ray.plan_created"
METADATA_KEY = b"timbrespace_ray.metadata"
READERS_KEY = b"timbrespace_ray.readers"  # plan items by reader, for the dry run
CHUNKS = "plan"
# columns of seconds a plan item's metadata may state a recording's length in
DURATION_COLUMNS = ("duration", "duration_s")
INDEX_SCHEMA = pa.schema([
    ("unit", pa.int32()), ("chunk", pa.int32()), ("row_group", pa.int32()),
    ("utterances", pa.int64()), ("items", pa.int32()),
    ("bytes_known", pa.int64()), ("items_sized", pa.int32()),
    ("seconds_known", pa.float64()), ("utterances_timed", pa.int64())])
CHUNK_SCHEMA = pa.schema([("unit", pa.int32()), ("items", pa.large_string())])


def unit_batches(items: Iterable[dict], per_unit_max: int, bytes_per_unit: int
                 ) -> Iterator[list[dict]]:
    """The plan items grouped into units, streamed: `alone` items (tar shards) each in a unit
    of their own, the others in runs bounded by utterance count and bytes. An item is never
    split, so the segments of one recording stay in one unit and it is decoded once. A corpus
    of fewer than MIN_UNITS full units is split into MIN_UNITS smaller ones (which needs its
    size: the first MIN_UNITS * per_unit_max utterances are held until it is known)."""
    items = iter(items)
    head: list[dict] = []
    count = 0
    for item in items:
        head.append(item)
        count += item["count"]
        if count >= MIN_UNITS * per_unit_max:
            break
    per_unit = max(1, min(per_unit_max, math.ceil(count / MIN_UNITS)))
    batch: list[dict] = []
    count = size = 0
    for item in _chain(head, items):
        if item["alone"]:
            if batch:
                yield batch
            yield [item]
            batch, count, size = [], 0, 0
            continue
        if batch and (count + item["count"] > per_unit or size + max(item["size"], 0) > bytes_per_unit):
            yield batch
            batch, count, size = [], 0, 0
        batch.append(item)
        count += item["count"]
        size += max(item["size"], 0)
    if batch:
        yield batch


def _chain(head: list[dict], rest: Iterator[dict]) -> Iterator[dict]:
    head.reverse()  # popped from the end, so that the held items are let go as they are used
    while head:
        yield head.pop()
    yield from rest


def known_seconds(item: dict) -> tuple[float, int]:
    """(seconds, utterances) that a plan item states: segment bounds, else a duration column."""
    segments = item.get("segments")
    if segments is None:
        duration = _duration(item.get("metadata") or {})
        return (duration, 1) if duration is not None and item["count"] == 1 else (0.0, 0)
    columns = item.get("columns") or []
    at = next((columns.index(c) for c in DURATION_COLUMNS if c in columns), None)
    seconds, timed = 0.0, 0
    for _, start, end, values in segments:
        if start is not None and end is not None and not math.isnan(end - start):
            seconds += max(0.0, end - start)
            timed += 1
        elif at is not None and _number(values[at]) is not None:
            seconds += _number(values[at])
            timed += 1
    return seconds, timed


def _duration(metadata: dict) -> float | None:
    return next((_number(metadata[c]) for c in DURATION_COLUMNS if c in metadata
                 and _number(metadata[c]) is not None), None)


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


class PlanWriter:
    """Writes units as they come: their items to the current chunk, their accounts to the
    index, which is written last (its presence means the plan is whole)."""

    def __init__(self, index: Location, previous: "Plan | None" = None):
        """`previous`: a written plan that this one extends with new units, in new chunks."""
        self.index = index
        self.chunks = Location(index.fs, index.path.rsplit("/", 1)[0]).child(CHUNKS)
        self.rows: dict[str, list] = {name: [] for name in INDEX_SCHEMA.names}
        self._chunk = 0
        self.readers: Counter = Counter()
        if previous is not None:
            self.rows = previous.index.select(INDEX_SCHEMA.names).to_pydict()
            self._chunk = max(self.rows["chunk"], default=-1) + 1
            self.readers.update(previous.readers)
        self._pending: list[tuple[int, str]] = []
        self._chars = 0

    @property
    def units(self) -> int:
        return len(self.rows["unit"])

    def add(self, items: list[dict]) -> None:
        unit = self.units
        seconds = timed = 0
        for item in items:
            s, t = known_seconds(item)
            seconds += s
            timed += t
        self.readers.update(i["reader"] for i in items)
        sized = [i["size"] for i in items if i["size"] >= 0]
        row = dict(unit=unit, chunk=self._chunk, row_group=len(self._pending) // GROUP_UNITS,
                   utterances=sum(i["count"] for i in items), items=len(items),
                   bytes_known=sum(sized), items_sized=len(sized), seconds_known=seconds,
                   utterances_timed=timed)
        for name, value in row.items():
            self.rows[name].append(value)
        encoded = json.dumps(items)
        self._pending.append((unit, encoded))
        self._chars += len(encoded)
        if len(self._pending) >= CHUNK_UNITS or self._chars >= CHUNK_CHARS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        buf = io.BytesIO()
        units, encoded = zip(*self._pending)
        pq.write_table(pa.table({"unit": pa.array(units, pa.int32()),
                                 "items": pa.array(encoded, pa.large_string())},
                                schema=CHUNK_SCHEMA),
                       buf, compression="zstd", row_group_size=GROUP_UNITS)
        self.chunks.child(chunk_name(self._chunk)).write_atomic(buf.getvalue())
        self._pending, self._chars = [], 0
        self._chunk += 1

    def close(self, metadata: dict[str, str]) -> None:
        self._flush()
        write_table(self.index, pa.table(self.rows, schema=INDEX_SCHEMA), {
            CREATED_KEY: time.strftime("%Y-%m-%dT%H:%M:%SZ").encode(),
            METADATA_KEY: json.dumps(metadata).encode(),
            READERS_KEY: json.dumps(dict(self.readers)).encode()})


def chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:06d}.parquet"


def write_plan(index: Location, items: Iterable[dict], per_unit_max: int,
               bytes_per_unit: int, metadata) -> None:
    """Group `items` into units and write them; `metadata` (a callable) gives the corpus's
    metadata columns once the items have all been read."""
    writer = PlanWriter(index)
    for batch in unit_batches(items, per_unit_max, bytes_per_unit):
        writer.add(batch)
    writer.close(metadata())


@dataclass(frozen=True)
class Plan:
    """A written plan's index: the units (with no items: a worker reads its own) and the
    corpus's metadata columns."""

    location: Location
    index: pa.Table
    metadata: dict[str, str]
    readers: dict[str, int]

    @classmethod
    def read(cls, location: Location) -> "Plan":
        table = read_part(location)
        if "chunk" not in table.column_names:
            raise InputError(f"{location.uri} is a plan written by an older version of "
                             "timbrespace_ray; run into a new output folder (or delete this one)")
        stored = table.schema.metadata or {}
        return cls(location, table, json.loads(stored.get(METADATA_KEY, b"{}")),
                   json.loads(stored.get(READERS_KEY, b"{}")))

    def units(self) -> list[WorkUnit]:
        return [WorkUnit(unit, (), (chunk, group)) for unit, chunk, group in zip(
            self.index.column("unit").to_pylist(), self.index.column("chunk").to_pylist(),
            self.index.column("row_group").to_pylist())]

    def total(self, column: str):
        return sum(self.index.column(column).to_pylist())

    def items(self) -> Iterator[dict]:
        """Every plan item, unit by unit, one chunk held at a time."""
        folder = Location(self.location.fs, self.location.path.rsplit("/", 1)[0]).child(CHUNKS)
        for chunk in sorted(set(self.index.column("chunk").to_pylist())):
            table = read_part(folder.child(chunk_name(chunk)))
            for encoded in table.column("items").to_pylist():
                yield from json.loads(encoded)


def unit_items(index: Location, unit: WorkUnit) -> tuple[dict, ...]:
    """A unit's plan items, read from the row group of its chunk that holds them."""
    chunk, group = unit.plan_ref
    where = Location(index.fs, index.path.rsplit("/", 1)[0]).child(CHUNKS, chunk_name(chunk))
    with where.fs.open(where.path, "rb") as fh:
        table = pq.ParquetFile(fh).read_row_group(group)
    units = table.column("unit").to_pylist()
    if unit.index not in units:  # a plan rewritten under a running stage, or damaged
        raise InputError(f"{where.uri} row group {group} does not hold unit {unit.index}")
    return tuple(json.loads(table.column("items")[units.index(unit.index)].as_py()))
