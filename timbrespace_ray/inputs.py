"""Finding a corpus's audio: folders and prefixes, tar shards, manifests.

The result is a sorted list of `InputRef`s, one per audio file or tar shard, each with a
stable `utt_id` (the path relative to the input root). Tar members are enumerated only when a
shard is processed: a shard's headers can only be read by streaming the whole shard.
"""
from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from .audio import AUDIO_EXTENSIONS
from .errors import FileTooLargeError, TimbrespaceError
from .storage import Location, redact_uri, storage_errors

MANIFEST_EXTENSIONS = (".parquet", ".csv", ".jsonl")
SHARD_EXTENSIONS = (".tar",)


class InputError(TimbrespaceError):
    """The input location or manifest cannot be used."""


class TarShardError(TimbrespaceError):
    """A tar shard (or the rest of it, from some member on) cannot be read."""


@dataclass(frozen=True)
class InputRef:
    utt_id: str  # a tar shard's utt_id is its own relative path; members append "/<member>"
    source: str  # full URI
    size: int  # bytes, -1 when unknown
    kind: str = "file"  # "file" | "tar"


def _is_audio(name: str) -> bool:
    return name.lower().endswith(AUDIO_EXTENSIONS)


def _is_shard(name: str) -> bool:
    return name.lower().endswith(SHARD_EXTENSIONS)


def discover(input_uri: str, storage_options: dict | None = None) -> list[InputRef]:
    """Every audio file, shard or manifest row under `input_uri`, sorted by utt_id."""
    root = Location.of(input_uri, storage_options)
    fs = root.fs
    if not root.exists():
        raise InputError(f"input not found: {redact_uri(input_uri)}")
    with storage_errors("read the input", input_uri):
        if fs.isdir(root.path):
            refs = _from_listing(root)
        elif root.path.lower().endswith(MANIFEST_EXTENSIONS):
            refs = _from_manifest(root, storage_options)
        elif _is_shard(root.path) or _is_audio(root.path):
            name = posixpath.basename(root.path)
            refs = [InputRef(name, root.uri, fs.size(root.path), "tar" if _is_shard(name) else "file")]
        else:
            raise InputError(
                f"{input_uri} is neither a folder, an audio file ({', '.join(AUDIO_EXTENSIONS)}), a "
                f"tar shard, nor a manifest ({', '.join(MANIFEST_EXTENSIONS)})")
    seen: dict[str, str] = {}
    for ref in refs:
        if ref.utt_id in seen:
            raise InputError(f"two inputs share utt_id {ref.utt_id!r}: {seen[ref.utt_id]} and {ref.source}")
        seen[ref.utt_id] = ref.source
    return sorted(refs, key=lambda r: r.utt_id)


def _from_listing(root: Location) -> list[InputRef]:
    found = root.fs.find(root.path, detail=True, withdirs=False)
    refs = []
    for path, info in found.items():
        name = posixpath.basename(path)
        if name.startswith(".") or not (_is_audio(name) or _is_shard(name)):
            continue
        rel = posixpath.relpath(path, root.path)
        refs.append(InputRef(rel, root.fs.unstrip_protocol(path), int(info.get("size") or -1),
                             "tar" if _is_shard(name) else "file"))
    return refs


def _from_manifest(manifest: Location, storage_options: dict | None) -> list[InputRef]:
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet as pq

    data = manifest.read_bytes()
    suffix = manifest.path.lower().rsplit(".", 1)[-1]
    try:
        if suffix == "parquet":
            table = pq.read_table(io.BytesIO(data))
        elif suffix == "csv":
            table = pa.csv.read_csv(io.BytesIO(data))
        else:
            table = pa.json.read_json(io.BytesIO(data))
    except pa.ArrowInvalid as exc:
        raise InputError(f"manifest {manifest.uri} could not be parsed: {exc}") from exc
    if "path" not in table.column_names:
        raise InputError(f"manifest {manifest.uri} has no 'path' column (columns: {table.column_names})")
    paths = table.column("path").to_pylist()
    utt_ids = table.column("utt_id").to_pylist() if "utt_id" in table.column_names else [None] * len(paths)
    base = posixpath.dirname(manifest.path)
    refs = []
    for row, (path, utt_id) in enumerate(zip(paths, utt_ids)):
        if not path:
            raise InputError(f"manifest {manifest.uri} row {row} has an empty path")
        if "://" in path:
            uri = path
            default_id = path.split("://", 1)[1]
        else:
            full = path if path.startswith("/") else posixpath.normpath(posixpath.join(base, path))
            uri = manifest.fs.unstrip_protocol(full)
            default_id = posixpath.relpath(full, base) if not path.startswith("/") else path.lstrip("/")
        # sizes are not fetched here: a manifest of millions of rows must plan without a HEAD each
        kind = "tar" if _is_shard(path) else "file"
        refs.append(InputRef(str(utt_id) if utt_id else default_id, uri, -1, kind))
    return refs


def iter_tar_members(fileobj, shard: InputRef, max_member_bytes: int) -> Iterator[tuple[str, str, bytes | Exception]]:
    """(utt_id, source, bytes or error) for each audio member of a tar shard, streamed.

    Members are read into memory one at a time and never written to disk, so a member name
    such as '../escape.wav' cannot reach the filesystem.
    """
    last = None  # the last member header read
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                last = member.name
                if member.isdir() or not _is_audio(member.name):
                    continue
                utt_id = f"{shard.utt_id}/{member.name}"
                source = f"{shard.source}#{member.name}"
                if not member.isfile():
                    # an input like any other member, so it is accounted for; a link is not
                    # followed (its target may be outside the shard, or later in the stream)
                    yield utt_id, source, TarShardError(_not_a_file(member))
                    continue
                if member.size > max_member_bytes:
                    yield utt_id, source, FileTooLargeError(
                        f"tar member is {member.size / 2**20:.0f} MiB, over the "
                        f"{max_member_bytes / 2**20:.0f} MiB limit (features.max_file_bytes)")
                    continue
                try:
                    fh = tar.extractfile(member)
                    data = fh.read() if fh else b""
                except (tarfile.TarError, OSError, EOFError) as exc:
                    # the stream cannot go past a broken member: report it once, as this member
                    yield utt_id, source, TarShardError(
                        f"{shard.source}: the tar shard is truncated or corrupt in member "
                        f"{member.name!r} ({exc}); members before it were read")
                    return
                yield utt_id, source, data
    except (tarfile.TarError, OSError, EOFError) as exc:
        # a shard that cannot be read past some point: report it once, with what was read so far kept
        where = (f"corrupt or truncated after member {last!r}" if last
                 else "not a readable tar archive")
        yield f"{shard.utt_id}/", shard.source, TarShardError(f"{shard.source}: {where} ({exc})")


def _not_a_file(member: tarfile.TarInfo) -> str:
    if member.issym() or member.islnk():
        kind = "a symbolic link" if member.issym() else "a hard link"
        return (f"tar member {member.name!r} is {kind} to {member.linkname!r}; links inside a shard "
                "are not followed: store the audio itself in the shard")
    return f"tar member {member.name!r} is not a regular file (tar type {member.type!r})"
