"""Manifests: a table (Parquet, CSV or JSON lines) with one row per file or per segment.

Columns: `path` (relative to the manifest's folder, absolute, or a URI), optional `utt_id`,
optional `start` with `end` or `duration` (seconds: the row is then one segment of the
recording), and any other scalar columns, which are carried as metadata. The rows of one
recording are planned together so that it is decoded once for all its segments.
"""
from __future__ import annotations

import io
import math
import posixpath
from collections.abc import Iterator, Sequence

import pyarrow as pa

from ..errors import InputError
from ..storage import Location
from .base import Corpus, InputFile, InputOptions, ReadContext, Reader, Recording, relative_uri
from .files import segmented_item, segmented_recording
from .metadata import plain_type, select_columns, table_values
from .tar import TarShardReader, is_shard

MANIFEST_EXTENSIONS = (".parquet", ".csv", ".jsonl")
CONSUMED = ("path", "utt_id", "start", "end", "duration")


def read_table(manifest: Location, data: bytes | None = None) -> pa.Table:
    """The manifest's rows, from any of its three formats."""
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet as pq

    data = manifest.read_bytes() if data is None else data
    suffix = manifest.path.lower().rsplit(".", 1)[-1]
    try:
        if suffix == "parquet":
            return pq.read_table(io.BytesIO(data))
        if suffix == "csv":
            return pa.csv.read_csv(io.BytesIO(data))
        return pa.json.read_json(io.BytesIO(data))
    except pa.ArrowInvalid as exc:
        raise InputError(f"manifest {manifest.uri} could not be parsed: {exc}") from exc


def _seconds(table: pa.Table, name: str) -> list[float | None]:
    if name not in table.column_names:
        return [None] * table.num_rows
    column = table.column(name)
    try:
        return column.cast(pa.float64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"manifest column {name!r} must hold seconds as numbers "
                         f"(it is {column.type}): {exc}") from None


def _segment_bounds(start: float | None, end: float | None, duration: float | None
                    ) -> tuple[float | None, float | None]:
    """(start_s, end_s): both None for a whole file; NaN for a bound the row does not give,
    which the decoder reports as that row's SegmentRangeError."""
    if start is None and end is None and duration is None:
        return None, None
    if end is None and duration is not None and start is not None:
        end = start + duration
    return (math.nan if start is None else start), (math.nan if end is None else end)


def plan_manifest(manifest: Location, table: pa.Table, keep: Sequence[str] | None
                  ) -> tuple[list[dict], dict[str, str]]:
    """Plan items (one per recording, with all its rows) and the metadata columns."""
    names = table.column_names
    if "path" not in names:
        raise InputError(f"manifest {manifest.uri} has no 'path' column (columns: {names}); a "
                         "Parquet audio dataset needs an audio column of struct<bytes, path> "
                         "(--audio-column names it)")
    if "end" in names and "duration" in names:
        raise InputError(f"manifest {manifest.uri} has both 'end' and 'duration': keep one")
    columns = select_columns({n: plain_type(table.schema.field(n).type) for n in names
                              if n not in CONSUMED}, keep, f"manifest {manifest.uri}")
    base = Location(manifest.fs, posixpath.dirname(manifest.path))
    paths = table.column("path").to_pylist()
    ids = table.column("utt_id").to_pylist() if "utt_id" in names else [None] * len(paths)
    starts, ends, durations = (_seconds(table, n) for n in ("start", "end", "duration"))
    meta = table_values(table, columns)
    meta_names = list(columns)
    by_source: dict[str, list] = {}
    shards: list[dict] = []
    # a segment manifest names each recording on many rows: resolve each path once
    resolved: dict[str, tuple[str, str, bool]] = {}  # path -> (uri, default id, is a shard)
    for row, path in enumerate(paths):
        if not path:
            raise InputError(f"manifest {manifest.uri} row {row} has an empty path")
        known = resolved.get(path)
        if known is None:
            known = resolved[path] = (*relative_uri(base, path), is_shard(path))
        uri, default_id, shard = known
        start_s, end_s = _segment_bounds(starts[row], ends[row], durations[row])
        if shard:
            if start_s is not None:
                raise InputError(f"manifest {manifest.uri} row {row}: a tar shard cannot have "
                                 "a start or an end")
            shards.append(TarShardReader.item(str(ids[row] or default_id), uri, -1))
            continue
        utt_id = ids[row]
        if not utt_id:
            utt_id = default_id if start_s is None else f"{default_id}@{start_s:.3f}-{end_s:.3f}"
        by_source.setdefault(uri, []).append(
            [str(utt_id), start_s, end_s, [meta[n][row] for n in meta_names]])
    # sizes are not fetched here: a manifest of millions of rows must plan without a HEAD each
    items = [segmented_item(ManifestReader, uri, meta_names, segs)
             for uri, segs in by_source.items()]
    return items + shards, columns


class ManifestReader(Reader):
    name = "manifest"
    describes = "manifests (.parquet/.csv/.jsonl with a 'path' column)"
    extensions = MANIFEST_EXTENSIONS
    # last: any table the other readers left (its error says what a Parquet dataset needs)
    priority = 2
    in_folders = False  # it names files that its folder may hold too

    @classmethod
    def plan(cls, files: list[InputFile], root: Location, options: InputOptions) -> Corpus:
        (manifest,) = files
        return Corpus(*plan_manifest(manifest.loc, read_table(manifest.loc),
                                     options.metadata_columns))

    @classmethod
    def read(cls, item: dict, ctx: ReadContext) -> Iterator[Recording]:
        yield segmented_recording(item, ctx)
