"""The map stages' actor pool at scale, simulated on one machine, against Ray Data's on the same
units in the same run.

A Ray cluster whose head has no CPU and whose worker nodes come from Ray's autoscaler with its
fake multi-node provider (each node a raylet on this machine with --node-cpus logical CPUs, at
most --max-nodes of them, removed after --idle-s idle) runs --units light units of a map stage
(each writes a small part and its marker, as every stage's units do) twice:

  pool:  RayExecutor.map, the pool of actor_pool.py (what the stages run on);
  data:  Ray Data, `map_batches` with an autoscaling actor pool (ActorPoolStrategy) over a
         dataset of the unit numbers in --data-blocks blocks (a block is one task of the pool),
         one unit per batch, the same stage's run_unit in each actor, results consumed by the
         driver as they come.

In each, --kill worker nodes are killed (every process of the node, kill -9) once a third of
the units are done. Printed for each: the time to drain, the driver's CPU time per unit
dispatched and its peak RSS, the nodes over time (the autoscaler adding nodes while units wait
and removing them once idle), the units run more than once and whether every unit's part and
marker were written exactly once.

Run: .venv/bin/python tests/benchmarks/bench_pool.py [--units 100000] [--json out.json]
Smoke test: .venv/bin/python tests/benchmarks/bench_pool.py --units 2000 --max-nodes 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from helpers.infra.ray_cluster import RayCluster  # noqa: E402
from timbrespace_ray.executors.base import Resources, UnitStats, WorkUnit  # noqa: E402
from timbrespace_ray.stages.base import MapStage  # noqa: E402
from timbrespace_ray.storage import Location  # noqa: E402

NODE_ID_VAR = b"RAY_OVERRIDE_NODE_ID_FOR_TESTING="
HEAD_NODE_SUFFIX = "00000"  # the fake provider's head node id ends so: never killed


def autoscaling(node_cpus: int, max_nodes: int, idle_s: float) -> dict:
    return {
        "cluster_name": "bench-pool", "max_workers": max_nodes, "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_s / 60,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            "ray.head.default": {"resources": {}, "node_config": {}, "max_workers": 0},
            "worker": {"resources": {"CPU": node_cpus}, "node_config": {}, "min_workers": 0,
                       "max_workers": max_nodes}},
        "head_node_type": "ray.head.default", "auth": {"ssh_user": "ubuntu"}, "docker": {},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": []}


class LightStage(MapStage):
    """A map stage whose units cost next to nothing: a small part and the marker, and a line in
    its worker's log of the units it ran (to count units run twice)."""

    name = "light"

    def __init__(self, output: Location, units: int, max_workers: int):
        super().__init__(output)
        self.folder = output.child("light")
        self.n_units = units
        self.resources = Resources(num_cpus=1, max_workers=max_workers)

    def plan(self) -> list[WorkUnit]:
        return [WorkUnit(i, ()) for i in range(self.n_units)]

    def process(self, unit: WorkUnit) -> UnitStats:
        runs = Path(self.output.path) / "runs"
        with open(runs / f"{os.getpid()}.log", "a") as fh:
            fh.write(f"{unit.index}\n")
        self.folder.child(f"part-{unit.name}.json").write_atomic(b"{}")
        stats = UnitStats(unit.index)
        stats.inputs = stats.rows = 1
        return stats


class DataWorker:
    """Ray Data's actor: the stage's setup once, then run_unit for each unit of a batch."""

    def __init__(self, stage: LightStage):
        self.stage = stage
        stage.setup()

    def __call__(self, batch: dict) -> dict:
        rows = [self.stage.run_unit(WorkUnit(int(i), ())).rows for i in batch["unit"]]
        return {"unit": batch["unit"], "rows": rows}


def _nodes_alive() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0)


def _node_processes(temp_dir: str) -> dict[str, list[int]]:
    """node id -> pids of every process of a fake worker node of this cluster."""
    out: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        at = environ.find(NODE_ID_VAR)
        if at < 0 or temp_dir.encode() not in Path(f"/proc/{entry}/cmdline").read_bytes() + environ:
            continue
        node = environ[at + len(NODE_ID_VAR):].split(b"\0", 1)[0].decode()
        if not node.endswith(HEAD_NODE_SUFFIX):
            out.setdefault(node, []).append(int(entry))
    return out


