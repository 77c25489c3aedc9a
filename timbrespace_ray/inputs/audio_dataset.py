"""Parquet audio datasets: the layout Hugging Face `datasets` publishes (`push_to_hub`, the Hub's
`refs/convert/parquet`), one shard or a folder/prefix of `*.parquet` shards.

A shard holds an audio column of type `struct<bytes: binary, path: string>`: the encoded file
(WAV, FLAC, OGG, Opus, MP3) in `bytes`, decoded in memory, or only a `path` (relative to the
shard's folder, absolute, or a URI) to read instead. The column is the `Audio` feature named in
the schema's `huggingface` metadata, else the only column of that type; `--audio-column` names
it. Every other scalar column is metadata (a `ClassLabel` column as its label names). utt_id
comes from an id column (`--id-column`; default `utt_id`, `id` or `key`), else it is
`<shard path relative to the input>/<row>`.

Planning reads only the shards' footers (and the id column, to refuse duplicate ids), never the
audio: each plan item is a row group, or a slice of one when the group is over `unit_bytes`
(estimated from its size in the footer), so a row group of gigabytes is several units rather
than one straggler. Row groups are not cut by row count (`unit_count`): a worker reads its slice
in small batches, page by page, reading and dropping the rows of the row group before the slice
(Parquet cannot start mid-page), so every cut reads the group's start again. It holds a few rows
and one read (BUFFER_BYTES) of the audio column at a time (a row group of at most 32 MiB is
fetched whole, in one request). `datasets` >= 4 writes pages of about
1 MiB (content-defined chunking); a writer that puts a whole row group's audio in one page
(pyarrow's defaults with large values) makes that page the bound. A shard whose footer cannot be
read is one DatasetShardError row; a row group whose pages cannot be read is one error row for
each of its rows not yet read.
"""
from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa

from ..errors import DatasetShardError, FileTooLargeError, InputError, MissingAudioError
from ..storage import Location, unreachable_errors
from .base import (Corpus, InputFile, InputOptions, ReadContext, Reader, Recording, Segment,
                   plan_item, relative_uri)
from .files import open_checked
from .metadata import TYPES, plain_type, select_columns

ID_COLUMNS = ("utt_id", "id", "key")
HF_KEY = b"huggingface"
# read_schema's answer for a file whose footer cannot be parsed: the planner makes it one
# DatasetShardError row instead of failing the whole plan
UNREADABLE_KEY = b"timbrespace_ray.unreadable"
UNREADABLE = "<unreadable shard>"
BATCH_BYTES = 16 << 20  # about this much audio decoded from Parquet at a time on a worker
MAX_BATCH_ROWS = 64
# A column chunk is streamed in reads of this size, not read whole: on object storage each read
# is a round trip (1 MiB reads of a 58 MB row group through a 30 ms store ran the features
# stage at 0.43 of local disk, 8 MiB ones at 0.65); memory holds one per column read.
BUFFER_BYTES = 8 << 20
# A row group up to this size is fetched with one request (pyarrow's pre-buffering coalesces
# its column chunks into one range) instead of one per BUFFER_BYTES: on object storage the
# round trips, not the bytes, are the cost. Larger ones are streamed, so memory stays bounded.
PREFETCH_GROUP_BYTES = 32 << 20


# schema ----------------------------------------------------------------------------------------
def is_audio_type(arrow_type: pa.DataType) -> bool:
    """struct<bytes: binary, path: string> (large variants too): how `datasets` stores Audio."""
    if not pa.types.is_struct(arrow_type) or arrow_type.num_fields != 2:
        return False
    fields = {arrow_type.field(i).name: arrow_type.field(i).type for i in range(2)}
    return (set(fields) == {"bytes", "path"}
            and (pa.types.is_binary(fields["bytes"]) or pa.types.is_large_binary(fields["bytes"]))
            and (pa.types.is_string(fields["path"]) or pa.types.is_large_string(fields["path"])))


def hf_features(schema: pa.Schema) -> dict | None:
    """The dataset's features from the `huggingface` schema metadata (None when absent)."""
    raw = (schema.metadata or {}).get(HF_KEY)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    features = doc.get("info", {}).get("features") if isinstance(doc, dict) else None
    return features if isinstance(features, dict) else None


def label_names(schema: pa.Schema) -> dict[str, list[str]]:
    """The ClassLabel columns of a `datasets` schema and their label names."""
    out = {}
    for name, feature in (hf_features(schema) or {}).items():
        if (isinstance(feature, dict) and feature.get("_type") == "ClassLabel"
                and isinstance(feature.get("names"), list) and name in schema.names
                and pa.types.is_integer(schema.field(name).type)):
            out[name] = [str(n) for n in feature["names"]]
    return out


