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
from .base import (Corpus, InputFile, InputOptions, ReadContext, Reader, Recording, Segment,
                   plan_item, relative_uri)
from .files import segmented_item, segmented_recording
from .metadata import plain_type, select_columns, table_values
from .spill import Buckets, bucket_of, held
from .tabular import LINE, PROBLEM, conformed, table_blocks, unified_schema
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


def text_columns(options: InputOptions) -> tuple[str, ...]:
    """The columns read as text whatever they look like: paths (a file named `123`) and ids
    (`007` is not 7)."""
    return (*PATH_COLUMNS, *([options.path_column] if options.path_column else []), "utt_id")


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


def _seconds(table: pa.Table, name: str | None) -> tuple[list[float | None], list[str | None]]:
    """A column of seconds as floats, and for each row why its value is not a number (a CSV
    `abc`), None where it is."""
    if name is None:
        return [None] * table.num_rows, [None] * table.num_rows
    column = table.column(name)
    try:
        return column.cast(pa.float64()).to_pylist(), [None] * table.num_rows
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values, problems = [], []
    for value in column.to_pylist():
        try:
            values.append(None if value is None else float(value))
            problems.append(None)
        except (TypeError, ValueError):
            values.append(None)
            problems.append(f"has {name} {str(value)[:60]!r}, which is not a number: write "
                            "seconds as a number")
    return values, problems


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


def plan_manifest(manifest: Location, blocks: Iterable[pa.Table], options: InputOptions,
                  base: Location | None = None) -> Corpus:
    """Plan items (one per recording, with all its rows) and the metadata columns; relative
    paths are relative to `base` (default: the manifest's folder). `blocks` are the manifest's
    rows in order. A manifest of up to SPILL_ROWS rows is planned in memory, its recordings in
    order of first appearance; a larger one is spilled to local disk in buckets by audio path
    (spill.py) and each bucket planned alone, so that the driver holds one bucket at a time.
    The items are produced as they are read (Corpus.items is an iterator)."""
    where = f"manifest {manifest.uri}"
    blocks = iter(blocks)
    head, ended = held(blocks)
    first = list(dict.fromkeys(n for b in head for n in b.column_names))
    if not any(b.num_rows for b in head):
        raise InputError(f"{where} has columns ({', '.join(_own(first)) or 'none'}) but no rows: "
                         "add a row for each audio file or segment")
    path = path_column(first, options.path_column)
    if path is None:
        raise missing_path_column(where, _own(first), options.path_column)
    spill = None
    schemas = [b.schema for b in head]
    if not ended:
        spill = Buckets()
        for block in itertools.chain(head, blocks):
            schemas.append(block.schema)
            spill.add(block, bucket_of([str(p or "") for p in block.column(path).to_pylist()]))
        head = []
    schema = unified_schema(schemas, where)
    names = _own(schema.names)
    columns = _Columns.of(names, options, where)
    consumed = columns.consumed()
    metadata = select_columns({n: plain_type(schema.field(n).type) for n in names
                               if n not in consumed}, options.metadata_columns, where)
    counted = "row" if manifest.path.lower().endswith(".parquet") else "line"
    planner = _RowPlanner(manifest, counted, columns, metadata,
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


def _own(names: list[str]) -> list[str]:
    """The manifest's own columns, without those the blocks carry for its rows."""
    return [n for n in names if n not in (LINE, PROBLEM)]


@dataclass
class _RowPlanner:
    """The plan items of a table of manifest rows (all the rows of each recording in it); a row
    that cannot be planned (no path, a bound that is not a number, a line that is not JSON) is
    an item of its own, read as that row's error row."""

    manifest: Location
    counted: str  # "line" (CSV, JSON lines: as a text editor counts them) or "row" (Parquet)
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
        # a path written as a number (a file named 123) is that text
        paths = [None if p is None else str(p) for p in table.column(columns.path).to_pylist()]
        lines = table.column(LINE).to_pylist()
        problems = (table.column(PROBLEM).to_pylist() if PROBLEM in names
                    else [None] * len(paths))
        ids = table.column("utt_id").to_pylist() if "utt_id" in names else [None] * len(paths)
        (starts, bad_starts), (ends, bad_ends), (durations, bad_durations) = (
            _seconds(table, n) for n in (columns.start, columns.end, columns.duration))
        # NeMo reads a row without an offset from the file's start
        default_start = 0.0 if columns.start == "offset" else None
        meta = table_values(table, self.metadata)
        meta_names = list(self.metadata)
        by_source: dict[str, list] = {}
        shards: list[dict] = []
        refused: list[dict] = []
        # a segment manifest names each recording on many rows: resolve each path once
        resolved: dict[str, tuple[str, str, bool]] = {}  # path -> (uri, default id, is a shard)
        for i, path in enumerate(paths):
            problem = (problems[i] or bad_starts[i] or bad_ends[i] or bad_durations[i]
                       or (None if path else f"has no {columns.path!r}: write the audio file's "
                                             "path there, or remove the row"))
            known = None if problem else resolved.get(path)
            if known is None and not problem:
                known = resolved[path] = (*relative_uri(self.base, path), is_shard(path))
            if problem is None and known[2] and (starts[i], ends[i], durations[i]) != (None,) * 3:
                problem = "names a tar shard, which cannot have a start or an end"
            if problem:
                refused.append(self.refused(lines[i], problem))
                continue
            uri, default_id, shard = known
            start_s, end_s = _segment_bounds(starts[i], ends[i], durations[i], default_start)
            if shard:
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
        yield from refused

    def refused(self, line: int, problem: str) -> dict:
        """The item of a row that cannot be planned: its utt_id is `<manifest name>:<line>`
        (unique in the manifest, the same on every planning), its message says which row."""
        return plan_item(ManifestReader, count=1, source=self.manifest.uri,
                         utt_id=f"{posixpath.basename(self.manifest.path)}:{line}",
                         refused=f"manifest {self.manifest.uri} {self.counted} {line} {problem}")


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
        return plan_manifest(manifest.loc, table_blocks(manifest.loc, text_columns(options)),
                             options)

    @classmethod
    def read(cls, item: dict, ctx: ReadContext) -> Iterator[Recording]:
        if "refused" in item:
            yield Recording(item["source"], [Segment(item["utt_id"])],
                            error=InputError(item["refused"]))
            return
        yield segmented_recording(item, ctx)
