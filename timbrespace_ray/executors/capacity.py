"""What a Ray cluster can give GPU work: the GPUs in it now, and the most its autoscaler can add.

A GPU worker group that scales from zero has no GPU in `ray.cluster_resources()` until something
asks for one, so the `use_gpu` auto decision (k-means, tokens, train, embed) counts the GPUs an
autoscaler can add: from the GCS's cluster config where an autoscaler reported one, else from
the config file of the autoscaler running beside the driver (`ray up` starts it on the head,
where jobs' drivers run). KubeRay runs its autoscaler out of sight: set use_gpu there.
"""
from __future__ import annotations

import os
import sys

from .base import GpuCapacity


def decision_line(cap: GpuCapacity) -> str:
    """One line: the use_gpu auto decision and why."""
    n = f"{cap.now:g}"
    if cap.most is None:
        return (f"GPUs: {n} now; the autoscaler's node groups are not visible from here "
                f"({cap.source}) -> use_gpu auto: {'GPU' if cap.now else 'CPU'}"
                + ("" if cap.now else "; set use_gpu: true for GPU workers that scale from zero"))
    if cap.most > cap.now:
        most = "unbounded" if cap.most >= sys.maxsize else f"{cap.most:g}"
        return (f"GPUs: {n} now, up to {most} by autoscaling ({cap.source}) -> "
                "use_gpu auto: GPU (k-means, tokens, train, embed)")
    return (f"GPUs: {n} ({cap.source}) -> use_gpu auto: "
            + ("GPU (k-means, tokens, train, embed)" if cap.now else "CPU"))


def cluster_config_max_gpus() -> float | None:
    """The most GPUs the GCS's cluster config allows (the autoscaler's node groups at their
    maximum size; what Ray Train and Ray Data read), or None when no autoscaler reported one.
    Ray 2.60's own autoscalers (v1 and v2) do not report it; later v2 autoscalers and hosted
    platforms do."""
    try:
        import ray._private.state

        most = ray._private.state.state.get_max_resources_from_cluster_config()
    except Exception:  # not connected through a GCS (Ray Client), an older Ray
        return None
    return None if most is None else float(most.get("GPU", 0))


def monitor_config(gcs_address: str) -> tuple[bool, str | None]:
    """Look on this machine for the autoscaler (Ray's `monitor.py`, v1 or v2) of the cluster at
    `gcs_address`: (found it, the path of its --autoscaling-config or None)."""
    try:
        import psutil  # installed with ray[default]
    except ImportError:
        return False, None
    found, path = False, None
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if not any(os.sep + "autoscaler" + os.sep in a and a.endswith("monitor.py")
                       for a in cmd[:4]):
                continue
            args = dict(a.split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
            if args.get("--gcs-address") != gcs_address:
                continue
            found, path = True, args.get("--autoscaling-config") or None
            if path:
                path = os.path.expanduser(path)
                if not os.path.isabs(path):
                    path = os.path.join(proc.cwd(), path)
                return True, path
        except (psutil.Error, OSError):
            continue
    return found, path


def autoscaling_config_max_gpus(config: dict) -> float | None:
    """The GPUs an autoscaling config's worker node types add at their maximum size (capped by
    the cluster's max_workers); the head's own GPUs are counted by Ray once it runs. None when
    a worker type that can start declares no resources (not filled in from its instance
    type): its GPUs are unknown."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    cap = config.get("max_workers")
    total = 0.0
    for name, node_type in types.items():
        if name == head:
            continue
        count = node_type.get("max_workers", cap if cap is not None else 0)
        if cap is not None:
            count = min(count, cap)
        if count <= 0:
            continue
        resources = node_type.get("resources") or {}
        if not resources:
            return None
        total += float(resources.get("GPU", 0) or 0) * int(count)
    return total


def ray_gpu_capacity(embedded: bool) -> GpuCapacity:
    """The connected cluster's GPUs now and the most it can have. The most: the GCS's cluster
    config when an autoscaler reported one, else the config file of the cluster's autoscaler
    when it runs on this machine, else unknown; an embedded Ray, or a cluster whose head runs
    no autoscaler, has what it has now."""
    import ray

    now = float(ray.cluster_resources().get("GPU", 0))
    if embedded:
        return GpuCapacity(now, now, "embedded local Ray, no autoscaler")
    most = cluster_config_max_gpus()
    if most is not None:
        return GpuCapacity(now, most, "the autoscaler's cluster config in the GCS")
    try:
        gcs_address = ray.get_runtime_context().gcs_address
    except Exception:  # Ray Client
        gcs_address = None
    found, path = monitor_config(gcs_address) if gcs_address else (False, None)
    if path:
        import yaml  # a dependency of Ray

        try:
            with open(path) as f:
                config = yaml.safe_load(f)
            most = autoscaling_config_max_gpus(config)
            return GpuCapacity(now, most, f"autoscaler config {path}" + (
                "" if most is not None else ": a worker type without resources"))
        except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as exc:
            return GpuCapacity(now, None, f"cannot read autoscaler config {path}: {exc}")
    if found:
        return GpuCapacity(now, now, "the head runs no autoscaler")
    return GpuCapacity(now, None, "no cluster config in the GCS, no autoscaler on this machine")
