"""Common Voice releases: a clip table of a release (`validated.tsv`, `train.tsv`, `dev.tsv`,
`test.tsv`, `other.tsv`, `invalidated.tsv`) as the input, its MP3s in `clips/` beside it.

A table is told by its header (tab-separated, with `client_id` and `path`), whatever its name.
Each row is one clip, named by its `path` (relative to `clips/`); every other column
(`client_id`, `sentence`, `gender`, `age`, `locale`, ...) is carried as metadata, as text
except the vote counts. Sentences hold quotes that are not CSV quoting (`He said "no".`), so
the table is read with quoting off: one line is one row, never merged with the next.
"""
from __future__ import annotations

import io
import posixpath
from collections.abc import Iterable

import pyarrow as pa

from ..errors import InputError
from ..storage import Location
from .base import Corpus, InputFile, InputOptions
from .manifest import ManifestReader, plan_manifest
from .tabular import LeftOut, not_utf8, numbered, refuse_repeated, with_problems

IDENTIFYING = ("client_id", "path")  # the columns every release's clip tables have
COUNTS = ("up_votes", "down_votes")
CLIPS = "clips"


def read_release_table(loc: Location) -> pa.Table:
    """A release's TSV with quoting off, its rows numbered by line (tabular.LINE); empty cells
    are nulls (no gender given, say); a row of more or fewer cells than the header is that
    row's problem (tabular.PROBLEM)."""
    from pyarrow import csv

    data = loc.read_bytes()
    try:
        header = data.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r").split("\t")
    except UnicodeDecodeError as exc:
        raise not_utf8(loc, exc) from None
    missing = [c for c in IDENTIFYING if c not in header]
    if missing:
        raise InputError(
            f"{loc.uri} is not a Common Voice clip table (its header has no "
            f"{' or '.join(missing)}; it has {', '.join(header[:12])}): a .tsv input is a "
            "release's validated.tsv, train.tsv, dev.tsv, test.tsv, other.tsv or "
            "invalidated.tsv; other manifests are .csv, .parquet or JSON lines")
    refuse_repeated(loc, header)
    # text whatever the values look like: a column empty in every row would otherwise have no
    # type, and sentence ids or ages that look like numbers stay as written
    types = {name: pa.int64() if name in COUNTS else pa.string() for name in header}
    left_out = LeftOut("a value holds a tab, or the row lost one")
    try:
        table = csv.read_csv(
            io.BytesIO(data), read_options=csv.ReadOptions(use_threads=False),
            parse_options=csv.ParseOptions(delimiter="\t", quote_char=False,
                                           invalid_row_handler=left_out),
            convert_options=csv.ConvertOptions(column_types=types, strings_can_be_null=True,
                                                  null_values=[""]))
    except pa.ArrowInvalid as exc:
        raise InputError(f"{loc.uri} could not be parsed as a tab-separated table: {exc}") from exc
    # one line is one row (quoting is off) after the header's, line 1 (blank lines, which
    # Arrow skips, shift the count)
    return with_problems(numbered(table, left_out.lines(table.num_rows, 1)), left_out.rows)


class CommonVoiceReader(ManifestReader):
    """Planned as any manifest whose paths are relative to `clips/`."""

    name = "common_voice"
    describes = "Common Voice clip tables (validated.tsv, train.tsv ... beside clips/)"
    # every .tsv is claimed, to be read or refused saying which of a release's tables are inputs
    extensions = (".tsv",)

    @classmethod
    def plan(cls, files: Iterable[InputFile], root: Location, options: InputOptions) -> Corpus:
        (table,) = files
        loc = table.loc
        clips = Location(loc.fs, posixpath.join(posixpath.dirname(loc.path), CLIPS))
        if not clips.exists():
            raise InputError(f"{loc.uri} has no {CLIPS}/ folder beside it, where a Common Voice "
                             "release keeps the clips its table names")
        return plan_manifest(loc, [read_release_table(loc)], options, base=clips)
