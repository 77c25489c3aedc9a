"""The rows of the files that describe a corpus (manifests, metadata tables), in their formats:
Parquet, CSV and JSON lines (gzipped or not). Nothing here knows what the columns mean.
"""
from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator

import pyarrow as pa

from ..errors import InputError, one_line
from ..storage import Location, unreachable_errors
from ..tables import parquet_from_bytes
from .metadata import TYPES, plain_value, shared_type, shown_value

# columns of seconds (a segment's bounds, a file's length): floats in a JSON lines file
SECONDS_COLUMNS = ("start", "offset", "end", "duration")


def read_table(loc: Location) -> pa.Table:
    """The rows of a Parquet or CSV file."""
    from pyarrow import csv

    data = loc.read_bytes()
    try:
        if loc.path.lower().endswith(".parquet"):
            return parquet_from_bytes(data)
        # the file is in memory already: one block, so that a row of any length is read
        table = csv.read_csv(io.BytesIO(data),
                             read_options=csv.ReadOptions(block_size=max(1 << 20, len(data) + 1)))
        table.column_names  # noqa: B018 (the header's names are decoded when first asked for)
        return table
    except pa.ArrowInvalid as exc:
        raise InputError(f"{loc.uri} could not be parsed: {one_line(str(exc))}") from exc
    except UnicodeDecodeError as exc:  # the header's names are decoded as text
        raise not_utf8(loc, exc) from None


def not_utf8(loc: Location, exc: UnicodeDecodeError) -> InputError:
    return InputError(f"{loc.uri}: its header is not UTF-8 text ({exc}); save the file as UTF-8")


# what gzip raises on a file cut short or damaged (EOFError is no OSError)
_DAMAGED = (EOFError, zlib.error, gzip.BadGzipFile)


def _damaged(loc: Location, after: int, exc: Exception) -> InputError:
    # the lines after the damage cannot be counted, so no error row can stand for them
    where = f" after line {after}" if after else ""
    return InputError(f"{loc.uri} cannot be read to its end{where}: it is cut short or damaged "
                      f"({exc}); write the manifest again (or copy it whole)")


def _lines(loc: Location) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a JSON lines file, gzipped or not, streamed; blank lines left out.
    A gzipped file cut short or damaged is an InputError for the whole file."""
    number = 0
    with loc.fs.open(loc.path, "rb") as raw:
        fh = gzip.open(raw) if loc.path.lower().endswith(".gz") else raw
        try:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    yield number, line
        except _DAMAGED as exc:
            raise _damaged(loc, number, exc) from None


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
    for number, doc in record_lines(loc):
        if isinstance(doc, InputError):
            raise doc
        yield number, doc


def record_lines(loc: Location) -> Iterator[tuple[int, dict | InputError]]:
    """(line number, record, or the InputError of a line that is not a JSON object) of a JSON
    lines file, gzipped or not, streamed: a reader makes a bad line that line's error row."""
    for number, line in _lines(loc):
        try:
            doc = json.loads(line)
        except ValueError as exc:
            yield number, InputError(f"{loc.uri} line {number} is not JSON ({exc})")
            continue
        yield number, (doc if isinstance(doc, dict)
                       else InputError(f"{loc.uri} line {number} is not a JSON object"))


def read_json_lines(loc: Location, first: dict) -> pa.Table:
    """The rows of a JSON lines file whose first record is `first`. The columns of seconds that
    the first record has are read as floats whatever each row writes (`2` or `2.0`): pyarrow
    infers a type per block and would otherwise refuse a column that changes from integers to
    floats."""
    from pyarrow import json as arrow_json

    data = loc.read_bytes()
    if loc.path.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except _DAMAGED as exc:
            raise _damaged(loc, 0, exc) from None
    seconds = pa.schema([(n, pa.float64()) for n in SECONDS_COLUMNS if n in first])
    try:
        return arrow_json.read_json(
            io.BytesIO(data), parse_options=arrow_json.ParseOptions(explicit_schema=seconds))
    except pa.ArrowInvalid as exc:
        raise InputError(f"{loc.uri} could not be parsed: {exc}") from exc


