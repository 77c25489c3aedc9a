"""Features stage: audio under an input URI -> `features/*.parquet` (+ `errors/`)."""
from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa

from ..audio import decode_audio
from ..config import FeaturesStageConfig
from ..errors import EmptyAudioError, FileTooLargeError, StorageError
from ..features.analysis import FEATURE_NAMES, analyse
from ..inputs import InputRef, discover, iter_tar_members
from ..storage import Location, redact_uri, unreachable_errors
from ..tables import error_row, errors_table, provenance, write_table
from .base import MapStage, Resources, UnitStats, WorkUnit

MIN_UNITS = 16  # small corpora are still split so that every worker gets work

FEATURES_SCHEMA = pa.schema(
    [("utt_id", pa.string()), ("source", pa.string()), ("duration_s", pa.float64()),
     ("sample_rate", pa.int32()), ("n_frames", pa.int32())]
    + [(name, pa.list_(pa.float32())) for name in FEATURE_NAMES]
)


def group_units(refs: list[InputRef], files_per_unit: int, bytes_per_unit: int) -> list[WorkUnit]:
    """Deterministic units: each tar shard alone, files in runs bounded by count and bytes."""
    per_unit = max(1, min(files_per_unit, math.ceil(len(refs) / MIN_UNITS)))
    units: list[WorkUnit] = []
    batch: list[dict] = []
    batch_bytes = 0

    def flush():
        nonlocal batch, batch_bytes
        if batch:
            units.append(WorkUnit(len(units), tuple(batch)))
        batch, batch_bytes = [], 0

    for ref in refs:
        item = {"utt_id": ref.utt_id, "source": ref.source, "size": ref.size, "kind": ref.kind}
        if ref.kind == "tar":
            flush()
            batch = [item]
            flush()
            continue
        if batch and (len(batch) >= per_unit or batch_bytes + max(ref.size, 0) > bytes_per_unit):
            flush()
        batch.append(item)
        batch_bytes += max(ref.size, 0)
    flush()
    return units


