"""Whole reads of small S3 objects through pyarrow's native client (timbrespace_ray.s3_native),
against a real SeaweedFS server, through the loopback proxy (tests/infra/proxy.py) that counts
requests, cuts connections and plays a store that is gone: the same bytes as s3fs, the same
errors as s3fs, s3fs wherever the options do not map exactly, and a clean exit."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from infra.proxy import FlakyProxy
from timbrespace_ray import s3_native
from timbrespace_ray.inputs.base import ReadContext
from timbrespace_ray.inputs.files import open_checked
from timbrespace_ray.storage import S3_CLIENT_CONFIG, Location, unreachable_errors

pytestmark = pytest.mark.slow
MOST = 64 << 20
# short timeouts and one attempt each: a store that is gone fails in seconds, on either client
QUICK = {"connect_timeout": 2, "read_timeout": 2,
         "retries": {"mode": "standard", "max_attempts": 1}}


@pytest.fixture
def proxy(s3_server):
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    with FlakyProxy(("127.0.0.1", port), mode="ok", max_lifetime_s=300) as p:
        yield p


@pytest.fixture
def blobs(s3_server, s3_bucket):
    """Objects of a few hundred KB (LibriSpeech-sized), keys with characters that need quoting."""
    names = ["a.wav", "with space.wav", "plus+and%25.wav", "ü/nested.wav", "q?h#.flac"]
    data = {f"{s3_bucket}/{n}": os.urandom(150_000 + 1000 * i) for i, n in enumerate(names)}
    s3_server.filesystem().pipe(data)
    return data


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No AWS settings from this machine: no credentials, config files, endpoints or proxies."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "FSSPEC_")) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def _options(s3_server, proxy, **extra):
    return {**s3_server.storage_options, "endpoint_url": proxy.url, **extra}


def _requests(proxy, fn):
    before = proxy.stats.requests
    result = fn()
    return result, proxy.stats.requests - before


def test_mappable_options_fetch_natively_the_bytes_s3fs_fetches(s3_server, blobs, proxy):
    options = _options(s3_server, proxy)
    s3fs = s3_server.filesystem(endpoint_url=proxy.url)
    for path, data in blobs.items():
        loc = Location.of(f"s3://{path}", options)
        assert s3_native.native_s3(loc.fs) is not None and s3_native.native_s3(loc.fs).serves(path)
        # the native client asks for the size first (pyarrow opens by path only): HEAD + GET,
        # where s3fs's ranged GET is one request
        got, n = _requests(proxy, lambda: loc.read_small(len(data), MOST))
        assert got == (len(data), data) and n == 2
        got, n = _requests(proxy, lambda: loc.read_small(-1, MOST))  # a manifest's recording
        assert got == (len(data), data) and n == 2
        got, n = _requests(proxy, lambda: loc.read_small(-1, len(data) - 1))  # too big: no GET
        assert got == (len(data), None) and n == 1
        assert s3fs.cat_file(path) == data
    # a known size shorter than the object reads that much, as s3fs's byte range does
    path, data = next(iter(blobs.items()))
    assert Location.of(f"s3://{path}", options).read_small(1000, MOST) == (len(data), data[:1000])
    # the reader itself, with the same requests
    loc = Location.of(f"s3a://{path}", options)
    assert s3_native.native_s3(loc.fs) is not None
    ctx = ReadContext(options, max_file_bytes=1 << 30)
    got, n = _requests(proxy, lambda: open_checked(f"s3a://{path}", len(data), ctx))
    assert got == data and n == 2
    # one pyarrow client per process for one set of options, whatever the path or instance
    again = Location.of(f"s3://{path}", {**options, "skip_instance_cache": True})
    assert s3_native.native_s3(again.fs) is s3_native.native_s3(loc.fs)


def test_options_without_an_exact_counterpart_stay_with_s3fs(s3_server, blobs, proxy):
    path, data = next(iter(blobs.items()))
    fallbacks = [
        {"config_kwargs": {"s3": {"addressing_style": "path"}}},
        {"config_kwargs": {"retries": {"max_attempts": 3}}},  # botocore's legacy mode
        {"requester_pays": True},
        {"version_aware": True},
        {"s3_additional_kwargs": {"ServerSideEncryption": "AES256"}},
    ]
    for extra in fallbacks:
        options = _options(s3_server, proxy, **extra)
        loc = Location.of(f"s3://{path}", options)
        assert s3_native.native_s3(loc.fs) is None, extra
        got, n = _requests(proxy, lambda: loc.read_small(len(data), MOST))
        assert got == (len(data), data) and n == 1, extra  # s3fs's one ranged GET
    base = _options(s3_server, proxy)
    mapped = s3_native.pyarrow_options(Location.of(f"s3://{path}", base).fs.storage_options)
    assert mapped is not None
    for extra in ({"profile": "other"}, {"secret": None}, {"client_kwargs": {"unknown": 1}},
                  {"client_kwargs": {"aws_access_key_id": "another"}},
                  {"endpoint_url": proxy.url + "/prefix"}, {"endpoint_url": "127.0.0.1:1"},
                  # pyarrow always checks certificates
                  {"endpoint_url": "https://127.0.0.1:1", "client_kwargs": {"verify": False}}):
        assert s3_native.pyarrow_options({**base, "config_kwargs": S3_CLIENT_CONFIG,
                                          **extra}) is None, extra
    # the same options written the other ways s3fs accepts map the same way
    other = {"username": s3_server.access_key, "password": s3_server.secret_key,
             "client_kwargs": {"region_name": s3_server.region, "endpoint_url": proxy.url}}
    assert s3_native.pyarrow_options(
        Location.of(f"s3://{path}", other).fs.storage_options) == mapped
    in_client = {"client_kwargs": {"aws_access_key_id": s3_server.access_key,
                                   "aws_secret_access_key": s3_server.secret_key,
                                   "region_name": s3_server.region},
                 "endpoint_url": proxy.url}
    assert s3_native.pyarrow_options(
        Location.of(f"s3://{path}", in_client).fs.storage_options) == mapped
    anon = s3_native.pyarrow_options(Location.of(f"s3://{path}", {**base, "anon": True})
                                     .fs.storage_options)
    assert anon["anonymous"] and "access_key" not in anon
    # botocore counts retries in `max_attempts`, pyarrow attempts; botocore rewrites the dict
    # as `total_max_attempts` when s3fs makes its client (as the reads above did): it means
    # the same, and our defaults are not rewritten with it
    assert mapped["max_attempts"] == S3_CLIENT_CONFIG["retries"]["max_attempts"] + 1 == 4
    s3fs_made = Location.of(f"s3://{path}", {**base, "config_kwargs": QUICK}).fs
    assert s3fs_made.cat_file(path) == data
    assert s3fs_made.storage_options["config_kwargs"]["retries"] == {
        "mode": "standard", "total_max_attempts": 2}
    assert s3_native.pyarrow_options(s3fs_made.storage_options)["max_attempts"] == 2
    assert QUICK["retries"] == {"mode": "standard", "max_attempts": 1}
    assert S3_CLIENT_CONFIG["retries"] == {"mode": "standard", "max_attempts": 3}


def test_credentials_and_endpoint_come_from_botocore_only_when_fixed(s3_server, blobs, proxy,
                                                                      clean_env, tmp_path):
    path, data = next(iter(blobs.items()))
    no_keys = {"endpoint_url": proxy.url}
    # nothing given, nothing found: s3fs (which says there are no credentials)
    loc = Location.of(f"s3://{path}", no_keys)
    assert s3_native.pyarrow_options(loc.fs.storage_options) is None
    # credentials in the environment (botocore's first source) are fixed strings: pyarrow gets
    # them; and the endpoint from AWS_ENDPOINT_URL_S3 as botocore reads it
    clean_env.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    clean_env.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    loc = Location.of(f"s3://{path}", {"client_kwargs": {"region_name": "eu-west-3"}})
    mapped = s3_native.pyarrow_options(loc.fs.storage_options)
    assert mapped["access_key"] == s3_server.access_key and mapped["region"] == "eu-west-3"
    assert mapped["endpoint_override"] == proxy.url.split("://")[1]
    got, n = _requests(proxy, lambda: loc.read_small(len(data), MOST))
    assert got == (len(data), data) and n == 2
    # ones botocore would refresh (here: they expire) stay with botocore
    clean_env.setenv("AWS_CREDENTIAL_EXPIRATION", "2099-01-01T00:00:00Z")
    assert s3_native.pyarrow_options(loc.fs.storage_options) is None
    clean_env.delenv("AWS_CREDENTIAL_EXPIRATION")
    # a proxy that botocore would go through
    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert s3_native.pyarrow_options(loc.fs.storage_options) is None
    clean_env.delenv("HTTP_PROXY")
    # the shared credentials file, as botocore reads it
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        clean_env.delenv(name)
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {s3_server.access_key}\n"
                     f"aws_secret_access_key = {s3_server.secret_key}\n")
    clean_env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    assert s3_native.pyarrow_options(loc.fs.storage_options)["secret_key"] == s3_server.secret_key
    # a config file's S3 settings (here the addressing style) have no counterpart
    config = tmp_path / "config"
    config.write_text("[default]\ns3 =\n    addressing_style = virtual\n")
    clean_env.setenv("AWS_CONFIG_FILE", str(config))
    assert s3_native.pyarrow_options(loc.fs.storage_options) is None


def test_a_missing_object_is_file_not_found_after_one_request(s3_server, s3_bucket, proxy):
    options = _options(s3_server, proxy)
    for uri in (f"s3://{s3_bucket}/missing.wav", "s3://no-such-bucket-here/x.wav"):
        loc = Location.of(uri, options)
        assert s3_native.native_s3(loc.fs) is not None
        for size in (1234, -1):
            before = proxy.stats.requests
            with pytest.raises(FileNotFoundError):
                loc.read_small(size, MOST)
            assert proxy.stats.requests - before == 1  # the HEAD; no fetch again by s3fs
        with pytest.raises(FileNotFoundError):
            open_checked(uri, 1234, ReadContext(options, max_file_bytes=1 << 30))


@pytest.mark.parametrize("gone", ["refuse", "closed"])
def test_a_store_that_is_gone_raises_what_s3fs_raises(s3_server, blobs, proxy, gone):
    path, data = next(iter(blobs.items()))
    loc = Location.of(f"s3://{path}", _options(s3_server, proxy, config_kwargs=QUICK))
    assert s3_native.native_s3(loc.fs) is not None
    if gone == "refuse":
        proxy.mode = "refuse"
    else:
        proxy.close_listener()
    errors = []
    for read in (lambda: loc.read_small(len(data), MOST),
                 lambda: loc._read_small_fsspec(len(data), MOST)):  # s3fs alone, as before
        with pytest.raises(Exception) as info:
            read()
        errors.append(info.value)
    assert type(errors[0]) is type(errors[1]) and isinstance(errors[0], unreachable_errors())
    assert "endpoint" in str(errors[0]).lower()
    assert not s3_native.native_s3(loc.fs)._off  # the store's fault, not the client's view


def test_bodies_cut_off_midway_are_fetched_again(s3_server, blobs):
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    with FlakyProxy(("127.0.0.1", port), reset_rate=0.2, seed=11, max_lifetime_s=300) as flaky:
        options = _options(s3_server, flaky)
        for _ in range(8):
            for path, data in blobs.items():
                loc = Location.of(f"s3://{path}", options)
                assert loc.read_small(len(data), MOST) == (len(data), data)
        assert flaky.stats.resets >= 10, flaky.stats
        assert not s3_native.native_s3(loc.fs)._off


def test_a_wrong_view_of_the_bucket_leaves_it_to_s3fs(s3_server, blobs, proxy, monkeypatch):
    import pyarrow.fs as pafs

    options = _options(s3_server, proxy)
    paths = list(blobs)
    loc = Location.of(f"s3://{paths[0]}", options)
    # a client that signs differently from s3fs (here: another secret), as a client would
    # with another region than the bucket's
    wrong = s3_native.NativeS3(pafs.S3FileSystem(
        access_key=s3_server.access_key, secret_key="not-it", region=s3_server.region,
        scheme="http", endpoint_override=proxy.url.split("://")[1]))
    monkeypatch.setitem(s3_native._by_options, loc.fs._fs_token, wrong)
    got, n = _requests(proxy, lambda: loc.read_small(len(blobs[paths[0]]), MOST))
    assert got[1] == blobs[paths[0]] and n == 2  # pyarrow's refused HEAD, then s3fs's GET
    assert not wrong.serves(paths[1])
    got, n = _requests(proxy, lambda: Location.of(f"s3://{paths[1]}", options)
                       .read_small(len(blobs[paths[1]]), MOST))
    assert got[1] == blobs[paths[1]] and n == 1  # s3fs only, from then on


@pytest.mark.parametrize("inflight", [False, True])
def test_a_process_that_read_natively_exits_cleanly(s3_server, blobs, proxy, inflight):
    path, data = next(iter(blobs.items()))
    script = textwrap.dedent(f"""
        import threading, time
        from timbrespace_ray import s3_native
        from timbrespace_ray.storage import Location
        loc = Location.of("s3://{path}", {s3_server.storage_options!r})
        assert s3_native.native_s3(loc.fs) is not None
        assert loc.read_small({len(data)}, 1 << 26)[0] == {len(data)}
        if {inflight!r}:  # a thread still waiting on a store that never answers, at exit
            stuck = Location.of("s3://{path}", {_options(s3_server, proxy, config_kwargs=QUICK)!r})
            assert s3_native.native_s3(stuck.fs) is not None
            threading.Thread(target=stuck.read_small, args=({len(data)}, 1 << 26),
                             daemon=True).start()
            time.sleep(0.5)
        print("done")
    """)
    proxy.mode = "silent"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    assert proc.stderr == ""
    assert proxy.stats.connections >= inflight  # the thread did wait on the store