class _Watched:
    """A file object that remembers an error of the storage itself, so that a failure to read
    a footer is told apart from a footer that cannot be parsed (a damaged shard)."""

    def __init__(self, fh):
        self._fh = fh
        self.failure: BaseException | None = None

    def read(self, n: int = -1) -> bytes:
        try:
            return self._fh.read(n)
        except BaseException as exc:
            self.failure = exc
            raise

    def seek(self, *args):
        return self._fh.seek(*args)

    def tell(self) -> int:
        return self._fh.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "_Watched":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_watched(shard: Location) -> _Watched:
    # no read-ahead: a footer or an id column read must not fetch megabytes of the audio after it
    return _Watched(shard.fs.open(shard.path, "rb", cache_type="none"))


def _damaged(uri: str, exc: BaseException) -> str:
    return (f"{uri}: not a readable Parquet file ({type(exc).__name__}: {exc}); the shard is "
            "damaged or truncated (an interrupted download or upload?): download or write it "
            "again")


def read_schema(shard: Location) -> pa.Schema:
    """The shard's Arrow schema from its footer; for a footer that cannot be parsed, an empty
    schema marked unreadable (storage errors are raised)."""
    import pyarrow.parquet as pq

    with _open_watched(shard) as fh:
        try:
            return pq.read_schema(fh)
        except Exception as exc:
            if fh.failure is not None or isinstance(exc, unreachable_errors()):
                raise
            return pa.schema([], metadata={UNREADABLE_KEY: _damaged(shard.uri, exc).encode()})


def audio_column(schema: pa.Schema, override: str | None, where: str) -> str | None:
    """The audio column of a Parquet table, None when it is not an audio dataset (a path
    manifest, an image dataset...). An unreadable shard counts as a dataset shard: it is
    planned as one error row."""
    if UNREADABLE_KEY in (schema.metadata or {}):
        return override or UNREADABLE
    typed = [f.name for f in schema if is_audio_type(f.type)]
    if override:
        if override not in schema.names:
            raise InputError(f"audio column {override!r} (--audio-column) is not a column of "
                             f"{where}; its columns are: {', '.join(schema.names) or 'none'}")
        if not is_audio_type(schema.field(override).type):
            raise InputError(
                f"audio column {override!r} (--audio-column) of {where} is "
                f"{schema.field(override).type}, not struct<bytes: binary, path: string>; "
                f"columns of that type: {', '.join(typed) or 'none'}")
        return override
    features = hf_features(schema)
    if features is not None:
        # `datasets` says which columns are audio (an Image column has the same storage type)
        found = [n for n, f in features.items()
                 if isinstance(f, dict) and f.get("_type") == "Audio" and n in typed]
    else:
        found = typed
    if len(found) > 1:
        raise InputError(f"{where} has several audio columns ({', '.join(found)}): name the one "
                         "to read with --audio-column (features.audio_column)")
    return found[0] if found else None


# planning --------------------------------------------------------------------------------------
@dataclass
class _Shard:
    """What planning learns from one shard's footer (and its id column)."""

    loc: Location
    prefix: str  # the shard's path relative to the input root: the default utt_id prefix
    problem: str | None = None  # the footer cannot be parsed
    audio: str | None = None
    id_column: str | None = None
    types: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # plain, arrow
    labels: dict[str, list[str]] = field(default_factory=dict)
    row_groups: list[tuple[int, int]] = field(default_factory=list)  # rows, bytes


def plan_shards(shards: list[Location], root: Location, options: InputOptions
                ) -> tuple[list[dict], dict[str, str]]:
    """Plan items (slices of row groups) for the shards of one dataset, and its metadata
    columns. Only footers and the id column are read."""
    seen: dict[str, str] = {}  # utt_id -> where, to refuse duplicates
    infos = [_plan_shard(loc, posixpath.relpath(loc.path, root.path), options, seen)
             for loc in shards]
    readable = [s for s in infos if s.problem is None]
    where = f"Parquet audio dataset {root.uri}"
    id_columns = {s.id_column for s in readable}
    if len(id_columns) > 1:
        by = {c: [s.prefix for s in readable if s.id_column == c] for c in id_columns}
        raise InputError(f"the shards of {where} disagree on the id column: " + "; ".join(
            f"{c!r} in {', '.join(p[:3])}" if c else f"none in {', '.join(p[:3])}"
            for c, p in by.items()) + ": name it with --id-column (features.id_column)")
    available, labels = _merge_columns(readable, where)
    columns = select_columns(available, options.metadata_columns, where)
    names = list(columns)
    items = []
    for shard in infos:
        if shard.problem is not None:
            items.append(plan_item(AudioDatasetReader, count=1, source=shard.loc.uri,
                                   prefix=shard.prefix, error=shard.problem))
            continue
        group_first = 0
        for index, (rows, size) in enumerate(shard.row_groups):
            for first, count in _slices(rows, size, options.unit_bytes):
                items.append(plan_item(
                    AudioDatasetReader, count=count, size=size * count // rows,
                    source=shard.loc.uri, prefix=shard.prefix, row_group=index,
                    group_first=group_first, first=group_first + first, rows=count,
                    id_column=shard.id_column, audio_column=shard.audio, columns=names,
                    labels=[n for n in names if n in labels]))
            group_first += rows
    return items, columns


