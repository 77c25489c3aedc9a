"""The stages built from one config, run alone or in order."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .config import PipelineConfig
from .errors import ConfigError
from .executors import Executor, RayExecutor
from .layout import RunLayout, check_layout
from .stages.registry import NAMES, stage_spec
from .storage import Location, names_nothing

log = logging.getLogger(__name__)


def output_of(cfg: PipelineConfig) -> Location:
    """The run's output folder; refused when there is none, or when it is of the old layout."""
    if cfg.output is None:
        raise ConfigError("no output: pass --output or set 'output' in the config")
    if names_nothing(cfg.output):
        raise ConfigError(f"the output {cfg.output!r} names no folder or bucket: pass --output "
                          "(or set 'output' in the config) to the run's folder or URI")
    out = Location.of(cfg.output, cfg.storage.storage_options)
    check_layout(out)
    return out


def run_stage(name: str, cfg: PipelineConfig, executor: Executor | None = None):
    """Build stage `name` from the config and run it (skipped when already complete)."""
    spec = stage_spec(name)
    out = output_of(cfg)
    if RunLayout(out).completed(spec.name) is None:
        executor = executor or RayExecutor.of(cfg.ray)
        # the one use_gpu decision: the stage's own flag, else whether GPUs are or can be had
        use_gpu = spec.gpu and executor.use_gpu(getattr(cfg, spec.name).use_gpu)
    else:  # a finished stage must not start Ray just to ask about GPUs
        use_gpu = False
    stage = spec.stage_type().from_config(cfg, out, use_gpu)
    return stage.run(executor)


def run_pipeline(cfg: PipelineConfig, executor: Executor | None = None,
                 stages: tuple[str, ...] = NAMES,
                 on_stage_done: Callable[[str, float], None] | None = None) -> dict:
    """Every stage in order; finished ones are skipped, interrupted ones resume."""
    executor = executor or RayExecutor.of(cfg.ray)
    results = {}
    for name in stages:
        log.info("==> %s", name)
        t0 = time.perf_counter()
        results[name] = run_stage(name, cfg, executor)
        if on_stage_done:
            on_stage_done(name, time.perf_counter() - t0)
    return results
