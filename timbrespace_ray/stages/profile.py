"""Profile stage: features -> every utterance (`profiles/`) and speaker (`speakers/`) described in
physical units and plain words. The numbers come from `timbrespace_ray.profiles` (no Ray).

Levels are quantiles of the whole corpus, so the stage runs in three resumable steps:
  1. measures (step `profile/measures`), one unit per features part ->
     `_run/profile/measures/parts/part-N.parquet`: every number of the profile (reading the
     features table is nearly all of the stage's cost);
  2. the bins: read from `profile.bins` (another run's `_run/profile/bins.json`: one scale for
     both), or fitted on the headline measures of every utterance; written to
     `_run/profile/bins.json` once, so a resumed run levels its remaining parts on the same
     edges as the finished ones. With a speaker column carried, `speakers/part-000000.parquet`
     is written from the same read;
  3. levels, one unit per measures part -> `profiles/part-N.parquet`: the measures plus the four
     `*_level` words and the `description`.

Steps 2's read holds the speaker, group and summarised columns of every utterance on the driver
(about 150 bytes each: 10 million utterances are 1.5 GB).
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
from ..profiles.measures import FEATURES_READ
from ..executors.base import Executor, Resources, UnitStats, WorkUnit
from ..layout import RunLayout
from ..storage import Location
from ..tables import (carried_columns, carried_metadata, provenance, read_part, read_schema,
                      settings_of, write_table)
from .base import Stage, StageSummary
from .parts import PartsStage, complete_parts

log = logging.getLogger(__name__)

BINS_FILE = "bins.json"
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
        columns = _gather(parts, executor, self.storage_options,
                          [c for c in dict.fromkeys((speaker, group_by)) if c],
                          Resources(num_cpus=self.config.cpus_per_worker))
        if not bins:
            bins = given or Bins.fit(columns, pitch_group_by=group_by,
                                     min_group_size=self.config.min_group_size)
            stored.write_atomic(bins.to_json().encode())
            how = f"from {self.config.bins}" if given else f"fitted on {bins.utterances} utterances"
            log.info("profile: bins %s -> %s", how, stored.uri)
        if speaker is not None:
            table = speaker_table(columns, bins, speaker_column=speaker)
            target = self.output.child(SPEAKERS, "part-000000.parquet")
            write_table(target, _table(table), provenance("profile", {"speaker_column": speaker}))
            log.info("profile: %d speakers -> %s", len(table["speaker"]), target.uri)
        return bins

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


def _read_columns(part: str, shared: dict) -> pa.Table:
    return read_part(Location.of(part, shared["storage_options"]), shared["columns"])


def _gather(parts: list[str], executor, storage_options: dict, keys: list[str],
            resources: Resources) -> dict:
    """The key columns, durations and summarised measures of every utterance, read in parallel
    tasks (thousands of small parts from an object store would take minutes one by one), with
    the map steps' resources, so that the same Ray workers serve them."""
    columns = [*keys, "duration_s", "voiced_s", *SUMMARISED]
    tables = executor.parallel(_read_columns, parts, resources,
                               {"storage_options": storage_options, "columns": columns})
    if not tables:
        return {name: np.zeros(0) for name in columns}
    return _numeric(pa.concat_tables(tables))
