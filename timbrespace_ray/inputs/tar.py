"""Tar shards (WebDataset layout): audio members are utterances, read in memory one sample at a
time and never written to disk; the members sharing an audio member's key (`key.json`,
`key.txt`, `key.cls`) are its metadata.

A member's key is its path up to the first dot of its file name, as in WebDataset: the
members of `dir/0001.flac`, `dir/0001.json` and `dir/0001.txt` make one sample. A shard's
members can only be enumerated by streaming the whole shard, so each shard is a unit alone.
The metadata columns come from the first samples of the first shard (or features.
metadata_columns); a sample whose metadata cannot be kept in them exactly is an error row.
"""
from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..audio import audio_file_size
from ..errors import FileTooLargeError, MetadataError, TarShardError
from ..storage import Location, not_regular
from .base import (Corpus, InputFile, InputOptions, ReadContext, Reader, Recording, Segment,
                   plan_item)
from .files import is_audio
from .metadata import (fitted_value, plain_value, reserved_columns, select_columns,
                       shared_type, shown_value)

# tarfile's stream mode reads gzip-compressed shards as they come
SHARD_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
# sidecar extension -> metadata column; a .json sidecar's fields are columns of their own
TEXT_SIDECARS = {"txt": "text", "cls": "cls"}
SIDECAR_BYTES = 1 << 20  # a larger sidecar is not metadata: its sample is an error row
SNIFF_SAMPLES = 100  # samples of the first shard read when planning, to find the metadata columns
LISTED_MEMBERS = 5  # member names a shard holding no audio lists


def is_shard(name: str) -> bool:
    return name.lower().endswith(SHARD_EXTENSIONS)


