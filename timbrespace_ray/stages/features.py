"""Features stage: the utterances of any input form -> `features/*.parquet` (+ `errors/`)."""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import soxr

from ..audio import decode_audio, decode_ranges
from ..config import FeaturesStageConfig
from ..errors import (AudioDecodeError, AudioReadError, AudioTooLongError, ConfigError,
                      EmptyAudioError, InputError, StorageError, TimbrespaceError)
from ..features.analysis import FEATURE_NAMES, analyse, ms_to_sample
from ..features.levels import LEVEL_COLUMNS, speech_levels
from ..features.pitch import PITCH_COLUMN, SAMPLE_RATE as PITCH_RATE, pitch_track
from ..inputs import (END_TOLERANCE_S, ReadContext, Recording, Segment, SegmentRangeError,
                      read_item)
from ..inputs.discovery import stream
from ..inputs.metadata import TYPES, arrow_columns
from ..inputs.prefetch import prefetched
from ..storage import Location, redact_uri, unreachable_errors
from ..executors.base import Resources, UnitStats, WorkUnit
from ..tables import carried_metadata, error_row, errors_table, provenance, write_table
from .base import MapStage
from .growth import Changes, compare
from .plan import Plan, PlanWriter, unit_batches, unit_items, write_plan

BASE_FIELDS = [("utt_id", pa.string()), ("source", pa.string()), ("start_s", pa.float64()),
               ("end_s", pa.float64()), ("duration_s", pa.float64()),
               ("sample_rate", pa.int32()), ("n_frames", pa.int32())]
# the recording's P.56 active speech level and noise level, dB of full scale (features/levels.py)
LEVEL_FIELDS = [(name, pa.float64()) for name in LEVEL_COLUMNS]
# the six Timbrespace features exactly as the original computes them, then our pitch track (Hz)
FRAME_COLUMNS = (*FEATURE_NAMES, PITCH_COLUMN)
FEATURE_FIELDS = [(name, pa.list_(pa.float32())) for name in FRAME_COLUMNS]


def features_schema(metadata: dict[str, str]) -> pa.Schema:
    """Our columns, the levels, the corpus's metadata columns, then the six feature lists and
    pitch_hz."""
    return pa.schema(BASE_FIELDS + LEVEL_FIELDS + [(k, TYPES[t]) for k, t in metadata.items()]
                     + FEATURE_FIELDS)


log = logging.getLogger(__name__)
CHANGES = "changes.json"  # what the last rerun found new, changed or gone in the input


