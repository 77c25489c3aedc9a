"""The pipeline's YAML configuration: one section per stage, every key with a default.

Unknown keys and bad values are rejected before anything runs, with the key's full name.
"""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .documents import read_document
from .errors import ConfigError
from .features.config import FeatureConfig
from .features.pitch import PitchConfig
from .profiles.measures import MeasureConfig
from .inputs.base import InputOptions

GiB = 1 << 30


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageConfig(_Section):
    """fsspec options for every URI the pipeline reads or writes (credentials, endpoint...).

    For S3 they override the usual AWS variables and config files; they are never logged."""

    storage_options: dict[str, Any] = Field(default_factory=dict)


class RayConfig(_Section):
    address: str | None = Field(
        None, description="None: RAY_ADDRESS or an embedded local Ray; 'auto', ray://, http://")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of an embedded local Ray")
    progress_bars: bool = Field(
        True, description="a live progress bar per stage where stderr is a terminal; false: "
        "progress lines at a bounded rate, as in a log")
    verbose: bool = Field(
        False, description="Ray's own output as Ray prints it: the workers' logs forwarded to "
        "this terminal, Ray Data's INFO lines (by default only warnings and errors)")


class FeaturesStageConfig(FeatureConfig):
    """Extractor settings (see FeatureConfig) plus how the stage splits and bounds its work."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_duration_s: float = Field(
        7200.0, gt=0, description="longer recordings become error rows: bounds worker memory "
        "(about 0.55 GB per hour of audio at 16 kHz, plus ~0.25 GB)")
    max_file_bytes: int = Field(4 * GiB, gt=0, description="larger files become error rows")
    max_error_share: float = Field(
        0.5, ge=0, le=1, description="the share of inputs that may fail (error rows) before "
        "the stage fails (exit 4; its rows are kept, the stages after it do not run); a stage "
        "in which every input failed fails whatever this is. 0.5: a corpus gathered from the "
        "web with its share of bad files passes, while a run in which most inputs fail is "
        "almost always a wrong setting (sample rate, path column, mount), whose few rows would "
        "be all that k-means and training learn from. Raised on a rerun, the failed stage is "
        "accepted without redoing its units")
    files_per_unit: int = Field(64, ge=1, le=100_000)
    bytes_per_unit: int = Field(256 << 20, ge=1 << 20)
    num_cpus: float = Field(1.0, gt=0, le=64, description="CPUs reserved per feature task")
    max_workers: int | None = Field(None, ge=1, description="cap on concurrent tasks")
    prefetch_items: int = Field(
        8, ge=1, le=64, description="plan items (files, recordings, shards, dataset slices) a "
        "worker reads ahead of its analysis, each on a thread of its own: hides the storage's "
        "latency (object storage) behind the analysis; 1 reads them one after another, with "
        "nothing held ahead")
    prefetch_bytes: int = Field(
        128 << 20, ge=1 << 20, description="the most audio bytes a worker holds read ahead "
        "(plus one recording per prefetch thread): more rides out slow requests, at the cost "
        "of that much memory per worker (added to its memory request)")

    metadata_columns: list[str] | None = Field(
        None, description="the input's own columns to carry into every table (default: every "
        "scalar one)")
    path_column: str | None = Field(
        None, description="manifests: the column of audio paths (default: the first of path, "
        "audio_filepath, audio_path, file_name, file that the manifest has)")
    audio_column: str | None = Field(
        None, description="Parquet audio datasets: the struct<bytes, path> column (default: from "
        "the schema)")
    id_column: str | None = Field(
        None, description="Parquet audio datasets: the column giving utt_id (default: utt_id, "
        "id or key when present, else <shard>/<row>)")
    lhotse_supervisions: str | None = Field(
        None, description="lhotse: the SupervisionSet of a RecordingSet input (default: the "
        "file beside it named with 'supervisions' for 'recordings', when there is one)")
    pitch: PitchConfig = Field(
        default_factory=PitchConfig, description="the pitch_hz track beside the six features "
        "(Praat's defaults; enabled: false writes zeros and saves its ~15 % of the stage's time)")

    def input_options(self) -> InputOptions:
        return InputOptions(
            metadata_columns=None if self.metadata_columns is None else tuple(self.metadata_columns),
            path_column=self.path_column, audio_column=self.audio_column, id_column=self.id_column,
            supervisions=self.lhotse_supervisions, unit_count=self.files_per_unit,
            unit_bytes=self.bytes_per_unit)

    def extractor_config(self) -> FeatureConfig:
        return FeatureConfig(**{k: getattr(self, k) for k in FeatureConfig.model_fields})


class TrainStageConfig(_Section):
    """Masked-token pretraining of the encoder.

    The model-shape and schedule keys left unset (None) take `RECIPE`, on CPUs and GPUs alike;
    `ORIGINAL_RECIPE` lists the original's 58 M model and schedule, for those who set them.
    """

    vocab_size: int | None = Field(None, ge=2, description="default: k-means clusters + 2")
    hidden_dim: int | None = Field(None, ge=8)
    num_layers: int | None = Field(None, ge=1)
    nhead: int | None = Field(None, ge=1)
    pos_max_len: int = Field(2000, ge=8)
    dropout_rate: float = Field(0.1, ge=0, lt=1)
    mask_prob: float | None = Field(None, gt=0, lt=1)
    max_len: int | None = Field(None, ge=8, description="random crop length; default: the "
                                "recipe's, at most pos_max_len")
    batch_size: int | None = Field(None, ge=1, description="sequences per worker and step")
    pool_batches: int = Field(32, ge=1, description="batches pooled for length bucketing")
    epochs: float | None = Field(
        None, gt=0, description="exactly this many passes over the training sequences, "
        "instead of the budget of max_epochs and step_cap")
    max_steps: int | None = Field(
        None, ge=1, description="exactly this many steps: overrides epochs, max_epochs and "
        "step_cap")
    max_epochs: float | None = Field(
        None, gt=0, description="with neither max_steps nor epochs set, the step budget is "
        "this many passes over the training sequences (their count / (batch_size x "
        "num_workers) steps each), at most step_cap; recipe: 20")
    step_cap: int | None = Field(
        None, ge=1, description="the most steps of a budget from max_epochs (a large corpus "
        "trains this many steps, less than max_epochs); recipe: 1500")
    lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(500, ge=0, description="capped at a tenth of the steps")
    grad_clip: float = Field(1.0, gt=0)
    num_workers: int = Field(1, ge=1)
    use_gpu: bool | None = Field(None, description="None: when the cluster has GPUs or its "
                                  "autoscaler can add them")
    cpus_per_worker: float | None = Field(
        None, gt=0, description="CPUs (and torch threads) per worker; None: 1 on GPUs; on "
        "CPUs the largest node's CPUs shared among the workers, 1 to 8 (training runs alone)")
    bf16: bool = Field(True, description="bfloat16 autocast where the hardware computes it "
                       "natively (GPUs; CPUs with AVX512-BF16 or AMX); float32 elsewhere")
    activation_checkpointing: bool | None = Field(
        None, description="recompute layers in the backward pass; None: when the batch would "
        "not fit a worker's memory otherwise")
    seed: int = 0
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    validation_fraction: float = Field(
        0.05, ge=0, lt=1, description="share of utterances held out of training (by a hash of "
        "validation_key) for the validation loss and the evaluation")
    validation_key: str = Field(
        "utt_id", description="the column whose hash decides the split; a label column "
        "(e.g. speaker) holds out whole groups")
    validation_max_tokens: int = Field(
        200_000, ge=1000, description="tokens of the held-out set scored at each validation")
    validation_every: int | None = Field(
        None, ge=1, description="steps between validations (and at the last step); None: "
        "about an epoch's, the training sequences / (batch_size x num_workers)")
    early_stopping_patience: int = Field(
        3, ge=0, description="stop when this many validations in a row have not lowered the "
        "best validation loss by early_stopping_min_delta, and keep the weights of the best "
        "one as the encoder; 0: train the whole budget and keep the last weights")
    early_stopping_min_delta: float = Field(
        0.0, ge=0, description="how much lower than the best a validation loss must be to "
        "count as an improvement")
    normalization: Literal["none", "center", "whiten"] | None = Field(
        None, description="embedding normalisation fitted after training and applied by the "
        "embed stage (embedding_normalized)")
    contrastive_weight: float | None = Field(
        None, ge=0, description="weight of the contrastive loss between two crops of each "
        "utterance (their pooled states must find each other in the batch), added to the "
        "masked-token loss; 0: masked tokens only. It is what makes the pooled embedding "
        "describe the voice rather than the words")
    contrastive_temperature: float = Field(0.1, gt=0)
    init: str = Field(
        "pretrained", min_length=1, description="the weights training starts from: "
        "'pretrained' (the encoder shipped with the package, when the model's shape is its "
        "shape), 'scratch' (random), or an encoder folder of ours; token ids are translated "
        "from its k-means codebook to this run's")
    normalization_sequences: int = Field(
        2000, ge=2, description="training utterances the normalisation is fitted on")

    def resolved(self, use_gpu: bool, node_cpus: float = 1.0) -> "TrainStageConfig":
        """This config with every unset recipe key taken from `RECIPE`, and an
        unset `cpus_per_worker` chosen: 1 beside a GPU; on CPUs the `node_cpus` of the largest
        node shared among the workers (1 to 8): training is the only stage running then, and
        one worker with one thread left the other cores of a machine idle (2.4 s a step on 2
        cores where 2 threads take about half)."""
        recipe = dict(RECIPE)
        recipe["cpus_per_worker"] = 1.0 if use_gpu else float(
            min(8, max(1, int(node_cpus // self.num_workers))))
        return self.model_copy(update={k: v for k, v in recipe.items()
                                       if getattr(self, k) is None})

    def steps_per_epoch(self, n_train: int) -> int:
        """Steps of one pass over `n_train` training sequences, all workers together."""
        return max(1, math.ceil(n_train / (self.batch_size * self.num_workers)))

    def planned_steps(self, n_train: int) -> int:
        """The step budget of a resolved config for `n_train` training sequences: max_steps,
        else epochs' steps, else max_epochs' steps capped at step_cap."""
        if self.max_steps is not None:
            return self.max_steps
        per_epoch = self.steps_per_epoch(n_train)
        if self.epochs is not None:
            return max(1, round(self.epochs * per_epoch))
        steps = max(1, math.ceil(self.max_epochs * per_epoch))
        return steps if self.step_cap is None else min(steps, self.step_cap)

    def model_kwargs(self, n_clusters: int) -> dict:
        return {"vocab_size": self.vocab_size or n_clusters + 2, "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers, "nhead": self.nhead,
                "pos_max_len": self.pos_max_len, "dropout_rate": self.dropout_rate,
                "mask_prob": self.mask_prob}


# The original's encoder and schedule: masked tokens only, which measured no better than an
# untrained encoder of its shape (docs/embeddings.md); not a default.
ORIGINAL_RECIPE: dict[str, Any] = {
    "hidden_dim": 768, "num_layers": 8, "nhead": 8, "mask_prob": 0.15, "max_len": 2000,
    "batch_size": 16, "max_epochs": 1.0, "lr": 1e-4, "normalization": "center",
    "contrastive_weight": 0.0}
# The default on every cluster (tests/benchmarks/bench_recipe.py, bench_embeddings.py): a small
# encoder, epochs capped by a step budget (many epochs over-train a small corpus), and the
# contrastive loss that makes the pooled embedding describe the voice. Its shape is the shipped
# pretrained encoder's, so training starts from it.
RECIPE: dict[str, Any] = {
    "hidden_dim": 128, "num_layers": 2, "nhead": 4, "mask_prob": 0.15, "max_len": 512,
    "batch_size": 16, "max_epochs": 20.0, "step_cap": 1500, "lr": 1e-3,
    "normalization": "center", "contrastive_weight": 1.0}


class KMeansStageConfig(_Section):
    n_clusters: int = Field(120, ge=2)
    max_frames: int = Field(7_000_000, ge=100, description="uniform sample of frames to fit")
    n_init: int = Field(2, ge=1, description="restarts with seeds seed, seed+1, ...; in parallel")
    max_iter: int = Field(300, ge=1)
    method: Literal["bounded", "warm-lloyd", "lloyd", "minibatch"] = "bounded"
    seed: int = 0
    use_gpu: bool | None = Field(None, description="None: GPU actors when the cluster has or "
                                 "can get GPUs; each fit uses cuML where it imports on its node, "
                                 "else the CPU method")
    cpus_per_fit: float = Field(1.0, gt=0)
    reduced_dims: int | None = Field(None, ge=1, le=6)
    dim_reducer_method: Literal["pca"] = "pca"
    silhouette_sample: int = Field(20_000, ge=100)


class TokensStageConfig(_Section):
    kmeans_model: str | None = Field(None, description="model directory URI; default OUTPUT/kmeans")
    use_gpu: bool | None = Field(None, description="None: when the cluster has GPUs or its "
                                  "autoscaler can add them")
    cpus_per_worker: float = Field(0.5, gt=0, description="actors leave room for Ray Data tasks")


class EmbedStageConfig(_Section):
    checkpoint: str | None = Field(
        None, description="our encoder folder, an original .ckpt, or 'pretrained' (the encoder "
        "shipped with the package); default OUTPUT/encoder, else the pretrained one")
    batch_tokens: int = Field(
        4096, ge=1, description="padded tokens per forward pass: windows sorted by length fill "
        "a batch up to windows x the longest one's tokens (a longer window alone)")
    use_gpu: bool | None = Field(None, description="None: when the cluster has GPUs or its "
                                  "autoscaler can add them")
    cpus_per_worker: float = Field(1.0, gt=0)
    max_workers: int | None = Field(None, ge=1)
    bf16: bool = Field(True, description="bfloat16 autocast where the hardware computes it "
                       "natively (GPUs; CPUs with AVX512-BF16 or AMX); float32 elsewhere")


class ProfileStageConfig(MeasureConfig):
    """How utterances are measured (MeasureConfig), levelled and grouped into speakers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bins: str | None = Field(
        None, description="another run's bins to level this corpus on (its output folder, or "
        "its _run/profile/bins.json), so both share one scale; default: fitted on this corpus")
    speaker_column: str | None = Field(
        None, description="the carried column naming each utterance's speaker: the speakers "
        "table's rows, and evaluate's default label (default: the first of speaker, "
        "speaker_id, spk_id, client_id carried)")
    pitch_group_by: str = Field(
        "auto", description="the carried column pitch is levelled within: 'auto' (gender when "
        "carried, else the speaker column, else none), 'none' (the corpus), or a column name")
    min_group_size: int = Field(20, ge=1, description="smaller pitch groups use the corpus-wide "
                                "edges")
    cpus_per_worker: float = Field(0.5, gt=0, description="per actor; the work is mostly "
                                   "reading Parquet")

    def measure_config(self) -> MeasureConfig:
        return MeasureConfig(**{k: getattr(self, k) for k in MeasureConfig.model_fields})


