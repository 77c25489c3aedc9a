"""Whole reads of small objects on S3 through pyarrow's native (C++) S3 client.

s3fs spends about 4.3 ms of a worker's CPU on each GET (measured on a 2-core machine), much of it
Python on its event loop thread, taking turns with the analysis for the GIL; pyarrow's client
spends about 1.7 ms a request, in C++ with the GIL released. The features stage fetches
thousands of short files per worker, so the fetches of small whole files go through pyarrow
where that is exactly what s3fs would do, and through s3fs everywhere else (listings, writes,
streamed large files, markers).

"Exactly" means the s3fs options map one to one onto pyarrow's S3FileSystem, and what botocore
takes from the environment and ~/.aws (region, endpoint, credentials, CA bundle) is asked of
botocore itself and passed on explicitly, so that pyarrow resolves nothing on its own: no
credential chain of its own, no region lookup (a network call), no instance metadata. Any option
that has no exact counterpart (profile, requester_pays, version_aware, s3_additional_kwargs, a
session, proxies, addressing or retry settings other than ours ...) leaves the fetch to s3fs.

pyarrow's Python API opens an object by path only (the C++ overload taking a FileInfo with the
size is not exposed, pyarrow 26), so it asks the size first: a native fetch is a HEAD and a GET
(two requests' CPU, and a round trip more, which the features stage's prefetch hides) where
s3fs, given the size, does one ranged GET. The HEAD doubles as the size lookup when the size is
not known (a segment manifest's recordings), where s3fs makes those two requests too.

Failures keep s3fs's contract: a missing object is pyarrow's FileNotFoundError (from the HEAD);
anything else (the store unreachable, access denied, a body cut off after pyarrow's own retries)
is fetched again by s3fs, once, which then succeeds or raises the errors the callers know
(botocore's for an unreachable store, PermissionError, ...), after its own retries. When s3fs
succeeds where pyarrow failed for a reason other than a transient one, pyarrow's view of that
bucket is wrong (another region, a store that wants other signing): the bucket is left to s3fs
from then on, in this process.
"""
from __future__ import annotations

import atexit
import threading
import urllib.parse
import urllib.request

# an option s3fs accepts that changes nothing about how one object is fetched (caches, block
# sizes, uploads)
_INERT = frozenset({"skip_instance_cache", "use_listings_cache", "listings_expiry_time",
                    "max_paths", "default_block_size", "default_fill_cache", "default_cache_type",
                    "max_concurrency", "fixed_upload_size", "local_expiry_check"})
# options that change the fetch unless they are left at these values (paying requester, object
# versions, SSE-C keys or other extra request arguments, a session of the caller's, per-bucket
# clients, an event loop of the caller's)
_DEFAULTS = {"requester_pays": (False,), "version_aware": (False,),
             "s3_additional_kwargs": (None, {}), "session": (None,), "cache_regions": (False,),
             "asynchronous": (False,), "loop": (None,)}
_MAPPED = frozenset({"key", "username", "secret", "password", "token", "anon", "endpoint_url",
                     "use_ssl", "client_kwargs", "config_kwargs"})
_CLIENT_KWARGS = frozenset({"region_name", "endpoint_url", "aws_access_key_id",
                            "aws_secret_access_key", "aws_session_token", "use_ssl", "verify"})
# botocore's credential providers whose credentials are fixed strings: anything else (a role,
# SSO, a process, instance or container credentials) expires and is refreshed by botocore,
# which pyarrow, given the strings, would not do
_STATIC_CREDENTIALS = frozenset({"env", "shared-credentials-file", "config-file"})
# pyarrow's words for failures that say nothing about its view of the bucket being wrong
_TRANSIENT = ("NETWORK_CONNECTION", "SLOW_DOWN", "THROTTLING", "SERVICE_UNAVAILABLE",
              "INTERNAL_FAILURE", "REQUEST_TIMEOUT")

_lock = threading.Lock()
_by_options: dict[str, "NativeS3 | None"] = {}  # fsspec's token of the s3fs options
_clients: dict[tuple, "NativeS3"] = {}  # pyarrow's options: one client each per process


class ShortReadError(OSError):
    """pyarrow gave fewer bytes than the object holds (a body cut off without an error)."""


