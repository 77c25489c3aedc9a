"""A real, private, single-node Ray cluster (``ray start --head``) for end-to-end tests.

Usage::

    with RayCluster.start() as cluster:
        subprocess.run([sys.executable, "driver.py"], env=cluster.env)   # RAY_ADDRESS is set
        rc, logs = cluster.submit_job("python job.py", working_dir="/path/to/dir")

Isolation guarantees:

* every port is explicit, random and free (GCS, dashboard, client server, agents, node/object
  managers, metrics, worker range) and the node IP is 127.0.0.1;
* a private ``--temp-dir`` (``/tmp/tsr-XXXXXXXX``, short so Ray's unix sockets stay under the
  107-char limit) -- so ``/tmp/ray/ray_current_cluster`` of other people's clusters is never
  touched and ``ray.init()`` elsewhere does not auto-connect here;
* ``stop()`` kills ONLY processes of this cluster: those whose command line mentions the temp
  dir, those in the session created for ``ray start``, and those carrying this cluster's unique
  ``TSR_RAY_CLUSTER_ID`` environment marker.  ``ray stop`` is never used (it kills every Ray on
  the machine);
* its own auth token (``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN``, both in ``cluster.env``)
  instead of the shared ``~/.ray/auth_token`` that Ray 2.60 otherwise picks up;
* ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` so Ray does not swap 127.0.0.1 for the host's
  external IP (listening sockets are on 127.0.0.1; GCS/raylet gRPC bind [::ffff:127.0.0.1]).
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ._proc import (
    LOCALHOST,
    find_processes,
    free_port_range,
    free_ports,
    release_ports,
    rmtree_quiet,
    tail,
    terminate,
)

MARKER_VAR = "TSR_RAY_CLUSTER_ID"
# inherited variables that would point our processes at some other cluster / token
_CLIENT_ONLY_VARS = {"RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH", MARKER_VAR}

# Never upload these with a job's working_dir (.venv alone is ~2.6 GB; Ray's GCS limit for a
# package is ~500 MiB).  Ray additionally honours .gitignore / .rayignore files.
DEFAULT_EXCLUDES = [
    ".venv/",
    "venv/",
    ".git/",
    "demo_output/",
    "__pycache__/",
    ".pytest_cache/",
    "*.egg-info/",
    "build/",
    "dist/",
    "*.pyc",
]


# Safety net: clusters still running when the interpreter exits (e.g. a fixture finalizer
# never ran) are torn down at exit.  A SIGKILLed pytest can still leak them.
_LIVE: set = set()


@atexit.register
def _stop_leftover_clusters() -> None:
    for c in list(_LIVE):
        try:
            c.stop()
        except Exception:  # noqa: BLE001
            pass


def private_port_args(ports: dict[str, int], worker_ports: tuple[int, int]) -> list[str]:
    """`ray start --head` flags putting every port but the GCS's and the dashboard's on the
    ones reserved for this cluster (no two test clusters collide)."""
    return ["--ray-client-server-port", str(ports["client"]),
            "--node-manager-port", str(ports["node_manager"]),
            "--object-manager-port", str(ports["object_manager"]),
            "--dashboard-agent-listen-port", str(ports["agent_http"]),
            "--dashboard-agent-grpc-port", str(ports["agent_grpc"]),
            "--runtime-env-agent-port", str(ports["runtime_env_agent"]),
            "--metrics-export-port", str(ports["metrics"]),
            "--min-worker-port", str(worker_ports[0]), "--max-worker-port", str(worker_ports[1])]


class RayStartupError(RuntimeError):
    pass


class JobTimeoutError(AssertionError):
    pass


class JobFailedError(AssertionError):
    pass


class LeftoverProcessesError(RuntimeError):
    pass


class JobResult(tuple):
    """``(returncode, logs)`` -- unpacks as a 2-tuple -- with extra attributes
    ``submission_id``, ``status`` (final Ray job status), ``duration_s`` and ``command``."""

    def __new__(cls, returncode: int, logs: str, *, submission_id: str = "",
                status: str | None = None, duration_s: float = 0.0, command=()):
        self = super().__new__(cls, (returncode, logs))
        self.submission_id = submission_id
        self.status = status
        self.duration_s = duration_s
        self.command = list(command)
        return self

    @property
    def returncode(self) -> int:
        return self[0]

    @property
    def logs(self) -> str:
        return self[1]

    def check(self) -> "JobResult":
        if self.returncode != 0:
            raise JobFailedError(
                f"Ray job {self.submission_id} failed (rc={self.returncode}, "
                f"status={self.status}).\ncommand: {shlex.join(self.command)}\n"
                f"---- logs ----\n{self.logs}"
            )
        return self


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def _ray_bin() -> str:
    p = _venv_bin() / "ray"
    if p.exists():
        return str(p)
    raise FileNotFoundError(f"`ray` CLI not found next to {sys.executable}")


def _http(url: str, token: str | None, method: str = "GET", timeout: float = 3.0):
    req = urllib.request.Request(url, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read().decode()
    return json.loads(body) if body.strip() else None


def _short_tmp_root() -> str:
    # Ray's unix sockets live under <temp>/session_<date>_<pid>/sockets/...: keep <temp> short.
    return "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()


@dataclass(eq=False)
class RayCluster:
    temp_dir: Path
    ports: dict[str, int]
    worker_ports: tuple[int, int]
    marker: str
    num_cpus: int
    start_log: Path
    start_sid: int | None = None
    startup_s: float = 0.0
    stopped: bool = False
    auth_token: str | None = field(default=None, repr=False)
    _base_env: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ addresses
    @property
    def address(self) -> str:
        """GCS address for ``ray.init(address=...)``."""
        return f"{LOCALHOST}:{self.ports['gcs']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOCALHOST}:{self.ports['dashboard']}"

    @property
    def client_url(self) -> str:
        return f"ray://{LOCALHOST}:{self.ports['client']}"

    @property
    def env(self) -> dict[str, str]:
        """A full environment (copy of os.environ + overrides) for driver subprocesses:
        ``RAY_ADDRESS`` -> this cluster, ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN`` (the cluster
        requires its private token), the venv's bin/ first on PATH, no usage stats.

        Connect from a subprocess with this env, not from the pytest process: an in-process
        ``ray.init`` would need the token in os.environ and would pollute the test process."""
        env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ONLY_VARS}
        env.update(self._base_env)
        env["RAY_ADDRESS"] = self.address
        env["RAY_API_SERVER_ADDRESS"] = self.dashboard_url  # used by `ray job ...` CLI
        return env

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(
        cls,
        *,
        num_cpus: int = 2,
        num_gpus: int | None = None,
        object_store_memory: int = 1 << 30,
        timeout_s: float = 90.0,
        attempts: int = 2,
        extra_env: dict[str, str] | None = None,
        worker_port_count: int = 200,
        autoscaling: dict | None = None,
    ) -> "RayCluster":
        """`autoscaling`: an autoscaler config (Ray's fake multi-node provider: its nodes are
        raylets on this machine, in this cluster's session), given the head's GCS address."""
        errors: list[str] = []
        t0 = time.monotonic()
        for _attempt in range(attempts):
            remaining = max(10.0, timeout_s - (time.monotonic() - t0))
            cluster = cls._launch(num_cpus, num_gpus, object_store_memory, extra_env, autoscaling,
                                  worker_port_count, remaining)
            try:
                cluster._wait_ready(max(10.0, timeout_s - (time.monotonic() - t0)))
            except RayStartupError as e:
                errors.append(str(e))
                try:
                    cluster.stop()
                except LeftoverProcessesError as e2:
                    errors.append(str(e2))
                if time.monotonic() - t0 > timeout_s:
                    break
                continue
            cluster.startup_s = time.monotonic() - t0
            _LIVE.add(cluster)
            return cluster
        raise RayStartupError(
            f"Ray cluster did not start after {len(errors)} attempt(s):\n"
            + "\n----\n".join(errors)
        )

    @classmethod
    def _launch(cls, num_cpus, num_gpus, object_store_memory, extra_env, autoscaling, n_worker_ports,
                start_timeout) -> "RayCluster":
        names = ["gcs", "dashboard", "client", "node_manager", "object_manager",
                 "agent_http", "agent_grpc", "runtime_env_agent", "metrics"]
        ports = dict(zip(names, free_ports(len(names))))
        wlo, whi = free_port_range(n_worker_ports)
        temp_dir = Path(tempfile.mkdtemp(prefix="tsr-", dir=_short_tmp_root()))
        marker = uuid.uuid4().hex
        # Ray >= 2.5x turns token auth on by default as soon as ~/.ray/auth_token exists (any
        # earlier `ray.init()` on the machine creates it).  Use our own token, passed by env,
        # so the cluster never depends on (or rewrites) that shared file.
        token = secrets.token_hex(32)
        base_env = {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "PATH": f"{_venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
            # On Linux Ray replaces --node-ip-address 127.0.0.1 by the host's "reachable" IP
            # (GCS address, client server, agents).  "Not a multi-node cluster" mode (what
            # Ray uses on macOS) keeps every advertised address on 127.0.0.1.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
            **(extra_env or {}),
        }
        cluster = cls(
            temp_dir=temp_dir, ports=ports, worker_ports=(wlo, whi), marker=marker,
            num_cpus=num_cpus, start_log=temp_dir / "ray-start.log", auth_token=token,
            _base_env=base_env,
        )
        env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ONLY_VARS}
        env.update(base_env)
        env[MARKER_VAR] = marker
        cmd = [
            _ray_bin(), "start", "--head",
            "--node-ip-address", LOCALHOST,
            "--port", str(ports["gcs"]),
            "--include-dashboard", "true",
            "--dashboard-host", LOCALHOST,
            "--dashboard-port", str(ports["dashboard"]),
            *private_port_args(ports, (wlo, whi)),
            "--num-cpus", str(num_cpus),
            "--object-store-memory", str(int(object_store_memory)),
            "--temp-dir", str(temp_dir),
            "--disable-usage-stats",
            "--log-style", "record",
            "--log-color", "false",
        ]
        if num_gpus is not None:
            cmd += ["--num-gpus", str(num_gpus)]
        if autoscaling is not None:
            provider = {**autoscaling["provider"], "gcs_address": f"{LOCALHOST}:{ports['gcs']}"}
            config = temp_dir / "autoscaling.json"
            config.write_text(json.dumps({**autoscaling, "provider": provider}))
            cmd += ["--autoscaling-config", str(config)]
        with open(cluster.start_log, "wb") as logf:
            proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=temp_dir, start_new_session=True,
            )
        # Record the session id *before* anything can be reaped: the daemons `ray start`
        # spawns stay in this session, and the kernel will not reuse this pid as a new
        # session id while any member is alive.
        cluster.start_sid = proc.pid
        try:
            rc = proc.wait(timeout=start_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        if rc != 0:
            msg = (f"`ray start` {'timed out' if rc is None else f'exited with {rc}'}; "
                   f"output:\n{tail(cluster.start_log)}\n{cluster._log_tails()}")
            try:
                cluster.stop()
            except LeftoverProcessesError as e:
                msg += f"\n{e}"
            raise RayStartupError(msg)
        return cluster

    def _wait_ready(self, timeout_s: float) -> None:
        """Ready = dashboard answers /api/version and the jobs API lists (the raylet is up once
        `ray start` has returned 0)."""
        deadline = time.monotonic() + timeout_s
        last = "nothing tried yet"
        while time.monotonic() < deadline:
            try:
                ver = _http(f"{self.dashboard_url}/api/version", self.auth_token)
                if not isinstance(ver, dict) or "ray_version" not in ver:
                    raise RuntimeError(f"unexpected /api/version answer {ver!r}")
                _http(f"{self.dashboard_url}/api/jobs/", self.auth_token)
                return
            except Exception as e:  # noqa: BLE001 - anything means "not ready yet"
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.5)
        raise RayStartupError(
            f"Ray dashboard at {self.dashboard_url} not ready after {timeout_s:.0f}s "
            f"(last error: {last}).\n`ray start` output:\n{tail(self.start_log)}\n"
            + self._log_tails()
        )

    def _log_tails(self, n_bytes: int = 3000) -> str:
        logs = sorted(p for p in self.temp_dir.glob("session_*/logs/*")
                      if "session_latest" not in str(p))
        wanted = [p for p in logs if p.name in (
            "gcs_server.out", "gcs_server.err", "raylet.out", "raylet.err",
            "dashboard.log", "dashboard.err", "dashboard_agent.log", "runtime_env_agent.log",
        )]
        return "\n".join(f"==== {p} ====\n{tail(p, n_bytes)}" for p in wanted)

    def processes(self) -> dict[int, str]:
        """Live processes belonging to this cluster -> {pid: cmdline}."""
        return find_processes(
            cmdline_substr=str(self.temp_dir),
            env_marker=f"{MARKER_VAR}={self.marker}",
            sid=self.start_sid,
        )

    def stop(self, grace_s: float = 3.0, remove_temp_dir: bool = True) -> None:
        """Kill this cluster's processes (only) and remove its temp dir.

        Raises LeftoverProcessesError if anything survives SIGKILL.
        """
        survivors: dict[int, str] = {}
        for _round in range(4):  # new workers may be forked while we are killing
            procs = self.processes()
            if not procs:
                survivors = {}
                break
            # gcs_server, raylet, log_monitor and the runtime-env agent routinely ignore SIGTERM
            # for >10 s (graceful-shutdown waits); a test cluster has nothing to save, so the
            # grace period is short and SIGKILL follows.
            left = terminate(list(procs), grace_s=grace_s)
            survivors = {p: procs[p] for p in left}
        else:
            survivors = self.processes()
        self.stopped = True
        _LIVE.discard(self)
        release_ports(list(self.ports.values()))
        release_ports(range(self.worker_ports[0], self.worker_ports[1] + 1))
        if survivors:
            raise LeftoverProcessesError(
                "Ray cluster processes survived teardown: "
                + "; ".join(f"{p}: {c[:200]}" for p, c in survivors.items())
            )
        if remove_temp_dir:
            rmtree_quiet(self.temp_dir)

    def __enter__(self) -> "RayCluster":
        return self

    def __exit__(self, *exc) -> None:
        if not self.stopped:
            self.stop()

    # ------------------------------------------------------------------ jobs
    def submit_job(
        self,
        entrypoint: str | list[str],
        working_dir: str | os.PathLike | None,
        runtime_env_json: dict | None = None,
        timeout_s: float = 300.0,
        *,
        env: dict[str, str] | None = None,
        excludes: list[str] | None = None,
        check: bool = False,
    ) -> JobResult:
        """Run ``ray job submit --address <dashboard> --runtime-env-json ... -- <entrypoint>``
        and wait for it.  Returns ``(returncode, logs)`` (a JobResult tuple).

        ``working_dir`` is uploaded (minus DEFAULT_EXCLUDES + ``excludes``; Ray also honours
        .gitignore).  ``runtime_env_json`` is merged in (its ``excludes`` are appended to the
        defaults).  ``env``: extra variables for the job (e.g. ``s3.env``), passed through
        ``runtime_env["env_vars"]``.  On timeout the job is stopped and JobTimeoutError (with
        the logs so far) is raised; with ``check=True`` a non-zero result raises
        JobFailedError including the logs.

        The entrypoint runs with the venv's bin/ first on PATH, so ``python`` is the venv
        interpreter.
        """
        runtime_env = dict(runtime_env_json or {})
        if working_dir is not None:
            runtime_env["working_dir"] = str(Path(working_dir).resolve())
        if "working_dir" in runtime_env and not str(runtime_env["working_dir"]).startswith(
            ("s3://", "gs://", "http://", "https://")
        ):
            runtime_env["excludes"] = [
                *DEFAULT_EXCLUDES, *(excludes or []), *runtime_env.get("excludes", [])
            ]
        if env:
            runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
        submission_id = f"tsr-{uuid.uuid4().hex[:12]}"
        cmd = [
            _ray_bin(), "job", "submit",
            "--address", self.dashboard_url,
            "--submission-id", submission_id,
            "--log-style", "record", "--log-color", "false",
            "--runtime-env-json", json.dumps(runtime_env),
            # the CLI shlex.join()s its trailing args back into the entrypoint string
            "--", *(shlex.split(entrypoint) if isinstance(entrypoint, str) else entrypoint),
        ]
        log_path = self.temp_dir / f"job-{submission_id}.log"
        t0 = time.monotonic()
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, start_new_session=True,
            )
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            terminate([proc.pid], grace_s=5)
            proc.wait()
            rc = proc.returncode
        logs = log_path.read_text(errors="replace")
        status = self.job_status(submission_id)
        if timed_out:
            self.stop_job(submission_id)
            raise JobTimeoutError(
                f"Ray job {submission_id} did not finish within {timeout_s:.0f}s "
                f"(status={status}).\ncommand: {shlex.join(cmd)}\n---- logs so far ----\n{logs}"
                f"\n---- job driver log ----\n{self.job_logs(submission_id)}"
            )
        # Belt and braces: trust the job's final status over the CLI's exit code.
        if rc == 0 and status not in (None, "SUCCEEDED"):
            rc = 1
        res = JobResult(rc, logs, submission_id=submission_id, status=status,
                         duration_s=time.monotonic() - t0, command=cmd)
        return res.check() if check else res

    def job_status(self, submission_id: str) -> str | None:
        try:
            info = _http(f"{self.dashboard_url}/api/jobs/{submission_id}", self.auth_token)
            return info.get("status")
        except Exception:  # noqa: BLE001
            return None

    def job_logs(self, submission_id: str) -> str:
        try:
            return _http(f"{self.dashboard_url}/api/jobs/{submission_id}/logs",
                         self.auth_token).get("logs", "")
        except Exception as e:  # noqa: BLE001
            return f"<could not fetch logs: {e}>"

    def stop_job(self, submission_id: str) -> None:
        try:
            _http(f"{self.dashboard_url}/api/jobs/{submission_id}/stop", self.auth_token,
                  method="POST", timeout=10)
        except Exception:  # noqa: BLE001
            pass

    def run_driver(self, script: str, *args: str, timeout_s: float = 120.0,
                   env: dict[str, str] | None = None, cwd: str | None = None
                   ) -> subprocess.CompletedProcess:
        """Run a Python driver script (path) in a subprocess with RAY_ADDRESS set."""
        return subprocess.run(
            [sys.executable, script, *args], env={**self.env, **(env or {})}, cwd=cwd,
            capture_output=True, text=True, timeout=timeout_s,
        )
