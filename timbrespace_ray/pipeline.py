"""The stages built from one config, run alone or in order."""
from __future__ import annotations

import time
from collections.abc import Callable

from .config import PipelineConfig
from .errors import ConfigError
from .runner import RayExecutor, run_map_stage
from .storage import Location

STAGES = ("features", "profile", "kmeans", "tokens", "train", "embed")


def _gpu(flag: bool | None, executor) -> bool:
    return flag if flag is not None else executor.cluster_gpus() > 0


def run_stage(name: str, cfg: PipelineConfig, executor=None, echo: Callable[[str], None] = print):
    """Build stage `name` from the config and run it (skipped when already complete)."""
    if cfg.output is None:
        raise ConfigError("no output: pass --output or set 'output' in the config")
    executor = executor or RayExecutor.of(cfg.ray)
    opts = cfg.storage.storage_options
    out = Location.of(cfg.output, opts)
    if name == "features":
        from .stages.features import FeaturesStage

        if cfg.input is None:
            raise ConfigError("no input: pass --input or set 'input' in the config")
        return run_map_stage(FeaturesStage(out, cfg.input, cfg.features, opts), executor, echo)
    if name == "kmeans":
        from .stages.kmeans import KMeansStage

        return KMeansStage(out, cfg.kmeans, opts).run(executor, echo)
    if name == "tokens":
        from .stages.tokens import TokensStage

        stage = TokensStage(out, cfg.tokens.kmeans_model, opts, num_cpus=cfg.tokens.cpus_per_worker,
                            use_gpu=_needs_gpu(out, "tokens", cfg.tokens.use_gpu, executor))
        return run_map_stage(stage, executor, echo)
    if name == "train":
        from .stages.train import TrainStage

        return TrainStage(out, cfg.train, opts).run(executor, echo)
    if name == "embed":
        from .stages.embed import EmbedStage

        stage = EmbedStage(out, cfg.embed, cfg.embed.checkpoint, opts,
                           use_gpu=_needs_gpu(out, "embeddings", cfg.embed.use_gpu, executor))
        return run_map_stage(stage, executor, echo)
    if name == "profile":
        from .stages.profile import ProfileStage

        return ProfileStage(out, cfg.profile, opts).run(executor, echo)
    raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")


def _needs_gpu(out: Location, folder: str, flag: bool | None, executor) -> bool:
    # a finished stage must not start Ray just to ask about GPUs
    if out.child(folder, "_SUCCESS").exists():
        return False
    return _gpu(flag, executor)


def run_pipeline(cfg: PipelineConfig, executor=None, echo: Callable[[str], None] = print,
                 stages: tuple[str, ...] = STAGES,
                 on_stage_done: Callable[[str, float], None] | None = None) -> dict:
    """Every stage in order; finished ones are skipped, interrupted ones resume."""
    executor = executor or RayExecutor.of(cfg.ray)
    results = {}
    for name in stages:
        echo(f"==> {name}")
        t0 = time.perf_counter()
        results[name] = run_stage(name, cfg, executor, echo)
        if on_stage_done:
            on_stage_done(name, time.perf_counter() - t0)
    return results
