"""Small files read whole from S3 (SeaweedFS on loopback, through the counting proxy): one GET
each, the bytes as stored, and the errors s3fs gives."""
import pytest

from helpers.infra.proxy import FlakyProxy
from timbrespace_ray import whole_reads
from timbrespace_ray.storage import Location
from timbrespace_ray.whole_reads import read_whole

# keys that a URL must quote (a space, non-ASCII, '+', '=', '&'), and an empty object
OBJECTS = {f"corpus/spk{i}/utt{i}.wav": bytes([i]) * (1000 + 317 * i) for i in range(8)}
OBJECTS |= {"corpus/odd names/ü+x=1&y z.wav": b"RIFF" * 500, "corpus/empty.wav": b""}


@pytest.fixture
def stored(s3_server, s3_bucket):
    fs = s3_server.filesystem()
    for key, data in OBJECTS.items():
        fs.pipe_file(f"{s3_bucket}/{key}", data)
    return s3_bucket


def _proxy(s3_server, **faults):
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    return FlakyProxy(("127.0.0.1", port), max_lifetime_s=120, **faults)


def _location(s3_server, proxy, uri, **options):
    return Location.of(uri, {**s3_server.storage_options, "endpoint_url": proxy.url, **options})


def test_each_small_file_is_one_get_and_reads_as_stored(s3_server, stored):
    with _proxy(s3_server, mode="ok") as proxy:
        got = {}
        for key, data in OBJECTS.items():
            loc = _location(s3_server, proxy, f"s3://{stored}/{key}")
            got[key] = read_whole(loc.fs, loc.path, len(data))
        assert got == OBJECTS
        assert proxy.stats.requests == len(OBJECTS)
        # a size from the plan bounds what is read, as a ranged read does
        loc = _location(s3_server, proxy, f"s3://{stored}/corpus/spk3/utt3.wav")
        assert read_whole(loc.fs, loc.path, 10) == OBJECTS["corpus/spk3/utt3.wav"][:10]


def test_errors_are_those_of_s3fs(s3_server, stored):
    with _proxy(s3_server, mode="ok") as proxy:
        loc = _location(s3_server, proxy, f"s3://{stored}/corpus/gone.wav")
        with pytest.raises(FileNotFoundError):
            read_whole(loc.fs, loc.path, 100)
        loc = _location(s3_server, proxy, f"s3://{stored}/corpus/spk1/utt1.wav",
                        secret="not-the-secret")
        with pytest.raises(PermissionError):
            read_whole(loc.fs, loc.path, 100)


def test_connections_cut_mid_read_are_retried(s3_server, stored):
    # half the requests' connections are reset, some in the middle of the body
    with _proxy(s3_server, reset_rate=0.5, reset_after_max=2000, seed=3) as proxy:
        for key, data in OBJECTS.items():
            loc = _location(s3_server, proxy, f"s3://{stored}/{key}")
            assert read_whole(loc.fs, loc.path, len(data)) == data
        assert proxy.stats.resets > 0


def test_options_that_add_headers_to_every_get_take_s3fs_way(s3_server, stored, monkeypatch):
    presigned = []

    async def counted(fs, path, size):
        presigned.append(path)
        return None  # as if the store had refused it: s3fs reads it

    monkeypatch.setattr(whole_reads, "_presigned_get", counted)
    key, data = "corpus/spk2/utt2.wav", OBJECTS["corpus/spk2/utt2.wav"]
    with _proxy(s3_server, mode="ok") as proxy:
        for options in ({"requester_pays": True},
                        {"s3_additional_kwargs": {"ExpectedBucketOwner": "123456789012"}}):
            loc = _location(s3_server, proxy, f"s3://{stored}/{key}", **options)
            try:
                read_whole(loc.fs, loc.path, len(data))
            except OSError:
                pass  # SeaweedFS may refuse the header; only the way taken matters here
        assert presigned == []
        loc = _location(s3_server, proxy, f"s3://{stored}/{key}")
        assert read_whole(loc.fs, loc.path, len(data)) == data
        assert presigned == [f"{stored}/{key}"]