class NativeS3:
    """pyarrow's S3 client for one set of options, and the buckets it is not used for."""

    def __init__(self, client):
        self._client = client
        self._off: set[str] = set()

    def serves(self, path: str) -> bool:
        """Whether the fetch of `path` ("bucket/key") is this client's: not a key that pyarrow
        would read as another (empty or relative parts), nor a bucket left to s3fs."""
        bucket, _, key = path.partition("/")
        parts = key.split("/")
        return (bool(key) and bucket not in self._off
                and not any(p in ("", ".", "..") for p in parts))

    def read_small(self, path: str, size: int, most: int) -> tuple[int, bytes | None]:
        """As `Location.read_small` (the caller has checked `serves(path)`)."""
        with self._client.open_input_file(path) as fh:  # a HEAD: FileNotFoundError if missing
            current = fh.size()
            if size <= 0 and current > most:
                return current, None
            want = current if size <= 0 else min(size, current)
            data = fh.read(want)
        if len(data) != want:
            raise ShortReadError(f"{len(data)} of {want} bytes of {path}")
        return current, data

    def fell_back(self, path: str, error: Exception) -> None:
        """s3fs fetched `path` after pyarrow failed with `error`: unless that was transient,
        pyarrow's view of this bucket is wrong, and the bucket is left to s3fs."""
        if not isinstance(error, ShortReadError) and not any(w in str(error) for w in _TRANSIENT):
            self._off.add(path.partition("/")[0])


def native_s3(fs) -> NativeS3 | None:
    """The native client for the s3fs filesystem `fs`, or None where its options do not map
    exactly (or `fs` is not s3fs)."""
    if "s3" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return None
    token = fs._fs_token  # the options (and the process): one s3fs instance each
    native = _by_options.get(token, False)
    if native is not False:
        return native
    with _lock:
        if token not in _by_options:
            try:
                options = pyarrow_options(fs.storage_options)
                native = None if options is None else _client(options)
            except Exception:  # botocore could not say (a config file it cannot read ...),
                native = None  # or this pyarrow lacks an option: s3fs fetches
            _by_options[token] = native
        return _by_options[token]


def _client(options: dict) -> NativeS3:
    key = tuple(sorted(options.items()))
    if key not in _clients:
        import pyarrow.fs as pafs

        if not _clients:
            # pyarrow finalizes its S3 support at exit (an atexit hook of its own, registered
            # when pyarrow.fs was imported, so it runs after this one): clients still held then
            # are released by this hook first, so that none outlives it
            atexit.register(_clients.clear)
            atexit.register(_by_options.clear)
        opts = dict(options)
        attempts = opts.pop("max_attempts")
        _clients[key] = NativeS3(pafs.S3FileSystem(
            **opts, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts)))
    return _clients[key]


