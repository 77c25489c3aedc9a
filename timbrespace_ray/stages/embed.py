"""Embed stage: token sequences -> windows of at most pos_max_len -> pooled embeddings."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pyarrow as pa

from ..config import EmbedStageConfig
from ..encoder import collate, embed, length_buckets, load_model, split_windows
from ..storage import Location
from ..tables import carried_columns, carried_metadata, provenance, write_table
from .base import Resources, UnitStats, WorkUnit
from .parts import PartsStage


def embeddings_schema(hidden_dim: int) -> pa.Schema:
    """Without the corpus's own columns, which follow `end_s`."""
    return pa.schema([("utt_id", pa.string()), ("source", pa.string()), ("start_s", pa.float64()),
                      ("end_s", pa.float64()), ("window", pa.int32()),
                      ("start_frame", pa.int32()), ("n_frames", pa.int32()),
                      ("embedding", pa.list_(pa.float32(), hidden_dim))])


class EmbedStage(PartsStage):
    name = "embeddings"
    upstream = "tokens"

    def __init__(self, output: Location, config: EmbedStageConfig, checkpoint: str | None = None,
                 storage_options: dict | None = None, use_gpu: bool = False):
        super().__init__(output)
        self.config = config
        self.checkpoint = checkpoint or output.child("encoder").uri
        self.storage_options = storage_options or {}
        self.use_gpu = use_gpu
        self.resources = Resources(num_cpus=config.cpus_per_worker, num_gpus=1.0 if use_gpu else 0.0,
                                   max_workers=config.max_workers)
        self._model = None

    def setup(self) -> None:
        import torch

        torch.set_num_threads(max(1, int(self.config.cpus_per_worker)))
        self._model = _load(self.checkpoint, self.storage_options)
        if self.use_gpu:
            self._model.to("cuda")

    def process(self, unit: WorkUnit) -> UnitStats:
        if self._model is None:
            self.setup()
        model = self._model
        table = self.read_part(unit)
        carried = carried_columns(table.schema)
        seqs = table.column("tokens").to_pylist()
        windows = [(row, w, start, n) for row, seq in enumerate(seqs)
                   for w, start, n in split_windows(len(seq), model.pos_max_len)]
        vectors = np.zeros((len(windows), model.hidden_dim), np.float32)
        for idx in length_buckets([n for *_, n in windows], self.config.batch_size):
            batch = collate([seqs[windows[i][0]][windows[i][2]:windows[i][2] + windows[i][3]]
                             for i in idx])
            vectors[idx] = embed(model, batch.tokens, batch.lengths, bf16=self.config.bf16).numpy()
        names = embeddings_schema(model.hidden_dim).names
        rows = pa.array([r for r, *_ in windows], pa.int64())
        out = table.select([*names[:4], *carried]).take(rows)
        for name, values in [("window", pa.array([w for _, w, _, _ in windows], pa.int32())),
                             ("start_frame", pa.array([s for _, _, s, _ in windows], pa.int32())),
                             ("n_frames", pa.array([n for *_, n in windows], pa.int32())),
                             ("embedding", pa.FixedSizeListArray.from_arrays(
                                 pa.array(vectors.ravel(), pa.float32()), model.hidden_dim))]:
            out = out.append_column(name, values)
        write_table(self.part(unit), out, {
            **provenance(self.name, {"checkpoint": self.checkpoint, "model": model.config}),
            **carried_metadata(carried)})
        return UnitStats(unit.index, inputs=len(seqs), rows=len(seqs),
                         frames=int(sum(len(s) for s in seqs)),
                         audio_seconds=float(sum(table.column("duration_s").to_pylist())))


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
