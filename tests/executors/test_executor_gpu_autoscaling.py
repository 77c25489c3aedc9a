"""GPUs "the cluster has or can have": the use_gpu auto decision on clusters whose GPU workers
scale from zero, pool sizing from the GPUs there are now, and k-means choosing cuML on the node
that got the GPU.

The Ray tests start Ray's fake multi-node autoscaler (`FakeMultiNodeProvider`: the autoscaler
starts "nodes" as extra raylets on this machine), v1 and v2, on a private head: one CPU, and a
worker type of {CPU: 1, GPU: 1}, 0..1 nodes. `ray.cluster_utils.AutoscalingCluster` cannot be
used as it is: its `start()` and `shutdown()` run `ray stop --force`, which kills every Ray on
the machine, and Ray 2.60's wheel lacks the `fake_multi_node/example.yaml` it loads (the v2
autoscaler loads it too, as the provider type's defaults: v2 names the same class as an
"external" provider). So the head is started here the way AutoscalingCluster starts one (`ray
start --head --autoscaling-config=...` with RAY_FAKE_CLUSTER=1), on the private ports, temp dir
and token of tests/helpers/infra/ray_cluster.py, whose `RayCluster.stop()` kills only this cluster's
processes (the fake nodes included: they carry its environment marker and temp dir).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers.infra._proc import LOCALHOST, free_port_range, free_ports, tail
from helpers.infra.ray_cluster import (MARKER_VAR, RayCluster, _CLIENT_ONLY_VARS, _venv_bin,
                               private_port_args)
from timbrespace_ray.errors import ConfigError
from timbrespace_ray.executors import GpuCapacity, RayExecutor
from timbrespace_ray.executors.capacity import autoscaling_config_max_gpus, decision_line
from timbrespace_ray.executors.base import Resources

REPO = Path(__file__).resolve().parents[2]
FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
FAKE_HEAD_ID = "f" * 51 + "00000"  # the fake provider's head node id (v2 must see it as such)


# ------------------------------------------------------------------ the decision, without Ray

def test_autoscaling_config_counts_worker_gpus_at_their_maximum():
    config = {"max_workers": 40, "head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 0, "GPU": 1}, "max_workers": 0},
        "cpu_spot": {"resources": {"CPU": 32}, "min_workers": 0, "max_workers": 32},
        "gpu": {"resources": {"CPU": 8, "GPU": 1}, "min_workers": 0, "max_workers": 8}}}
    assert autoscaling_config_max_gpus(config) == 8  # the head's GPU is counted once it runs
    config["max_workers"] = 3  # the cluster-wide cap bounds each type too
    assert autoscaling_config_max_gpus(config) == 3
    config["available_node_types"]["gpu"]["resources"] = {}  # not filled in: unknown
    assert autoscaling_config_max_gpus(config) is None
    del config["available_node_types"]["gpu"]
    assert autoscaling_config_max_gpus(config) == 0


def test_the_decision_line_says_what_and_why():
    scale = GpuCapacity(0, 8, "autoscaler config ~/ray_bootstrap_config.yaml")
    assert scale.possible == 8
    assert decision_line(scale).startswith("GPUs: 0 now, up to 8 by autoscaling (autoscaler config")
    assert "-> use_gpu auto: GPU" in decision_line(scale)
    none = GpuCapacity(0, 0, "embedded local Ray, no autoscaler")
    assert none.possible == 0 and decision_line(none).endswith("-> use_gpu auto: CPU")
    unknown = GpuCapacity(0, None, "no cluster config in the GCS, no autoscaler on this machine")
    assert unknown.possible == 0 and "set use_gpu: true" in decision_line(unknown)
    assert GpuCapacity(2, None, "x").possible == 2


class _Sized(RayExecutor):
    """Pool sizing against a given capacity, no Ray."""

    def __init__(self, cap: GpuCapacity, cpus: float = 16, address: str | None = "auto"):
        super().__init__(address=address)
        self.cap, self.cpus = cap, cpus

    def connect(self) -> None:
        pass

    def gpu_capacity(self) -> GpuCapacity:
        return self.cap

    def cluster_cpus(self) -> float:
        return self.cpus


def test_pool_size_from_the_gpus_there_are_now():
    gpu = Resources(num_cpus=2, num_gpus=1.0)
    # autoscaling from zero: one actor asks for a GPU (the autoscaler's cue), up to one per unit
    assert _Sized(GpuCapacity(0, 8, "config"))._pool_size(gpu, 20) == (1, 20)
    # GPUs now: as many actors as fit on them
    assert _Sized(GpuCapacity(4, 8, "config"))._pool_size(gpu, 20) == (4, 20)
    assert _Sized(GpuCapacity(4, 4, "x"), address=None)._pool_size(gpu, 20) == (4, 4)
    # autoscaler out of sight (KubeRay): one actor, and Ray says if it is infeasible
    assert _Sized(GpuCapacity(0, None, "unknown"))._pool_size(gpu, 20) == (1, 20)
    # CPU work is unaffected
    assert _Sized(GpuCapacity(0, 0, "x"))._pool_size(Resources(num_cpus=2), 20) == (8, 20)


def test_gpu_work_that_can_never_be_placed_is_refused():
    never = _Sized(GpuCapacity(0, 0, "the head runs no autoscaler"))
    with pytest.raises(ConfigError, match="tokens asks for 0.25 GPU.*use_gpu: false"):
        never._pool_size(Resources(num_cpus=1, num_gpus=0.25), 10, "tokens")
    with pytest.raises(ConfigError, match="kmeans work asks for 1 GPU"):
        from timbrespace_ray.stages.kmeans import _fit

        never.parallel(_fit, [0], Resources(num_gpus=1.0, actors=True))


def test_kmeans_asks_for_gpus_without_looking_for_cuml_on_the_driver():
    from timbrespace_ray.config import load_config
    from timbrespace_ray.stages.kmeans import KMeansStage, _fit
    from timbrespace_ray.storage import Location

    cfg = load_config(**{"kmeans.n_clusters": 4, "kmeans.n_init": 1})
    autoscaling = _Sized(GpuCapacity(0, 8, "config"))  # none now, 8 by autoscaling
    assert autoscaling.use_gpu(None) is True and autoscaling.use_gpu(False) is False
    stage = KMeansStage(Location.of("/nonexistent"), cfg.kmeans,
                        use_gpu=autoscaling.use_gpu(None))
    assert stage.device == "cuda"  # cuML is not installed here, on the "driver"
    # the fit, on "its GPU node", finds no cuML: scikit-learn, a warning, and the reason
    x = np.random.default_rng(0).normal(size=(400, 6)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, why = _fit(0, {"x": x, "config": cfg.kmeans, "device": "cuda"})
    assert result.backend == "numba" and "cuML is not installed" in why
    assert any("cuML is not installed" in str(w.message) for w in caught)
    result, why = _fit(0, {"x": x, "config": cfg.kmeans, "device": "cpu"})
    assert result.backend == "numba" and why is None


# ------------------------------------------------------------------ real Ray

DRIVER = textwrap.dedent("""
    import json, sys, time
    import ray
    import ray._private.state
    from timbrespace_ray.errors import ConfigError
    from timbrespace_ray.executors import RayExecutor
    from timbrespace_ray.executors.base import Resources

    import logging
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    address = sys.argv[1] if len(sys.argv) > 1 else None
    ex = RayExecutor(address=address, num_cpus=1, progress_bars=False)
    out = {}
    cap = ex.gpu_capacity()
    out["resources_gpu"] = ray.cluster_resources().get("GPU", 0)
    out["now"], out["most"], out["source"] = cap.now, cap.most, cap.source
    out["cluster_gpus"] = cap.possible
    out["use_gpu"] = ex.use_gpu(None)  # the auto decision, and its line on the log
    try:
        out["pool"] = ex._pool_size(Resources(num_cpus=1, num_gpus=1.0), 4, "embed")
    except ConfigError as exc:
        out["pool_error"] = str(exc)
    if "--gpu-task" in sys.argv:
        t0 = time.monotonic()
        @ray.remote(num_cpus=0, num_gpus=1)
        def where():
            import os
            return ray.get_runtime_context().get_node_id(), os.environ.get("CUDA_VISIBLE_DEVICES")
        out["gpu_task"] = ray.get(where.remote(), timeout=90)
        out["gpu_task_s"] = time.monotonic() - t0
        out["resources_gpu_after"] = ray.cluster_resources().get("GPU", 0)
        # a k-means restart in a GPU actor: the backend is picked there (no cuML: scikit-learn)
        import numpy as np
        from timbrespace_ray.config import load_config
        from timbrespace_ray.stages.kmeans import _fit

        cfg = load_config(**{"kmeans.n_clusters": 4}).kmeans
        x = np.random.default_rng(0).normal(size=(400, 6)).astype(np.float32)
        [(fit, why)] = ex.parallel(_fit, [0], Resources(num_cpus=1, num_gpus=1.0, actors=True),
                                   {"x": x, "config": cfg, "device": "cuda"})
        out["kmeans_fit"] = [fit.backend, why]
    # Ray 2.60's autoscalers (v1 and v2) report no cluster config to the GCS
    out["gcs_cluster_config"] = ray._private.state.state.get_cluster_config() is not None
    if "--report-cluster-config" in sys.argv:
        # what an autoscaler that reports its node groups (Ray's v2 after 2.60) writes to the GCS
        from ray._raylet import GcsClient
        from ray.core.generated import autoscaler_pb2

        config = autoscaler_pb2.ClusterConfig()
        group = config.node_group_configs.add()
        group.name, group.max_count = "gpu", 3
        group.resources["CPU"], group.resources["GPU"] = 8, 2
        GcsClient(address=ray.get_runtime_context().gcs_address).report_cluster_config(
            config.SerializeToString())
        cap = ex.gpu_capacity()
        out["reported"] = [cap.now, cap.most, cap.source]
    print("RESULT " + json.dumps(out), flush=True)
