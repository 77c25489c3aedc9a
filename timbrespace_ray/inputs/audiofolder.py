"""Hugging Face AudioFolder metadata: a folder of audio files with `metadata.csv`,
`metadata.jsonl` or `metadata.parquet` files whose `file_name` column names the audio files
(relative to the metadata file's folder; a metadata file may sit in any sub-folder and name
files below it), as `datasets.load_dataset("audiofolder", data_dir=...)` reads it. A file is
such metadata by its name and its `file_name` column: a `metadata.csv` of another layout
(LJSpeech's, which has no header) is no input: the audio files are read without it.

The folder's audio files are still listed and read as files (files.py): the metadata only
adds columns to them. A file that no row names keeps null metadata. A row whose file is not
among the folder's audio files is planned anyway, so that it is one error row saying what is
wrong with it (not found, not audio) rather than dropped in silence: every row is an input.
A file named twice (in one metadata file or two) is refused, since its columns would be
ambiguous. The columns are the union of the metadata files' (a column's type is the type its
files share: ints with floats float64, anything else mixed text).
"""
from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..storage import Location
from .base import InputFile, InputOptions
from .tabular import first_record, read_json_lines, read_table, refuse_repeated
from .metadata import plain_type, select_columns, shared_type, table_values

log = logging.getLogger(__name__)

METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
FILE_COLUMN = "file_name"


def named_as_metadata(loc: Location) -> bool:
    # the suffix first: asked of every file of a folder of millions
    return loc.path.endswith(METADATA_FILES) and posixpath.basename(loc.path) in METADATA_FILES


def is_metadata_file(loc: Location) -> bool:
    """Whether the file is AudioFolder metadata: named as the layout names it, with a
    `file_name` column (a corpus's own metadata.csv, LJSpeech's say, is left alone)."""
    return named_as_metadata(loc) and FILE_COLUMN in _columns(loc)


def _columns(loc: Location) -> list[str]:
    """The column names of a metadata file, from its header, first record or footer."""
    if loc.path.endswith(".jsonl"):
        return list(first_record(loc) or {})
    if loc.path.endswith(".parquet"):
        import pyarrow.parquet as pq

        with loc.fs.open(loc.path, "rb") as fh:
            return pq.read_schema(fh).names
    with loc.fs.open(loc.path, "rb") as fh:
        header = fh.readline().decode("utf-8-sig", "replace")
    return [name.strip().strip('"') for name in header.split(",")]


@dataclass
class FolderMetadata:
    """The metadata columns (name -> plain type) and each named file's values, by path."""

    columns: dict[str, str] = field(default_factory=dict)
    by_path: dict[str, dict[str, Any]] = field(default_factory=dict)


def _read(loc: Location):
    if loc.path.endswith(".jsonl"):
        return read_json_lines(loc, first_record(loc) or {})
    table = read_table(loc)
    refuse_repeated(loc, table.column_names)
    return table


def _target(loc: Location, name: Any, row: int) -> str:
    """The path a row's `file_name` names: relative, inside the metadata file's folder (the
    rule `datasets` enforces too). `row` counts from 0; the message counts as a text editor
    does (a CSV's header is line 1)."""
    where = (f"{loc.uri} line {row + 2}" if loc.path.endswith(".csv")
             else f"{loc.uri} row {row + 1}")
    if not isinstance(name, str) or not name:
        raise InputError(f"{where} has no {FILE_COLUMN}")
    relative = posixpath.normpath(name.replace("\\", "/"))
    if "://" in name or relative.startswith("/") or relative == ".." or relative.startswith("../"):
        raise InputError(f"{where}: {FILE_COLUMN} {name!r} must be a path relative to the "
                         "metadata file's folder, inside it")
    return posixpath.join(posixpath.dirname(loc.path), relative)


def folder_metadata(files: list[InputFile], options: InputOptions) -> FolderMetadata:
    """The metadata of a folder's metadata `files` (each with a `file_name` column), keyed by
    the path each row names."""
    tables = []
    types: dict[str, set] = {}
    for file in files:
        table = _read(file.loc)
        for name in table.column_names:
            if name != FILE_COLUMN:
                types.setdefault(name, set()).add(plain_type(table.schema.field(name).type))
        tables.append((file.loc, table))
    where = "the AudioFolder metadata " + ", ".join(f.loc.uri for f in files)
    columns = select_columns({n: shared_type(t) for n, t in types.items()},
                             options.metadata_columns, where)
    found = FolderMetadata(columns)
    named_in: dict[str, str] = {}
    for loc, table in tables:
        present = {n: t for n, t in columns.items() if n in table.column_names}
        values = table_values(table, present)
        for row, name in enumerate(table.column(FILE_COLUMN).to_pylist()):
            path = _target(loc, name, row)
            if path in found.by_path:
                raise InputError(f"{name!r} is named twice in AudioFolder metadata ({loc.uri} "
                                 f"and {named_in[path]}): keep one row per audio file")
            found.by_path[path] = {n: values[n][row] for n in present}
            named_in[path] = loc.uri
    return found
