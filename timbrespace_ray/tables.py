"""Parquet tables every stage writes and reads: schemas, provenance metadata, atomic part
files; a part read whole in one request, its schema, settings and row count from its footer
alone."""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import one_line
from .storage import Location

ERRORS_SCHEMA = pa.schema([
    ("source", pa.string()),
    ("utt_id", pa.string()),
    ("stage", pa.string()),
    ("error_type", pa.string()),
    ("message", pa.string()),
])

# the window's embedding after the encoder's corpus normalisation (centred, whitened when the
# encoder was fitted so, unit length): cosine scores are dot products of it. Written when the
# encoder folder holds a normalisation (ours do; an original checkpoint does not)
NORMALIZED_COLUMN = "embedding_normalized"


def embeddings_schema(hidden_dim: int) -> pa.Schema:
    """The embed stage's table without the corpus's own columns, which follow `end_s`, and
    without the optional `NORMALIZED_COLUMN` after `embedding` (here, not in the stage, so
    that planning can name its columns without importing torch)."""
    return pa.schema([("utt_id", pa.string()), ("source", pa.string()), ("start_s", pa.float64()),
                      ("end_s", pa.float64()), ("window", pa.int32()),
                      ("start_frame", pa.int32()), ("n_frames", pa.int32()),
                      ("embedding", pa.list_(pa.float32(), hidden_dim))])


# Parquet key-value metadata naming the corpus's own columns (speaker, language...) of a
# per-utterance table, so each later stage carries exactly those on
METADATA_COLUMNS_KEY = b"timbrespace_ray.metadata_columns"
SETTINGS_KEY = b"timbrespace_ray.settings"


def carried_columns(schema: pa.Schema) -> list[str]:
    """The corpus metadata columns of a table written by one of our stages."""
    return json.loads((schema.metadata or {}).get(METADATA_COLUMNS_KEY, b"[]"))


def carried_metadata(columns: list[str]) -> dict[bytes, bytes]:
    return {METADATA_COLUMNS_KEY: json.dumps(columns).encode()}


def provenance(stage: str, settings: dict[str, Any]) -> dict[bytes, bytes]:
    """Key-value metadata saying how a file's numbers were made (no credentials)."""
    from . import __version__

    return {
        b"timbrespace_ray.version": __version__.encode(),
        b"timbrespace_ray.stage": stage.encode(),
        SETTINGS_KEY: json.dumps(settings, sort_keys=True, default=str).encode(),
    }


def write_table(location: Location, table: pa.Table, metadata: dict[bytes, bytes]) -> None:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, table.schema, compression="zstd",
                          use_dictionary=_dictionary_columns(table.schema)) as writer:
        # no row group at all for no rows (a unit whose every input failed): a 0-row group
        # makes Hugging Face `datasets` ask for batches of size 0 and fail on the folder
        if table.num_rows:
            writer.write_table(table)
    location.write_atomic(buf.getvalue())


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding: not measurements (floats almost never repeat, so trying
    a dictionary first costs time and leaves the file about a quarter larger)."""
    def floating(t: pa.DataType) -> bool:
        while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            t = t.value_type
        return pa.types.is_floating(t)

    return [f.name for f in schema if not floating(f.type)]


def errors_table(rows: list[dict[str, str]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA)


def error_row(stage: str, source: str, utt_id: str, exc: BaseException) -> dict[str, str]:
    message = one_line(str(exc)) or exc.__class__.__name__
    return {"source": source, "utt_id": utt_id, "stage": stage,
            "error_type": type(exc).__name__, "message": message}


def read_part(location: Location, columns: list[str] | None = None) -> pa.Table:
    """A part file, fetched whole (one request on an object store; parts are tens of MB) and
    decoded on this thread (a worker reads one part per CPU it holds)."""
    return parquet_from_bytes(location.read_bytes(), columns)


def parquet_from_bytes(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file held in memory, decoded synchronously on the calling thread.

    Not `pq.read_table`: even unthreaded it runs its reads as tasks of pyarrow's thread pool,
    and when such a task drops the last reference to the reader of a Python buffer at
    interpreter exit, its destructor waits for the GIL, the thread is unwound and the process
    aborts ("terminate called without an active exception", exit 134) after its work is done.
    """
    return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns, use_threads=False)


def footer(location: Location) -> pq.FileMetaData:
    """A part's footer: its schema, row count and key-value metadata, without its data."""
    with location.fs.open(location.path, "rb") as fh:
        return pq.read_metadata(fh)


def read_schema(location: Location) -> pa.Schema:
    return footer(location).schema.to_arrow_schema()


def row_count(location: Location) -> int:
    return footer(location).num_rows


def settings_of(schema: pa.Schema) -> dict[str, Any]:
    """How a table's numbers were made (`provenance`)."""
    return json.loads((schema.metadata or {}).get(SETTINGS_KEY, b"{}"))


def read_settings(location: Location) -> dict[str, Any]:
    return settings_of(read_schema(location))


def flat_lists(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(every row's values end to end, row offsets) of a list column: row i is
    values[offsets[i]:offsets[i + 1]], without a Python object per value."""
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    return values, np.r_[0, np.cumsum(lengths)]
