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

# columns of seconds (a segment's bounds, a file's length): floats in a JSON lines file
SECONDS_COLUMNS = ("start", "offset", "end", "duration")


def read_table(loc: Location) -> pa.Table:
    """The rows of a Parquet or CSV file."""
    import pyarrow.parquet as pq
    from pyarrow import csv

    data = loc.read_bytes()
    try:
        if loc.path.lower().endswith(".parquet"):
            return pq.read_table(io.BytesIO(data))
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
