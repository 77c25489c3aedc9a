"""Manifests: a table (Parquet or CSV here; JSON lines in json_lines.py, Common Voice's TSVs in
common_voice.py) with one row per file or per segment.

Columns:
- the audio path: the first of `PATH_COLUMNS` the table has (`--path-column` names another),
  relative to the manifest's folder, absolute, or a URI; consumed, never carried;
- optional `utt_id`;
- a segment's bounds, seconds: `start` (or NeMo's `offset`) with `end` or `duration`; a row
  without a start, end or duration is the whole file. A `duration` without a start column is a
  whole file's length as the tool that wrote the manifest measured it: carried as the
  metadata column `duration`, never a bound;
- any other scalar column, carried as metadata.

The rows of one recording are planned together so that it is decoded once for all its segments.
"""
from __future__ import annotations

import itertools
import logging
import math
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from ..errors import InputError
from ..storage import Location
from .base import Corpus, InputFile, InputOptions, ReadContext, Reader, Recording, relative_uri
from .files import segmented_item, segmented_recording
from .metadata import plain_type, select_columns, table_values
from .spill import Buckets, bucket_of, held
from .tabular import conformed, table_blocks, unified_schema
from ..tables import read_schema
from .tar import SampleColumns, TarShardReader, is_shard, shard_columns

log = logging.getLogger(__name__)

# the audio path's column under the names tools write it, in order of preference: ours and
# Common Voice's, NeMo's, other toolkits', Hugging Face AudioFolder's, HF dataset exports'
PATH_COLUMNS = ("path", "audio_filepath", "audio_path", "file_name", "file")
START_COLUMNS = ("start", "offset")  # offset: NeMo's name for a segment's start
LISTED = ", ".join(PATH_COLUMNS)


def path_column(names: list[str], configured: str | None) -> str | None:
    """The column holding the audio paths: `configured` (features.path_column) when given,
    else the first of PATH_COLUMNS present; None when there is none."""
    if configured is not None:
        return configured if configured in names else None
    return next((n for n in PATH_COLUMNS if n in names), None)


def missing_path_column(where: str, names: list[str], configured: str | None) -> InputError:
    if configured is not None:
        return InputError(f"{where} has no column {configured!r} (--path-column, "
                          f"features.path_column); its columns: {', '.join(names)}")
    return InputError(f"{where} has no audio path column (looked for {LISTED}; --path-column "
                      f"names another); its columns: {', '.join(names)}")


@dataclass(frozen=True)
class _Columns:
    """What the manifest's columns are for: the audio path, the id, a segment's bounds."""

    path: str
    start: str | None
    end: str | None
    duration: str | None  # a bound only beside a start; else metadata

    @classmethod
    def of(cls, names: list[str], options: InputOptions, where: str) -> "_Columns":
        path = path_column(names, options.path_column)
        if path is None:
            raise missing_path_column(where, names, options.path_column)
        others = [n for n in PATH_COLUMNS if n in names and n != path]
        if others:
            log.info("%s: audio paths from column %r (%s carried as metadata; --path-column "
                     "chooses)", where, path, ", ".join(repr(n) for n in others))
        starts = [n for n in START_COLUMNS if n in names]
        if len(starts) > 1:
            raise InputError(f"{where} has both 'start' and 'offset': keep one")
        start = starts[0] if starts else None
        end = "end" if "end" in names else None
        if end and start is None:
            raise InputError(f"{where} has an 'end' column but no 'start' (or 'offset'): a "
                             "segment needs both")
        duration = "duration" if start and "duration" in names else None
        if end and duration:
            raise InputError(f"{where} has both 'end' and 'duration': keep one")
        return cls(path, start, end, duration)

    def consumed(self) -> set[str]:
        return {self.path, "utt_id", self.start, self.end, self.duration} - {None}


def _seconds(table: pa.Table, name: str | None) -> list[float | None]:
    if name is None:
        return [None] * table.num_rows
    column = table.column(name)
    try:
        return column.cast(pa.float64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"manifest column {name!r} must hold seconds as numbers "
                         f"(it is {column.type}): {exc}") from None


def _segment_bounds(start: float | None, end: float | None, duration: float | None,
                    default_start: float | None) -> tuple[float | None, float | None]:
    """(start_s, end_s): both None for a whole file; NaN for a bound the row does not give,
    which the decoder reports as that row's SegmentRangeError."""
    if start is None and end is None and duration is None:
        return None, None
    if start is None:
        start = default_start
    if end is None and duration is not None and start is not None:
        end = start + duration
    return (math.nan if start is None else start), (math.nan if end is None else end)


ROW = "__timbrespace_row"  # each row's number in the manifest, for messages after spilling