# Large tables are read in blocks of about this many bytes, so that a manifest of tens of
# millions of rows is never in memory whole (manifest.py plans it block by block).
BLOCK_BYTES = 32 << 20

# Columns the blocks carry beside the file's own: each row's number as a text editor shows it
# (a CSV's header is line 1; a Parquet file's rows are counted from 1), and why the row cannot
# be read (null: it can), so that a bad row is that row's error, not the file's.
LINE = "__timbrespace_line"
PROBLEM = "__timbrespace_problem"


def table_blocks(loc: Location, text_columns: tuple[str, ...] = ()) -> Iterator[pa.Table]:
    """The rows of a Parquet or CSV file in blocks, streamed, with LINE (and PROBLEM where a
    CSV row has more or fewer cells than the header). A CSV's `text_columns` are read as text
    whatever they look like (a path `123`, an id `007`); its other columns are typed from the
    first block: when a later block disagrees, the file is read again with that column as
    float64 (integers that become decimals) or string, from the first row not yet given (the
    blocks given keep their types: `unified_schema` reconciles them)."""
    import pyarrow.parquet as pq

    if loc.path.lower().endswith(".parquet"):
        with loc.fs.open(loc.path, "rb") as fh:
            try:
                file = pq.ParquetFile(fh)
                refuse_repeated(loc, file.schema_arrow.names)
                first = 1
                for batch in file.iter_batches(batch_size=256 << 10, use_threads=False):
                    rows = range(first, first + batch.num_rows)
                    yield numbered(pa.Table.from_batches([batch]), rows)
                    first += batch.num_rows
            except pa.ArrowInvalid as exc:
                raise InputError(f"{loc.uri} could not be parsed: {one_line(str(exc))}") from exc
            except OSError as exc:
                if exc.errno is not None or isinstance(exc, unreachable_errors()):
                    raise  # the store's, not the file's
                # pyarrow's own, without an errno: the bytes are not a Parquet file's
                raise InputError(f"{loc.uri} is not a readable Parquet file "
                                 f"({one_line(str(exc))}): it is damaged or truncated; write "
                                 "it again") from None
        return
    forced: dict[str, pa.DataType] = {name: pa.string() for name in text_columns}
    given = 0
    past = 1  # the last line given (the header's, at first)
    while True:
        skip = given
        try:
            for block, lines, ragged in _csv_blocks(loc, forced):
                kept = block.slice(min(skip, block.num_rows))
                numbers = lines[block.num_rows - kept.num_rows:]
                skip = max(0, skip - block.num_rows)
                given += kept.num_rows
                ragged = [(line, problem) for line, problem in ragged if line > past]
                if kept.num_rows:
                    past = numbers[-1]
                if ragged:
                    past = max(past, ragged[-1][0])
                yield with_problems(numbered(kept, numbers), ragged)
            return
        except _Retyped as retyped:
            forced[retyped.column] = retyped.type


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def refuse_repeated(loc: Location, names: list[str]) -> None:
    """A column named twice leaves it unsaid which of the two is meant: the file is refused."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{loc.uri} has the column(s) {', '.join(map(repr, repeated))} more than "
                         "once in its header: rename or remove the copies")


def numbered(block: pa.Table, lines) -> pa.Table:
    return block.append_column(LINE, pa.array(lines, pa.int64()))


def with_problems(block: pa.Table, problems: list[tuple[int, str]]) -> pa.Table:
    """`block` and a row for each (line, problem) given: nulls but for LINE and PROBLEM."""
    if not problems:
        return block
    bad = pa.table({LINE: pa.array([n for n, _ in problems], pa.int64()),
                    PROBLEM: pa.array([p for _, p in problems], pa.string())})
    return pa.concat_tables([block, bad], promote_options="default")


class LeftOut:
    """The invalid_row_handler of Arrow's CSV reader: a row of more or fewer cells than the
    header is left out, and kept as (its line, its problem) in `rows`, so that it is that
    row's error. Arrow gives its line when it reads serially (use_threads=False)."""

    def __init__(self, advice: str):
        self.advice = advice  # what to do about such a row
        self.rows: list[tuple[int, str]] = []

    def __call__(self, row) -> str:
        self.rows.append((row.number, f"has {row.actual_columns} cells where the header has "
                                      f"{row.expected_columns}: {self.advice}"))
        return "skip"

    def lines(self, count: int, after: int) -> list[int]:
        """The lines of `count` rows read after line `after`: each the next line that no row
        left out since the last `take` took."""
        taken = {n for n, _ in self.rows}
        lines: list[int] = []
        while len(lines) < count:
            after += 1
            if after not in taken:
                lines.append(after)
        return lines

    def take(self) -> list[tuple[int, str]]:
        """The rows left out so far, forgotten here."""
        rows, self.rows = self.rows, []
        return rows


