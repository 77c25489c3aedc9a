"""Tests of the real-service test infrastructure (tests/helpers/infra): SeaweedFS S3 + local Ray."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers.infra import RayCluster, SeaweedS3
from helpers.infra._proc import find_processes, port_open  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


# ----------------------------------------------------------------------------------- S3


def test_s3_roundtrip_list_and_auth(s3_server: SeaweedS3, s3_bucket: str):
    import s3fs

    payload = os.urandom(256 * 1024) + b"tail"
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options)
    path = f"{s3_bucket}/dir/blob.bin"
    with fs.open(path, "wb") as f:
        f.write(payload)

    assert fs.cat(path) == payload
    assert fs.ls(f"{s3_bucket}/dir", detail=False) == [path]
    assert fs.info(path)["size"] == len(payload)
    assert s3_bucket in s3_server.list_buckets()

    # fsspec URL + storage_options, the way pipeline code opens things
    import fsspec

    with fsspec.open(f"s3://{path}", "rb", **s3_server.storage_options) as f:
        assert f.read(4) == payload[:4]

    # pyarrow's own S3 client (what Ray Data uses when given `filesystem=`)
    pa_fs = s3_server.pyarrow_filesystem()
    with pa_fs.open_input_stream(path) as f:
        assert f.read() == payload

    bad = s3fs.S3FileSystem(
        skip_instance_cache=True,
        **{**s3_server.storage_options, "secret": s3_server.secret_key + "-wrong"},
    )
    with pytest.raises(PermissionError):
        bad.cat(path)
    with pytest.raises(PermissionError):
        bad.pipe(f"{s3_bucket}/dir/evil.bin", b"x")
    assert not fs.exists(f"{s3_bucket}/dir/evil.bin")

    anon = s3fs.S3FileSystem(
        skip_instance_cache=True, anon=True, endpoint_url=s3_server.endpoint_url
    )
    with pytest.raises(PermissionError):
        anon.cat(path)


def test_s3_env_vars_work_in_subprocess(s3_server: SeaweedS3, s3_bucket: str, tmp_path):
    """A fresh interpreter configured only through s3_server.env reaches the server."""
    import subprocess

    s3_server.filesystem().pipe(f"{s3_bucket}/hello.txt", b"hi from pytest")
    script = tmp_path / "read.py"
    script.write_text(textwrap.dedent(f"""
        import fsspec, pyarrow.fs as pafs
        with fsspec.open("s3://{s3_bucket}/hello.txt", "rb") as f:   # FSSPEC_S3_* env
            print("FSSPEC", f.read().decode())
        import botocore.session                                         # AWS_* env
        c = botocore.session.get_session().create_client("s3")
        print("BOTO", c.get_object(Bucket="{s3_bucket}", Key="hello.txt")["Body"].read().decode())
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env.update(s3_server.env)
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "FSSPEC hi from pytest" in r.stdout
    assert "BOTO hi from pytest" in r.stdout


def test_s3_server_stop_is_clean():
    srv = SeaweedS3.start()
    pid, port, base = srv.proc.pid, srv.ports["s3"], srv.base_dir
    grpc_socks = [Path(f"/tmp/seaweedfs-{s}-grpc-{srv.ports[s + '_grpc']}.sock")
                  for s in ("master", "volume", "filer", "s3")]
    assert srv.running and port_open(port)
    srv.stop()
    assert not srv.running
    assert not find_processes(sid=pid, cmdline_substr=str(base))
    assert not port_open(port)
    assert not base.exists()
    assert not any(s.exists() for s in grpc_socks)


# ----------------------------------------------------------------------------------- Ray

_JOB_OK = """
import os, sys
import ray

ray.init()  # RAY_ADDRESS is set by the job supervisor

@ray.remote
def square(x):
    import sys
    return x * x, sys.executable

out = ray.get([square.remote(i) for i in range(4)])
print("SQUARES", [v for v, _ in out])
print("WORKER_PYTHONS", sorted({exe for _, exe in out}))
print("DRIVER_PYTHON", sys.executable)
print("VENV_UPLOADED", os.path.exists(".venv"), os.path.exists(".git"))
print("HELPER", open("helper.txt").read().strip())

@ray.remote
def read_s3(url):
    import fsspec
    with fsspec.open(url, "rb") as f:   # configured purely by env vars passed to the job
        return f.read().decode()

if len(sys.argv) > 1:
    print("S3_FROM_WORKER", ray.get(read_s3.remote(sys.argv[1])))
"""

_JOB_FAIL = """
print("about to fail on purpose")
raise SystemExit(3)
"""


