"""The files of a folder or prefix of tens of millions of objects, streamed in a fixed order,
and held on the driver in bounded memory.

`files_under` yields (path, size) in lexicographic order of path, as fsspec's `find` sorted
would, without holding the listing: on local disk by a walk whose entries are sorted the way
their full paths sort, on an object store (s3fs) page by page of its own listing, which is
sorted by key. Other filesystems fall back to `find`. A local entry that is neither a regular
file nor a folder (a FIFO, a socket, a device, a broken link, a link loop) has the size
NOT_REGULAR.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator

import pyarrow as pa

from ..storage import Location
from .base import InputFile
from .spill import SPILL_ROWS

# the size a local listing gives an entry that is not a regular file nor a folder
NOT_REGULAR = -2
LISTING_PAGE = 10_000  # entries taken from an asynchronous listing per round trip to its loop


def files_under(root: Location) -> Iterator[tuple[str, int]]:
    fs = root.fs
    if root.is_local:
        yield from _walk(root.path)
    elif getattr(fs, "async_impl", False) and hasattr(fs, "_iterdir") and hasattr(fs, "split_path"):
        yield from _pages(root)
    else:
        for path, info in sorted(fs.find(root.path, detail=True, withdirs=False).items()):
            yield path, int(info.get("size") or -1)


def _walk(folder: str) -> Iterator[tuple[str, int]]:
    # a folder's entries sort as their full paths do when a folder's name is followed by "/"
    with os.scandir(folder) as found:
        entries = sorted(((e.name + "/" if _safely(e.is_dir) else e.name), e) for e in found)
    for name, entry in entries:
        if name.endswith("/"):
            yield from _walk(entry.path)
        elif _safely(entry.is_file):
            yield entry.path, entry.stat().st_size
        else:  # a FIFO, socket, device, broken link or link loop: listed, never opened
            yield entry.path, NOT_REGULAR


def _safely(is_kind: Callable[[], bool]) -> bool:
    """An entry's is_dir/is_file, False where it cannot be told (a link loop: its own input's
    error, not the folder's)."""
    try:
        return is_kind()
    except OSError:
        return False


def _pages(root: Location) -> Iterator[tuple[str, int]]:
    from fsspec.asyn import sync

    fs = root.fs
    bucket, key, _ = fs.split_path(root.path)
    prefix = key.rstrip("/") + "/" if key else ""
    listing = fs._iterdir(bucket, delimiter="", prefix=prefix).__aiter__()

    async def page() -> list[tuple[str, int]]:
        out = []
        async for entry in listing:
            if entry.get("type") != "directory" and not entry["name"].endswith("/"):
                out.append((entry["name"], int(entry.get("size") or 0)))
            if len(out) >= LISTING_PAGE:
                break
        return out

    while True:
        entries = sync(fs.loop, page)
        if not entries:
            return
        yield from entries


class FileList:
    """The files a reader claimed in a folder, in listing order: held in memory up to
    SPILL_ROWS, then spilled to local disk; iterable any number of times, as InputFiles."""

    def __init__(self, fs):
        self.fs = fs
        self._paths: list[str] = []
        self._sizes: list[int] = []
        self._spilled: list[str] = []
        self._dir: tempfile.TemporaryDirectory | None = None
        self._count = 0

    def append(self, path: str, size: int) -> None:
        self._paths.append(path)
        self._sizes.append(size)
        self._count += 1
        if len(self._paths) >= SPILL_ROWS:
            if self._dir is None:
                self._dir = tempfile.TemporaryDirectory(prefix="timbrespace-listing-")
            where = os.path.join(self._dir.name, f"{len(self._spilled):06d}.arrow")
            table = pa.table({"path": self._paths, "size": pa.array(self._sizes, pa.int64())})
            with pa.OSFile(where, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            self._spilled.append(where)
            self._paths, self._sizes = [], []

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[InputFile]:
        for where in self._spilled:
            with pa.OSFile(where, "rb") as source:
                table = pa.ipc.open_file(source).read_all()
            for path, size in zip(table.column("path").to_pylist(),
                                  table.column("size").to_pylist()):
                yield InputFile(Location(self.fs, path), size)
        for path, size in zip(self._paths, self._sizes):
            yield InputFile(Location(self.fs, path), size)
