"""Unit markers at scale (`_run/<step>/done/<unit:06d>.json`): listed and read in bulk.

An object store pages a listing 1,000 names at a time, one page after another, and answers one
request per object read: a stage of 100,000 units has 100 pages of markers and 100,000 of them
to read. Both go concurrently here where the filesystem is asynchronous (s3fs, gcsfs...):
listings by the prefix of each thousand units at once, reads in batches that fsspec sends
together.
"""
from __future__ import annotations

import posixpath

from .storage import Location, storage_errors

SHARD = 1000  # marker names per prefix listing: one page of an S3 listing
READ_BATCH = 1000  # marker reads handed to fsspec at once


def listing(location: Location) -> dict[str, dict]:
    """name -> entry for everything directly inside a folder ({} when it is not there): one
    listing, which on an object store also carries every object's time."""
    location.fs.invalidate_cache(location.path)
    try:
        with storage_errors("list", location.uri):
            entries = location.fs.ls(location.path, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for entry in entries:
        name = posixpath.basename(str(entry.get("name", "")).rstrip("/"))
        if name:
            out[name] = entry
    return out


def sharded_listing(location: Location, prefixes: list[str]) -> dict[str, dict] | None:
    """The entries of a folder whose names start with any of `prefixes`, as concurrent listings
    (an object store pages a listing 1,000 names at a time, one page after another: 100 pages
    of markers are 5-30 s; 100 listings of one page each at once, about one); None where the
    filesystem cannot list by prefix."""
    import asyncio

    from fsspec.asyn import sync

    fs = location.fs
    if not getattr(fs, "async_impl", False) or not hasattr(fs, "_find"):
        return None

    async def one(prefix: str):
        try:
            return await fs._find(location.path, prefix=prefix, detail=True)
        except FileNotFoundError:
            return {}

    async def every():
        return await asyncio.gather(*(one(p) for p in prefixes))

    fs.invalidate_cache(location.path)
    try:
        with storage_errors("list", location.uri):
            found = sync(fs.loop, every)
    except TypeError:  # a _find without `prefix`
        return None
    out = {}
    folder = fs._strip_protocol(location.path).rstrip("/")
    for entries in found:
        for path, entry in entries.items():
            # only the folder's own files (a prefix listing has no delimiter)
            if posixpath.dirname(str(path).rstrip("/")) == folder:
                out[posixpath.basename(str(path).rstrip("/"))] = entry
    return out


def marker_listing(done: Location, total: int | None) -> dict[str, dict]:
    """The markers of a stage of `total` units: `done/<unit:06d>.json`, listed by the prefix
    of each thousand units at once on an object store, in one listing elsewhere."""
    if total is not None and total > SHARD and not done.is_local:
        # units s*1000 .. s*1000+999 share the name up to their last three digits
        prefixes = sorted({f"{s * SHARD:06d}"[:-3] for s in range(-(-total // SHARD))})
        found = sharded_listing(done, prefixes)
        if found is not None:
            return found
    return listing(done)


def read_all(folder: Location, names: list[str], batch: int = READ_BATCH) -> dict[str, bytes]:
    """name -> bytes of many files of one folder: fsspec's `cat` of a list of paths, which an
    asynchronous filesystem fetches concurrently (one request after another elsewhere)."""
    out: dict[str, bytes] = {}
    for i in range(0, len(names), batch):
        paths = [posixpath.join(folder.path, n) for n in names[i:i + batch]]
        with storage_errors("read", folder.uri):
            found = folder.fs.cat(paths, on_error="raise")
        out.update({posixpath.basename(p): data for p, data in found.items()})
    return out
