"""JSON lines manifests: one JSON object per line with an audio path column, as NeMo and NeMo
Curator write them (`audio_filepath`, `duration`, optional `offset`, `text`, ...), whatever the
file's extension (`.json`, `.jsonl`, gzipped or not).

Told apart from a lhotse manifest (lhotse.py, asked first) by the first record: a manifest's
has an audio path column (manifest.PATH_COLUMNS), lhotse's never. A JSON lines file that is
neither is refused, saying what each would hold. The rows then mean what they mean in any
manifest (manifest.py): NeMo's `offset` + `duration` is a segment, a `duration` alone is the
whole file's length, carried as metadata.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import InputError
from ..storage import Location
from .base import Corpus, InputFile, InputOptions
from .manifest import LISTED, ManifestReader, path_column, plan_manifest
from .tabular import first_record, json_line_blocks


class JsonLinesManifestReader(ManifestReader):
    """Planned as any manifest, so its items are read as the manifest reader's."""

    name = "json_lines"
    describes = "JSON lines manifests (.json/.jsonl, gzipped or not: NeMo's)"
    # after lhotse (priority 1), which reads two of them: any JSON (lines) file lhotse left is
    # claimed here, to be read as a manifest or refused saying what was looked for
    extensions = (".json", ".jsonl", ".json.gz", ".jsonl.gz")

    @classmethod
    def plan(cls, files: Iterable[InputFile], root: Location, options: InputOptions) -> Corpus:
        (manifest,) = files
        loc = manifest.loc
        first = first_record(loc)
        if first is None or path_column(list(first), options.path_column) is None:
            found = ("its first line is not a JSON object" if first is None else
                     f"its first record has keys {', '.join(sorted(first)[:12])}" if first else
                     "it holds no record")
            wanted = (repr(options.path_column) if options.path_column else
                      f"an audio path column ({LISTED}; --path-column names another)")
            raise InputError(
                f"{loc.uri} is not an input: {found}. A JSON lines manifest (NeMo's) is one JSON "
                f"object per line with {wanted}; a lhotse manifest holds cuts or recordings")
        return plan_manifest(loc, json_line_blocks(loc, first), options)
