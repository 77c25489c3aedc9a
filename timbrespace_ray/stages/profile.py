"""Profile stage: features -> every utterance (`profiles/`) and speaker (`speakers/`) described in
physical units and plain words. The numbers come from `timbrespace_ray.profiles` (no Ray).

Levels are quantiles of the whole corpus, so the stage runs in three resumable steps:
  1. measures (step `profile/measures`), one unit per features part ->
     `_run/profile/measures/parts/part-N.parquet`: every number of the profile (reading the
     features table is nearly all of the stage's cost);
  2. the bins: read from `profile.bins` (another run's `_run/profile/bins.json`: one scale for
     both), or fitted on the headline measures of the utterances (a uniform sample of at most
     SAMPLE_UTTERANCES of them); written to `_run/profile/bins.json` once, so a resumed run
     levels its remaining parts on the same edges as the finished ones. With a speaker column
     carried, `speakers/part-000000.parquet` is written by tasks that each read every row of a
     share of the speakers (and fit pitch edges per speaker when pitch is grouped by speaker);
  3. levels, one unit per measures part -> `profiles/part-N.parquet`: the measures plus the four
     `*_level` words and the `description`.

The driver holds the sample (at most SAMPLE_UTTERANCES rows of about 150 bytes) and one row per
speaker, whatever the corpus's size.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from ..config import ProfileStageConfig
from ..errors import ConfigError, ModelFormatError, NoLevelsError, NoPitchTrackError
from ..features.config import FeatureConfig
from ..features.levels import LEVEL_COLUMNS
from ..features.pitch import PITCH_COLUMN
from ..profiles import (ATTRIBUTES, MEASURE_COLUMNS, SUMMARISED, Bins, describe,
                        find_speaker_column, hop_seconds, level_column, level_names,
                        speaker_table, utterance_measures)
from ..profiles.bins import fit_pitch_groups
from ..profiles.measures import FEATURES_READ
from ..inputs.spill import bucket_of
from ..executors.base import Executor, Resources, UnitStats, WorkUnit
from ..layout import RunLayout
from ..storage import Location
from ..tables import (carried_columns, carried_metadata, provenance, read_part, read_schema,
                      row_count, settings_of, write_table)
from .base import Stage, StageSummary
from .parts import PartsStage, complete_parts

log = logging.getLogger(__name__)

BINS_FILE = "bins.json"
# the most utterances the level edges are fitted on (a uniform sample of a larger corpus: the
# edges are quantiles, which 2 million values give to a few thousandths of a level)
SAMPLE_UTTERANCES = 2_000_000
SAMPLE_BUCKETS = 1 << 20  # the resolution of the sampled fraction
BUCKET_UTTERANCES = 2_000_000  # the most utterances a speakers task reads (on average)
READ_THREADS = 16
MEASURES = "profile/measures"  # the step, and its parts in _run/profile/measures/parts/
SPEAKERS = "speakers"
IDENTITY = ("utt_id", "source", "start_s", "end_s", "n_frames")



class ProfileMeasuresStage(PartsStage):
    """Step 1: a features part -> the measures of its utterances."""

    name = MEASURES
    upstream = "features"

    def __init__(self, output: Location, config: ProfileStageConfig, num_cpus: float):
        super().__init__(output)
        self.folder = measures_folder(self.layout)
        self.config = config
        self.resources = Resources(num_cpus=num_cpus, actor_pool=False)

    def plan(self) -> list[WorkUnit]:
        units = super().plan()
        if units:  # on the driver, before any worker starts: one part's schema says it all
            _check_features(self.upstream_folder().child(units[0].items[0]["part"]))
        return units

    def process(self, unit: WorkUnit) -> UnitStats:
        table = self.read_part(unit)
        schema = table.schema
        carried = carried_columns(schema)
        table = table.select([*IDENTITY, "duration_s", *LEVEL_COLUMNS, *carried, *FEATURES_READ,
                              PITCH_COLUMN])
        offsets = table.column(PITCH_COLUMN).combine_chunks().offsets.to_numpy()
        frames = {name: _flat(table, name) for name in FEATURES_READ}
        # null (digital silence) -> NaN
        levels = {name: table.column(name).to_numpy() for name in LEVEL_COLUMNS}
        measures = utterance_measures(
            frames, _flat(table, PITCH_COLUMN), offsets, levels=levels,
            hop_s=hop_seconds(_feature_config(schema)),
            duration_s=table.column("duration_s").to_numpy(), config=self.config.measure_config())
        out = table.select([*IDENTITY, *carried])
        for name in MEASURE_COLUMNS:
            out = out.append_column(name, _column(measures[name]))
        write_table(self.part(unit), out, {
            **provenance("profile", {"measures": self.config.measure_config().model_dump()}),
            **carried_metadata(carried)})
        stats = UnitStats(unit.index, inputs=table.num_rows, rows=table.num_rows,
                          frames=int(offsets[-1]) if len(offsets) else 0)
        stats.audio_seconds = float(np.nansum(measures["duration_s"]))
        return stats


class ProfileLevelsStage(PartsStage):
    """Step 3: a measures part + the bins -> `profiles/part-N.parquet`."""

    name = "profile"
    upstream = MEASURES

    def __init__(self, output: Location, bins: Bins, num_cpus: float):
        super().__init__(output)
        self.folder = output.child("profiles")
        self.bins = bins
        self.resources = Resources(num_cpus=num_cpus, actor_pool=False)

    def upstream_folder(self) -> Location:
        return measures_folder(self.layout)

    def process(self, unit: WorkUnit) -> UnitStats:
        table = self.read_part(unit)
        levels = self.bins.apply(_numeric(table))
        out = table
        for attribute in ATTRIBUTES:
            out = out.append_column(level_column(attribute), pa.array(
                level_names(attribute, levels[attribute]), pa.string()))
        out = out.append_column("description", pa.array(describe(levels), pa.string()))
        write_table(self.part(unit), out, table.schema.metadata or {})
        stats = UnitStats(unit.index, inputs=table.num_rows, rows=table.num_rows,
                          frames=int(pa.compute.sum(table.column("n_frames")).as_py() or 0))
        stats.audio_seconds = float(np.nansum(table.column("duration_s").to_numpy(
            zero_copy_only=False)))
        return stats


class ProfileStage(Stage):
    """The three steps in order; each skips what a previous run finished."""

    name = "profile"

    def __init__(self, output: Location, config: ProfileStageConfig,
                 storage_options: dict | None = None):
        super().__init__(output)
        self.folder = output.child("profiles")
        self.config = config
        self.storage_options = storage_options or {}
        self._given: Bins | None = None

    @classmethod
    def from_config(cls, cfg, output: Location, use_gpu: bool) -> "ProfileStage":
        return cls(output, cfg.profile, cfg.storage.storage_options)

    def check(self) -> None:
        # a wrong path or column fails now, not after the measures
        self._given = self._given_bins()
        if self.config.speaker_column is not None:
            parts = complete_parts(self.layout, "features", self.output.child("features"),
                                   "profile")
            if parts:
                find_speaker_column(_carried(parts[0].uri, self.storage_options),
                                    self.config.speaker_column)

    def execute(self, executor: Executor) -> StageSummary:
        given = self._given
        cpus = self.config.cpus_per_worker
        measures = ProfileMeasuresStage(self.output, self.config, cpus)
        measures.run(executor)
        parts = [p.uri for p in complete_parts(self.layout, MEASURES, measures.folder, "profile")]
        bins = self._bins(parts, given, executor)
        return ProfileLevelsStage(self.output, bins, cpus).execute(executor)

    def _given_bins(self) -> Bins | None:
        """`profile.bins`: a bins.json, or the output folder of another run (its bins)."""
        uri = self.config.bins
        if not uri:
            return None
        location = Location.of(uri, self.storage_options)
        if not location.path.endswith(".json"):
            location = bins_file(RunLayout(location))
        if not location.exists():
            raise ConfigError(f"profile.bins: {location.uri} not found")
        try:
            return Bins.from_json(location.read_bytes().decode())
        except ModelFormatError as exc:
            raise ConfigError(f"profile.bins: {location.uri}: {exc}") from None

    def _bins(self, parts: list[str], given: Bins | None, executor: Executor) -> Bins:
        """Step 2: the bins (fitted, given, or those of an interrupted run) and the speakers."""
        stored = bins_file(self.layout)
        bins = None
        if stored.exists():
            bins = Bins.from_json(stored.read_bytes().decode())
        if bins and given and bins.to_dict() != given.to_dict():
            raise ConfigError(f"{stored.uri} holds other bins than {self.config.bins}, and parts "
                              "were already levelled with them; write to a new output folder to "
                              "level the corpus again")
        carried = _carried(parts[0], self.storage_options) if parts else []
        found = find_speaker_column(carried, self.config.speaker_column)
        log.info("profile: %s%s", found, "" if found.name else ", so no speakers table")
        speaker = found.name
        group_by = self._pitch_group_by(carried, speaker)
        # the levels follow the bins' own grouping (another corpus's may differ from ours)
        known = bins or given
        if known and known.pitch_group_by in carried:
            group_by = known.pitch_group_by
        # bounded whatever the corpus: the corpus-wide edges from a uniform sample of at most
        # SAMPLE_UTTERANCES utterances (all of a smaller corpus), the speakers (and pitch edges
        # per speaker) from tasks that each read the rows of a share of the speakers
        total = sum(executor.parallel(_count_rows, parts, self._read_resources(),
                                      {"storage_options": self.storage_options}))
        by_speaker = speaker is not None and group_by == speaker
        fit = bins is None and given is None
        if fit:
            fraction = min(1.0, SAMPLE_UTTERANCES / total) if total else 1.0
            sample = _gather(parts, executor, self.storage_options,
                             [group_by] if group_by and not by_speaker else [],
                             self._read_resources(), fraction)
            bins = Bins.fit(sample, pitch_group_by=None if by_speaker else group_by,
                            min_group_size=self.config.min_group_size)
            log.info("profile: level edges fitted on %d of %d utterances%s", bins.utterances,
                     total, "" if fraction == 1 else " (a uniform sample)")
        speakers = None
        if speaker is not None:
            speakers, edges, counts = _by_speaker(
                parts, executor, self.storage_options, speaker, group_by, bins or given,
                fit_groups=by_speaker and fit, min_group_size=self.config.min_group_size,
                buckets=max(1, -(-total // BUCKET_UTTERANCES)), resources=self._read_resources())
            if by_speaker and fit:
                bins = bins.with_pitch_groups(speaker, edges, counts)
        if bins is None or fit:
            bins = bins or given
            stored.write_atomic(bins.to_json().encode())
            how = f"from {self.config.bins}" if given else f"fitted on {bins.utterances} utterances"
            log.info("profile: bins %s -> %s", how, stored.uri)
        if speakers is not None:
            target = self.output.child(SPEAKERS, "part-000000.parquet")
            write_table(target, _table(speakers), provenance("profile", {"speaker_column": speaker}))
            log.info("profile: %d speakers -> %s", len(speakers["speaker"]), target.uri)
        return bins

    def _read_resources(self) -> Resources:
        return Resources(num_cpus=self.config.cpus_per_worker)

    def _pitch_group_by(self, carried: list[str], speaker: str | None) -> str | None:
        choice = self.config.pitch_group_by
        if choice == "auto":
            return "gender" if "gender" in carried else speaker
        if choice == "none":
            return None
        if choice not in carried:
            raise ConfigError(f"profile.pitch_group_by: no column {choice!r} in the features "
                              f"table (its carried columns: {', '.join(carried) or 'none'})")
        return choice


def measures_folder(layout: RunLayout) -> Location:
    return layout.state(MEASURES).child("parts")


def bins_file(layout: RunLayout) -> Location:
    return layout.state("profile").child(BINS_FILE)


def _check_features(part: Location) -> None:
    """The features part has what the profile reads besides the six features: the pitch track
    and the levels."""
    schema = read_schema(part)
    rerun = ("; run the features stage again into a new output folder (or delete its "
             "features/) to profile this corpus")
    if PITCH_COLUMN not in schema.names:
        raise NoPitchTrackError(f"{part.uri} has no {PITCH_COLUMN} column (written by an older "
                                f"timbrespace_ray){rerun}")
    if not settings_of(schema).get("pitch", {}).get("enabled", True):
        raise NoPitchTrackError(f"{part.uri} was written with features.pitch.enabled: false{rerun}")
    missing = [name for name in LEVEL_COLUMNS if name not in schema.names]
    if missing:
        raise NoLevelsError(f"{part.uri} has no {' or '.join(missing)} column (written by an "
                            f"older timbrespace_ray){rerun}")


def _feature_config(schema: pa.Schema) -> FeatureConfig:
    """The extractor settings the part was written with: its hop is what a frame lasts."""
    return FeatureConfig(**settings_of(schema).get("features", {}))


def _flat(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)


def _column(values: np.ndarray) -> pa.Array:
    # NaN is "no value" here (no voiced frame, no pause): null, which SQL's avg() and count() skip
    return pa.array(values, from_pandas=True)


def _table(columns: dict[str, np.ndarray]) -> pa.Table:
    return pa.table({name: _column(values) for name, values in columns.items()})


def _numeric(table: pa.Table) -> dict:
    """Float columns as numpy (null -> NaN), the others as they are (group keys take Arrow)."""
    return {name: (col.to_numpy() if pa.types.is_floating(col.type) else col)
            for name, col in zip(table.column_names, table.columns)}


def _carried(part: str, storage_options: dict) -> list[str]:
    return carried_columns(read_schema(Location.of(part, storage_options)))


def _count_rows(part: str, shared: dict) -> int:
    return row_count(Location.of(part, shared["storage_options"]))


def _read_columns(part: str, shared: dict) -> pa.Table:
    """The columns of a measures part, the rows a task keeps: a uniform sample by utt_id
    (`fraction`) or those of its share of the speakers (`bucket` of `buckets`)."""
    table = read_part(Location.of(part, shared["storage_options"]), ["utt_id", *shared["columns"]])
    if shared.get("fraction", 1.0) < 1.0:
        kept = bucket_of(table.column("utt_id").to_pylist(), SAMPLE_BUCKETS) < (
            shared["fraction"] * SAMPLE_BUCKETS)
        table = table.filter(pa.array(kept))
    if shared.get("buckets", 1) > 1:
        keys = [str(v) for v in table.column(shared["speaker"]).to_pylist()]
        table = table.filter(pa.array(bucket_of(keys, shared["buckets"]) == shared["bucket"]))
    return table.drop_columns(["utt_id"])


def _gather(parts: list[str], executor, storage_options: dict, keys: list[str],
            resources: Resources, fraction: float = 1.0) -> dict:
    """The key columns, durations and summarised measures of every utterance (or of a uniform
    `fraction` of them), read in parallel tasks (thousands of small parts from an object store
    would take minutes one by one), with the map steps' resources, so that the same Ray workers
    serve them."""
    columns = [*keys, "duration_s", "voiced_s", *SUMMARISED]
    tables = executor.parallel(_read_columns, parts, resources,
                               {"storage_options": storage_options, "columns": columns,
                                "fraction": fraction})
    if not tables:
        return {name: np.zeros(0) for name in columns}
    return _numeric(pa.concat_tables(tables))


def _speaker_share(bucket: int, shared: dict):
    """One task's speakers: the rows of its share read from every part (threads: a store
    answers many reads at once), then their table and, when pitch is grouped by speaker, their
    pitch edges."""
    from concurrent.futures import ThreadPoolExecutor

    reading = {**shared, "bucket": bucket}
    with ThreadPoolExecutor(READ_THREADS) as pool:
        tables = list(pool.map(lambda part: _read_columns(part, reading), shared["parts"]))
    columns = (_numeric(pa.concat_tables(tables)) if tables
               else {name: np.zeros(0) for name in shared["columns"]})
    speaker = shared["speaker"]
    edges, counts = ({}, {}) if not shared["fit_groups"] else fit_pitch_groups(
        columns, speaker, min_group_size=shared["min_group_size"])
    table = speaker_table(columns, shared["bins"], speaker_column=speaker)
    return table, edges, counts


def _by_speaker(parts: list[str], executor, storage_options: dict, speaker: str,
                group_by: str | None, bins: Bins, *, fit_groups: bool, min_group_size: int,
                buckets: int, resources: Resources):
    """The speakers table and the pitch edges per speaker (when `fit_groups`), from `buckets`
    tasks, each with every row of its share of the speakers (all speakers in one task for a
    corpus of up to BUCKET_UTTERANCES utterances): the driver holds a row per speaker."""
    keys = [c for c in dict.fromkeys((speaker, group_by)) if c]
    shared = {"storage_options": storage_options, "parts": parts, "speaker": speaker,
              "columns": [*keys, "duration_s", "voiced_s", *SUMMARISED], "buckets": buckets,
              "bins": bins, "fit_groups": fit_groups, "min_group_size": min_group_size}
    found = executor.parallel(_speaker_share, list(range(buckets)), resources, shared)
    edges = {k: v for _, e, _ in found for k, v in e.items()}
    counts = {k: v for _, _, c in found for k, v in c.items()}
    tables = [t for t, _, _ in found if len(t["speaker"])]
    if not tables:
        return found[0][0], edges, counts
    merged = {name: np.concatenate([t[name] for t in tables]) for name in tables[0]}
    order = np.argsort(merged["speaker"].astype(str), kind="stable")
    return {name: values[order] for name, values in merged.items()}, edges, counts