""")


def _run_driver(tmp_path, env, *args, timeout=150) -> tuple[dict, str]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(script), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"driver failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):]), proc.stderr


def _fake_autoscaling_cluster(v2: bool = False, autoscaling: bool = True) -> RayCluster:
    """A private head whose autoscaler (v1 or v2) starts fake nodes of a {CPU: 1, GPU: 1} type,
    0..1 of them (autoscaling=False: a head alone, no autoscaler); stop() kills only its
    processes."""
    names = ["gcs", "dashboard", "node_manager", "object_manager", "agent_http", "agent_grpc",
             "runtime_env_agent", "metrics", "client"]
    ports = dict(zip(names, free_ports(len(names))))
    wlo, whi = free_port_range(100)
    temp_dir = Path(tempfile.mkdtemp(prefix="tsr-", dir="/tmp"))
    marker, token = uuid.uuid4().hex, secrets.token_hex(32)
    gcs = f"{LOCALHOST}:{ports['gcs']}"
    config = {
        "cluster_name": f"tsr-fake-{marker[:8]}", "max_workers": 1,
        "provider": {"use_node_id_as_ip": True, "gcs_address": gcs,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     # v2 loads the provider type's default config, which for "fake_multinode"
                     # Ray 2.60's wheel lacks: the same class, as an "external" provider
                     **({"type": "external", "module": FAKE_PROVIDER, "launch_multiple": True,
                         "head_node_id": FAKE_HEAD_ID} if v2 else {"type": "fake_multinode"})},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {},
                           "min_workers": 0, "max_workers": 1}},
        "head_node_type": "ray.head.default",
        "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 5, "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": []}
    config_path = temp_dir / "autoscaling.json"
    config_path.write_text(json.dumps(config))
    base_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "PATH": f"{_venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
    cluster = RayCluster(temp_dir=temp_dir, ports=ports, worker_ports=(wlo, whi), marker=marker,
                         num_cpus=1, start_log=temp_dir / "ray-start.log", auth_token=token,
                         _base_env=base_env)
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ONLY_VARS}
    env.update(base_env)
    env.update({MARKER_VAR: marker, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    if v2:
        env.update({"RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_ID,
                    "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_ID})
    cmd = [str(_venv_bin() / "ray"), "start", "--head", "--node-ip-address", LOCALHOST,
           "--port", str(ports["gcs"]), "--include-dashboard", "false",
           *private_port_args(ports, (wlo, whi)),
           "--num-cpus", "1", "--object-store-memory", str(300 << 20),
           "--temp-dir", str(temp_dir), "--disable-usage-stats"]
    if autoscaling:
        cmd.append(f"--autoscaling-config={config_path}")
    with open(cluster.start_log, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=temp_dir,
                                start_new_session=True)
    cluster.start_sid = proc.pid
    try:
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
    if rc != 0:
        log = tail(cluster.start_log)
        cluster.stop()
        raise RuntimeError(f"`ray start` with the fake autoscaler failed ({rc}):\n{log}")
    cluster.config_path = config_path
    return cluster


def _monitor_log(cluster: RayCluster) -> str:
    logs = sorted(cluster.temp_dir.glob("session_*/logs/monitor.*"))
    return "\n".join(f"==== {p.name}\n{tail(p, 3000)}" for p in logs)


@pytest.mark.slow
@pytest.mark.parametrize("v2", [False, True], ids=["autoscaler-v1", "autoscaler-v2"])
def test_autoscaling_cluster_gpus_from_zero(tmp_path, v2):
    cluster = _fake_autoscaling_cluster(v2)
    try:
        out, err = _run_driver(tmp_path, cluster.env, cluster.address, "--gpu-task",
                               "--report-cluster-config")
    except BaseException:
        print(_monitor_log(cluster))
        raise
    finally:
        cluster.stop()
    # Ray 2.60's autoscaler, v1 or v2, reports no cluster config to the GCS (a later Ray's v2
    # does: then the decision reads it first, and this line and docs/clusters.md need updating)
    assert not out["gcs_cluster_config"]
    # before any GPU work: Ray shows no GPU, the decision counts the one the autoscaler can add
    assert out["resources_gpu"] == 0 and out["now"] == 0
    assert out["most"] == 1 and out["source"] == f"autoscaler config {cluster.config_path}"
    assert out["cluster_gpus"] == 1 and out["use_gpu"] is True
    assert "GPUs: 0 now, up to 1 by autoscaling" in err and "-> use_gpu auto: GPU" in err
    assert out["pool"] == [1, 4]  # one GPU actor first: its request starts the GPU node
    # a task asking for a GPU got a fake GPU node started by the autoscaler
    assert out["gpu_task"][1] == "0" and out["resources_gpu_after"] == 1
    # k-means looked for cuML in its GPU actor, not on the driver, and fell back there
    assert out["kmeans_fit"][0] == "numba" and "cuML is not installed" in out["kmeans_fit"][1]
    # the actor's own warning stays in its log (workers' output is not forwarded by default);
    # the k-means stage prints the reason the fit returned (test_stage_kmeans.py)
    assert "cuML is not installed" not in err
    # a cluster config in the GCS (Ray's own record of the node groups) comes first
    assert out["reported"] == [1, 6, "the autoscaler's cluster config in the GCS"]


@pytest.mark.slow
def test_embedded_ray_has_no_gpus_to_wait_for(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ONLY_VARS}
    ray_tmp = Path(tempfile.mkdtemp(prefix="tsr-", dir="/tmp"))
    env.update({"RAY_TMPDIR": str(ray_tmp), "RAY_USAGE_STATS_ENABLED": "0"})
    try:
        out, err = _run_driver(tmp_path, env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out["resources_gpu"] == 0 and out["cluster_gpus"] == 0 and out["use_gpu"] is False
    assert out["most"] == 0 and out["source"] == "embedded local Ray, no autoscaler"
    assert "GPUs: 0 (embedded local Ray, no autoscaler) -> use_gpu auto: CPU" in err
    assert "pool" not in out and "embed asks for 1 GPU" in out["pool_error"]


@pytest.mark.slow
def test_cluster_without_autoscaler_has_no_gpus_to_wait_for(tmp_path):
    cluster = _fake_autoscaling_cluster(autoscaling=False)
    try:
        out, err = _run_driver(tmp_path, cluster.env, cluster.address)
    finally:
        cluster.stop()
    assert out["resources_gpu"] == 0 and out["cluster_gpus"] == 0 and out["use_gpu"] is False
    assert out["most"] == 0 and out["source"] == "the head runs no autoscaler"
    assert "GPUs: 0 (the head runs no autoscaler) -> use_gpu auto: CPU" in err
    assert "pool" not in out and "embed asks for 1 GPU" in out["pool_error"]
