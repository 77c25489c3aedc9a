"""A small file read whole with one request, at the least client CPU the store allows.

On S3 a short file's GET through s3fs costs about 1.7 ms of client CPU (2-core Xeon), most of it
botocore's machinery around the request (parameter validation, endpoint rules, event hooks,
the User-Agent built twice, every response header parsed into a typed dict, its date through
dateutil), against a few milliseconds of analysis per second of speech.
`read_whole` asks the same client for a presigned URL of the object (botocore resolves the
endpoint, credentials and signature as for any call) and sends the GET through that client's
own HTTP session (its proxies, TLS settings and timeouts), keeping the body and the status
alone: 0.8 ms (`tests/benchmarks/bench_storage.py` measures both on the same objects).

Anything but the object's bytes (an error status, a connection cut, a timeout) sends the request
once more through s3fs's own `cat_file`, which retries and turns the answer into the error it
means (a missing object is a FileNotFoundError), so errors read exactly as before. Options that
need headers of their own on every GET (requester pays, server-side encryption with a customer
key: s3fs's `requester_pays`, `s3_additional_kwargs`) also take s3fs's way.
"""
from __future__ import annotations

import logging
import sys

import fsspec
from fsspec.asyn import sync

log = logging.getLogger(__name__)

# a presigned URL is used at once; this only bounds a URL that a log line might keep
PRESIGN_EXPIRES_S = 300


def read_whole(fs: fsspec.AbstractFileSystem, path: str, size: int) -> bytes:
    """The first `size` bytes of the file at `path` (all of it when `size` is 0), in one
    request."""
    if _presignable(fs):
        data = sync(fs.loop, _presigned_get, fs, path, size)
        if data is not None:
            return data
    # the byte range makes it one request: without it s3fs first asks for the size (a HEAD)
    # to decide whether to download in concurrent chunks
    return fs.cat_file(path, start=0, end=size) if size else fs.cat_file(path)


def _presignable(fs: fsspec.AbstractFileSystem) -> bool:
    s3fs = sys.modules.get("s3fs")  # imported already where fs is one of its filesystems
    return (s3fs is not None and isinstance(fs, s3fs.S3FileSystem) and not fs.asynchronous
            and not (fs.req_kw or fs.s3_additional_kwargs))


async def _presigned_get(fs, path: str, size: int) -> bytes | None:
    """The object's bytes, or None when the store answered anything else."""
    from botocore.awsrequest import AWSRequest
    from botocore.exceptions import BotoCoreError

    bucket, key, version = fs.split_path(path)
    params = {"Bucket": bucket, "Key": key, **({"VersionId": version} if version else {})}
    try:
        await fs.set_session()
        client = await fs.get_s3(bucket)
        url = await client.generate_presigned_url("get_object", Params=params,
                                                  ExpiresIn=PRESIGN_EXPIRES_S)
        headers = {"Range": f"bytes=0-{size - 1}"} if size else {}
        # s3fs reaches the same session the same way to close it
        response = await client._endpoint.http_session.send(
            AWSRequest("GET", url, headers=headers).prepare())
        if response.status_code in (200, 206):
            return await response.content
        reason = f"HTTP {response.status_code}"
    except BotoCoreError as exc:
        reason = str(exc)
    log.debug("presigned GET of %s: %s; asking through s3fs", path, reason)
    return None