def _same_python(path: str) -> bool:
    return Path(path).resolve() == Path(sys.executable).resolve()


def test_ray_submit_job_success_and_failure(ray_cluster: RayCluster, s3_server: SeaweedS3,
                                            s3_bucket: str, tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "ok.py").write_text(_JOB_OK)
    (wd / "bad.py").write_text(_JOB_FAIL)
    (wd / "helper.txt").write_text("shipped-with-working-dir\n")
    # must be excluded from the upload (the real repo has a 2.6 GB .venv)
    (wd / ".venv").mkdir()
    (wd / ".venv" / "junk.bin").write_bytes(b"\0" * 1024)
    (wd / ".git").mkdir()
    (wd / ".git" / "HEAD").write_text("ref: refs/heads/main\n")

    s3_server.filesystem().pipe(f"{s3_bucket}/msg.txt", b"s3-says-hello")

    rc, logs = ray_cluster.submit_job(
        f"python ok.py s3://{s3_bucket}/msg.txt", working_dir=wd, timeout_s=180,
        env=s3_server.env,
    )
    assert rc == 0, logs
    assert "SQUARES [0, 1, 4, 9]" in logs
    assert "VENV_UPLOADED False False" in logs
    assert "HELPER shipped-with-working-dir" in logs
    assert "S3_FROM_WORKER s3-says-hello" in logs
    line = next(ln for ln in logs.splitlines() if ln.startswith("DRIVER_PYTHON"))
    assert _same_python(line.split(" ", 1)[1]), line
    line = next(ln for ln in logs.splitlines() if ln.startswith("WORKER_PYTHONS"))
    workers = eval(line.split(" ", 1)[1])  # noqa: S307 - our own printed list
    assert workers and all(_same_python(w) for w in workers), line

    res = ray_cluster.submit_job("python bad.py", working_dir=wd, timeout_s=120)
    rc, logs = res
    assert rc != 0
    assert res.status == "FAILED"
    assert "about to fail on purpose" in logs


def test_ray_driver_subprocess(ray_cluster: RayCluster, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent("""
        import os, ray
        ray.init(address=os.environ["RAY_ADDRESS"])
        print("NODES", [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]])
        print("SUM", sum(ray.get([ray.remote(lambda x: x + 1).remote(i) for i in range(5)])))
        print("CPUS", ray.cluster_resources().get("CPU"))
    """))
    r = ray_cluster.run_driver(str(script), timeout_s=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUM 15" in r.stdout
    assert "NODES ['127.0.0.1']" in r.stdout
    assert f"CPUS {float(ray_cluster.num_cpus)}" in r.stdout


def test_ray_teardown_kills_only_its_own_cluster(ray_cluster: RayCluster):
    before = ray_cluster.processes()
    assert any("gcs_server" in c for c in before.values())
    assert any("raylet" in c for c in before.values())

    other = RayCluster.start()
    try:
        procs = other.processes()
        assert any("gcs_server" in c for c in procs.values())
        assert any("raylet" in c for c in procs.values())
        assert not set(procs) & set(before), "process sets of the two clusters overlap"
        temp_dir = str(other.temp_dir)
    finally:
        t0 = time.monotonic()
        other.stop()
        stop_s = time.monotonic() - t0

    assert not find_processes(cmdline_substr=temp_dir), "processes of the stopped cluster left"
    assert not other.processes()
    assert not Path(temp_dir).exists()
    assert not port_open(other.ports["gcs"]) and not port_open(other.ports["dashboard"])
    assert stop_s < 30

    # the session cluster is untouched
    from helpers.infra._proc import alive

    for pid, cmd in before.items():
        if "gcs_server" in cmd or "raylet" in cmd:
            assert alive(pid), f"session cluster process {pid} died: {cmd[:120]}"
    assert port_open(ray_cluster.ports["gcs"])
    assert port_open(ray_cluster.ports["dashboard"])


def test_ray_submit_job_timeout_stops_the_job(ray_cluster: RayCluster):
    from helpers.infra import JobTimeoutError

    with pytest.raises(JobTimeoutError, match="did not finish within") as ei:
        ray_cluster.submit_job(
            "python -c 'import time; print(\"SLEEPING\", flush=True); time.sleep(300)'",
            working_dir=None, timeout_s=8,
        )
    sub_id = next(w for w in str(ei.value).split() if w.startswith("tsr-"))
    deadline = time.monotonic() + 30
    while ray_cluster.job_status(sub_id) not in ("STOPPED", "FAILED"):
        assert time.monotonic() < deadline, f"job {sub_id}: {ray_cluster.job_status(sub_id)}"
        time.sleep(0.5)
