"""Flaky and vanishing storage: the stages read and write SeaweedFS S3 through a loopback proxy
(tests/helpers/infra/proxy.py) that resets a fifth of the requests' connections mid-way and adds 20-100
ms of latency to each request; then the storage goes away for good. Flaky storage must lose
nothing; storage gone must end the run with a clear error in bounded time, and a rerun once it
is back must finish with the same rows as a clean run.
"""
import re
import time

import pytest
import yaml

from helpers.infra.proxy import FlakyProxy
from timbrespace_ray.storage import S3_CLIENT_CONFIG, Location
from helpers.reliability import (  # noqa: F401 (no_leftover_drivers: a fixture)
    Driver, clean_reference, no_leftover_drivers, rows, s3_rows, wait_until)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_drivers")]
GONE_LIMIT_S = 120  # a run must give up within this long once the storage is gone


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return clean_reference(tmp_path_factory)


@pytest.fixture
def proxy(s3_server):
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    with FlakyProxy(("127.0.0.1", port), reset_rate=0.2, latency_s=(0.02, 0.1), seed=7,
                    max_lifetime_s=300) as p:
        yield p


def _config(ref, path, s3_server, endpoint_url):
    doc = yaml.safe_load(ref["config"].read_text())
    doc["storage"] = {"storage_options": {**s3_server.storage_options, "endpoint_url": endpoint_url}}
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _env(ray_cluster):
    # nothing may reach the S3 server around the proxy: no AWS_*/FSSPEC_* defaults
    return {k: v for k, v in ray_cluster.env.items() if not k.startswith(("AWS_", "FSSPEC_"))}


def _without_source(table_rows):
    return [r[:1] + r[2:] for r in table_rows]  # `source` is s3://... here, a local path there


def _run(stage, args, env, timeout_s=300):
    rc, output = Driver(stage, args, env).finish(timeout_s)
    assert rc == 0, output[-4000:]
    return output


def test_features_and_tokens_through_flaky_storage(ref, s3_server, s3_bucket, proxy, ray_cluster,
                                                   tmp_path):
    fs = s3_server.filesystem()
    fs.put(str(ref["corpus"]) + "/", f"{s3_bucket}/corpus/", recursive=True)
    config = _config(ref, tmp_path / "c.yaml", s3_server, proxy.url)
    n, env = ref["counts"]["units"], _env(ray_cluster)
    common = ["--output", f"s3://{s3_bucket}/out", "--config", config,
              "--address", ray_cluster.address, "--no-progress"]

    output = _run("features", ["--input", f"s3://{s3_bucket}/corpus", *common], env)
    assert f"inputs seen {n} = rows {ref['counts']['rows']} + errors 1" in output
    resets_features = proxy.stats.resets
    assert _without_source(s3_rows(fs, f"{s3_bucket}/out/features")) == _without_source(
        rows(ref["out"], "features"))
    errors = s3_rows(fs, f"{s3_bucket}/out/errors")
    assert [(r[1], r[3]) for r in errors] == [(r[1], r[3]) for r in rows(ref["out"], "errors")]

    # tokens read those parts (and the clean run's k-means model) through the proxy too
    fs.put(str(ref["out"] / "kmeans") + "/", f"{s3_bucket}/out/kmeans/", recursive=True)
    output = _run("tokens", common, env)
    assert f"tokens: {n} of {n} units run now" in output
    assert _without_source(s3_rows(fs, f"{s3_bucket}/out/tokens")) == _without_source(
        rows(ref["out"], "tokens"))
    stats = proxy.stats
    print(f"proxy: {stats}; {resets_features} resets during features")
    # the faults happened: many connections cut (a fifth of ~400 requests), in both stages
    assert resets_features >= 10 and stats.resets - resets_features >= 5, stats
    assert stats.requests >= 200, stats


def _gone_error(output: str) -> str:
    m = re.search(r"^timbrespace-ray: error: (.+)$", output, re.MULTILINE)
    assert m, f"no one-line error:\n{output[-4000:]}"
    return m.group(1)