class FeaturesStage(MapStage):
    name = "features"

    def __init__(self, output: Location, input_uri: str, config: FeaturesStageConfig,
                 storage_options: dict | None = None):
        super().__init__(output)
        self.folder = output.child("features")
        self.input_uri = input_uri
        self.config = config
        self.max_error_share = config.max_error_share
        self.storage_options = storage_options or {}
        # the decode of the longest recording, plus the audio read ahead of it
        ahead = config.prefetch_bytes if config.prefetch_items > 1 else 0
        self.resources = Resources(
            num_cpus=config.num_cpus, max_workers=config.max_workers,
            memory_bytes=int(0.6e9 * config.max_duration_s / 3600 + 0.3e9) + ahead)
        self._extractor_config = config.extractor_config()
        self._pitch_config = config.pitch
        self.metadata: dict[str, str] = {}  # the corpus's metadata columns, set by plan()

    @classmethod
    def from_config(cls, cfg, output: Location, use_gpu: bool) -> "FeaturesStage":
        if cfg.input is None:
            raise ConfigError("no input: pass --input or set 'input' in the config")
        return cls(output, cfg.input, cfg.features, cfg.storage.storage_options)

    # planning -----------------------------------------------------------------------------
    def plan(self) -> list[WorkUnit]:
        """The stored plan's units when there is one (reruns see exactly the same units), else
        a new plan's, written in chunks as the input is planned (plan.py). The units carry no
        items: each worker reads its own."""
        return self.stored_plan().units()

    def behind(self, done: dict) -> bool:
        """A finished stage has work again when its input has grown: the input is planned
        again and what is new added to the plan as new units (growth.py); or when such units
        were added by a rerun that did not finish."""
        where = self.layout.plan(self.name)
        if not where.exists():
            return True
        plan = Plan.read(where)
        if plan.index.num_rows > done["units_total"]:
            log.info("features: %d units were added to the plan and not all run: running them",
                     plan.index.num_rows - done["units_total"])
            return True
        try:
            return self.grow(plan) > 0
        except (InputError, StorageError) as exc:
            log.warning("features: the input could not be planned again to look for new inputs "
                        "(%s); the finished stage is kept as it is", exc)
            return False

    def grow(self, plan: Plan) -> int:
        """Plan the input again and add what is new to `plan` as new units (written beside the
        old ones); the changed and gone inputs are logged and kept in `_run/features/
        changes.json`. The number of units added."""
        corpus = stream(self.input_uri, self.storage_options, self.config.input_options())
        changes = Changes()
        writer = PlanWriter(plan.location, previous=plan)
        before = writer.units
        for batch in unit_batches(compare(plan.items(), corpus.items, changes),
                                  self.config.files_per_unit, self.config.bytes_per_unit):
            writer.add(batch)
        added = writer.units - before
        if added:
            writer.close(plan.metadata)  # the columns stay those of the first plan
        if corpus.metadata != plan.metadata:
            log.warning("features: the input's metadata columns are now %s; the new parts keep "
                        "the columns first planned, %s", corpus.metadata, plan.metadata)
        self.layout.state(self.name).child(CHANGES).write_json(
            {"checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "units_added": added, **asdict(changes)})
        # said when there is something to say: a rerun of a finished run over the same input
        # says only that its stages are complete
        log.log(logging.INFO if added or changes.changed or changes.gone else logging.DEBUG,
                "features: the input holds %d new utterances (%d new units)%s", changes.new,
                added, "" if added else "; nothing to do")
        for kind, verb in (("changed", "changed since they were processed"),
                           ("gone", "no longer in the input")):
            count = getattr(changes, kind)
            if count:
                log.warning("features: %d inputs %s (%s%s): their rows stay as they were "
                            "processed; run into a new output folder to process the input as it "
                            "is now (%s)", count, verb, ", ".join(changes.examples[kind]),
                            " ..." if count > len(changes.examples[kind]) else "",
                            self.layout.state(self.name).child(CHANGES).uri)
        return added

    def stored_plan(self) -> Plan:
        where = self.layout.plan(self.name)
        if not where.exists():
            corpus = stream(self.input_uri, self.storage_options, self.config.input_options())
            write_plan(where, corpus.items, self.config.files_per_unit,
                       self.config.bytes_per_unit, lambda: corpus.metadata)
        plan = Plan.read(where)
        self.metadata = plan.metadata
        return plan

    # work -----------------------------------------------------------------------------------
    def setup(self) -> None:
        # load the compiled numba kernels and the band projection before the first unit
        noise = (np.random.default_rng(0).standard_normal(4 * self._extractor_config.frame_samples)
                 .astype(np.float32))
        feats = analyse(noise, self._extractor_config)
        self._pitch(noise, len(feats["f0"]))
        speech_levels(noise, self._extractor_config.sample_rate)

    def settings(self) -> dict:
        return {"features": self._extractor_config.model_dump(),
                "pitch": self._pitch_config.model_dump(), "input": redact_uri(self.input_uri),
                "max_duration_s": self.config.max_duration_s}

    def process(self, unit: WorkUnit) -> UnitStats:
        stats = UnitStats(unit.index)
        rows: list[dict] = []
        errors: list[dict] = []
        ctx = ReadContext(self.storage_options, self.config.max_file_bytes)
        # the next items are read (and their audio fetched) while this one is analysed
        items = unit.items or unit_items(self.layout.plan(self.name), unit)
        streams = prefetched(items, lambda item: read_item(item, ctx),
                             threads=self.config.prefetch_items,
                             max_bytes=self.config.prefetch_bytes)
        with contextlib.closing(streams):
            for item, recordings in zip(items, streams):
                for source, segment, result in self._analyse_item(item, recordings):
                    stats.inputs += 1
                    if isinstance(result, BaseException):
                        row = error_row(self.name, source, segment.utt_id,
                                        documented(result, source))
                        errors.append(row)
                        stats.add_error(row["error_type"], row["utt_id"], row["message"])
                        continue
                    rows.append(result)
                    stats.rows += 1
                    stats.audio_seconds += result["duration_s"]
                    stats.frames += result["n_frames"]
        meta = provenance(self.name, self.settings())
        write_table(self.folder.child(f"part-{unit.name}.parquet"),
                    _features_table(rows, self.metadata),
                    {**meta, **carried_metadata(list(self.metadata))})
        if errors:
            write_table(self.layout.error_part(self.name, unit.name),
                        errors_table(errors), meta)
        return stats

    def _analyse_item(self, item: dict, recordings: Iterator[Recording]):
        """(source, segment, feature row or error) for every utterance of a plan item, from
        its recordings."""
        try:
            for rec in recordings:
                yield from self._analyse_recording(rec)
        except unreachable_errors() as exc:
            # the store, not this input, is the problem: fail the unit (it is redone on rerun)
            # rather than record the input as bad
            raise StorageError(f"could not read {redact_uri(item['source'])}: {exc}") from exc

    def _analyse_recording(self, rec: Recording):
        if rec.error is not None:
            for segment in rec.segments:
                yield rec.source, segment, rec.error
            return
        whole = [s for s in rec.segments if s.whole]
        ranged = [s for s in rec.segments if not s.whole]
        if whole:
            yield from self._whole(rec, whole)
        if ranged:
            yield from self._ranges(rec, ranged)

    def _open(self, rec: Recording):
        try:
            return rec.open()
        except FileNotFoundError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError):
                # fsspec's HTTP filesystem says "not found" of a server it could not reach
                raise AudioReadError(
                    f"could not read {redact_uri(rec.source)}: the server could not be reached "
                    f"({cause}); check the URL and that the server is up") from None
            raise FileNotFoundError(f"file not found: {redact_uri(rec.source)}") from None

    def _whole(self, rec: Recording, segments: list[Segment]):
        cfg = self._extractor_config
        try:
            audio, rate, duration = decode_audio(
                self._open(rec), cfg.sample_rate, name=segments[0].utt_id, channels=rec.channels,
                max_duration_s=self.config.max_duration_s)
            if audio.size == 0:
                raise EmptyAudioError(f"{segments[0].utt_id}: the file holds no audio samples")
        except unreachable_errors():
            raise
        except Exception as exc:  # one bad input must never stop the stage
            for segment in segments:
                yield rec.source, segment, exc
            return
        for segment in segments:
            yield rec.source, segment, self._row(segment, rec.source, audio, rate, duration)

    def _ranges(self, rec: Recording, segments: list[Segment]):
        """Segments of one recording, decoded once in a stream that keeps only what the
        unfinished segments need (a 10-hour recording is never in memory whole)."""
        sr = self._extractor_config.sample_rate
        valid: list[tuple[Segment, tuple[int, int]]] = []
        for segment in segments:
            problem = _range_problem(segment, self.config.max_duration_s)
            if problem:
                yield rec.source, segment, problem
                continue
            bounds = (ms_to_sample(segment.start_s * 1000, sr), ms_to_sample(segment.end_s * 1000, sr))
            if bounds[1] <= bounds[0]:
                yield rec.source, segment, SegmentRangeError(
                    f"{segment.utt_id}: {segment.start_s:g}-{segment.end_s:g} s is shorter than "
                    f"one sample at {sr} Hz")
                continue
            valid.append((segment, bounds))
        if not valid:
            return
        done = set()
        try:
            for i, samples, decoded, rate in decode_ranges(
                    self._open(rec), [b for _, b in valid], sr, name=rec.source,
                    channels=rec.channels):
                done.add(i)
                segment, (start, end) = valid[i]
                if end > decoded + END_TOLERANCE_S * sr or start >= decoded:
                    yield rec.source, segment, SegmentRangeError(
                        f"{segment.utt_id}: the segment {segment.start_s:g}-{segment.end_s:g} s "
                        f"ends after the recording ({decoded / sr:.3f} s long)")
                    continue
                try:
                    yield rec.source, segment, self._row(segment, rec.source, samples, rate,
                                                         samples.shape[0] / sr)
                except Exception as exc:
                    yield rec.source, segment, exc
        except unreachable_errors():
            raise
        except Exception as exc:  # the recording failed: its segments not yet out are errors
            for i, (segment, _) in enumerate(valid):
                if i not in done:
                    yield rec.source, segment, exc

    def _row(self, segment: Segment, source: str, audio: np.ndarray, rate: int,
             duration: float) -> dict:
        feats = analyse(audio, self._extractor_config)
        row = {"utt_id": segment.utt_id, "source": source, "start_s": segment.start_s,
               "end_s": segment.end_s, "duration_s": float(duration),
               "sample_rate": rate, "n_frames": int(len(feats["f0"])),
               "metadata": segment.metadata}
        row.update({k: feats[k].astype(np.float32) for k in FEATURE_NAMES})
        row[PITCH_COLUMN] = self._pitch(audio, row["n_frames"])
        row.update(speech_levels(audio, self._extractor_config.sample_rate))
        return row

    def _pitch(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        """The pitch track on the extractor's frames; the tracker reads 16 kHz samples."""
        cfg = self._extractor_config
        if cfg.sample_rate != PITCH_RATE and self._pitch_config.enabled:
            audio = soxr.resample(audio, cfg.sample_rate, PITCH_RATE, quality="HQ")
        return pitch_track(audio, n_frames, self._pitch_config, cfg)


def documented(exc: BaseException, source: str) -> BaseException:
    """The error as one of the documented error types (the package's, FileNotFoundError): a
    library's OSError or ValueError as the package's, in plain words."""
    if isinstance(exc, (TimbrespaceError, FileNotFoundError)):
        return exc
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return AudioReadError(f"could not read {redact_uri(source)}: {reason}")
    return AudioDecodeError(f"{redact_uri(source)}: could not be decoded or analysed "
                            f"({type(exc).__name__}: {exc})")


def _range_problem(segment: Segment, max_duration_s: float) -> Exception | None:
    start, end = segment.start_s, segment.end_s
    if start is None or end is None or math.isnan(start) or math.isnan(end):
        return SegmentRangeError(f"{segment.utt_id}: the segment has no start or no end "
                                 "(start, and end or duration, must both be given)")
    if math.isinf(start) or math.isinf(end):
        return SegmentRangeError(f"{segment.utt_id}: the segment {start:g}-{end:g} s has an "
                                 "infinite bound; give its start and end in seconds")
    if start < 0:
        return SegmentRangeError(f"{segment.utt_id}: the segment starts before the recording "
                                 f"(start {start:g} s)")
    if end <= start:
        return SegmentRangeError(f"{segment.utt_id}: the segment ends at {end:g} s, not after its "
                                 f"start at {start:g} s")
    if end - start > max_duration_s:
        return AudioTooLongError(
            f"{segment.utt_id}: the segment is {(end - start) / 60:.1f} min, longer than "
            f"max_duration_s={max_duration_s:g} s")
    return None


def _features_table(rows: list[dict], metadata: dict[str, str]) -> pa.Table:
    schema = features_schema(metadata)
    columns = {name: pa.array([r[name] for r in rows], schema.field(name).type)
               for name, _ in BASE_FIELDS}
    # a level without a value (digital silence has no active speech) is null, not NaN
    columns.update({name: pa.array([r[name] for r in rows], type_, from_pandas=True)
                    for name, type_ in LEVEL_FIELDS})
    columns.update(arrow_columns(metadata, [r["metadata"] for r in rows]))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([r["n_frames"] for r in rows])
    for name in FRAME_COLUMNS:
        values = np.concatenate([r[name] for r in rows]) if rows else np.zeros(0, np.float32)
        columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()))
    return pa.table(columns, schema=schema)
