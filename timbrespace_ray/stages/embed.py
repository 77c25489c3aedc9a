"""Embed stage: token sequences -> windows of at most pos_max_len -> pooled embeddings."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pyarrow as pa

from ..config import EmbedStageConfig
from ..encoder import NORMALIZATION_FILE, EmbeddingNormalization, embed_windows, load_model
from ..encoder.precision import compute_dtype
from ..errors import ModelFormatError
from ..storage import Location
from ..executors.base import Resources, UnitStats, WorkUnit
from ..tables import carried_columns, carried_metadata, flat_lists, provenance, write_table
from .parts import PartsStage


# the window's embedding after the encoder's corpus normalisation (centred, whitened when the
# encoder was fitted so, unit length): cosine scores are dot products of it. Written when the
# encoder folder holds a normalisation (ours do; an original checkpoint does not)
NORMALIZED_COLUMN = "embedding_normalized"


def embeddings_schema(hidden_dim: int) -> pa.Schema:
    """Without the corpus's own columns, which follow `end_s`, and without the optional
    `NORMALIZED_COLUMN` after `embedding`."""
    return pa.schema([("utt_id", pa.string()), ("source", pa.string()), ("start_s", pa.float64()),
                      ("end_s", pa.float64()), ("window", pa.int32()),
                      ("start_frame", pa.int32()), ("n_frames", pa.int32()),
                      ("embedding", pa.list_(pa.float32(), hidden_dim))])


class EmbedStage(PartsStage):
    name = "embed"
    upstream = "tokens"

    def __init__(self, output: Location, config: EmbedStageConfig, checkpoint: str | None = None,
                 storage_options: dict | None = None, use_gpu: bool = False):
        super().__init__(output)
        self.folder = output.child("embeddings")
        self.config = config
        self.checkpoint = checkpoint or output.child("encoder").uri
        self.storage_options = storage_options or {}
        self.use_gpu = use_gpu
        self.resources = Resources(num_cpus=config.cpus_per_worker, num_gpus=1.0 if use_gpu else 0.0,
                                   max_workers=config.max_workers)
        self._model = None
        self._normalization: EmbeddingNormalization | None = None

    @classmethod
    def from_config(cls, cfg, output: Location, use_gpu: bool) -> "EmbedStage":
        return cls(output, cfg.embed, cfg.embed.checkpoint, cfg.storage.storage_options, use_gpu)

    def setup(self) -> None:
        import torch

        torch.set_num_threads(max(1, int(self.config.cpus_per_worker)))
        self._model = _load(self.checkpoint, self.storage_options)
        self._normalization = load_normalization(self.checkpoint, self.storage_options)
        if self.use_gpu:
            self._model.to("cuda")

    def process(self, unit: WorkUnit) -> UnitStats:
        if self._model is None:
            self.setup()
        model, normalization = self._model, self._normalization
        table = self.read_part(unit)
        carried = carried_columns(table.schema)
        tokens, offsets = flat_lists(table.column("tokens"))
        seqs = [tokens[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        windows, vectors = embed_windows(model, seqs, self.config.batch_size, self.config.bf16)
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
                                     "compute_dtype": compute_dtype(
                                         next(model.parameters()).device, self.config.bf16),
                                     "normalization": normalization and normalization.method}),
            **carried_metadata(carried)})
        return UnitStats(unit.index, inputs=len(seqs), rows=len(seqs),
                         frames=int(len(tokens)),
                         audio_seconds=float(sum(table.column("duration_s").to_pylist())))


def _vectors(vectors: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()),
                                             vectors.shape[1])


def _load(uri: str, storage_options: dict):
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
