"""Which input form a location holds, and its plan: the registered readers are asked in turn.

A single file is planned by the first reader that recognises it. A folder or prefix is listed
and each file given to the first reader read in folders that recognises it; each reader then
plans the files it claimed. Nothing here knows any one form (base.py has the contract).
"""
from __future__ import annotations

import posixpath

from ..errors import InputError
from ..storage import Location, redact_uri, storage_errors
from .base import Corpus, InputFile, InputOptions, Reader


def discover(input_uri: str, storage_options: dict | None = None,
             options: InputOptions | None = None) -> Corpus:
    """Every utterance under `input_uri`, as plan items; an error when there is none."""
    options = options or InputOptions()
    root = Location.of(input_uri, storage_options)
    if not root.exists():
        raise InputError(f"input not found: {redact_uri(input_uri)}")
    with storage_errors("read the input", input_uri):
        if root.fs.isdir(root.path):
            corpus = _from_listing(root, options)
        else:
            corpus = _from_file(root, options)
    if not corpus.items:
        raise InputError(f"{redact_uri(input_uri)} holds no input: looked for "
                         f"{_described(readers())}")
    _check_unique(corpus.items)
    return corpus


def readers() -> list[type[Reader]]:
    """The registered readers in the order they are asked (by priority, then name: the same
    order whatever the order of their imports)."""
    return sorted(Reader.registry.values(), key=lambda r: (r.priority, r.name))


def _described(asked: list[type[Reader]]) -> str:
    *rest, last = [r.describes for r in asked]
    return f"{', '.join(rest)} or {last}" if rest else last


def _from_file(loc: Location, options: InputOptions) -> Corpus:
    for reader in readers():
        if reader.recognises(loc, options):
            parent = Location(loc.fs, posixpath.dirname(loc.path))
            return reader.plan([InputFile(loc, loc.fs.size(loc.path))], parent, options)
    raise InputError(f"{loc.uri} is not an input: looked for {_described(readers())}")


def _from_listing(root: Location, options: InputOptions) -> Corpus:
    found = root.fs.find(root.path, detail=True, withdirs=False)
    in_folders = [r for r in readers() if r.in_folders]
    claimed: dict[type[Reader], list[InputFile]] = {r: [] for r in in_folders}
    left: list[InputFile] = []
    for path, info in sorted(found.items()):
        if posixpath.basename(path).startswith("."):
            continue
        file = InputFile(Location(root.fs, path), int(info.get("size") or -1))
        reader = (next((r for r in in_folders if r.recognises(file.loc, options)), None)
                  or next((r for r in in_folders if r.accompanies(file.loc)), None))
        (left if reader is None else claimed[reader]).append(file)
    planned = [(reader, reader.plan(files, root, options))
               for reader, files in claimed.items() if files]
    # by priority, then in listing order: an item's source is its file's URI, and readers of
    # one priority claim different files
    ranked = [(reader.priority, item) for reader, corpus in planned for item in corpus.items]
    items = [item for _, item in sorted(ranked, key=lambda pair: (pair[0], pair[1]["source"]))]
    if not items:
        _refuse_named_only(root, left)
    metadata = {name: kind for _, corpus in planned for name, kind in corpus.metadata.items()}
    return Corpus(items, metadata)


def _refuse_named_only(root: Location, left: list[InputFile]) -> None:
    """A folder whose only inputs are read when named alone (manifests): say how to read them."""
    extensions = tuple(e for r in readers() if not r.in_folders for e in r.extensions)
    named = [f.name_in(root) for f in left if f.loc.path.lower().endswith(extensions)]
    if named:
        looked_for = _described([r for r in readers() if r.in_folders])
        raise InputError(
            f"{redact_uri(root.uri)} holds no {looked_for}; it holds {', '.join(named[:3])}"
            f"{' ...' if len(named) > 3 else ''}: to read a manifest, pass the manifest file "
            "itself as the input")


def _check_unique(items: list[dict]) -> None:
    """Two inputs with one utt_id would be two rows nobody can tell apart: refuse them."""
    seen: dict[str, str] = {}
    for item in items:
        ids = [s[0] for s in item["segments"]] if "segments" in item else [item.get("utt_id")]
        for utt_id in ids:
            if utt_id is None:
                continue
            if utt_id in seen:
                raise InputError(f"two inputs share utt_id {utt_id!r}: {seen[utt_id]} and "
                                 f"{item['source']}")
            seen[utt_id] = item["source"]