class FeaturesStage(MapStage):
    name = "features"

    def __init__(self, output: Location, input_uri: str, config: FeaturesStageConfig,
                 storage_options: dict | None = None):
        super().__init__(output)
        self.input_uri = input_uri
        self.config = config
        self.storage_options = storage_options or {}
        self.resources = Resources(num_cpus=config.num_cpus, max_workers=config.max_workers,
                                   memory_bytes=int(0.6e9 * config.max_duration_s / 3600 + 0.3e9))
        self._extractor_config = config.extractor_config()

    # planning -----------------------------------------------------------------------------
    def plan(self) -> list[WorkUnit]:
        """The stored plan when there is one (reruns see exactly the same units), else a new one."""
        # beside, not inside, features/: readers glob features/*.parquet
        plan_file = self.output.child("_plan", f"{self.name}.parquet")
        if plan_file.exists():
            return _read_plan(plan_file)
        refs = discover(self.input_uri, self.storage_options)
        units = group_units(refs, self.config.files_per_unit, self.config.bytes_per_unit)
        _write_plan(plan_file, units)
        return units

    # work -----------------------------------------------------------------------------------
    def setup(self) -> None:
        # load the compiled numba kernels and the band projection before the first unit
        analyse(np.random.default_rng(0).standard_normal(4 * self._extractor_config.frame_samples)
                .astype(np.float32), self._extractor_config)

    def settings(self) -> dict:
        return {"features": self._extractor_config.model_dump(), "input": redact_uri(self.input_uri),
                "max_duration_s": self.config.max_duration_s}

    def process(self, unit: WorkUnit) -> UnitStats:
        stats = UnitStats(unit.index)
        rows: list[dict] = []
        errors: list[dict] = []
        for item in unit.items:
            for utt_id, source, result in self._analyse_item(item):
                stats.inputs += 1
                if isinstance(result, BaseException):
                    errors.append(error_row(self.name, source, utt_id, result))
                    stats.add_error(type(result).__name__)
                    continue
                rows.append(result)
                stats.rows += 1
                stats.audio_seconds += result["duration_s"]
                stats.frames += result["n_frames"]
        meta = provenance(self.name, self.settings())
        write_table(self.folder.child(f"part-{unit.name}.parquet"), _features_table(rows), meta)
        if errors:
            write_table(self.output.child("errors", f"{self.name}-{unit.name}.parquet"),
                        errors_table(errors), meta)
        return stats

    def _analyse_item(self, item: dict):
        if item["kind"] == "tar":
            yield from self._analyse_shard(item)
            return
        utt_id, source = item["utt_id"], item["source"]
        try:
            loc = Location.of(source, self.storage_options)
            size = item["size"] if item["size"] >= 0 else loc.fs.size(loc.path)
            if size > self.config.max_file_bytes:
                raise FileTooLargeError(
                    f"{size / 2**20:.0f} MiB is over the {self.config.max_file_bytes / 2**20:.0f} MiB "
                    "limit (features.max_file_bytes)")
            with loc.fs.open(loc.path, "rb") as fh:
                yield utt_id, source, self._features_row(utt_id, source, fh)
        except FileNotFoundError:
            yield utt_id, source, FileNotFoundError(f"file not found: {source}")
        except unreachable_errors() as exc:
            # the store, not this input, is the problem: fail the unit (it is redone on rerun)
            # rather than record the input as bad
            raise StorageError(f"could not read {redact_uri(source)}: {exc}") from exc
        except Exception as exc:  # one bad input must never stop the stage
            yield utt_id, source, exc

    def _analyse_shard(self, item: dict):
        shard = InputRef(item["utt_id"], item["source"], item["size"], "tar")
        loc = Location.of(shard.source, self.storage_options)
        try:
            fh = loc.fs.open(loc.path, "rb")
        except Exception as exc:
            yield f"{shard.utt_id}/", shard.source, exc
            return
        with fh:
            for utt_id, source, data in iter_tar_members(fh, shard, self.config.max_file_bytes):
                if isinstance(data, BaseException):
                    yield utt_id, source, data
                    continue
                try:
                    yield utt_id, source, self._features_row(utt_id, source, data)
                except Exception as exc:
                    yield utt_id, source, exc

    def _features_row(self, utt_id: str, source: str, data) -> dict:
        cfg = self._extractor_config
        audio, rate, duration = decode_audio(data, cfg.sample_rate, name=utt_id,
                                             max_duration_s=self.config.max_duration_s)
        if audio.size == 0:
            raise EmptyAudioError(f"{utt_id}: the file holds no audio samples")
        feats = analyse(audio, cfg)
        row = {"utt_id": utt_id, "source": source, "duration_s": float(duration),
               "sample_rate": int(rate), "n_frames": int(len(feats["f0"]))}
        row.update({k: feats[k].astype(np.float32) for k in FEATURE_NAMES})
        return row


def _features_table(rows: list[dict]) -> pa.Table:
    columns = {name: pa.array([r[name] for r in rows], FEATURES_SCHEMA.field(name).type)
               for name in ("utt_id", "source", "duration_s", "sample_rate", "n_frames")}
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([r["n_frames"] for r in rows])
    for name in FEATURE_NAMES:
        values = np.concatenate([r[name] for r in rows]) if rows else np.zeros(0, np.float32)
        columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()))
    return pa.table(columns, schema=FEATURES_SCHEMA)


def _write_plan(location: Location, units: list[WorkUnit]) -> None:
    rows = [dict(item, unit=u.index) for u in units for item in u.items]
    table = pa.Table.from_pylist(rows, schema=pa.schema(
        [("unit", pa.int32()), ("utt_id", pa.string()), ("source", pa.string()),
         ("size", pa.int64()), ("kind", pa.string())]))
    write_table(location, table, {b"timbrespace_ray.plan_created": time.strftime("%Y-%m-%dT%H:%M:%SZ").encode()})


def _read_plan(location: Location) -> list[WorkUnit]:
    import io

    import pyarrow.parquet as pq

    rows = pq.read_table(io.BytesIO(location.read_bytes())).to_pylist()
    by_unit: dict[int, list[dict]] = {}
    for r in rows:
        by_unit.setdefault(r.pop("unit"), []).append(r)
    return [WorkUnit(i, tuple(by_unit[i])) for i in sorted(by_unit)]