def plan_manifest(manifest: Location, blocks: Iterable[pa.Table], options: InputOptions,
                  base: Location | None = None) -> Corpus:
    """Plan items (one per recording, with all its rows) and the metadata columns; relative
    paths are relative to `base` (default: the manifest's folder). `blocks` are the manifest's
    rows in order. A manifest of up to SPILL_ROWS rows is planned in memory, its recordings in
    order of first appearance; a larger one is spilled to local disk in buckets by audio path
    (spill.py) and each bucket planned alone, so that the driver holds one bucket at a time.
    The items are produced as they are read (Corpus.items is an iterator)."""
    where = f"manifest {manifest.uri}"
    numbered = _numbered(blocks)
    head, ended = held(numbered)
    if not head:
        return Corpus([], {})
    first = head[0].column_names
    path = path_column(first, options.path_column)
    if path is None:
        raise missing_path_column(where, [n for n in first if n != ROW], options.path_column)
    spill = None
    schemas = [b.schema for b in head]
    if not ended:
        spill = Buckets()
        for block in itertools.chain(head, numbered):
            schemas.append(block.schema)
            spill.add(block, bucket_of([str(p or "") for p in block.column(path).to_pylist()]))
        head = []
    schema = unified_schema(schemas, where)
    names = [n for n in schema.names if n != ROW]
    columns = _Columns.of(names, options, where)
    consumed = columns.consumed()
    metadata = select_columns({n: plain_type(schema.field(n).type) for n in names
                               if n not in consumed}, options.metadata_columns, where)
    planner = _RowPlanner(where, columns, metadata,
                          base or Location(manifest.fs, posixpath.dirname(manifest.path)),
                          options, dict(metadata))

    def items() -> Iterator[dict]:
        if spill is None:
            yield from planner.items(pa.concat_tables([conformed(b, schema) for b in head]))
            return
        try:
            for bucket in range(spill.buckets):
                pieces = spill.tables(bucket)
                if pieces:
                    yield from planner.items(pa.concat_tables(
                        [conformed(p, schema) for p in pieces]))
        finally:
            spill.close()

    # the columns of the tar shards it names join them as the first shard is planned
    return Corpus(items(), planner.corpus_columns)


def _numbered(blocks: Iterable[pa.Table]) -> Iterator[pa.Table]:
    offset = 0
    for block in blocks:
        yield block.append_column(ROW, pa.array(range(offset, offset + block.num_rows),
                                                pa.int64()))
        offset += block.num_rows


@dataclass
class _RowPlanner:
    """The plan items of a table of manifest rows (all the rows of each recording in it)."""

    where: str
    columns: _Columns
    metadata: dict[str, str]
    base: Location
    options: InputOptions
    corpus_columns: dict[str, str]  # the metadata, and the fields of the tar shards named
    shard_fields: dict[str, str] | None = None  # those of the first tar shard, once planned

    def shard(self, utt_id: str, uri: str, values: dict) -> dict:
        """A tar shard named by a row: its members carry the row's metadata and their own."""
        if self.shard_fields is None:
            sniffed = shard_columns(Location.of(uri, self.base.fs.storage_options), self.options)
            self.shard_fields = {k: t for k, t in sniffed.types.items() if k not in self.metadata}
            self.corpus_columns.update(self.shard_fields)
        return TarShardReader.item(utt_id, uri, -1, SampleColumns(
            {**self.shard_fields, **self.metadata}, self.options.metadata_columns is not None,
            values))

    def items(self, table: pa.Table) -> Iterator[dict]:
        columns = self.columns
        names = table.column_names
        paths = table.column(columns.path).to_pylist()
        rows = table.column(ROW).to_pylist()
        ids = table.column("utt_id").to_pylist() if "utt_id" in names else [None] * len(paths)
        starts, ends, durations = (_seconds(table, n)
                                   for n in (columns.start, columns.end, columns.duration))
        # NeMo reads a row without an offset from the file's start
        default_start = 0.0 if columns.start == "offset" else None
        meta = table_values(table, self.metadata)
        meta_names = list(self.metadata)
        by_source: dict[str, list] = {}
        shards: list[dict] = []
        # a segment manifest names each recording on many rows: resolve each path once
        resolved: dict[str, tuple[str, str, bool]] = {}  # path -> (uri, default id, is a shard)
        for i, path in enumerate(paths):
            if not path:
                raise InputError(f"{self.where} row {rows[i]} has an empty {columns.path!r}")
            known = resolved.get(path)
            if known is None:
                known = resolved[path] = (*relative_uri(self.base, str(path)), is_shard(str(path)))
            uri, default_id, shard = known
            start_s, end_s = _segment_bounds(starts[i], ends[i], durations[i], default_start)
            if shard:
                if start_s is not None:
                    raise InputError(f"{self.where} row {rows[i]}: a tar shard cannot have a "
                                     "start or an end")
                shards.append(self.shard(str(ids[i] or default_id), uri,
                                         {n: meta[n][i] for n in meta_names}))
                continue
            utt_id = ids[i]
            if not utt_id:
                utt_id = (default_id if start_s is None
                          else f"{default_id}@{start_s:.3f}-{end_s:.3f}")
            by_source.setdefault(uri, []).append(
                [str(utt_id), start_s, end_s, [meta[n][i] for n in meta_names]])
        # sizes are not fetched here: a manifest of millions of rows must plan without a HEAD each
        for uri in list(by_source):
            yield segmented_item(ManifestReader, uri, meta_names, by_source.pop(uri))
        yield from shards


class ManifestReader(Reader):
    name = "manifest"
    describes = f"manifests (.parquet/.csv with an audio path column: {LISTED})"
    extensions = (".parquet", ".csv")
    # last: any table the other readers left (its error says what a Parquet dataset needs)
    priority = 2
    in_folders = False  # it names files that its folder may hold too

    @classmethod
    def plan(cls, files: Iterable[InputFile], root: Location, options: InputOptions) -> Corpus:
        (manifest,) = files
        if manifest.loc.path.lower().endswith(".parquet"):
            names = read_schema(manifest.loc).names
            if path_column(names, options.path_column) is None:
                raise InputError(
                    f"{manifest.loc.uri} is neither a manifest (no audio path column: looked "
                    f"for {LISTED}; --path-column names another) nor a Parquet audio dataset "
                    "(no struct<bytes, path> column; --audio-column names it); its columns: "
                    f"{', '.join(names)}")
        return plan_manifest(manifest.loc, table_blocks(manifest.loc), options)

    @classmethod
    def read(cls, item: dict, ctx: ReadContext) -> Iterator[Recording]:
        yield segmented_recording(item, ctx)
