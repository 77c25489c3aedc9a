"""Every stage of the pipeline, declared once, in pipeline order.

A stage's name is its command (`timbrespace-ray <name>`), the word of its progress bar, its log
lines, its error rows, its `status` row and its `_run/<name>/` state. The CLI, `run`, `status`,
`errors`, `evaluate` and the demo read this table; nothing else lists the stages. Importing it
imports no stage (they import torch, numba and pyarrow's compute kernels): `status` starts in
a second.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import ConfigError

TABLE, MODEL = "table", "model"


@dataclass(frozen=True)
class StageSpec:
    name: str  # the command, and the stage's name everywhere
    folder: str  # what it writes under the output folder
    kind: str  # TABLE: Parquet parts any reader opens; MODEL: a model in its published format
    upstream: tuple[str, ...]  # the stages whose output it reads
    summary: str  # one line for --help
    stage_class: str  # "module:Class" under timbrespace_ray.stages, imported when it runs
    # config section whose `use_gpu` it follows (None: CPU only); True/False there, or None
    # (auto): the cluster has or can get GPUs
    gpu: bool = False
    # the config key that gives this stage's model from elsewhere, so that its consumer runs
    # without it: such a stage is "not run" rather than "not started"
    supplied_by: str | None = None
    # Map stages have units (one per upstream part, or per plan item); the others run whole
    units_from: str | None = None
    # a map stage's own earlier map steps, each with as many units (profile: its measures)
    steps: tuple[str, ...] = ()

    def stage_type(self):
        module, cls = self.stage_class.split(":")
        return getattr(importlib.import_module(f"timbrespace_ray.stages.{module}"), cls)


STAGES: tuple[StageSpec, ...] = (
    StageSpec("features", "features", TABLE, (), "audio -> OUTPUT/features/ (six features and "
              "a pitch track per frame); bad inputs -> OUTPUT/errors/", "features:FeaturesStage",
              units_from="plan"),
    StageSpec("profile", "profiles", TABLE, ("features",), "OUTPUT/features -> OUTPUT/profiles/ "
              "(per utterance: pitch, rate, pauses, levels, a description) and "
              "OUTPUT/speakers/", "profile:ProfileStage", units_from="features",
              steps=("profile/measures",)),
    StageSpec("kmeans", "kmeans", MODEL, ("features",), "OUTPUT/features -> OUTPUT/kmeans/ "
              "(model, report, plot)", "kmeans:KMeansStage", gpu=True,
              supplied_by="tokens.kmeans_model"),
    StageSpec("tokens", "tokens", TABLE, ("features", "kmeans"), "OUTPUT/features -> "
              "OUTPUT/tokens/ (the nearest k-means centre of every frame)",
              "tokens:TokensStage", gpu=True, units_from="features"),
    StageSpec("train", "encoder", MODEL, ("tokens",), "OUTPUT/tokens -> OUTPUT/encoder/ "
              "(masked-token pretraining, Ray Train)", "train:TrainStage", gpu=True,
              supplied_by="embed.checkpoint"),
    StageSpec("embed", "embeddings", TABLE, ("tokens", "train"), "OUTPUT/tokens -> "
              "OUTPUT/embeddings/ (pooled embeddings of token windows)", "embed:EmbedStage",
              gpu=True, units_from="tokens"),
)
NAMES = tuple(s.name for s in STAGES)
SPECS = {s.name: s for s in STAGES}
# the tables a run writes besides the stages' own folders
EXTRA_TABLES = ("speakers", "errors")


def stage_spec(name: str) -> StageSpec:
    """A stage by its command name or its folder's name (`embeddings`, `encoder`...)."""
    key = name.strip().lower()
    for spec in STAGES:
        if key in (spec.name, spec.folder):
            return spec
    raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(NAMES)}")


def table_folders() -> tuple[str, ...]:
    """Every folder of Parquet parts a run can write."""
    return (*(s.folder for s in STAGES if s.kind == TABLE), *EXTRA_TABLES)