class _Retyped(Exception):
    def __init__(self, column: str, type_: pa.DataType):
        super().__init__(column)
        self.column, self.type = column, type_


def _csv_blocks(loc: Location, forced: dict[str, pa.DataType]
                ) -> Iterator[tuple[pa.Table, list[int], list[tuple[int, str]]]]:
    """(block, the line of each of its rows, (line, problem) of the rows left out of it)."""
    import re

    from pyarrow import csv

    names: list[str] = []
    left_out = LeftOut("quote a value that holds a comma")
    with loc.fs.open(loc.path, "rb") as fh:
        try:
            try:
                reader = csv.open_csv(
                    fh, read_options=csv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
                    parse_options=csv.ParseOptions(invalid_row_handler=left_out),
                    convert_options=csv.ConvertOptions(column_types=forced))
                names = reader.schema.names
            except UnicodeDecodeError as exc:  # the header's names are decoded as text
                raise not_utf8(loc, exc) from None
            refuse_repeated(loc, names)
            _refuse_binary(loc, reader.schema)
            line = 1
            yield reader.schema.empty_table(), [], []  # the header's columns, rows or not
            for batch in reader:
                # (a quoted value over several lines, or a blank line, shifts the count)
                lines = left_out.lines(batch.num_rows, line)
                line = lines[-1] if lines else line
                yield pa.Table.from_batches([batch]), lines, left_out.take()
            if left_out.rows:
                yield pa.table({n: pa.nulls(0) for n in names}), [], left_out.take()
        except pa.ArrowInvalid as exc:
            found = re.search(r"CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+): "
                              r"invalid value '(.*)'", str(exc))
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


def _refuse_binary(loc: Location, schema: pa.Schema) -> None:
    """Arrow reads a CSV column holding bytes that are not UTF-8 as binary, which no metadata
    type keeps: the file is in another encoding, so it is refused as a whole."""
    binary = [f.name for f in schema if pa.types.is_binary(f.type)]
    if binary:
        raise InputError(f"{loc.uri}: column(s) {', '.join(map(repr, binary))} hold bytes that "
                         "are not UTF-8 text; save the file as UTF-8")