class Watch:
    """Samples the driver's RSS and the cluster's nodes while a variant runs."""

    def __init__(self):
        self.peak_rss_mb = 0.0
        self.nodes: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = -1
        while not self._stop.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
            try:
                n = _nodes_alive()
            except Exception:  # noqa: BLE001 - the GCS busy: sampled next time
                n = last
            if n != last:
                self.nodes.append((round(time.monotonic() - self._t0, 1), n))
                last = n
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_variant(name: str, args, cluster: RayCluster, work: Path, echo) -> dict:
    import ray

    out = work / name
    (out / "runs").mkdir(parents=True)
    stage = LightStage(Location.of(str(out)), args.units, args.max_nodes * args.node_cpus)
    units = stage.plan()
    done: list[int] = []
    killed: list[str] = []

    def on_result(stats: UnitStats) -> None:
        done.append(stats.unit)
        if len(done) == len(units) // 3 and args.kill and not killed:
            # two nodes lost at once, mid-stage: every process of each, kill -9
            nodes = sorted(_node_processes(str(cluster.temp_dir)).items())[:args.kill]
            for node, pids in nodes:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                killed.append(node[-5:])

    watch = Watch()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if name == "pool":
        from timbrespace_ray.executors import RayExecutor

        RayExecutor(cluster.address).map(stage, units, on_result)
    else:
        ds = ray.data.from_items([{"unit": u.index} for u in units],
                                 override_num_blocks=min(args.data_blocks, len(units)))
        ds = ds.map_batches(DataWorker, fn_constructor_args=(stage,), batch_size=1,
                            compute=ray.data.ActorPoolStrategy(
                                min_size=1, max_size=args.max_nodes * args.node_cpus),
                            num_cpus=1, batch_format="numpy")
        for row in ds.iter_rows():
            on_result(UnitStats(int(row["unit"]), rows=int(row["rows"])))
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    # the autoscaler removes the idle nodes
    deadline = time.monotonic() + args.idle_s + 60
    while time.monotonic() < deadline and _nodes_alive() > 0:
        time.sleep(1)
    watch.stop()
    runs = Counter()
    for log in (out / "runs").iterdir():
        runs.update(int(line) for line in log.read_text().split())
    parts = len(list((out / "light").iterdir()))
    markers = len(list((out / "_run" / "light" / "done").iterdir()))
    result = {
        "wall_s": wall, "driver_cpu_s": cpu, "driver_cpu_ms_per_unit": 1000 * cpu / len(units),
        "driver_peak_rss_mb": watch.peak_rss_mb, "results": len(done),
        "distinct_results": len(set(done)), "units_run": sum(runs.values()),
        "units_run_twice_or_more": sum(1 for c in runs.values() if c > 1),
        "units_never_run": len(units) - len(runs), "parts": parts, "markers": markers,
        "nodes_killed": killed, "nodes_over_time": watch.nodes,
        "max_nodes": max((n for _, n in watch.nodes), default=0),
        "nodes_at_end": watch.nodes[-1][1] if watch.nodes else None}
    exact = (parts == markers == len(units) == result["distinct_results"]
             and result["units_never_run"] == 0)
    result["every_unit_written_once"] = exact
    echo(f"  {name:5s} drained {len(units):,} units in {wall:7.1f} s; driver {cpu:6.1f} CPU-s "
         f"({result['driver_cpu_ms_per_unit']:.2f} ms a unit), peak RSS "
         f"{watch.peak_rss_mb:.0f} MB; nodes: up to {result['max_nodes']}, "
         f"{result['nodes_at_end']} when idle; killed {', '.join(killed) or 'none'}")
    echo(f"        units run twice or more: {result['units_run_twice_or_more']}; parts "
         f"{parts:,}, markers {markers:,}, results {len(done):,} ({len(set(done)):,} distinct): "
         f"{'every unit written exactly once' if exact else 'NOT every unit once'}")
    echo(f"        nodes over time (s, nodes): {watch.nodes}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--node-cpus", type=int, default=4)
    ap.add_argument("--max-nodes", type=int, default=6)
    ap.add_argument("--idle-s", type=float, default=15.0)
    ap.add_argument("--kill", type=int, default=2, help="worker nodes killed mid-stage")
    ap.add_argument("--variants", default="pool,data")
    ap.add_argument("--data-blocks", type=int, default=200,
                    help="blocks of Ray Data's dataset of units: a block is one task of its "
                         "actor pool, redone whole when its node is lost")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()
    echo = lambda s: print(s, flush=True)  # noqa: E731
    cluster = RayCluster.start(num_cpus=0, autoscaling=autoscaling(
        args.node_cpus, args.max_nodes, args.idle_s), extra_env={
        "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}, timeout_s=180)
    # before Ray is imported: it reads some of these (the address it advertises) on import
    os.environ.update(cluster.env)
    import ray

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    echo(f"machine: {cpu}, {os.cpu_count()} cores; Ray {ray.__version__}; Python "
         f"{platform.python_version()}")
    echo(f"{args.units:,} light units; worker nodes of {args.node_cpus} logical CPUs, at most "
         f"{args.max_nodes} ({args.max_nodes * args.node_cpus} actors), idle ones removed after "
         f"{args.idle_s:g} s; {args.kill} killed once a third of the units are done")
    results: dict = {"args": vars(args), "machine": cpu}
    work = Path(tempfile.mkdtemp(prefix="bench_pool_", dir=args.tmp))
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
            results[name] = run_variant(name, args, cluster, work, echo)
        if "pool" in results and "data" in results:
            p, d = results["pool"], results["data"]
            echo(f"  Ray Data / pool: drain time {d['wall_s'] / p['wall_s']:.2f}x, driver CPU "
                 f"{d['driver_cpu_s'] / p['driver_cpu_s']:.2f}x, driver peak RSS "
                 f"{d['driver_peak_rss_mb'] / p['driver_peak_rss_mb']:.2f}x")
    finally:
        ray.shutdown()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