class PipelineConfig(_Section):
    input: str | None = None
    output: str | None = None
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    features: FeaturesStageConfig = Field(default_factory=FeaturesStageConfig)
    kmeans: KMeansStageConfig = Field(default_factory=KMeansStageConfig)
    tokens: TokensStageConfig = Field(default_factory=TokensStageConfig)
    train: TrainStageConfig = Field(default_factory=TrainStageConfig)
    embed: EmbedStageConfig = Field(default_factory=EmbedStageConfig)
    profile: ProfileStageConfig = Field(default_factory=ProfileStageConfig)


# keys of earlier versions, and what a config says instead
REPLACED_KEYS = {"embed.batch_size": "embed.batch_tokens: batches are sized in padded tokens "
                 "(the default 4096 is about 32 windows of 2 s)"}


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden" and key in REPLACED_KEYS:
            lines.append(f"  {key}: no longer a setting; use {REPLACED_KEYS[key]}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def set_dotted(doc: dict, dotted: str, value: Any) -> None:
    """doc["a"]["b"]["c"] = value for "a.b.c", creating the mappings on the way; a ConfigError
    when one of them is already something else."""
    node = doc
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a mapping")
    node[leaf] = value


def field_default(dotted: str) -> Any:
    """The default of a config key, e.g. field_default("kmeans.n_clusters") == 120."""
    model: type[BaseModel] = PipelineConfig
    *sections, leaf = dotted.split(".")
    for name in sections:
        model = model.model_fields[name].annotation
    return model.model_fields[leaf].get_default(call_default_factory=True)


def parse_assignment(item: str, option: str) -> tuple[str, Any]:
    """(dotted key, value) of a command line's KEY=VALUE. Values are read as YAML scalars,
    lists or flow mappings (4, true, null, [a, b], {read_timeout: 5}), anything else stays a
    string, and so do the values of credential keys whatever they look like."""
    import yaml

    from .storage import SECRET_KEYS

    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or "" in key.split("."):
        raise ConfigError(f"{option} {item.split('=')[0]!r}: expected KEY=VALUE")
    if key.rsplit(".", 1)[-1].lower() in SECRET_KEYS or not value:
        return key, value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return key, value
    return key, parsed if isinstance(parsed, (bool, int, float, dict, list, type(None))) else value


def load_config(path: str | None = None, **overrides: Any) -> PipelineConfig:
    """Read a YAML config (or defaults) and apply non-None overrides given as dotted keys,
    e.g. load_config("c.yaml", **{"features.hop_ms": 10, "output": "s3://b/out"})."""
    doc: dict[str, Any] = {}
    if path:
        doc = read_document(path, "YAML", ConfigError, f"config file not found: {path}") or {}
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for dotted, value in overrides.items():
        if value is not None:
            set_dotted(doc, dotted, value)
    try:
        return PipelineConfig.model_validate(doc)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{where}:\n{_describe(exc)}") from None
