"""Which input form a location holds, and its plan: the registered readers are asked in turn.

A single file is planned by the first reader that recognises it. A folder or prefix is listed
and each file given to the first reader read in folders that recognises it; each reader then
plans the files it claimed. Nothing here knows any one form (base.py has the contract).
"""
from __future__ import annotations

import heapq
import os
import posixpath
from collections.abc import Iterable, Iterator

from ..errors import InputError
from ..storage import Location, names_nothing, not_regular, redact_uri, storage_errors
from .base import Corpus, InputFile, InputOptions, Reader
from .files import AudioFileReader
from .listing import NOT_REGULAR, FileList, files_under
from .spill import UniqueIds


def discover(input_uri: str, storage_options: dict | None = None,
             options: InputOptions | None = None) -> Corpus:
    """Every utterance under `input_uri`, as a list of plan items; an error when there is none
    (`stream` gives them one at a time)."""
    corpus = stream(input_uri, storage_options, options)
    return Corpus(list(corpus.items), corpus.metadata)


def stream(input_uri: str, storage_options: dict | None = None,
           options: InputOptions | None = None) -> Corpus:
    """Every utterance under `input_uri`, as plan items produced as they are planned, so that a
    corpus of tens of millions of them is never held whole; the checks over all of them (an
    utt_id given twice, no input at all) raise when the last item has been taken."""
    options = options or InputOptions()
    _refuse_empty(input_uri)
    root = Location.of(input_uri, storage_options)
    if not root.exists():
        if root.is_local and os.path.islink(root.path):
            raise InputError(f"the input {redact_uri(input_uri)} is a symbolic link that leads "
                             "to nothing (its target is missing, or links back to it): pass "
                             "the corpus's file or folder")
        raise InputError(f"input not found: {redact_uri(input_uri)}")
    kind = not_regular(root)
    if kind not in (None, "a directory"):
        raise InputError(f"the input {redact_uri(input_uri)} is {kind}, not a file or folder "
                         "that can be read to its end; pass a regular file or a folder")
    with storage_errors("read the input", input_uri):
        if root.fs.isdir(root.path):
            corpus = _from_listing(root, options)
        else:
            corpus = _from_file(root, options)
    return Corpus(_checked(corpus.items, input_uri, root), corpus.metadata)


def _refuse_empty(input_uri: str) -> None:
    if names_nothing(input_uri):
        raise InputError(f"the input {input_uri!r} names no folder, file or bucket: pass --input "
                         "(or set 'input' in the config) to the corpus's folder, file or URI")


def _checked(items: Iterable[dict], input_uri: str, root: Location) -> Iterator[dict]:
    unique = UniqueIds()
    count = 0
    with storage_errors("read the input", input_uri):
        for item in items:
            count += 1
            ids = ([s[0] for s in item["segments"]] if "segments" in item
                   else [item.get("utt_id")])
            for utt_id in ids:
                if utt_id is not None:
                    unique.add(utt_id, item["source"])
            yield item
    if not count:
        raise InputError(f"{redact_uri(input_uri)} holds no input: looked for "
                         f"{_described(readers())}")
    # two inputs with one utt_id would be two rows nobody can tell apart
    unique.check()


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
    in_folders = [r for r in readers() if r.in_folders]
    claimed: dict[type[Reader], FileList] = {r: FileList(root.fs) for r in in_folders}
    named_only = tuple(e for r in readers() if not r.in_folders for e in r.extensions)
    in_folder_extensions = tuple(e for r in in_folders for e in r.extensions)
    left: list[str] = []  # a few files read only when named alone, for the message
    for path, size in files_under(root):
        if path[path.rfind("/") + 1:].startswith("."):
            continue
        loc = Location(root.fs, path)
        if size == NOT_REGULAR:
            # never opened to be recognised (reading a FIFO never ends): named like an input,
            # it is one, whose read fails with an error row that says what it is
            reader = AudioFileReader if path.lower().endswith(in_folder_extensions) else None
        else:
            reader = (next((r for r in in_folders if r.recognises(loc, options)), None)
                      or next((r for r in in_folders if r.accompanies(loc)), None))
        if reader is not None:
            claimed[reader].append(path, size)
        elif len(left) < 4 and path.lower().endswith(named_only):
            left.append(InputFile(loc, size).name_in(root))
    planned = [(reader, reader.plan(files, root, options))
               for reader, files in claimed.items() if files]
    if not planned:
        _refuse_named_only(root, left)
        return Corpus([], {})
    metadata = {name: kind for _, corpus in planned for name, kind in corpus.metadata.items()}
    # by priority, then in listing order: an item's source is its file's URI, each reader's
    # items come in that order, and readers of one priority claim different files
    items = planned[0][1].items if len(planned) == 1 else heapq.merge(
        *(iter(corpus.items) for _, corpus in planned),
        key=lambda item: (Reader.registry[item["reader"]].priority, item["source"]))
    return Corpus(items, metadata)


def _refuse_named_only(root: Location, named: list[str]) -> None:
    """A folder whose only inputs are read when named alone (manifests): say how to read them."""
    if named:
        looked_for = _described([r for r in readers() if r.in_folders])
        raise InputError(
            f"{redact_uri(root.uri)} holds no {looked_for}; it holds {', '.join(named[:3])}"
            f"{' ...' if len(named) > 3 else ''}: to read a manifest, pass the manifest file "
            "itself as the input")
