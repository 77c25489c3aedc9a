"""Tar shards (WebDataset layout): audio members are utterances, read in memory one sample at a
time and never written to disk; the members sharing an audio member's key (`key.json`,
`key.txt`, `key.cls`) are its metadata.

A member's key is its path up to the first dot of its file name, as in WebDataset: the
members of `dir/0001.flac`, `dir/0001.json` and `dir/0001.txt` make one sample. A shard's
members can only be enumerated by streaming the whole shard, so each shard is a unit alone.
"""
from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import FileTooLargeError, TarShardError
from ..storage import Location
from .base import (Corpus, InputFile, InputOptions, ReadContext, Reader, Recording, Segment,
                   plan_item)
from .files import is_audio
from .metadata import plain_value

SHARD_EXTENSIONS = (".tar",)
# sidecar extension -> metadata column; a .json sidecar's scalar fields are columns of their own
TEXT_SIDECARS = {"txt": "text", "cls": "cls"}
SIDECAR_BYTES = 1 << 20  # larger "metadata" is not metadata: left alone
SNIFF_SAMPLES = 100  # samples of the first shard read when planning, to find the metadata columns


def is_shard(name: str) -> bool:
    return name.lower().endswith(SHARD_EXTENSIONS)


def split_key(name: str) -> tuple[str, str]:
    """('dir/0001', 'json') for 'dir/0001.json' (WebDataset: the key ends at the first dot)."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


def sidecar_metadata(ext: str, data: bytes) -> dict[str, Any]:
    """The metadata one sidecar member gives ({} for members that are not metadata)."""
    if ext in TEXT_SIDECARS:
        return {TEXT_SIDECARS[ext]: data.decode("utf-8", "replace").strip()}
    if ext == "json":
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return {}
        if isinstance(doc, dict):
            return {k: v for k, v in doc.items() if plain_value(v) is not None}
    return {}


def _is_sidecar(ext: str) -> bool:
    return ext in TEXT_SIDECARS or ext == "json"


class _Sample:
    """The members of one WebDataset key seen so far."""

    def __init__(self, key: str):
        self.key = key
        self.audio: list[tuple[str, bytes | BaseException]] = []
        self.metadata: dict[str, Any] = {}


def iter_samples(fileobj, shard_id: str, shard_source: str, max_member_bytes: int
                 ) -> Iterator[tuple[str, str, bytes | BaseException, dict]]:
    """(utt_id, source, bytes or error, metadata) for each audio member of a shard, streamed."""
    sample: _Sample | None = None
    last = None  # the last member header read

    def flush(s: _Sample | None):
        if s is None:
            return
        for name, data in s.audio:
            yield f"{shard_id}/{name}", f"{shard_source}#{name}", data, s.metadata

    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                last = member.name
                if member.isdir():
                    continue
                key, ext = split_key(member.name)
                audio = is_audio(member.name)
                if not audio and not _is_sidecar(ext):
                    continue
                if sample is None or key != sample.key:
                    yield from flush(sample)
                    sample = _Sample(key)
                if not audio:
                    if member.isfile() and member.size <= SIDECAR_BYTES:
                        fh = tar.extractfile(member)
                        sample.metadata.update(sidecar_metadata(ext, fh.read() if fh else b""))
                    continue
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
                        f"{member.name!r} ({exc}); members before it were read")))
                    yield from flush(sample)
                    return
                sample.audio.append((member.name, data))
    except (tarfile.TarError, OSError, EOFError) as exc:
        # a shard that cannot be read past some point: report it once, with what was read so far kept
        yield from flush(sample)
        where = (f"corrupt or truncated after member {last!r}" if last
                 else "not a readable tar archive")
        yield f"{shard_id}/", shard_source, TarShardError(f"{shard_source}: {where} ({exc})"), {}
        return
    yield from flush(sample)


def _not_a_file(member: tarfile.TarInfo) -> str:
    if member.issym() or member.islnk():
        kind = "a symbolic link" if member.issym() else "a hard link"
        return (f"tar member {member.name!r} is {kind} to {member.linkname!r}; links inside a shard "
                "are not followed: store the audio itself in the shard")
    return f"tar member {member.name!r} is not a regular file (tar type {member.type!r})"


def sniff_metadata(shard: Location) -> dict[str, str]:
    """Metadata columns and their plain types, from the first samples of one shard (a prefix
    of it is read, not the whole shard)."""
    columns: dict[str, str] = {}
    try:
        with shard.fs.open(shard.path, "rb") as fh:
            for n, (_, _, _, meta) in enumerate(iter_samples(fh, "", shard.uri, 0)):
                for k, v in meta.items():
                    columns.setdefault(k, plain_value(v))
                if n + 1 >= SNIFF_SAMPLES:
                    break
    except (tarfile.TarError, OSError, EOFError):
        pass  # a damaged first shard is reported, row by row, when it is processed
    return columns


class TarShardReader(Reader):
    name = "tar"
    describes = "tar shards (.tar)"
    extensions = SHARD_EXTENSIONS

    @staticmethod
    def item(utt_id: str, source: str, size: int) -> dict:
        return plan_item(TarShardReader, count=1, size=size, alone=True, source=source,
                         utt_id=utt_id)

    @classmethod
    def plan(cls, files: Iterable[InputFile], root: Location, options: InputOptions) -> Corpus:
        # the columns come from the first shard alone: finding them in every shard would
        # stream the whole corpus when planning
        return Corpus((cls.item(f.name_in(root), f.loc.uri, f.size) for f in files),
                      sniff_metadata(next(iter(files)).loc))

    @classmethod
    def read(cls, item: dict, ctx: ReadContext) -> Iterator[Recording]:
        shard_id, source = item["utt_id"], item["source"]
        loc = Location.of(source, dict(ctx.storage_options))
        try:
            fh = loc.fs.open(loc.path, "rb")
        except Exception as exc:
            yield Recording(source, [Segment(f"{shard_id}/")], error=exc)
            return
        with fh:
            for utt_id, member_source, data, meta in iter_samples(fh, shard_id, source,
                                                                  ctx.max_file_bytes):
                segment = [Segment(utt_id, metadata=meta)]
                if isinstance(data, BaseException):
                    yield Recording(member_source, segment, error=data)
                else:
                    yield Recording(member_source, segment, open=lambda d=data: d)
