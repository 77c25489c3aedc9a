"""The one contract every input form follows: recognise an input, plan it, read a plan item.

A `Reader` is one input form, with both halves in one class:

- driver, recognising: `recognises(loc, options)` says whether one file is this form's input,
  cheaply: by its extension (`extensions`) and, for tables, by their schema or first record,
  never by the file's name. A reader may claim a file only to refuse it with a better message
  than "is not an input" (a `.jsonl.gz` that is not lhotse). Readers are asked in `priority`
  order: readers of disjoint extensions share the default; where two read one extension (a
  Parquet audio dataset, a Parquet manifest) the one that checks the content is asked first
  and the catch-all last. A folder or prefix is listed and each file given to the first
  `in_folders` reader that recognises it (a manifest is read only when it is the input: it
  names files the folder may hold too). A file of a folder that no reader recognises goes to
  the first that it `accompanies`: no input itself, it describes that reader's inputs there
  (AudioFolder's `metadata.csv` gives the audio files their columns), and comes to its plan
  with them.
- driver, planning: `plan(files, root, options)` turns the recognised files (one named alone,
  or all a reader claimed in a folder, in listing order: an iterable that may be iterated more
  than once, of millions of files) into a `Corpus`: plan items (JSON-able dicts: a file, a tar
  shard, a recording with its segments, a slice of a Parquet shard's rows), produced one at a
  time where the input may be large, and the metadata columns. A folder's items come by reader
  priority, then in listing order of their `source`, which each reader keeps.
- worker, reading: `read(item, ctx)` turns one plan item back into `Recording`s: where the
  audio is, which channels count, and the segments (utterances) to analyse in it, each with its
  time range and its metadata. The item names its reader (`name`, the registry's key), so a
  worker needs no state from the driver.

The features stage decodes each recording once, whatever the number of its segments, and never
needs to know which form the corpus came in. A new form is one module defining a subclass,
imported by the package so that it registers.
"""
from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar

from ..storage import Location

# A segment may end this far past the decoded recording and is then clipped to its end, as
# `extract(end_ms=...)` does: manifests round times, and lengths computed at another sample
# rate differ by a few samples (lhotse allows the same 25 ms between a cut and its audio).
END_TOLERANCE_S = 0.025


@dataclass(frozen=True)
class Segment:
    """One utterance: a time range of a recording (None, None: all of it) and its metadata."""

    utt_id: str
    start_s: float | None = None
    end_s: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def whole(self) -> bool:
        return self.start_s is None and self.end_s is None


AudioOpener = Callable[[], bytes | BinaryIO]


@dataclass
class Recording:
    """What a reader yields on a worker: one recording and the segments to analyse in it.

    `open` gives the encoded audio (bytes already in memory, or a binary file object that the
    caller closes); `channels` selects the channels averaged to mono (None: all of them).
    `error` marks a recording that could not be read at all: each segment is then one error
    row, so every planned input is accounted for.
    """

    source: str
    segments: list[Segment]
    open: AudioOpener | None = None
    channels: tuple[int, ...] | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class InputOptions:
    """How the driver reads the input's own layout (the `features` section's input keys)."""

    metadata_columns: tuple[str, ...] | None = None  # None: every scalar column
    path_column: str | None = None  # manifests: default the first of manifest.PATH_COLUMNS
    audio_column: str | None = None  # Parquet audio datasets: default found from the schema
    id_column: str | None = None  # Parquet audio datasets: default utt_id, id or key if present
    supervisions: str | None = None  # lhotse: the SupervisionSet of a RecordingSet input
    # the most utterances and bytes one unit holds: a planner that can split an input (a
    # Parquet row group into row slices) keeps each item within both
    unit_count: int = 64
    unit_bytes: int = 256 << 20


@dataclass(frozen=True)
class InputFile:
    """One file of an input location: the file named as the input, or one found in a folder."""

    loc: Location
    size: int  # bytes, -1 when the listing does not say

    def name_in(self, root: Location) -> str:
        """The file's path relative to `root`: the id of what it holds."""
        folder = root.path.rstrip("/") + "/"
        if self.loc.path.startswith(folder):  # a folder's file: the common case, made quick
            return self.loc.path[len(folder):]
        return posixpath.relpath(self.loc.path, root.path)


@dataclass
class Corpus:
    """A planned input: its items in a deterministic order (any iterable: a reader of a large
    input produces them as it plans) and its metadata columns."""

    items: Iterable[dict]
    metadata: dict[str, str] = field(default_factory=dict)  # column -> plain type


@dataclass(frozen=True)
class ReadContext:
    """Worker-side settings a reader needs (the same for every item of a stage)."""

    storage_options: Mapping[str, Any]
    max_file_bytes: int


class Reader(ABC):
    """One input form (see the module's docstring for the contract). Subclasses register
    themselves by `name`, which each plan item carries."""

    name: ClassVar[str]
    describes: ClassVar[str]  # what it reads, for "looked for ..." messages
    extensions: ClassVar[tuple[str, ...]]  # lower case, with the dot
    priority: ClassVar[int] = 0  # asked in increasing order
    in_folders: ClassVar[bool] = True  # read when found in a folder, not only when named
    registry: ClassVar[dict[str, type["Reader"]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Reader.registry[cls.name] = cls

    @classmethod
    def recognises(cls, loc: Location, options: InputOptions) -> bool:
        """Whether the file at `loc` is this form's input (here: by extension alone)."""
        return loc.path.lower().endswith(cls.extensions)

    @classmethod
    def accompanies(cls, loc: Location) -> bool:
        """Whether the file at `loc`, found in a folder, describes this form's inputs there
        (and is planned with them); none does by default."""
        return False

    @classmethod
    @abstractmethod
    def plan(cls, files: Iterable[InputFile], root: Location, options: InputOptions) -> Corpus:
        """The plan items of the recognised `files` (in a folder, paths relative to `root`
        name them; a file named alone has its own folder as root) and their metadata."""

    @classmethod
    @abstractmethod
    def read(cls, item: dict, ctx: ReadContext) -> Iterator[Recording]:
        """The recordings of one plan item, in a deterministic order."""


def plan_item(reader: type[Reader], *, count: int, size: int = -1, alone: bool = False,
              **fields: Any) -> dict:
    """A plan item for `reader`: `count` utterances, `size` bytes (-1 unknown); `alone` items
    (tar shards, whose members are only known by streaming them) get a unit of their own."""
    return {"reader": reader.name, "count": count, "size": size, "alone": alone, **fields}


def read_item(item: dict, ctx: ReadContext) -> Iterator[Recording]:
    return Reader.registry[item["reader"]].read(item, ctx)


def relative_uri(base: Location, path: str) -> tuple[str, str]:
    """(full URI, id) of a path written in a manifest: a URI as it is, else relative to the
    manifest's folder (an absolute path stays absolute); the id is the path as written,
    normalized, without a leading slash or protocol."""
    if "://" in path:
        return path, path.split("://", 1)[1]
    if path.startswith("/"):
        return base.fs.unstrip_protocol(path), path.lstrip("/")
    full = posixpath.normpath(posixpath.join(base.path, path))
    return base.fs.unstrip_protocol(full), posixpath.relpath(full, base.path)
