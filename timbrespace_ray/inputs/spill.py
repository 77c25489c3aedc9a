"""Driver-side work over tens of millions of rows in bounded memory: rows spilled to local
disk in hash buckets, each bucket then handled alone (grouping a manifest's rows by recording,
finding utt_ids given twice).

Buckets are chosen by a CRC-32 of a key, the same in every process and run, so that a plan is
the same whatever the machine.
"""
from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from ..errors import InputError

BUCKETS = 128
# rows held before spilling: a corpus under this many is handled in memory, as one bucket
SPILL_ROWS = 500_000


def bucket_of(keys: list[str], buckets: int = BUCKETS) -> np.ndarray:
    return np.fromiter((zlib.crc32(k.encode("utf-8", "surrogatepass")) % buckets for k in keys),
                       dtype=np.int32, count=len(keys))


class Buckets:
    """Tables split by a bucket number per row into Arrow IPC files, one file per table added
    (its rows sorted by bucket, one record batch per bucket), read back one bucket at a time.
    Tables may differ in schema (`tables(b)` returns each piece as it was written)."""

    def __init__(self, buckets: int = BUCKETS):
        self.buckets = buckets
        self._dir = tempfile.TemporaryDirectory(prefix="timbrespace-spill-")
        self._files: list[str] = []

    def add(self, table: pa.Table, bucket: np.ndarray) -> None:
        order = np.argsort(bucket, kind="stable")
        table = table.take(pa.array(order))
        edges = np.searchsorted(bucket[order], np.arange(self.buckets + 1))
        path = os.path.join(self._dir.name, f"{len(self._files):06d}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            for b in range(self.buckets):
                piece = table.slice(edges[b], edges[b + 1] - edges[b])
                batches = piece.combine_chunks().to_batches()
                writer.write_batch(batches[0] if batches else
                                   pa.RecordBatch.from_pylist([], schema=table.schema))
        self._files.append(path)

    def tables(self, bucket: int) -> list[pa.Table]:
        out = []
        for path in self._files:
            with pa.OSFile(path, "rb") as source:
                batch = pa.ipc.open_file(source).get_batch(bucket)
                if batch.num_rows:
                    out.append(pa.Table.from_batches([batch]))
        return out

    def close(self) -> None:
        self._dir.cleanup()


class SpilledRows:
    """Rows of named columns added one at a time, held until `every` of them, then spilled to
    Buckets by the `by` column (nothing is written while fewer were ever added)."""

    def __init__(self, names: tuple[str, ...], by: str, every: int = SPILL_ROWS):
        self.by, self.every = by, every
        self.rows: dict[str, list] = {n: [] for n in names}
        self.buckets: Buckets | None = None

    def add(self, **row) -> None:
        for name, value in row.items():
            self.rows[name].append(value)
        if len(self.rows[self.by]) >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.rows[self.by]:
            if self.buckets is None:
                self.buckets = Buckets()
            self.buckets.add(pa.table(self.rows), bucket_of(self.rows[self.by]))
            self.rows = {n: [] for n in self.rows}

    def tables(self) -> Iterator[pa.Table]:
        """Every row, a bucket at a time (all of them at once when none was spilled)."""
        if self.buckets is None:
            yield pa.table(self.rows)
            return
        self.flush()
        for b in range(self.buckets.buckets):
            pieces = self.buckets.tables(b)
            if pieces:
                yield pa.concat_tables(pieces)

    def close(self) -> None:
        if self.buckets is not None:
            self.buckets.close()
        self.rows, self.buckets = {n: [] for n in self.rows}, None


class UniqueIds:
    """Refuses an utt_id given by two inputs (two rows nobody could tell apart), over any
    number of them: held in memory up to SPILL_ROWS, then spilled in buckets by id."""

    def __init__(self):
        self._rows = SpilledRows(("utt_id", "source"), by="utt_id")

    def add(self, utt_id: str, source: str) -> None:
        self._rows.add(utt_id=utt_id, source=source)

    def check(self) -> None:
        try:
            for table in self._rows.tables():
                _check(table.column("utt_id").to_pylist(), table.column("source").to_pylist())
        finally:
            self._rows.close()


def _check(ids: list[str], sources: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, utt_id in enumerate(ids):
        first = seen.setdefault(utt_id, i)
        if first != i:
            raise InputError(f"two inputs share utt_id {utt_id!r}: {sources[first]} and "
                             f"{sources[i]}")


def held(blocks: Iterator[pa.Table], rows: int = SPILL_ROWS) -> tuple[list[pa.Table], bool]:
    """The first blocks of a stream, up to `rows` rows; whether the stream ended there."""
    out, count = [], 0
    for block in blocks:
        out.append(block)
        count += block.num_rows
        if count > rows:
            return out, False
    return out, True
