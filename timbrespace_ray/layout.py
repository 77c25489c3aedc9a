"""Where a run keeps what, in its output folder.

Table folders (`features/`, `profiles/`, `speakers/`, `tokens/`, `embeddings/`, `errors/`) hold
only their Parquet parts, so that any reader opens them by the folder's path: Polars, DuckDB,
pyarrow.dataset, Spark, Ray Data, Hugging Face `datasets`. Model folders (`kmeans/`,
`encoder/`) hold a model in its published format. Everything else a run writes to know how far
it got lives under `_run/`, which table readers never see (and which readers of the whole
output folder skip, as they skip every name starting with `_`):

    _run/<step>/plan.parquet      the units of a stage that plans its input (features): an
                                  index, one row per unit; their items in `plan/chunk-*.parquet`
    _run/features/changes.json    what a rerun found new, changed or gone in the input
    _run/<step>/done/<unit>.json  a unit's statistics, written after its part: the unit is done
    _run/<step>/summary.json      the stage's summary (StageSummary), written when it finished
    _run/<step>/failed.json       its summary and why, when too many of its inputs failed: the
                                  stage is not finished (its markers stay); gone once it is
    _run/history/<step>-<time>.json   every summary written, one per run that finished a step
    _run/profile/bins.json        the profile levels' edges
    _run/profile/measures/parts/  the profile's intermediate measures, one part per features part
    _run/train/checkpoint/        the encoder's training state; _run/train/ray/: Ray Train's

A step is a stage's command name, or `<stage>/<sub-step>` for a stage made of several map steps.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .storage import Location
from .tables import ERRORS_SCHEMA, write_table

STATE = "_run"
ERRORS = "errors"
EMPTY_ERRORS = "empty.parquet"
HISTORY = "history"
SUMMARY = "summary.json"
FAILED = "failed.json"
DONE = "done"
PLAN = "plan.parquet"
# what a run written before `_run/` existed left at the top of its output folder
_OLD_LAYOUT = ("_plan", "_runs")

@dataclass(frozen=True)
class RunLayout:
    """The places of one run's output folder."""

    output: Location

    def state(self, step: str) -> Location:
        return self.output.child(STATE, *step.split("/"))

    def summary(self, step: str) -> Location:
        return self.state(step).child(SUMMARY)

    def markers(self, step: str) -> Location:
        return self.state(step).child(DONE)

    def failure(self, step: str) -> Location:
        return self.state(step).child(FAILED)

    def plan(self, step: str) -> Location:
        return self.state(step).child(PLAN)

    def history(self, step: str, stamp: str) -> Location:
        return self.output.child(STATE, HISTORY, f"{step.replace('/', '-')}-{stamp}.json")

    @property
    def errors(self) -> Location:
        return self.output.child(ERRORS)

    def error_part(self, stage: str, unit: str) -> Location:
        return self.errors.child(f"{stage}-{unit}.parquet")

    def completed(self, step: str) -> dict | None:
        """The summary of a finished step, or None: the one completion check of every stage."""
        location = self.summary(step)
        return location.read_json() if location.exists() else None

    def failed(self, step: str) -> dict | None:
        """The summary and `failure` (why) of a step whose last run failed, or None."""
        location = self.failure(step)
        return location.read_json() if location.exists() else None

    def prepare(self) -> None:
        """Before a stage writes: refuse a folder in the old layout, and make `errors/` a
        table from the start (an empty part with the schema: every reader opens the folder
        and finds no row, where a missing folder would fail their queries)."""
        check_layout(self.output)
        empty = self.errors.child(EMPTY_ERRORS)
        if not empty.exists():
            write_table(empty, ERRORS_SCHEMA.empty_table(), {})


def check_layout(output: Location, names: set[str] | None = None) -> None:
    """A ConfigError for an output folder written before `_run/`: its bookkeeping (markers,
    `_SUCCESS`, plans) sits inside the table folders, where this version neither looks for nor
    keeps it, so resuming it could run finished units again; its tables stay readable.
    `names`: the folder's listing, where the caller has it already."""
    if names is None:
        names = set(output.list_names()) if output.exists() else set()
    if names & set(_OLD_LAYOUT) and STATE not in names:
        raise ConfigError(
            f"{output.uri} was written by timbrespace-ray 0.1, which kept its bookkeeping "
            "(_plan/, _runs/, _SUCCESS, _done/) inside the output and table folders; this "
            f"version keeps it in {STATE}/ and cannot resume that run. Write to a new output "
            "folder (its finished tables stay readable as <folder>/part-*.parquet)")
