"""Object storage access through fsspec: paths, atomic writes, listings, redaction.

Every write of a finished artefact goes through `write_atomic`, so a reader (or a rerun) never
sees a half-written file: locally a temporary sibling is renamed into place; on object stores
a single PUT only becomes visible once complete.
"""
from __future__ import annotations

import copy
import json
import os
import posixpath
import stat
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import StorageError, one_line

# s3fs's own attempts at a call or a read cut off mid-body (its default, 5, lets about one read
# in 3000 fail when a fifth of the connections drop, and a features input read that fails is
# an error row); it backs off 0.1 s, 0.17 s ... between them. A refused connection is not retried.
S3_RETRIES = 10
# botocore's own defaults (60 s to wait for an answer, up to 5 attempts inside each of s3fs's)
# would keep a request to an endpoint that accepts connections and never answers going for most
# of an hour before saying anything; with these it is about 13 minutes (10 x 4 x 20 s plus
# back-off: botocore's max_attempts counts the retries, after the first attempt). The user's
# `config_kwargs` in storage_options win over them.
S3_CLIENT_CONFIG = {"connect_timeout": 10, "read_timeout": 20,
                    "retries": {"mode": "standard", "max_attempts": 3}}

SECRET_KEYS = ("key", "secret", "token", "password", "session_token", "aws_access_key_id",
               "aws_secret_access_key", "aws_session_token", "access_key", "secret_key")


@dataclass(frozen=True)
class Location:
    """A folder or file on some filesystem, with the options needed to reach it."""

    fs: fsspec.AbstractFileSystem
    path: str  # the filesystem's own path (no protocol)

    @classmethod
    def of(cls, uri: str, storage_options: dict | None = None) -> "Location":
        options = dict(storage_options or {})
        s3 = uri.partition("://")[0] in ("s3", "s3a")
        if s3:
            # a copy: botocore rewrites the `retries` dict it is given, in place
            options["config_kwargs"] = copy.deepcopy(
                {**S3_CLIENT_CONFIG, **options.get("config_kwargs", {})})
        fs, path = fsspec.core.url_to_fs(uri, **options)
        if s3 and fs.retries < S3_RETRIES:
            fs.retries = S3_RETRIES
        return cls(fs, path.rstrip("/") or path)

    @property
    def uri(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def child(self, *parts: str) -> "Location":
        return Location(self.fs, posixpath.join(self.path, *parts))

    def exists(self) -> bool:
        # object-store filesystems cache listings; other processes write these folders
        self.fs.invalidate_cache(self.path)
        with storage_errors("check", self.uri):
            return self.fs.exists(self.path)

    def read_bytes(self) -> bytes:
        # s3fs sizes the object from a cached listing of its folder when there is one: a file
        # written since (a marker, by a worker) would be "not found"
        self.fs.invalidate_cache(self.path)
        with storage_errors("read", self.uri):
            return self.fs.cat_file(self.path)

    def read_json(self) -> Any:
        return json.loads(self.read_bytes())

    def write_atomic(self, data: bytes) -> None:
        try:
            self._write_atomic(data)
        except (OSError, *unreachable_errors()) as exc:
            # one line naming the location (read-only, disk full, access denied); the partial
            # temporary file is gone, so nothing half-written is left for a rerun to trust
            raise StorageError(f"could not write {self.uri}: {_reason(exc)}") from exc

    def _write_atomic(self, data: bytes) -> None:
        if self.is_local:
            parent = os.path.dirname(self.path)
            os.makedirs(parent, exist_ok=True)
            # hidden and without the final extension: `*.parquet` globs never pick it up
            tmp = os.path.join(parent, f".{os.path.basename(self.path)}.{uuid.uuid4().hex}.tmp")
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            self.fs.pipe_file(self.path, data)

    def write_json(self, doc: Any) -> None:
        self.write_atomic(json.dumps(doc, indent=1, sort_keys=True).encode())

    def list_names(self) -> list[str]:
        """Names directly inside this folder ([] when it does not exist)."""
        self.fs.invalidate_cache(self.path)
        try:
            with storage_errors("list", self.uri):
                return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.path, detail=False))
        except FileNotFoundError:
            return []

    def remove(self) -> None:
        """Delete this file, or this folder and everything in it (nothing if it is not there)."""
        try:
            with storage_errors("remove", self.uri):
                self.fs.rm(self.path, recursive=True)
        except FileNotFoundError:
            pass

    def download(self, names: list[str], target: str) -> None:
        """Copy files of this folder into the local folder `target`."""
        for name in names:
            with open(os.path.join(target, name), "wb") as fh:
                fh.write(self.child(name).read_bytes())

    def upload(self, source: str) -> None:
        """Copy every file of the local folder `source` into this folder, each atomically."""
        for name in sorted(os.listdir(source)):
            with open(os.path.join(source, name), "rb") as fh:
                self.child(name).write_atomic(fh.read())


