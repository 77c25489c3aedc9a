"""Tokens stage: features -> nearest k-means centre per frame -> `tokens/*.parquet`."""
from __future__ import annotations

import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from ..clustering.model import MODEL_FILE, KMeansModel, weighted_frames
from ..features.analysis import FEATURE_NAMES
from ..storage import Location
from ..executors.base import Resources, UnitStats, WorkUnit
from ..tables import carried_columns, carried_metadata, provenance, write_table
from .parts import PartsStage

TOKENS_SCHEMA = pa.schema([("utt_id", pa.string()), ("source", pa.string()),
                           ("start_s", pa.float64()), ("end_s", pa.float64()),
                           ("duration_s", pa.float64()), ("n_frames", pa.int32()),
                           ("tokens", pa.list_(pa.int16()))])  # plus the corpus's own columns


class TokensStage(PartsStage):
    name = "tokens"
    upstream = "features"

    def __init__(self, output: Location, model_uri: str | None = None,
                 storage_options: dict | None = None, use_gpu: bool = False,
                 num_cpus: float = 0.5):
        """`model_uri`: any model directory in the original's format (default OUTPUT/kmeans)."""
        super().__init__(output)
        self.folder = output.child("tokens")
        self.model_uri = model_uri or output.child("kmeans").uri
        self.storage_options = storage_options or {}
        self.use_gpu = use_gpu
        # actors keep the model; a fraction of a CPU each leaves room for Ray Data's own tasks
        self.resources = Resources(num_cpus=num_cpus, num_gpus=0.25 if use_gpu else 0.0)
        self._model: KMeansModel | None = None

    @classmethod
    def from_config(cls, cfg, output: Location, use_gpu: bool) -> "TokensStage":
        return cls(output, cfg.tokens.kmeans_model, cfg.storage.storage_options, use_gpu,
                   cfg.tokens.cpus_per_worker)

    def setup(self) -> None:
        self._model = load_model(self.model_uri, self.storage_options)

    def process(self, unit: WorkUnit) -> UnitStats:
        if self._model is None:
            self.setup()
        table = self.read_part(unit)
        carried = carried_columns(table.schema)
        stats = UnitStats(unit.index)
        n = table.num_rows
        offsets = table.column("f0").combine_chunks().offsets.to_numpy()
        values = np.stack([table.column(k).combine_chunks().flatten().to_numpy(zero_copy_only=False)
                           for k in FEATURE_NAMES], axis=1)
        tokens = self._assign(self._model.project(weighted_frames(values)))
        out = table.select([*TOKENS_SCHEMA.names[:-1], *carried]).append_column(
            TOKENS_SCHEMA.field("tokens"),
            pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(tokens, pa.int16())))
        write_table(self.part(unit), out, {
            **provenance(self.name, {"kmeans_model": self.model_uri,
                                     "n_clusters": self._model.n_clusters}),
            **carried_metadata(carried)})
        stats.inputs = stats.rows = n
        stats.frames = int(len(tokens))
        stats.audio_seconds = float(pa.compute.sum(table.column("duration_s")).as_py() or 0.0)
        return stats

    def _assign(self, projected: np.ndarray) -> np.ndarray:
        if not self.use_gpu or len(projected) == 0:
            return self._model.assign(projected)
        return assign_on_gpu(self._model.cluster_centers, projected)


def load_model(uri: str, storage_options: dict | None = None) -> KMeansModel:
    """A model directory from a local path or any fsspec URI (copied to a temp folder)."""
    loc = Location.of(uri, storage_options)
    if loc.is_local:
        return KMeansModel.load(loc.path)
    with tempfile.TemporaryDirectory() as tmp:
        loc.download([MODEL_FILE], tmp)
        return KMeansModel.load(tmp)


def assign_on_gpu(centers: np.ndarray, weighted: np.ndarray, chunk: int = 1 << 17) -> np.ndarray:
    """Nearest centre on CUDA, with the same float32 squared differences as the CPU path.

    A chunk's [chunk, clusters, 6] differences are float32 (120 clusters: ~380 MB per 2**17
    frames, twice that at the peak), small beside the GPU share a tokens worker holds."""
    import torch

    c = torch.from_numpy(centers).cuda()
    out = []
    for i in range(0, len(weighted), chunk):
        x = torch.from_numpy(weighted[i : i + chunk]).cuda()
        d = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        out.append(d.argmin(1).to(torch.int16).cpu().numpy())
    return np.concatenate(out)