def _plan_shard(loc: Location, prefix: str, options: InputOptions, seen: dict[str, str]
                ) -> _Shard:
    import pyarrow.parquet as pq

    shard = _Shard(loc, prefix)
    with _open_watched(loc) as fh:
        try:
            pf = pq.ParquetFile(fh, pre_buffer=False)
            schema = pf.schema_arrow
            meta = pf.metadata
        except Exception as exc:
            if fh.failure is not None or isinstance(exc, unreachable_errors()):
                raise
            shard.problem = _damaged(loc.uri, exc)
            return shard
        shard.audio = audio_column(schema, options.audio_column, loc.uri)
        if shard.audio is None:
            raise InputError(f"{loc.uri} has no audio column (struct<bytes: binary, path: "
                             "string>); name it with --audio-column")
        shard.id_column = _id_column(schema, shard.audio, options.id_column, loc.uri)
        shard.labels = label_names(schema)
        for f in schema:
            if f.name in (shard.audio, shard.id_column) or pa.types.is_null(f.type):
                continue  # an all-null column says nothing about its type
            kind = "string" if f.name in shard.labels else plain_type(f.type)
            shard.types[f.name] = (kind, "ClassLabel" if f.name in shard.labels else str(f.type))
        shard.row_groups = [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size)
                            for i in range(meta.num_row_groups)]
        if shard.id_column is not None:
            _check_ids(pf, fh, shard, seen)
    return shard


def _id_column(schema: pa.Schema, audio: str, named: str | None, where: str) -> str | None:
    if named:
        if named not in schema.names:
            raise InputError(f"id column {named!r} (--id-column) is not a column of {where}; its "
                             f"columns are: {', '.join(schema.names)}")
        if named == audio or plain_type(schema.field(named).type) is None:
            raise InputError(f"id column {named!r} of {where} is {schema.field(named).type}, "
                             "not a scalar column")
        return named
    for name in ID_COLUMNS:
        if name in schema.names and plain_type(schema.field(name).type) is not None:
            return name
    return None


def _check_ids(pf, fh: _Watched, shard: _Shard, seen: dict[str, str]) -> None:
    """Refuse an id that two rows of the corpus share (the id column alone is read; a row group
    whose id pages cannot be read is left to the worker, which reports its rows)."""
    row = 0
    for index, (rows, _) in enumerate(shard.row_groups):
        try:
            ids = pf.read_row_group(index, columns=[shard.id_column]).column(0).to_pylist()
        except Exception as exc:
            if fh.failure is not None or isinstance(exc, unreachable_errors()):
                raise
            ids = []
        for offset, value in enumerate(ids):
            utt_id = _utt_id(value, shard.prefix, row + offset)
            if utt_id in seen:
                raise InputError(f"two rows share utt_id {utt_id!r}: {seen[utt_id]} and "
                                 f"{shard.loc.uri} row {row + offset}; name a unique column "
                                 "with --id-column")
            seen[utt_id] = f"{shard.loc.uri} row {row + offset}"
        row += rows


def _merge_columns(shards: list[_Shard], where: str
                   ) -> tuple[dict[str, str | None], dict[str, list[str]]]:
    """One type per metadata column over all shards (a column some shards lack is null there);
    an InputError naming two shards that disagree."""
    available: dict[str, str | None] = {}
    first: dict[str, tuple[_Shard, str]] = {}
    labels: dict[str, list[str]] = {}
    for shard in shards:
        for name, (kind, arrow) in shard.types.items():
            if name not in first:
                first[name] = (shard, arrow)
                available[name] = kind
                if name in shard.labels:
                    labels[name] = shard.labels[name]
                continue
            other, other_arrow = first[name]
            if available[name] != kind or labels.get(name) != shard.labels.get(name):
                raise InputError(
                    f"the shards of {where} disagree on column {name!r}: {other_arrow} in "
                    f"{other.prefix}, {arrow} in {shard.prefix}" +
                    (" (different label names)" if arrow == other_arrow else "") +
                    "; the shards of one dataset must share a schema")
    return available, labels