def pyarrow_options(storage_options: dict) -> dict | None:
    """Keyword arguments of pyarrow.fs.S3FileSystem (with `max_attempts` for its retry
    strategy) that fetch an object as s3fs with `storage_options` does, or None."""
    so = dict(storage_options)
    for name, defaults in _DEFAULTS.items():
        if so.pop(name, defaults[0]) not in defaults:
            return None
    if set(so) - _MAPPED - _INERT:
        return None  # a profile, a botocore session variable, or an option we do not know
    ck = dict(so.get("client_kwargs") or {})
    if set(ck) - _CLIENT_KWARGS:
        return None
    retry = _retry_options(dict(so.get("config_kwargs") or {}))
    if retry is None:
        return None

    # s3fs passes its own arguments and client_kwargs to botocore together: one value each
    # (username and password are s3fs's other names for key and secret)
    key = _one(so.get("username") or so.get("key"), ck.get("aws_access_key_id"))
    secret = _one(so.get("password") or so.get("secret"), ck.get("aws_secret_access_key"))
    token = _one(so.get("token"), ck.get("aws_session_token"))
    endpoint = _one(so.get("endpoint_url"), ck.get("endpoint_url"))
    use_ssl = ck.get("use_ssl", so.get("use_ssl", True))
    if _DIFFER in (key, secret, token, endpoint) or "" in (key, secret, token, endpoint):
        return None

    import botocore.session
    from botocore.configprovider import ConfiguredEndpointProvider

    # what s3fs's session (aiobotocore's, a botocore Session with no arguments) resolves
    session = botocore.session.Session()
    if (session.get_config_variable("s3") or session.get_config_variable("use_fips_endpoint")
            or session.get_config_variable("use_dualstack_endpoint")):
        return None  # addressing style, accelerate, FIPS or dual-stack endpoints
    if endpoint is None and not session.get_config_variable("ignore_configured_endpoint_urls"):
        # AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or the config file's
        endpoint = ConfiguredEndpointProvider(
            full_config=session.full_config, scoped_config=session.get_scoped_config(),
            client_name="s3").provide()
    out = dict(retry, region=ck.get("region_name") or session.get_config_variable("region")
               # botocore's S3 client signs with us-east-1 when it has no region (and follows
               # a redirect to another: pyarrow then fails, and the bucket goes to s3fs)
               or "us-east-1")
    if endpoint is not None:
        url = urllib.parse.urlsplit(endpoint)
        if (url.scheme not in ("http", "https") or not url.netloc or url.path not in ("", "/")
                or url.query or url.fragment):
            return None
        out.update(scheme=url.scheme, endpoint_override=url.netloc)
        https = url.scheme == "https"
        from botocore.utils import get_environ_proxies
        if get_environ_proxies(endpoint):
            return None  # botocore goes through an HTTP(S)_PROXY; pyarrow's client would not
    else:
        https = bool(use_ssl)
        out.update(scheme="https" if https else "http")
        if urllib.request.getproxies():
            return None
    if https:
        verify = ck.get("verify")
        if verify is None:  # as botocore: AWS_CA_BUNDLE, or the config file's ca_bundle
            verify = session.get_config_variable("ca_bundle")
        if verify is False:
            return None  # no certificate checks: pyarrow always checks
        if not isinstance(verify, str):
            from botocore.httpsession import get_cert_path
            verify = get_cert_path(True)  # botocore's default bundle (certifi's)
        out["tls_ca_file_path"] = verify

    if so.get("anon"):
        out["anonymous"] = True  # s3fs drops any credentials given and signs nothing
        return out
    if key is None and secret is None and token is None:
        creds = session.get_credentials()  # botocore's chain, as s3fs's client runs it
        if (creds is None or getattr(creds, "method", None) not in _STATIC_CREDENTIALS
                or hasattr(creds, "refresh_needed")):
            return None  # none (s3fs says so), or ones that botocore refreshes
        frozen = creds.get_frozen_credentials()
        key, secret, token = frozen.access_key, frozen.secret_key, frozen.token
    elif key is None or secret is None:
        return None  # half a key pair: botocore refuses it
    out.update(access_key=key, secret_key=secret)
    if token is not None:
        out["session_token"] = token
    return out


_DIFFER = object()


def _one(a, b):
    if a is not None and b is not None and a != b:
        return _DIFFER
    return a if a is not None else b


def _retry_options(config_kwargs: dict) -> dict | None:
    """pyarrow's timeouts and attempts for botocore's `config_kwargs` (ours, S3_CLIENT_CONFIG,
    or the user's over them), or None where they are not only those (or lack one: s3fs then
    has timeouts of its own)."""
    retries = config_kwargs.pop("retries", None)
    connect = config_kwargs.pop("connect_timeout", None)
    read = config_kwargs.pop("read_timeout", None)
    if (config_kwargs or connect is None or read is None or not isinstance(retries, dict)
            or retries.get("mode") != "standard"
            or not set(retries) - {"mode"} <= {"max_attempts", "total_max_attempts"}):
        return None
    # botocore's `max_attempts` counts the retries, its `total_max_attempts` (which botocore
    # writes into the dict in place of the other when it makes a client) and pyarrow's count
    # the first attempt too
    attempts = retries.get("total_max_attempts")
    if attempts is None:
        attempts = retries.get("max_attempts")
        attempts = attempts + 1 if isinstance(attempts, int) else attempts
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        return None
    out = {"max_attempts": attempts}
    # botocore's connect timeout is pyarrow's; its read timeout (no byte for that long) is
    # pyarrow's request timeout, which on Linux is curl's "under 1 byte/s for that long"
    for name, value in (("connect_timeout", connect), ("request_timeout", read)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            return None
        out[name] = float(value)
    return out
