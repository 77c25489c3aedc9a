"""The rows of the files that describe a corpus (manifests, metadata tables), in their formats:
Parquet, CSV and JSON lines (gzipped or not). Nothing here knows what the columns mean.
"""
from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator

import pyarrow as pa

from ..errors import InputError
from ..storage import Location
from ..tables import parquet_from_bytes

# columns of seconds (a segment's bounds, a file's length): floats in a JSON lines file
SECONDS_COLUMNS = ("start", "offset", "end", "duration")


def read_table(loc: Location) -> pa.Table:
    """The rows of a Parquet or CSV file."""
    from pyarrow import csv

    data = loc.read_bytes()
    try:
        if loc.path.lower().endswith(".parquet"):
            return parquet_from_bytes(data)
        return csv.read_csv(io.BytesIO(data))
    except pa.ArrowInvalid as exc:
        raise InputError(f"{loc.uri} could not be parsed: {exc}") from exc


def _lines(loc: Location) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a JSON lines file, gzipped or not, streamed; blank lines left out."""
    with loc.fs.open(loc.path, "rb") as raw:
        fh = gzip.open(raw) if loc.path.lower().endswith(".gz") else raw
        for number, line in enumerate(fh, 1):
            if line.strip():
                yield number, line


def first_record(loc: Location) -> dict | None:
    """The first record of a JSON lines file, gzipped or not: None when the first line is not
    a JSON object (a JSON document spread over lines, an array), {} when there is no line."""
    for _, line in _lines(loc):
        try:
            doc = json.loads(line)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None
    return {}


def records(loc: Location) -> Iterator[tuple[int, dict]]:
    """(line number, record) of a JSON lines file, gzipped or not, streamed."""
    for number, line in _lines(loc):
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{loc.uri} line {number} is not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise InputError(f"{loc.uri} line {number} is not a JSON object")
        yield number, doc


def read_json_lines(loc: Location, first: dict) -> pa.Table:
    """The rows of a JSON lines file whose first record is `first`. The columns of seconds that
    the first record has are read as floats whatever each row writes (`2` or `2.0`): pyarrow
    infers a type per block and would otherwise refuse a column that changes from integers to
    floats."""
    from pyarrow import json as arrow_json

    data = loc.read_bytes()
    if loc.path.lower().endswith(".gz"):
        data = gzip.decompress(data)
    seconds = pa.schema([(n, pa.float64()) for n in SECONDS_COLUMNS if n in first])
    try:
        return arrow_json.read_json(
            io.BytesIO(data), parse_options=arrow_json.ParseOptions(explicit_schema=seconds))
    except pa.ArrowInvalid as exc:
        raise InputError(f"{loc.uri} could not be parsed: {exc}") from exc


# Large tables are read in blocks of about this many bytes, so that a manifest of tens of
# millions of rows is never in memory whole (manifest.py plans it block by block).
BLOCK_BYTES = 32 << 20


def table_blocks(loc: Location) -> Iterator[pa.Table]:
    """The rows of a Parquet or CSV file in blocks, streamed. A CSV column is typed from the
    first block: when a later block disagrees, the file is read again with that column as
    float64 (integers that become decimals) or string, from the first row not yet given (the
    blocks given keep their types: `unified_schema` reconciles them)."""
    import pyarrow.parquet as pq

    if loc.path.lower().endswith(".parquet"):
        with loc.fs.open(loc.path, "rb") as fh:
            try:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=256 << 10,
                                                             use_threads=False):
                    yield pa.Table.from_batches([batch])
            except pa.ArrowInvalid as exc:
                raise InputError(f"{loc.uri} could not be parsed: {exc}") from exc
        return
    forced: dict[str, pa.DataType] = {}
    given = 0
    while True:
        skip = given
        try:
            for block in _csv_blocks(loc, forced):
                if skip >= block.num_rows:
                    skip -= block.num_rows
                    continue
                block, skip = block.slice(skip), 0
                given += block.num_rows
                yield block
            return
        except _Retyped as retyped:
            forced[retyped.column] = retyped.type


class _Retyped(Exception):
    def __init__(self, column: str, type_: pa.DataType):
        super().__init__(column)
        self.column, self.type = column, type_


def _csv_blocks(loc: Location, forced: dict[str, pa.DataType]) -> Iterator[pa.Table]:
    import re

    from pyarrow import csv

    names: list[str] = []
    with loc.fs.open(loc.path, "rb") as fh:
        try:
            reader = csv.open_csv(fh, read_options=csv.ReadOptions(block_size=BLOCK_BYTES),
                                  convert_options=csv.ConvertOptions(column_types=forced))
            names = reader.schema.names
            for batch in reader:
                yield pa.Table.from_batches([batch])
        except pa.ArrowInvalid as exc:
            found = re.search(r"CSV column #(\d+): CSV conversion error to (\w+): invalid value "
                              r"'(.*)'", str(exc))
            at = int(found.group(1)) if found else len(names)
            if at >= len(names) or names[at] in forced:
                raise InputError(f"{loc.uri} could not be parsed: {exc}") from exc
            column, value = names[at], found.group(3)
            numeric = found.group(2) in ("int64", "null")
            try:
                float(value)
            except ValueError:
                numeric = False
            raise _Retyped(column, pa.float64() if numeric else pa.string()) from None


def json_line_blocks(loc: Location, first: dict) -> Iterator[pa.Table]:
    """The rows of a JSON lines file whose first record is `first`, in blocks of lines. Each
    block is typed alone (`conformed` gives them one schema); the columns of seconds that the
    first record has are read as floats whatever each row writes (`2` or `2.0`)."""
    from pyarrow import json as arrow_json

    seconds = pa.schema([(n, pa.float64()) for n in SECONDS_COLUMNS if n in first])
    options = arrow_json.ParseOptions(explicit_schema=seconds)
    block: list[bytes] = []
    size = 0
    lines = _lines(loc)
    while True:
        line = next(lines, None)
        if line is not None:
            block.append(line[1] if line[1].endswith(b"\n") else line[1] + b"\n")
            size += len(block[-1])
        if block and (line is None or size >= BLOCK_BYTES):
            try:
                yield arrow_json.read_json(io.BytesIO(b"".join(block)), parse_options=options)
            except pa.ArrowInvalid as exc:
                if "changed from" not in str(exc):
                    raise InputError(f"{loc.uri} could not be parsed: {exc}") from exc
                yield _mixed_block(block, seconds)
            block, size = [], 0
        if line is None:
            return


def _mixed_block(lines: list[bytes], seconds: pa.Schema) -> pa.Table:
    """A block of JSON lines in which a column holds values of different kinds (a speaker
    written as a number on some lines, as text on others): such a column as text."""
    records = [json.loads(line) for line in lines]
    kinds: dict[str, set] = {}
    for record in records:
        for name, value in record.items():
            if value is not None:
                kinds.setdefault(name, set()).add(type(value) if not isinstance(value, bool)
                                                  else bool)
    numbers = {int, float}
    mixed = [n for n, k in kinds.items() if len(k) > 1 and not k <= numbers
             and n not in seconds.names]
    for record in records:
        for name in mixed:
            if record.get(name) is not None:
                record[name] = str(record[name])
    table = pa.Table.from_pylist(records)
    return pa.table({name: (table.column(name).cast(pa.float64()) if name in seconds.names
                            or kinds.get(name, set()) == numbers else table.column(name))
                     for name in table.column_names})


def unified_schema(schemas: list[pa.Schema], where: str) -> pa.Schema:
    """One schema for blocks typed apart: every column of any block, in order of appearance;
    a column typed alike everywhere keeps its type, integers with floats become float64, any
    other mixture of scalars string (a column only null somewhere takes the others' type)."""
    types: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for field_ in schema:
            seen = types.setdefault(field_.name, [])
            if not pa.types.is_null(field_.type) and field_.type not in seen:
                seen.append(field_.type)
    fields = []
    for name, seen in types.items():
        if not seen:
            type_ = pa.null()
        elif len(seen) == 1:
            type_ = seen[0]
        elif all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in seen):
            type_ = pa.float64()
        elif all(pa.types.is_primitive(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
                 for t in seen):
            type_ = pa.string()
        else:
            raise InputError(f"{where}: column {name!r} holds values of different kinds "
                             f"({', '.join(map(str, seen))})")
        fields.append(pa.field(name, type_))
    return pa.schema(fields)


def conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns and types (a column it lacks: all null)."""
    columns = []
    for field_ in schema:
        if field_.name in table.column_names:
            column = table.column(field_.name)
            columns.append(column if column.type == field_.type else column.cast(field_.type))
        else:
            columns.append(pa.nulls(table.num_rows, field_.type))
    return pa.table(columns, schema=schema)