def _slices(rows: int, size: int, max_bytes: int) -> list[tuple[int, int]]:
    """(first, count) row slices of a row group, balanced, each within max_bytes (one row
    larger than that is a slice of its own). Not cut by row count: every slice reads the row
    group from its start (Parquet cannot start mid-page), so n slices read it about n/2 times
    over, which on object storage is what the stage waits for."""
    if rows <= 0:
        return []
    per = rows if size <= max_bytes else max(1, max_bytes * rows // size)
    n = math.ceil(rows / per)
    return [(i * rows // n, (i + 1) * rows // n - i * rows // n) for i in range(n)]


def _utt_id(value: Any, prefix: str, row: int) -> str:
    return f"{prefix}/{row}" if value is None or value == "" else str(value)


# reading ---------------------------------------------------------------------------------------
class AudioDatasetReader(Reader):
    name = "audio_dataset"
    describes = "Parquet audio datasets (*.parquet with an audio column)"
    extensions = (".parquet",)
    priority = 1  # before the Parquet manifest: told apart by the audio column

    @classmethod
    def recognises(cls, loc: Location, options: InputOptions) -> bool:
        return (super().recognises(loc, options)
                and audio_column(read_schema(loc), options.audio_column, loc.uri) is not None)

    @classmethod
    def plan(cls, files: Iterable[InputFile], root: Location, options: InputOptions) -> Corpus:
        return Corpus(*plan_shards([f.loc for f in files], root, options))

    @classmethod
    def read(cls, item: dict, ctx: ReadContext) -> Iterator[Recording]:
        import pyarrow.parquet as pq

        source, prefix = item["source"], item["prefix"]
        if "error" in item:
            yield Recording(source, [Segment(f"{prefix}/")], error=DatasetShardError(item["error"]))
            return
        loc = Location.of(source, dict(ctx.storage_options))
        base = Location(loc.fs, posixpath.dirname(loc.path))
        done, failure, pf = 0, None, None
        try:
            # no read-ahead cache: pyarrow reads the columns' chunks in turn, and every seek back
            # to another chunk would fetch from there on again (to the end of a small shard)
            fh = loc.fs.open(loc.path, "rb", cache_type="none")
        except unreachable_errors():
            raise
        except Exception as exc:
            fh, failure = None, exc
        try:
            if fh is not None:
                try:
                    pf = pq.ParquetFile(fh, buffer_size=BUFFER_BYTES, pre_buffer=False)
                    group = pf.metadata.row_group(item["row_group"])
                    if sum(group.column(i).total_compressed_size
                           for i in range(group.num_columns)) <= PREFETCH_GROUP_BYTES:
                        pf = pq.ParquetFile(fh, metadata=pf.metadata, buffer_size=BUFFER_BYTES,
                                            pre_buffer=True)
                    batches = _slice_batches(pf, item)
                    labels = label_names(pf.schema_arrow)
                except unreachable_errors():
                    raise
                except Exception as exc:
                    failure = exc
                while failure is None:
                    try:
                        row, batch = next(batches)
                        recordings = list(_recordings(item, row, batch, labels, base, ctx))
                    except StopIteration:
                        break
                    except unreachable_errors():
                        raise
                    except Exception as exc:
                        failure = exc
                        break
                    for rec in recordings:
                        yield rec
                        done += 1
            if done < item["rows"]:
                # every planned row is accounted for: those not read are error rows
                yield from _unread(item, pf, done, failure)
        finally:
            if fh is not None:
                fh.close()


def _slice_batches(pf, item: dict) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(shard row of the first row, batch) over the item's slice of its row group, read in
    small batches (the rows before the slice are read and dropped)."""
    present = set(pf.schema_arrow.names)
    columns = [item["audio_column"]] + [c for c in [item["id_column"], *item["columns"]]
                                        if c is not None and c in present]
    per_row = max(1, item["size"] // max(1, item["rows"]))
    batch_rows = max(1, min(MAX_BATCH_ROWS, BATCH_BYTES // per_row))
    start = item["first"] - item["group_first"]
    end = start + item["rows"]
    pos = 0
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[item["row_group"]],
                                 columns=list(dict.fromkeys(columns)), use_threads=False):
        lo, hi = max(start - pos, 0), min(end - pos, batch.num_rows)
        if lo < hi:
            yield item["group_first"] + pos + lo, batch.slice(lo, hi - lo)
        pos += batch.num_rows
        if pos >= end:
            return


def _recordings(item: dict, first_row: int, batch: pa.RecordBatch, labels: dict[str, list[str]],
                base: Location, ctx: ReadContext) -> Iterator[Recording]:
    names = batch.schema.names
    cells = batch.column(names.index(item["audio_column"])).to_pylist()
    id_column = item["id_column"]
    ids = (batch.column(names.index(id_column)).to_pylist() if id_column in names
           else [None] * batch.num_rows)
    meta = {c: _values(batch, c, item, labels) for c in item["columns"]}
    for i, cell in enumerate(cells):
        row = first_row + i
        where = f"{item['source']}#{row}"
        row_meta = {c: values[i] for c, values in meta.items()}
        bad = next(((c, v) for c, v in row_meta.items() if isinstance(v, _BadLabel)), None)
        if bad:
            row_meta = {c: None if isinstance(v, _BadLabel) else v for c, v in row_meta.items()}
        segment = Segment(_utt_id(ids[i], item["prefix"], row), metadata=row_meta)
        if bad:
            column, label = bad
            yield Recording(where, [segment], error=InputError(
                f"{where}: the ClassLabel column {column!r} holds {label.index}, but the "
                f"dataset's label has {label.count} names (0 to {label.count - 1}, -1 for "
                "none): fix the value or the label's names"))
            continue
        yield _recording(where, cell, segment, item["audio_column"], base, ctx)


class _BadLabel(NamedTuple):
    """A ClassLabel index that names no label: the row is an error row, not a null."""

    index: int
    count: int


def _values(batch: pa.RecordBatch, name: str, item: dict, labels: dict[str, list[str]]
            ) -> list:
    """One metadata column of a batch as Python values of its planned type (null where this
    shard lacks the column)."""
    if name not in batch.schema.names:
        return [None] * batch.num_rows
    column = batch.column(batch.schema.names.index(name))
    if name in item["labels"]:
        names = labels.get(name, [])
        # -1 is how `datasets` writes "no label" (a test split's); any other index that names
        # no label is a row whose value cannot be kept
        return [None if v is None or v == -1 else names[v] if 0 <= v < len(names)
                else _BadLabel(v, len(names)) for v in column.to_pylist()]
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    kind = plain_type(column.type)  # the planned type: planning made the shards agree on it
    try:
        return column.cast(TYPES[kind]).to_pylist() if kind else column.to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return column.to_pylist()  # fitted (or nulled) to the planned type when written


def _recording(where: str, cell: dict | None, segment: Segment, audio_column: str,
               base: Location, ctx: ReadContext) -> Recording:
    if cell is None:
        return Recording(where, [segment], error=MissingAudioError(
            f"{where}: the audio cell ({audio_column!r}) is null"))
    data, path = cell.get("bytes"), cell.get("path")
    if data is not None:
        if len(data) > ctx.max_file_bytes:
            return Recording(where, [segment], error=FileTooLargeError(
                f"the audio is {len(data) / 2**20:.0f} MiB, over the "
                f"{ctx.max_file_bytes / 2**20:.0f} MiB limit (features.max_file_bytes)"))
        return Recording(where, [segment], open=lambda: data)
    if path:
        uri, _ = relative_uri(base, path)
        return Recording(uri, [segment], open=lambda: open_checked(uri, -1, ctx))
    return Recording(where, [segment], error=MissingAudioError(
        f"{where}: the audio cell ({audio_column!r}) has neither bytes nor a path"))


def _unread(item: dict, pf, done: int, failure: BaseException | None) -> Iterator[Recording]:
    """One error row for each row of the slice from `done` on."""
    source, first, rows = item["source"], item["first"], item["rows"]
    if failure is not None:
        error = DatasetShardError(
            f"{source}: row group {item['row_group']} cannot be read from row {first + done} on "
            f"({type(failure).__name__}: {failure}); the shard is damaged: download or write "
            "it again (the rows of its other row groups are read)")
        error.__cause__ = failure
    else:
        error = DatasetShardError(f"{source}: row group {item['row_group']} ends before row "
                                  f"{first + done}; the shard changed since the run was planned")
    ids: list = []
    if pf is not None and item["id_column"]:
        try:  # the id pages may be intact where the audio's are not: name the rows by their ids
            ids = pf.read_row_group(item["row_group"], columns=[item["id_column"]]
                                    ).column(0).to_pylist()
        except Exception:
            ids = []
    for row in range(first + done, first + rows):
        offset = row - item["group_first"]
        value = ids[offset] if offset < len(ids) else None
        yield Recording(f"{source}#{row}", [Segment(_utt_id(value, item["prefix"], row))],
                        error=error)
