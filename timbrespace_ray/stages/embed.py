"""Embed stage: token sequences -> windows of at most pos_max_len -> pooled embeddings."""
from __future__ import annotations

import logging
import os
import tempfile

import numpy as np
import pyarrow as pa

from ..clustering.model import MODEL_FILE
from ..config import EmbedStageConfig
from ..encoder import (NORMALIZATION_FILE, EmbeddingNormalization, embed_windows,
                       inference_model, load_model)
from ..encoder.checkpoint import CONFIG_FILE
from ..encoder.codebook import PRETRAINED, PRETRAINED_NAME, token_map, translate_tokens
from ..encoder.precision import compute_dtype
from ..errors import ModelFormatError
from ..storage import Location
from ..executors.base import Resources, UnitStats, WorkUnit
from ..tables import (NORMALIZED_COLUMN, carried_columns, carried_metadata, embeddings_schema,
                      flat_lists, provenance, read_schema, settings_of, write_table)
from .parts import PartsStage
from .tokens import load_model as load_kmeans

log = logging.getLogger(__name__)


class EmbedStage(PartsStage):
    name = "embed"
    upstream = "tokens"

    def __init__(self, output: Location, config: EmbedStageConfig, checkpoint: str | None = None,
                 storage_options: dict | None = None, use_gpu: bool = False):
        super().__init__(output)
        self.folder = output.child("embeddings")
        self.config = config
        self.storage_options = storage_options or {}
        self.checkpoint = encoder_uri(checkpoint, output)
        self.use_gpu = use_gpu
        self.resources = Resources(num_cpus=config.cpus_per_worker, num_gpus=1.0 if use_gpu else 0.0,
                                   max_workers=config.max_workers)
        self._model = None
        self._normalization: EmbeddingNormalization | None = None
        # this run's token ids -> the encoder's, when their codebooks differ (set in execute)
        self.token_map: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg, output: Location, use_gpu: bool) -> "EmbedStage":
        return cls(output, cfg.embed, cfg.embed.checkpoint, cfg.storage.storage_options, use_gpu)

    def execute(self, executor):
        parts = self.upstream_parts(f"the {self.name} stage")
        tokens_codebook = settings_of(read_schema(parts[0])).get("kmeans_model") if parts else None
        self.token_map = codebook_translation(self.checkpoint, tokens_codebook,
                                              self.storage_options)
        if self.checkpoint == str(PRETRAINED):
            log.info("embed: no encoder in this run: the pretrained encoder shipped with "
                     "timbrespace_ray (%s)", PRETRAINED)
        return super().execute(executor)

    def setup(self) -> None:
        import torch

        torch.set_num_threads(max(1, int(self.config.cpus_per_worker)))
        model = read_encoder(self.checkpoint, self.storage_options)
        if self.use_gpu:
            model.to("cuda")
        self._model = inference_model(model, self.config.bf16)
        self._normalization = load_normalization(self.checkpoint, self.storage_options)

    def process(self, unit: WorkUnit) -> UnitStats:
        if self._model is None:
            self.setup()
        model, normalization = self._model, self._normalization
        table = self.read_part(unit)
        carried = carried_columns(table.schema)
        tokens, offsets = flat_lists(table.column("tokens"))
        seqs = translate_tokens([tokens[a:b] for a, b in zip(offsets[:-1], offsets[1:])],
                                self.token_map)
        windows, vectors = embed_windows(model, seqs, self.config.batch_tokens, self.config.bf16)
        names = embeddings_schema(model.hidden_dim).names
        rows = pa.array([r for r, *_ in windows], pa.int64())
        out = table.select([*names[:4], *carried]).take(rows)
        columns = [("window", pa.array([w for _, w, _, _ in windows], pa.int32())),
                   ("start_frame", pa.array([s for _, _, s, _ in windows], pa.int32())),
                   ("n_frames", pa.array([n for *_, n in windows], pa.int32())),
                   ("embedding", _vectors(vectors))]
        if normalization is not None:
            columns.append((NORMALIZED_COLUMN, _vectors(normalization.apply(vectors))))
        for name, values in columns:
            out = out.append_column(name, values)
        write_table(self.part(unit), out, {
            **provenance(self.name, {"checkpoint": self.checkpoint, "model": model.config,
                                     "tokens_translated": self.token_map is not None,
                                     "compute_dtype": compute_dtype(
                                         next(model.parameters()).device, self.config.bf16),
                                     "normalization": normalization and normalization.method}),
            **carried_metadata(carried)})
        return UnitStats(unit.index, inputs=len(seqs), rows=len(seqs),
                         frames=int(len(tokens)),
                         audio_seconds=float(sum(table.column("duration_s").to_pylist())))


def encoder_uri(checkpoint: str | None, output: Location) -> str:
    """The encoder to embed with: `checkpoint` ('pretrained': the one shipped with the package),
    else this run's `encoder/` once trained, else the pretrained one."""
    if checkpoint == PRETRAINED_NAME:
        return str(PRETRAINED)
    if checkpoint:
        return checkpoint
    trained = output.child("encoder")
    return trained.uri if trained.child(CONFIG_FILE).exists() else str(PRETRAINED)


def codebook_translation(encoder: str, tokens_codebook: str | None, storage_options: dict,
                         stage: str = "embed") -> np.ndarray | None:
    """Token ids of the codebook `tokens_codebook` (a k-means model folder) mapped to the
    codebook the encoder folder stores beside its weights; None when they are the same, or
    when either is unknown (an original checkpoint file stores none)."""
    folder = Location.of(encoder, storage_options)
    if tokens_codebook is None or not folder.fs.isdir(folder.path) \
            or not folder.child(MODEL_FILE).exists():
        return None
    target = load_kmeans(encoder, storage_options)
    mapping = token_map(load_kmeans(tokens_codebook, storage_options).feature_space_centers(),
                        target.feature_space_centers())
    if mapping is not None:
        log.info("%s: the encoder's k-means codebook is not this run's: each token is read as "
                 "the encoder's nearest centre (%d of its %d tokens in use)", stage,
                 len(set(mapping.tolist())), target.n_clusters)
    return mapping


def _vectors(vectors: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()),
                                             vectors.shape[1])


def read_encoder(uri: str, storage_options: dict):
    """Our encoder folder or an original checkpoint file, from any filesystem."""
    loc = Location.of(uri, storage_options)
    if loc.is_local:
        return load_model(loc.path)
    with tempfile.TemporaryDirectory() as tmp:
        if loc.fs.isdir(loc.path):
            loc.download(["config.json", "model.pt"], tmp)
            return load_model(tmp)
        path = os.path.join(tmp, os.path.basename(loc.path))
        with open(path, "wb") as fh:
            fh.write(loc.read_bytes())
        return load_model(path)


def load_normalization(uri: str, storage_options: dict) -> EmbeddingNormalization | None:
    """The normalisation stored in an encoder folder, or None (an original checkpoint file, or
    a folder trained before normalisations were fitted)."""
    folder = Location.of(uri, storage_options)
    loc = folder.child(NORMALIZATION_FILE)
    if not folder.fs.isdir(folder.path) or not loc.exists():
        return None
    text = loc.read_bytes().decode()
    try:
        return EmbeddingNormalization.from_json(text)
    except ValueError as exc:
        raise ModelFormatError(f"{loc.uri}: {exc}") from exc