def split_key(name: str) -> tuple[str, str]:
    """('dir/0001', 'json') for 'dir/0001.json' (WebDataset: the key ends at the first dot)."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


def shown(name: str) -> str:
    """A member's name as text: the bytes of a name that are not UTF-8 (which tarfile keeps as
    surrogates, and no Parquet string holds) as \\x escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def sidecar_metadata(name: str, ext: str, data: bytes) -> dict[str, Any]:
    """The fields one sidecar member gives; MetadataError when it is not readable metadata."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"sidecar {shown(name)!r} is not UTF-8 text ({exc}): "
                            "re-encode it") from None
    if ext in TEXT_SIDECARS:
        return {TEXT_SIDECARS[ext]: text.strip()}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise MetadataError(f"sidecar {shown(name)!r} is not valid JSON ({exc}): fix or "
                            "remove it") from None
    if not isinstance(doc, dict):
        raise MetadataError(f"sidecar {shown(name)!r} holds {shown_value(doc)}, not a JSON "
                            "object of metadata fields")
    return doc


def _is_sidecar(ext: str) -> bool:
    return ext in TEXT_SIDECARS or ext == "json"


@dataclass
class _Sample:
    """The members of one WebDataset key seen so far; a sample with an empty key stands for
    the shard itself (its only 'member', named '', is the shard's error)."""

    key: str
    audio: list[tuple[str, bytes | BaseException]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    given_by: dict[str, str] = field(default_factory=dict)  # field -> the sidecar giving it
    problem: MetadataError | None = None  # the first: its audio members are error rows

    def add_sidecar(self, tar: tarfile.TarFile, member: tarfile.TarInfo, ext: str) -> None:
        name = shown(member.name)
        try:
            if not member.isfile():
                raise MetadataError(f"sidecar {name!r} is not a regular file (a link is not "
                                    "followed): store the metadata itself in the shard")
            if member.size > SIDECAR_BYTES:
                raise MetadataError(
                    f"sidecar {name!r} is {member.size / 2**20:.1f} MiB, over the "
                    f"{SIDECAR_BYTES >> 20} MiB a metadata sidecar may hold: keep large data "
                    "out of .json/.txt/.cls members")
            fields = sidecar_metadata(member.name, ext, tar.extractfile(member).read())
            for key, value in fields.items():
                if key in self.metadata and not _same(self.metadata[key], value):
                    raise MetadataError(
                        f"field {key!r} is {shown_value(self.metadata[key])} in "
                        f"{self.given_by[key]!r} and {shown_value(value)} in {name!r}: "
                        "keep one")
                self.metadata[key] = value
                self.given_by[key] = name
        except MetadataError as exc:
            self.problem = self.problem or exc


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # 1, 1.0 and True are three different values here


def _shard_error(message: str) -> _Sample:
    return _Sample("", [("", TarShardError(message))])


def _samples(fileobj, shard_source: str, max_member_bytes: int) -> Iterator[_Sample]:
    """The samples of a shard, streamed in order (a stream from object storage is not
    seekable); then, where the shard is not a whole tar of audio, one sample for the shard."""
    ends: list[tarfile.HeaderError] = []

    class Header(tarfile.TarInfo):
        """Records why the headers ended: tarfile stops quietly at a zero block (the
        end-of-archive marker), at the end of the data and at an unreadable header alike."""

        @classmethod
        def fromtarfile(cls, tar):
            try:
                return super().fromtarfile(tar)
            except tarfile.HeaderError as exc:
                ends.append(exc)
                raise

    sample: _Sample | None = None
    last = None  # the last member header read
    names: list[str] = []  # the first members' names, for a shard holding no audio
    audio_members = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*", tarinfo=Header) as tar:
            for member in tar:
                last = shown(member.name)
                if len(names) <= LISTED_MEMBERS:
                    names.append(last)
                if member.isdir():
                    continue
                key, ext = split_key(member.name)
                audio = is_audio(member.name)
                if not audio and not _is_sidecar(ext):
                    continue
                if sample is None or key != sample.key:
                    if sample is not None:
                        yield sample
                    sample = _Sample(key)
                if not audio:
                    sample.add_sidecar(tar, member, ext)
                    continue
                audio_members += 1
                if not member.isfile():
                    # an input like any other member, so it is accounted for; a link is not
                    # followed (its target may be outside the shard, or later in the stream)
                    sample.audio.append((member.name, TarShardError(_not_a_file(member))))
                    continue
                if member.size > max_member_bytes:
                    sample.audio.append((member.name, FileTooLargeError(
                        f"tar member is {member.size / 2**20:.0f} MiB, over the "
                        f"{max_member_bytes / 2**20:.0f} MiB limit (features.max_file_bytes)")))
                    continue
                try:
                    fh = tar.extractfile(member)
                    data = fh.read() if fh else b""
                except (tarfile.TarError, OSError, EOFError) as exc:
                    # the stream cannot go past a broken member: report it once, as this member
                    sample.audio.append((member.name, TarShardError(
                        f"{shard_source}: the tar shard is truncated or corrupt in member "
                        f"{last!r} ({exc}); members before it were read")))
                    yield sample
                    return
                sample.audio.append((member.name, data))
            # only a zero block (the end-of-archive marker) ends a whole tar
            whole = bool(ends) and isinstance(ends[-1], tarfile.EOFHeaderError)
            trailing = whole and _data_after(tar)
    except (tarfile.TarError, OSError, EOFError) as exc:
        # a shard that cannot be read past some point: report it once, keeping what was read
        if sample is not None:
            yield sample
        where = (f"corrupt or truncated after member {last!r}" if last
                 else "not a readable tar archive")
        yield _shard_error(f"{shard_source}: {where} ({exc})")
        return
    if sample is not None:
        yield sample
    if not whole:
        yield _shard_error(
            f"{shard_source}: the tar shard stops after member {last!r} without the "
            f"end-of-archive marker of a whole tar ({ends[-1] if ends else 'no end'}): it was "
            "cut short, and the members after it are lost (those before were read); copy it "
            "again")
    elif trailing:
        yield _shard_error(
            f"{shard_source}: the tar shard holds data after its end-of-archive marker (which "
            f"follows member {last!r}), such as a second tar appended to it: those members are "
            "not read; write them into one tar")
    elif not audio_members:
        listed = ", ".join(names[:LISTED_MEMBERS]) + (", ..." if len(names) > LISTED_MEMBERS
                                                      else "")
        yield _shard_error(f"{shard_source}: the tar shard holds no audio member: its members "
                           f"are {listed or 'none'}")


def _data_after(tar: tarfile.TarFile) -> bool:
    """Whether anything but zeros (the marker's second block and the record's padding) follows
    the end-of-archive marker: tarfile stops at the marker, GNU tar too without -i."""
    while chunk := tar.fileobj.read(tarfile.RECORDSIZE):
        if chunk.count(0) != len(chunk):
            return True
    return False


def _not_a_file(member: tarfile.TarInfo) -> str:
    name = shown(member.name)
    if member.issym() or member.islnk():
        kind = "a symbolic link" if member.issym() else "a hard link"
        return (f"tar member {name!r} is {kind} to {shown(member.linkname)!r}; links inside a "
                "shard are not followed: store the audio itself in the shard")
    return f"tar member {name!r} is not a regular file (tar type {member.type!r})"


@dataclass(frozen=True)
class SampleColumns:
    """The metadata columns a shard's samples fill (column -> plain type); `chosen`: listed in
    features.metadata_columns, so that other fields are left out on purpose; `fixed`: values
    every sample of the shard has (the manifest row naming the shard)."""

    types: Mapping[str, str]
    chosen: bool = False
    fixed: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, item: dict) -> "SampleColumns":
        return cls(item["columns"], item["chosen"], item.get("fixed", {}))

    def fields(self) -> dict[str, Any]:
        return {"columns": dict(self.types), "chosen": self.chosen,
                **({"fixed": dict(self.fixed)} if self.fixed else {})}

    def kept(self, sample: _Sample) -> dict[str, Any]:
        """The sample's metadata as its columns keep it; MetadataError when some of it cannot
        be kept exactly."""
        if sample.problem is not None:
            raise sample.problem
        out: dict[str, Any] = {}
        for key, value in sample.metadata.items():
            what = f"field {key!r} of {sample.given_by[key]!r}"
            if key in self.types:
                out[key] = fitted_value(value, self.types[key], what)
            elif key in reserved_columns():
                raise MetadataError(f"{what} has the name of a column that timbrespace_ray "
                                    "writes: rename the field in the sidecars")
            elif not (self.chosen or value is None or plain_value(value) is None):
                # lists and objects are not carried, as no form carries a non-scalar column
                raise MetadataError(
                    f"{what} is not among the metadata columns, found in the first samples of "
                    f"the first shard ({', '.join(self.types) or 'none'}): list the columns to "
                    "carry in features.metadata_columns")
        for key, value in self.fixed.items():
            if out.get(key) is None:
                out[key] = value
            elif value is not None and not _same(out[key], value):
                raise MetadataError(f"field {key!r} of {sample.given_by[key]!r} is "
                                    f"{shown_value(out[key])}, where the manifest row "
                                    f"naming the shard says {shown_value(value)}: keep one")
        return out


def iter_samples(fileobj, shard_id: str, shard_source: str, max_member_bytes: int,
                 columns: SampleColumns) -> Iterator[tuple[str, str, bytes | BaseException, dict]]:
    """(utt_id, source, bytes or error, metadata) for each audio member of a shard, streamed,
    and one error for the shard where it is not a whole tar of audio (utt_id `<shard>/`).

    A member name given again is an error row whose utt_id ends `#2` (`#3`...: the first free
    one), so that no two rows share an id."""
    taken: set[str] = set()
    for sample in _samples(fileobj, shard_source, max_member_bytes):
        try:
            metadata, problem = columns.kept(sample), None
        except MetadataError as exc:
            metadata, problem = {}, exc
        for name, data in sample.audio:
            text = shown(name)
            if text in taken:
                n = 2
                while f"{text}#{n}" in taken:
                    n += 1
                data = TarShardError(
                    f"tar member {text!r}: an earlier member of the shard has this name (or was "
                    f"given it as its id), so this one is not read (its utt_id ends #{n}): give "
                    "each sample its own key")
                text = f"{text}#{n}"
            taken.add(text)
            if problem is not None and not isinstance(data, BaseException):
                data = MetadataError(f"{text}: {problem}")
            yield (f"{shard_id}/{text}", f"{shard_source}#{text}" if name else shard_source, data,
                   metadata)


def sniff_metadata(shard: Location) -> dict[str, str]:
    """Metadata fields and their plain types, from the first samples of one shard (a prefix of
    it is read, not the whole shard); a field only ever a list or object is not a column."""
    seen: dict[str, set[str | None]] = {}
    try:
        if not_regular(shard):  # a FIFO or /dev/zero: reported, unread, when processed
            return {}
        with shard.fs.open(shard.path, "rb") as fh:
            for n, sample in enumerate(_samples(fh, shard.uri, 0)):
                if sample.problem is None:
                    for key, value in sample.metadata.items():
                        seen.setdefault(key, set()).add(
                            None if value is None else plain_value(value) or "")
                if n + 1 >= SNIFF_SAMPLES:
                    break
    except (tarfile.TarError, OSError, EOFError):
        pass  # a damaged first shard is reported, row by row, when it is processed
    # "": a list or object; None: null, which any column holds
    return {key: shared_type(kinds - {None, ""}) for key, kinds in seen.items()
            if kinds != {""}}


def shard_columns(first: Location, options: InputOptions) -> SampleColumns:
    """The metadata columns of the shards of one input: those of the first shard's first
    samples, or the ones listed in features.metadata_columns."""
    sniffed = sniff_metadata(first)
    keep = options.metadata_columns
    if keep is None:
        # a field named like one of our columns is not a column: its samples say so, one row each
        return SampleColumns({k: t for k, t in sniffed.items() if k not in reserved_columns()})
    # a listed field not in the first samples holds any scalar as text
    available = {**{name: "string" for name in keep}, **sniffed}
    return SampleColumns(select_columns(available, keep, f"tar shard {first.uri}"), chosen=True)


class TarShardReader(Reader):
    name = "tar"
    describes = "tar shards (.tar, .tar.gz)"
    extensions = SHARD_EXTENSIONS

    @staticmethod
    def item(utt_id: str, source: str, size: int, columns: SampleColumns) -> dict:
        return plan_item(TarShardReader, count=1, size=size, alone=True, source=source,
                         utt_id=utt_id, **columns.fields())

    @classmethod
    def plan(cls, files: Iterable[InputFile], root: Location, options: InputOptions) -> Corpus:
        # the columns come from the first shard alone: finding them in every shard would
        # stream the whole corpus when planning
        columns = shard_columns(next(iter(files)).loc, options)
        return Corpus((cls.item(f.name_in(root), f.loc.uri, f.size, columns) for f in files),
                      dict(columns.types))

    @classmethod
    def read(cls, item: dict, ctx: ReadContext) -> Iterator[Recording]:
        shard_id, source = item["utt_id"], item["source"]
        loc = Location.of(source, dict(ctx.storage_options))
        try:
            if loc.is_local:  # a FIFO or a device named .tar would be read for ever
                audio_file_size(loc, source)
            fh = loc.fs.open(loc.path, "rb")
        except Exception as exc:
            yield Recording(source, [Segment(f"{shard_id}/")], error=exc)
            return
        with fh:
            for utt_id, member_source, data, meta in iter_samples(
                    fh, shard_id, source, ctx.max_file_bytes, SampleColumns.of(item)):
                segment = [Segment(utt_id, metadata=meta)]
                if isinstance(data, BaseException):
                    yield Recording(member_source, segment, error=data)
                else:
                    yield Recording(member_source, segment, open=lambda d=data: d)
