"""One contract for every stage, with no Ray in it.

A stage owns a folder under the run's output. Map stages (features, tokens, embed) split their
work into units that are planned deterministically; each unit writes its part files atomically
and then a marker `_done/<unit>.json` holding its statistics, so a rerun skips finished units
and redoes (overwrites) unfinished ones: every input ends up exactly once. When all units are
done the stage writes `_SUCCESS`. Executors (local, Ray) only decide where units run.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..storage import Location

SUCCESS = "_SUCCESS"
DONE_DIR = "_done"


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; the executor turns this into Ray resource requests."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_bytes: int | None = None
    max_workers: int | None = None
    actors: bool = False  # Executor.parallel(): one actor per item instead of a task
    # Executor.map(): an actor pool that runs setup() once per actor (model loading, compiled
    # kernels); False: plain tasks on Ray's reusable workers, for a stage without a setup, which
    # then costs no actor start-up (seconds: more than a small corpus's whole work)
    actor_pool: bool = True


@dataclass(frozen=True)
class WorkUnit:
    index: int
    items: tuple[dict[str, Any], ...]

    @property
    def name(self) -> str:
        return f"{self.index:06d}"


@dataclass
class UnitStats:
    unit: int
    inputs: int = 0
    rows: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    audio_seconds: float = 0.0
    frames: int = 0
    busy_seconds: float = 0.0
    started_at: float = 0.0  # wall-clock time.time(), for utilisation figures

    def add_error(self, error_type: str) -> None:
        self.errors[error_type] = self.errors.get(error_type, 0) + 1


@dataclass
class StageSummary:
    stage: str
    units_total: int
    units_run: int
    inputs: int
    rows: int
    errors: dict[str, int]
    audio_hours: float
    frames: int
    wall_seconds: float
    busy_seconds: float  # summed worker time of the units run now
    x_real_time: float  # audio of the units run now / wall time
    finished_at: str

    def lines(self) -> list[str]:
        errors = sum(self.errors.values())
        by_type = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
        return [
            f"{self.stage}: {self.units_run} of {self.units_total} units run now "
            f"({self.units_total - self.units_run} were already done); inputs seen {self.inputs} "
            f"= rows {self.rows} + errors {errors}",
            f"  audio {self.audio_hours:.3f} h, {self.frames} frames; wall {self.wall_seconds:.1f} s,"
            f" {self.x_real_time:.0f}x real time this run"
            + (f"; errors by type: {by_type} (`timbrespace-ray errors OUTPUT` lists them)"
               if errors else ""),
        ]


class Stage(ABC):
    """A step of the pipeline writing into `output/<name>/`."""

    name: str

    def __init__(self, output: Location):
        self.output = output
        self.folder = output.child(self.name)

    def is_complete(self) -> bool:
        return self.folder.child(SUCCESS).exists()


class MapStage(Stage):
    """A stage made of independent units; subclasses define plan/setup/process."""

    resources = Resources()

    @abstractmethod
    def plan(self) -> list[WorkUnit]:
        """All units, the same on every run over the same inputs."""

    def setup(self) -> None:
        """Once per worker before its first unit: heavy imports, model loading."""

    @abstractmethod
    def process(self, unit: WorkUnit) -> UnitStats:
        """Write the unit's part files (atomically) and return its statistics."""

    def marker(self, unit: WorkUnit) -> Location:
        return self.folder.child(DONE_DIR, f"{unit.name}.json")

    def done_units(self) -> set[int]:
        return {int(n.split(".")[0]) for n in self.folder.child(DONE_DIR).list_names()
                if n.endswith(".json") and n.split(".")[0].isdigit()}

    def run_unit(self, unit: WorkUnit) -> UnitStats:
        started, t0 = time.time(), time.perf_counter()
        stats = self.process(unit)
        stats.busy_seconds = time.perf_counter() - t0
        stats.started_at = started
        self.marker(unit).write_json(asdict(stats))
        return stats

    def finish(self, units: list[WorkUnit], ran: list[UnitStats], wall_seconds: float) -> StageSummary:
        """After every unit is done: totals over all units, the run summary and _SUCCESS."""
        done = self.folder.child(DONE_DIR)
        all_stats = [UnitStats(**done.child(f"{u.name}.json").read_json()) for u in units]
        errors: Counter = Counter()
        for s in all_stats:
            errors.update(s.errors)
        run_audio = sum(s.audio_seconds for s in ran)
        summary = StageSummary(
            stage=self.name,
            units_total=len(units),
            units_run=len(ran),
            inputs=sum(s.inputs for s in all_stats),
            rows=sum(s.rows for s in all_stats),
            errors=dict(errors),
            audio_hours=sum(s.audio_seconds for s in all_stats) / 3600,
            frames=sum(s.frames for s in all_stats),
            wall_seconds=wall_seconds,
            busy_seconds=sum(s.busy_seconds for s in ran),
            x_real_time=run_audio / wall_seconds if wall_seconds > 0 else 0.0,
            finished_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        stamp = summary.finished_at.replace(":", "").replace("-", "")
        self.output.child("_runs", f"{self.name}-{stamp}.json").write_json(asdict(summary))
        self.folder.child(SUCCESS).write_json(asdict(summary))
        return summary