def json_line_blocks(loc: Location, first: dict) -> Iterator[pa.Table]:
    """The rows of a JSON lines file whose first record is `first`, in blocks of lines, with
    LINE and PROBLEM. Each block is typed alone (`conformed` gives them one schema); the
    columns of seconds that the first record has are read as floats whatever each row writes
    (`2` or `2.0`). A block that Arrow refuses is read line by line (`_tolerant_block`)."""
    from pyarrow import json as arrow_json

    seconds = pa.schema([(n, pa.float64()) for n in SECONDS_COLUMNS if n in first])
    options = arrow_json.ParseOptions(explicit_schema=seconds)
    block: list[tuple[int, bytes]] = []
    size = 0
    lines = _lines(loc)
    while True:
        line = next(lines, None)
        if line is not None:
            number, text = line
            block.append((number, text if text.endswith(b"\n") else text + b"\n"))
            size += len(block[-1][1])
        if block and (line is None or size >= BLOCK_BYTES):
            numbers = [n for n, _ in block]
            data = b"".join(t for _, t in block)
            try:
                # Arrow's reader takes bytes that are not UTF-8 into its strings unchecked
                if not _is_utf8(data):
                    raise pa.ArrowInvalid("a line is not UTF-8")
                # the whole block in one of Arrow's blocks: a line of any length is read
                table = arrow_json.read_json(
                    io.BytesIO(data), parse_options=options,
                    read_options=arrow_json.ReadOptions(block_size=size + 1))
                yield numbered(table, numbers)
            except pa.ArrowInvalid:  # line by line: each bad line its row's problem
                yield numbered(_tolerant_block([t for _, t in block], seconds), numbers)
            block, size = [], 0
        if line is None:
            return


_KIND_NAMES = {"string": "text", "int64": "integers", "float64": "numbers", "bool": "true/false"}


def _tolerant_block(lines: list[bytes], seconds: pa.Schema) -> pa.Table:
    """A block of JSON lines that Arrow refused, read line by line. A line that is not a JSON
    object, a segment bound that is not a number, and a list or object in a column whose other
    rows hold scalars are each that row's PROBLEM (the row's values left out). A column of
    scalars of several kinds (a speaker written as a number on some lines, as text on others)
    is text, each value as the line writes it."""
    records: list[dict] = []
    problems: list[str | None] = []
    named: dict[str, None] = {}  # every column a line names, its own row's problem or not
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError as exc:
            doc, problem = {}, (f"is not JSON ({getattr(exc, 'msg', exc)} at column "
                                f"{getattr(exc, 'colno', '?')}): write one JSON object a line")
        else:
            problem = None if isinstance(doc, dict) else ("is not a JSON object: write one JSON "
                                                          "object a line")
        if isinstance(doc, dict):
            named.update(dict.fromkeys(doc))
        if problem is None:
            problem = next((f"has {name} {shown_value(doc[name])}, which is not a number: write "
                            "seconds as a number"
                            for name in seconds.names if doc.get(name) is not None
                            and plain_value(doc[name]) not in ("int64", "float64")), None)
        records.append(doc if problem is None else {})
        problems.append(problem)
    kinds: dict[str, set] = {}
    for record in records:
        for name, value in record.items():
            if value is not None:
                kinds.setdefault(name, set()).add(plain_value(value))
    types = {name: shared_type(k - {None}) for name, k in kinds.items() if k - {None}}
    for i, record in enumerate(records):
        odd = next((n for n, v in record.items() if v is not None and n in types
                    and plain_value(v) is None), None)
        if odd is not None:
            problems[i] = (f"has {shown_value(record[odd])} in column {odd!r}, whose other "
                           f"rows hold {_KIND_NAMES[types[odd]]}: write a single value there, or "
                           "leave the column out")
            records[i] = {}
    fields = []
    for name in named:
        if name in seconds.names:
            fields.append(pa.field(name, pa.float64()))
        elif name in types:
            fields.append(pa.field(name, TYPES[types[name]]))
        elif name not in kinds:  # null on every kept row: `conformed` gives it its type
            fields.append(pa.field(name, pa.null()))
    for record in records:
        for name, value in record.items():
            if name in types and types[name] == "string" and value is not None \
                    and not isinstance(value, str):
                record[name] = json.dumps(value)
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in fields} for r in records],
                                 schema=pa.schema(fields))
    return table.append_column(PROBLEM, pa.array(problems, pa.string()))


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
