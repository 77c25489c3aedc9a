"""`python tests/helpers/reliability_multinode.py INPUT OUTPUT CONFIG RESULT_JSON`: the features stage on
a three-node local Ray cluster (ray.cluster_utils.Cluster: a head with no CPUs and two worker
nodes of one CPU, all on 127.0.0.1), one worker node removed while its actor is in the middle
of a unit. Writes what happened to RESULT_JSON.

Run it in a subprocess with RAY_TMPDIR set to a private folder (Ray writes its
`ray_current_cluster` file there, not in the machine's shared /tmp/ray).
"""
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from timbrespace_ray.config import load_config
from timbrespace_ray.executors import RayExecutor
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.storage import Location

ACTOR = "ray::UnitActor"


def _children(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(raw[raw.rfind(b")") + 2:].split()[1]) == ppid:
                out.append(int(entry))
    return out


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def main(input_uri: str, output: str, config: str, result_path: str) -> int:
    t0 = time.monotonic()
    common = {"node_ip_address": "127.0.0.1", "object_store_memory": 100 << 20}
    # a dead node is noticed after ~2 s instead of the default ~30 s
    system = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
              "health_check_timeout_ms": 500, "health_check_failure_threshold": 4}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "_system_config": system,
        "temp_dir": os.environ["RAY_TMPDIR"], **common})
    result = {"removed": None, "error": None}
    try:
        workers = [cluster.add_node(num_cpus=1, **common) for _ in range(2)]
        cluster.wait_for_nodes()
        executor = RayExecutor(address=cluster.address, progress_bars=False)
        executor.connect()
        result["cpus_before"] = ray.cluster_resources().get("CPU", 0)
        cfg = load_config(config, input=input_uri, output=output)
        stage = FeaturesStage(Location.of(output), input_uri, cfg.features)
        done_dir = Path(output) / "_run" / "features" / "done"
        victim_node = workers[0]
        raylet = victim_node.all_processes["raylet"][0].process.pid

        def markers() -> int:
            return len(list(done_dir.glob("*.json"))) if done_dir.exists() else 0

        def remove_busy_node() -> None:
            try:
                deadline = time.monotonic() + 240
                while markers() < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                # freeze the node's actor in the middle of a unit, then take the node away
                while time.monotonic() < deadline:
                    for pid in _children(raylet):
                        if _title(pid).startswith(ACTOR) and _title(pid).endswith(".submit"):
                            os.kill(pid, signal.SIGSTOP)
                            if _title(pid).endswith(".submit"):
                                at = markers()
                                cluster.remove_node(victim_node, allow_graceful=False)
                                # a frozen worker cannot notice its raylet is gone and exit:
                                # it goes with its node
                                os.kill(pid, signal.SIGKILL)
                                result["removed"] = {"markers": at, "actor_pid": pid,
                                                     "seconds": time.monotonic() - t0}
                                return
                            os.kill(pid, signal.SIGCONT)
                    time.sleep(0.002)
            except Exception as exc:  # noqa: BLE001 - reported in the result
                result["error"] = f"remove_node: {exc!r}"

        killer = threading.Thread(target=remove_busy_node, daemon=True)
        killer.start()
        summary = stage.run(executor)
        killer.join(10)
        result.update(units_total=summary.units_total, units_run=summary.units_run,
                      rows=summary.rows, inputs=summary.inputs, seconds=time.monotonic() - t0)
        # the removed node is gone from the cluster (its death may be noticed after the stage)
        deadline = time.monotonic() + 30
        while ray.cluster_resources().get("CPU", 0) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        result["cpus_after"] = ray.cluster_resources().get("CPU", 0)
    finally:
        Path(result_path).write_text(json.dumps(result))
        ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