def names_nothing(uri: str) -> bool:
    """Whether a location is empty ("", spaces, "s3://", "file://"): fsspec would read it as the
    working folder, or every bucket of the store."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "", uri
    return not rest.strip() or (scheme not in ("", "file", "local") and not rest.strip("/ "))


_SPECIAL_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                  (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"))


def special_kind(mode: int) -> str | None:
    """What a local file that is not a regular file is ("a FIFO (named pipe)", "a directory"
    ...), None for a regular file."""
    return None if stat.S_ISREG(mode) else next(
        (kind for test, kind in _SPECIAL_KINDS if test(mode)), "not a regular file")


def regular_size(loc: Location) -> tuple[int, str | None]:
    """(size, None) of the file at `loc`, or (-1, what it is) when it is a local file that is
    not a regular file: reading a FIFO, a socket or /dev/zero never ends, so such a file must
    not be opened. On an object store every object is a regular file."""
    if not loc.is_local:
        return loc.fs.size(loc.path), None
    found = os.stat(loc.path)  # FileNotFoundError when it is not there
    kind = special_kind(found.st_mode)
    return (-1, kind) if kind else (found.st_size, None)


def not_regular(loc: Location) -> str | None:
    """What the file at `loc` is when it is a local file that is not a regular file ("a FIFO
    (named pipe)"...), else None; an object store's objects are regular files, and no request
    is made to it."""
    return regular_size(loc)[1] if loc.is_local else None


def unreachable_errors() -> tuple[type[Exception], ...]:
    """The errors of an object store's client (botocore, under s3fs) saying that the store could
    not be reached: connection refused or reset, timeouts, or no credentials to sign with (a
    worker without them fails every read: that is the store, not each input). They are not
    OSErrors."""
    try:
        from botocore.exceptions import (ConnectionError as BotoConnectionError, HTTPClientError,
                                         NoCredentialsError)
    except ImportError:
        return ()
    return (BotoConnectionError, HTTPClientError, NoCredentialsError)


def _reason(exc: Exception) -> str:
    reason = one_line(str(getattr(exc, "strerror", None) or exc)) or type(exc).__name__
    if isinstance(exc, PermissionError):
        reason += " (access denied: check the credentials and permissions for this location)"
    return reason


@contextmanager
def storage_errors(action: str, uri: str):
    """Storage failures other than a missing file as one-line StorageErrors naming `uri`."""
    try:
        yield
    except (FileNotFoundError, StorageError):
        raise
    except (OSError, *unreachable_errors()) as exc:
        raise StorageError(f"could not {action} {redact_uri(uri)}: {_reason(exc)}") from exc


def redact_uri(uri: str) -> str:
    """The URI without any user:password@ part."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return uri
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def redact(options: Any) -> Any:
    """A copy of storage options with every credential replaced, for logs and metadata."""
    if isinstance(options, dict):
        return {k: ("***" if str(k).lower() in SECRET_KEYS else redact(v))
                for k, v in options.items()}
    if isinstance(options, list):
        return [redact(v) for v in options]
    return options