def test_storage_gone_for_good_fails_fast_and_clearly(ref, s3_server, s3_bucket, proxy,
                                                      ray_cluster, tmp_path):
    fs = s3_server.filesystem()
    fs.put(str(ref["corpus"]) + "/", f"{s3_bucket}/corpus/", recursive=True)
    env = _env(ray_cluster)
    config = _config(ref, tmp_path / "c.yaml", s3_server, proxy.url)
    args = ["--input", f"s3://{s3_bucket}/corpus", "--output", f"s3://{s3_bucket}/out",
            "--config", config, "--address", ray_cluster.address, "--no-progress"]

    # 1. gone before the run starts: every connection is reset at once
    proxy.mode = "refuse"
    d = Driver("features", args, env)
    rc, output = d.finish(GONE_LIMIT_S)
    assert rc != 0 and d.seconds() < GONE_LIMIT_S
    message = _gone_error(output)
    assert f"s3://{s3_bucket}/" in message and "endpoint" in message.lower(), message
    print(f"storage gone at the start: exit {rc} after {d.seconds():.1f} s: {message}")

    # 2. gone in the middle of the stage: the proxy stops listening after a few units
    proxy.mode = "ok"
    d = Driver("features", args, env)
    done = f"{s3_bucket}/out/_run/features/done"

    def n_done():
        fs.invalidate_cache()
        return len(fs.ls(done)) if fs.exists(done) else 0

    wait_until(lambda: n_done() >= 3 or d.proc.poll() is not None, 240, 0.1, "3 finished units")
    assert d.proc.poll() is None, d.output[-3000:]
    d.freeze()  # no unit is handed out while the storage goes: it goes mid-stage
    proxy.close_listener()
    gone_at = time.monotonic()
    d.resume()
    rc, output = d.finish(GONE_LIMIT_S + 30)
    waited = time.monotonic() - gone_at
    assert rc != 0 and waited < GONE_LIMIT_S, f"rc {rc} after {waited:.0f} s"
    message = _gone_error(output)  # a part or marker write, or an input read, that failed
    assert f"s3://{s3_bucket}/" in message and "endpoint" in message.lower(), message
    units_done = n_done()
    assert 3 <= units_done < ref["counts"]["units"]
    print(f"storage gone: exit {rc} {waited:.1f} s later: {message}")

    # 3. storage back (straight to the server): the rerun resumes and loses nothing
    config = _config(ref, tmp_path / "back.yaml", s3_server, s3_server.endpoint_url)
    args[args.index("--config") + 1] = config
    output = _run("features", args, env)
    assert re.search(rf"features: {ref['counts']['units']} units, {units_done} already done",
                     output), output[-3000:]
    assert _without_source(s3_rows(fs, f"{s3_bucket}/out/features")) == _without_source(
        rows(ref["out"], "features"))


def test_s3_client_timeouts_default_and_yield_to_the_users():
    options = {"key": "k", "secret": "s", "endpoint_url": "http://127.0.0.1:9"}
    assert Location.of("s3://b/x", options).fs.config_kwargs == S3_CLIENT_CONFIG
    mine = {"read_timeout": 300, "retries": {"max_attempts": 10}}
    got = Location.of("s3://b/x", {**options, "config_kwargs": mine}).fs.config_kwargs
    assert got == {**S3_CLIENT_CONFIG, **mine}


def test_an_endpoint_that_never_answers_ends_the_run_clearly(ref, s3_server, proxy, ray_cluster,
                                                            tmp_path):
    # accepted, read, never answered; 0.3 s per answer and one attempt inside each of s3fs's,
    # so the wait is mostly s3fs's own back-off instead of the defaults' quarter of an hour
    proxy.mode = "silent"
    doc = yaml.safe_load(open(_config(ref, tmp_path / "c.yaml", s3_server, proxy.url)))
    doc["storage"]["storage_options"]["config_kwargs"] = {"read_timeout": 0.3,
                                                          "retries": {"max_attempts": 1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    args = ["--input", "s3://never/corpus", "--output", "s3://never/out",
            "--config", str(tmp_path / "c.yaml"), "--address", ray_cluster.address, "--no-progress"]
    d = Driver("features", args, _env(ray_cluster))
    rc, output = d.finish(GONE_LIMIT_S)
    message = _gone_error(output)
    assert rc == 2 and "s3://never/" in message and "timeout" in message.lower(), message
    assert proxy.stats.connections >= 1 and proxy.stats.refused == 0
    print(f"endpoint never answers: exit {rc} after {d.seconds():.1f} s, "
          f"{proxy.stats.connections} connections: {message}")
