"""Where work runs: one interface (base.Executor), one adapter per backend. Importing this
imports no Ray: the Ray executor imports it when it first connects."""
from .base import (Executor, GpuCapacity, MapWork, NodeCapacity, Resources, TrainContext,
                   TrainJob, UnitStats, WorkUnit)
from .local import LocalExecutor
from .ray import RayExecutor

__all__ = ["Executor", "GpuCapacity", "LocalExecutor", "MapWork", "NodeCapacity", "RayExecutor",
           "Resources", "TrainContext", "TrainJob", "UnitStats", "WorkUnit"]
