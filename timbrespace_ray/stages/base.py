"""One contract for every stage, with no Ray in it.

A stage writes into its folder under the run's output (stages/registry.py says which) and keeps
its bookkeeping in `_run/<stage>/` (layout.py). `Stage.run(executor)` is the one way a stage
runs: a finished stage returns its summary as it was; otherwise its work runs, and its summary
is recorded, which is what "finished" means. Every stage returns a `StageSummary`. A stage in
which every input failed, or more than its config allows (failure.py), records why in
`_run/<stage>/failed.json` instead, keeps its rows and markers, and raises StageFailedError.

Map stages (features, profile's steps, tokens, embed) split their work into units planned
deterministically; each unit writes its part files atomically and then a marker
`_run/<stage>/done/<unit>.json` holding its statistics, so a rerun skips finished units and
redoes (overwrites) unfinished ones: every input ends up exactly once. Executors only decide
where units run.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import ClassVar

from ..errors import StageFailedError
from ..executors.base import Executor, Resources, UnitStats, WorkUnit
from ..layout import RunLayout
from ..markers import marker_listing, read_all
from ..progress import StageProgress
from ..storage import Location
from .failure import LOGGED_CHARS, TYPES_LOGGED, commonest, failure
from .totals import TOTALS, Totals

log = logging.getLogger(__name__)
TOTALS_EVERY_S = 30.0  # how often a running stage saves its totals


@dataclass
class StageSummary:
    stage: str
    units_total: int = 0
    units_run: int = 0  # by this run (the others were done before)
    inputs: int = 0
    rows: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, list[str]] = field(default_factory=dict)  # type -> [utt_id, message]
    audio_hours: float = 0.0
    frames: int = 0
    wall_seconds: float = 0.0
    busy_seconds: float = 0.0  # summed worker time of the units run now
    x_real_time: float = 0.0  # audio of the units run now / wall time
    run_audio_hours: float = 0.0  # audio of the units run now
    finished_at: str = ""
    run_id: str = ""  # this summary's own id: what the stages after it record having read
    upstream_runs: dict = field(default_factory=dict)  # step -> run_id of the summary it read
    # what a stage that is not made of units says of itself (k-means: k, inertia; train: steps,
    # loss); `text` is its one-line account
    detail: dict = field(default_factory=dict)

    @classmethod
    def of(cls, doc: dict) -> "StageSummary":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    def brief(self) -> str:
        return self.detail.get("text") or f"{self.inputs} inputs, {self.rows} rows"

    def lines(self) -> list[str]:
        if self.detail:
            return [f"{self.stage}: {self.brief()}"]
        by_type = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
        return [
            f"{self.stage}: {self.units_run} of {self.units_total} units run now "
            f"({self.units_total - self.units_run} were already done); inputs seen {self.inputs} "
            f"= rows {self.rows} + errors {self.errors_total}",
            f"  audio {self.audio_hours:.3f} h, {self.frames} frames; wall {self.wall_seconds:.1f} s,"
            f" {self.x_real_time:.0f}x real time this run"
            + (f"; errors by type: {by_type} (`timbrespace-ray errors OUTPUT` lists them)"
               if self.errors else ""),
        ]


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Stage(ABC):
    """A step of the pipeline. `name` is its command (or `<stage>/<step>` for one of a stage's
    own map steps): the key of its state in `_run/` and the word of its lines."""

    name: ClassVar[str]
    # the share of its inputs that may fail before the stage fails, set by its config key
    # `<name>.max_error_share`; None: only a stage in which every input failed fails
    max_error_share: float | None = None
    fits: ClassVar[str | None] = None  # the model a stage fits, reused when its input grows

    def __init__(self, output: Location):
        self.output = output
        self.layout = RunLayout(output)

    def check(self) -> None:
        """Before anything is written: refuse settings that cannot work (a bins file that is
        not there...)."""

    @abstractmethod
    def execute(self, executor: Executor) -> StageSummary:
        """The stage's work, to the end; its summary (wall time and finish time are run's)."""

    def upstream_steps(self) -> tuple[str, ...]:
        """The steps whose output this stage reads (the registry's declaration)."""
        from .registry import SPECS

        spec = SPECS.get(self.name)
        return spec.upstream if spec else ()

    def upstream_runs(self) -> dict[str, str]:
        """step -> the run_id of its summary, for the steps this stage reads from."""
        return {step: (self.layout.completed(step) or {}).get("run_id", "")
                for step in self.upstream_steps()}

    def newer_upstream(self, done: dict) -> list[str]:
        """The steps this stage reads from that finished again since it read them (a grown
        input's)."""
        read = done.get("upstream_runs") or {}
        return [step for step, run in self.upstream_runs().items() if run and run != read.get(step)]

    def behind(self, done: dict) -> bool:
        """Whether a finished stage has work again: a step it reads from ran again since it read
        it (a grown input's new parts). A stage that fits a model reuses it instead."""
        newer = self.newer_upstream(done)
        if newer and self.fits:
            log.info("%s: %s grew since the %s was fitted; it is reused as it is (%s). To fit "
                     "it on the whole corpus, run into a new output folder", self.name,
                     " and ".join(newer), self.fits, StageSummary.of(done).brief())
            return False
        if newer:
            log.info("%s: %s ran again since this stage did: processing what is new", self.name,
                     " and ".join(newer))
        return bool(newer)

    def run(self, executor: Executor) -> StageSummary:
        done = self.layout.completed(self.name)
        if done is not None and not self.behind(done):
            summary = StageSummary.of(done)
            log.info("%s: already complete (%s); nothing to do", self.name, summary.brief())
            return summary
        self.check()
        self.layout.prepare()
        upstream = self.upstream_runs()
        t0 = time.perf_counter()
        summary = self.execute(executor)
        summary.run_id, summary.upstream_runs = uuid.uuid4().hex, upstream
        summary.wall_seconds = time.perf_counter() - t0
        if summary.wall_seconds > 0:
            summary.x_real_time = summary.run_audio_hours * 3600 / summary.wall_seconds
        summary.finished_at = _stamp()
        doc = asdict(summary)
        key = None if self.max_error_share is None else f"{self.name}.max_error_share"
        reason = failure(summary, self.max_error_share, key, self.output.uri)
        if reason is None:
            stamp = summary.finished_at.replace(":", "").replace("-", "")
            self.layout.history(self.name, stamp).write_json(doc)
            self.layout.summary(self.name).write_json(doc)
            self.layout.failure(self.name).remove()  # of an earlier run, accepted now
        for line in summary.lines():
            log.info(line)
        if reason:
            for line in commonest(summary, TYPES_LOGGED, LOGGED_CHARS):
                log.warning("%s: %s", self.name, line)
            self.layout.failure(self.name).write_json({**doc, "failure": reason})
            raise StageFailedError(reason)
        return summary


class MapStage(Stage):
    """A stage made of independent units; subclasses define plan/setup/process and `folder`,
    where their parts go."""

    resources = Resources()
    folder: Location

    @abstractmethod
    def plan(self) -> list[WorkUnit]:
        """All units, the same on every run over the same inputs."""

    def setup(self) -> None:
        """Once per worker before its first unit: heavy imports, model loading."""

    @abstractmethod
    def process(self, unit: WorkUnit) -> UnitStats:
        """Write the unit's part files (atomically) and return its statistics."""

    def marker(self, unit: WorkUnit) -> Location:
        return self.layout.markers(self.name).child(f"{unit.name}.json")

    def done_units(self, total: int | None = None) -> set[int]:
        """The units whose marker is there: one listing (by prefix, concurrently, on an object
        store when `total` units make several pages of it)."""
        return {int(n[:-5]) for n in marker_listing(self.layout.markers(self.name), total)
                if n.endswith(".json") and n[:-5].isdigit()}

    def run_unit(self, unit: WorkUnit) -> UnitStats:
        started, t0 = time.time(), time.perf_counter()
        stats = self.process(unit)
        stats.busy_seconds = time.perf_counter() - t0
        stats.started_at = started
        self.marker(unit).write_json(asdict(stats))
        return stats

    def execute(self, executor: Executor) -> StageSummary:
        """Run the units that are not done yet; totals over all of them (`Totals`: the saved
        ones, the markers of units they do not cover, and this run's units as they finish)."""
        units = self.plan()
        planned = {u.index for u in units}
        done = self.done_units(len(units)) & planned
        pending = [u for u in units if u.index not in done]
        log.info("%s: %d units, %d already done, %d to run -> %s", self.name, len(units),
                 len(units) - len(pending), len(pending), self.folder.uri)
        where = self.layout.state(self.name).child(TOTALS)
        totals = Totals.load(where, done)
        unread = sorted(done - totals.covered)
        if unread:  # finished since the totals were saved (or none were)
            names = [f"{u:06d}.json" for u in unread]
            read = read_all(self.layout.markers(self.name), names)
            for name in names:
                totals.add(UnitStats(**json.loads(read[name])))
            totals.save(where)
        ran: list[UnitStats] = []
        progress = UnitProgress(self.name, len(pending), executor.live_progress)
        saved = time.monotonic()

        def on_result(stats: UnitStats) -> None:
            nonlocal saved
            ran.append(stats)
            totals.add(stats)
            progress(stats)
            if time.monotonic() - saved > TOTALS_EVERY_S:
                totals.save(where)
                saved = time.monotonic()

        try:
            if pending:
                executor.map(self, pending, on_result)
        finally:
            progress.bar.close()
            if ran:
                totals.save(where)
        return StageSummary(
            stage=self.name, units_total=len(units), units_run=len(ran),
            inputs=totals.inputs, rows=totals.rows, errors=dict(totals.errors),
            error_examples=totals.error_examples, audio_hours=totals.audio_seconds / 3600,
            frames=totals.frames, busy_seconds=sum(s.busy_seconds for s in ran),
            run_audio_hours=sum(s.audio_seconds for s in ran) / 3600)


class UnitProgress:
    """A map stage's progress: units done, with its inputs, errors, audio and speed."""

    def __init__(self, stage: str, total_units: int, live: bool | None = None):
        self.bar = StageProgress(stage, total_units, "units", live=live)
        self.inputs = self.errors = 0
        self.audio = 0.0

    def __call__(self, stats: UnitStats) -> None:
        self.inputs += stats.inputs
        self.errors += sum(stats.errors.values())
        self.audio += stats.audio_seconds
        secs = self.bar.clock() - self.bar.t0
        self.bar.advance(1, f"{self.inputs} inputs, {self.errors} errors, "
                            f"{self.audio / 3600:.2f} h audio, "
                            f"{self.audio / secs if secs > 0 else 0:.0f}x real time")
