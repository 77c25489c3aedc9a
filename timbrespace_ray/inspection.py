"""What a run has done, read from what it leaves in its output folder: `status` and `errors`.

`run_status` reads only what the stages write to say how far they got, never a part file:
one listing of the output folder, each stage's `_run/<stage>/summary.json`, and for a stage
that has not finished a listing of its `_run/<stage>/done/` markers (never opened) and the
footer of its plan. A finished stage costs one read whatever its size; the markers of a stage of 100,000 units
on S3 are 100 listings of a thousand names, sent at once.
`read_errors` reads the error tables (`OUTPUT/errors/<stage>-<unit>.parquet`), their columns only.

Running or interrupted: a stage writes nothing while it runs except each finished unit's marker
(and its summary when it ends), and a driver killed with kill -9 leaves exactly what a running
one has. So a stage that has started and not finished is "incomplete", with the time its last
unit finished; whether its driver is still alive is for the cluster (`ray job status`) to say.

No Ray here: the inspection commands start in a second and run anywhere fsspec reaches.
"""
from __future__ import annotations

import io
import json
import posixpath
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import ConfigError, InspectionError, StageFailedError
from .layout import ERRORS, STATE, RunLayout, check_layout
from .markers import listing, marker_listing
from .stages.failure import clip
from .stages.registry import NAMES, STAGES, StageSpec, stage_spec
from .storage import Location, storage_errors
from .tables import ERRORS_SCHEMA, footer

CHECKPOINT, CHECKPOINT_STATE = "checkpoint", "state.json"  # a stage that checkpoints

FINISHED, FAILED, INCOMPLETE, NOT_STARTED, NOT_RUN = (
    "finished", "failed", "incomplete", "not_started", "not_run")
EXIT_FINISHED, EXIT_NO_RUN, EXIT_UNFINISHED = 0, InspectionError.exit_code, 3
EXIT_FAILED = StageFailedError.exit_code


@dataclass
class StageStatus:
    stage: str  # the command's name: features, profile, kmeans, tokens, train, embed
    folder: str
    state: str  # finished, failed, incomplete, not_started, not_run
    units_done: int | None = None
    units_total: int | None = None
    inputs: int | None = None
    rows: int | None = None
    errors: dict[str, int] | None = None
    audio_hours: float | None = None
    frames: int | None = None
    wall_seconds: float | None = None  # of the run that finished the stage
    x_real_time: float | None = None  # audio of the units that run did / its wall time
    units_run: int | None = None  # units done by the run that finished the stage
    finished_at: str | None = None
    # an unfinished stage: when it last wrote a marker; a failed one: when its last run ended
    last_progress_at: str | None = None
    failure: str | None = None  # a failed stage: why, and what to do
    detail: str = ""
    steps: list[dict] = field(default_factory=list)  # a stage of several map steps: each one
    summary: dict | None = None  # kmeans and train: their own account (its `detail`)

    @property
    def errors_total(self) -> int | None:
        return None if self.errors is None else sum(self.errors.values())


@dataclass
class RunStatus:
    output: str
    checked_at: str
    stages: list[StageStatus]

    def get(self, stage: str) -> StageStatus:
        return next(s for s in self.stages if s.stage == stage)

    def default_stages(self) -> list[str]:
        """Every stage of the pipeline, less k-means and training where tokens (embeddings)
        were made with a model from elsewhere: the run is finished when `run` has nothing
        left to do."""
        return [s.stage for s in self.stages if s.state != NOT_RUN]

    def unfinished(self, stages: list[str]) -> list[str]:
        return [s for s in stages if self.get(s).state != FINISHED]

    def failed(self, stages: list[str]) -> list[str]:
        return [s for s in stages if self.get(s).state == FAILED]

    def exit_code(self, stages: list[str]) -> int:
        if self.failed(stages):
            return EXIT_FAILED
        return EXIT_UNFINISHED if self.unfinished(stages) else EXIT_FINISHED

    def to_dict(self, stages: list[str]) -> dict:
        return {"output": self.output, "checked_at": self.checked_at, "asked": stages,
                "finished": not self.unfinished(stages), "unfinished": self.unfinished(stages),
                "failed": self.failed(stages), "exit_code": self.exit_code(stages),
                "stages": [{**asdict(s), "errors_total": s.errors_total} for s in self.stages]}


def resolve_stages(names: list[str] | None) -> list[str] | None:
    """Command names (or folder names) to command names, in pipeline order; commas allowed."""
    if not names:
        return None
    wanted = set()
    for name in (n.strip() for arg in names for n in arg.split(",")):
        if name:
            try:
                wanted.add(stage_spec(name).name)
            except ConfigError as exc:
                raise InspectionError(str(exc)) from None
    return [s for s in NAMES if s in wanted] or None


# reading ------------------------------------------------------------------------------------

def open_output(uri: str, storage_options: dict | None = None) -> Location:
    """The run's output folder, reached as the stages reach it; on S3 with a client that reads
    a listing's times with the standard library (botocore's default, dateutil, is most of the
    CPU a listing of 100,000 markers costs: about 20 s of it on a small machine)."""
    output = Location.of(uri, storage_options)
    if type(output.fs).__module__.startswith("s3fs") and getattr(output.fs, "session", 1) is None:
        try:
            from aiobotocore.session import AioSession

            session = AioSession()
            session.get_component("response_parser_factory").set_parser_defaults(
                timestamp_parser=_timestamp)
            output.fs.session = session
        except Exception:  # an aiobotocore without these: its defaults, only slower
            pass
    return output


def _timestamp(value):
    try:  # S3 writes 2026-11-30T06:05:01.000Z, which Python 3.11 reads as it is
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        from botocore.utils import parse_timestamp

        return parse_timestamp(value)


def _now() -> float:
    return time.time()


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mtime(entry: dict) -> float | None:
    """The modification time of a listing entry, as the filesystems spell it (local: mtime;
    s3fs: LastModified; gcsfs: updated; adlfs: last_modified)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = entry.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
    return None


def _read_json(location: Location) -> Any | None:
    """A summary or state file, or None when it is not there."""
    try:
        data = location.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InspectionError(f"{location.uri} is not a readable run summary ({exc}); a run "
                              "writes it whole or not at all, so something else wrote it") from None


def _markers(done: Location, total: int | None = None) -> tuple[int, float | None]:
    """How many units a step's marker folder says are done, and when the last one was."""
    entries = marker_listing(done, total)
    done = [e for n, e in entries.items() if n.endswith(".json") and n[:-5].isdigit()]
    times = [t for t in (_mtime(e) for e in done) if t is not None]
    return len(done), (max(times) if times else None)


def _plan_units(plan: Location) -> tuple[int | None, float | None]:
    """The units a stage planned (its plan file's footer: one ranged read) and when."""
    plan.fs.invalidate_cache(plan.path)
    try:
        with storage_errors("read", plan.uri):
            meta = footer(plan)
    except FileNotFoundError:
        return None, None
    created = (meta.metadata or {}).get(b"timbrespace_ray.plan_created")
    when = None
    if created:
        try:
            when = datetime.strptime(created.decode(), "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=timezone.utc).timestamp()
        except ValueError:
            pass
    return meta.num_rows, when


def _from_summary(status: StageStatus, summary: dict) -> StageStatus:
    """A finished stage, from the summary its last run wrote (StageSummary)."""
    status.state = FINISHED
    for key in ("inputs", "rows", "errors", "audio_hours", "frames", "wall_seconds",
                "x_real_time", "units_run", "finished_at"):
        setattr(status, key, summary.get(key))
    detail = summary.get("detail") or {}
    if detail:  # a stage not made of units: its own account
        status.summary, status.detail = detail, detail.get("text", "")
        status.units_run = status.inputs = status.rows = status.errors = None
        status.audio_hours = status.x_real_time = None
        status.frames = detail.get("frames")
        return status
    status.units_total = status.units_done = summary.get("units_total")
    run, total = status.units_run, status.units_total
    if run is not None and total and run < total:
        status.detail = (f"resumed: the run that finished it did {run} of {total} units "
                         "(wall time and speed are that run's)")
    return status


def _from_failure(status: StageStatus, failed: dict) -> StageStatus:
    """A failed stage, from what its last run recorded: every unit done, too many errors."""
    _from_summary(status, failed)
    status.state, status.failure = FAILED, failed.get("failure")
    status.last_progress_at, status.finished_at = status.finished_at, None
    run, total = status.units_run, status.units_total
    status.detail = (f"its last run did {run} of {total} units (wall time and speed are that "
                     "run's)") if status.detail else ""
    return status


def _map_steps(output: Location, spec: StageSpec, started: set[str],
               totals: dict[str, int | None]) -> StageStatus:
    """An unfinished map stage: its markers (and those of its own earlier steps) against the
    units it planned, or the parts of the stage its units come from."""
    status = StageStatus(spec.name, spec.folder, NOT_STARTED)
    layout = RunLayout(output)
    total, planned_at = totals.get(spec.units_from), None
    if spec.units_from == "plan":
        total, planned_at = _plan_units(layout.plan(spec.name))
    steps = [*spec.steps, spec.name]
    counted = []
    if spec.name not in started:  # no state: nothing to list
        return status
    for step in steps:
        finished = _read_json(layout.summary(step)) if step != spec.name else None
        if finished is not None:
            counted.append((step, finished.get("units_total"), None))
        else:
            counted.append((step, *_markers(layout.markers(step), total)))
    done = sum(n or 0 for _, n, _ in counted)
    times = [t for _, _, t in counted if t is not None]
    status.state = INCOMPLETE
    status.units_done = done
    status.units_total = None if total is None else total * len(steps)
    status.last_progress_at = _iso(max(times) if times else planned_at)
    of = "" if total is None else f" of {total}"
    status.detail = "; ".join(f"{step}: {n}{of} units done" for step, n, _ in counted) \
        if len(steps) > 1 else f"{done}{of} units done"
    if len(steps) > 1:
        status.steps = [{"step": step, "units_done": n, "units_total": total}
                        for step, n, _ in counted]
    return status


def _whole_stage(output: Location, spec: StageSpec) -> StageStatus:
    """An unfinished stage not made of units: started or not, and its last checkpoint."""
    status = StageStatus(spec.name, spec.folder, NOT_STARTED)
    state = RunLayout(output).state(spec.name)
    entries = {**listing(output.child(spec.folder)), **listing(state)}
    if not entries:
        return status
    status.state = INCOMPLETE
    times = [t for t in (_mtime(e) for e in entries.values()) if t is not None]
    status.last_progress_at = _iso(max(times)) if times else None
    checkpoint = _read_json(state.child(CHECKPOINT, CHECKPOINT_STATE)) if CHECKPOINT in entries \
        else None
    if checkpoint is None:
        status.detail = "started, no checkpoint yet; a rerun starts it again"
        return status
    status.summary = {"step": checkpoint.get("step"), "epoch": checkpoint.get("epoch")}
    status.detail = (f"last checkpoint at step {checkpoint.get('step')} (epoch "
                     f"{checkpoint.get('epoch')}); a rerun resumes from it")
    return status


def run_status(output: Location) -> RunStatus:
    """Every stage's state, from summaries, markers and plan footers alone."""
    top = listing(output)
    if STATE not in top:
        if top:
            try:
                check_layout(output, set(top))
            except ConfigError as exc:
                raise InspectionError(str(exc)) from None
        hint = ""
        if any(n.startswith("part-") for n in top):
            hint = ("; it looks like one stage's folder: pass the run's folder, "
                    f"{posixpath.dirname(output.uri)}")
        elif top:
            hint = f" (it holds no {STATE}/ folder)"
        raise InspectionError(
            f"no timbrespace-ray run at {output.uri}{hint or ': nothing is there'}")
    layout = RunLayout(output)
    started = set(listing(output.child(STATE)))  # the stages that wrote any state
    stages: list[StageStatus] = []
    totals: dict[str, int | None] = {}
    for spec in STAGES:
        summary = _read_json(layout.summary(spec.name)) if spec.name in started else None
        failed = _read_json(layout.failure(spec.name)) \
            if spec.name in started and summary is None else None
        if failed is not None:
            s = _from_failure(StageStatus(spec.name, spec.folder, FAILED), failed)
        elif summary is not None:
            s = _from_summary(StageStatus(spec.name, spec.folder, FINISHED), summary)
            if spec.steps and s.units_total is not None:  # every step had as many units
                s.steps = [{"step": step, "units_done": s.units_total,
                            "units_total": s.units_total} for step in (*spec.steps, spec.name)]
                s.units_total = s.units_done = s.units_total * len(s.steps)
        elif spec.units_from:
            s = _map_steps(output, spec, started, totals)
        else:
            s = _whole_stage(output, spec)
        totals[spec.name] = s.units_total if s.state == FINISHED else None
        stages.append(s)
    for spec, s in zip(STAGES, stages):
        # a model given from elsewhere (tokens.kmeans_model, embed.checkpoint): its stage is
        # not run when the stage that reads the model ran all the same
        consumer = spec.supplied_by.split(".")[0] if spec.supplied_by else None
        if s.state == NOT_STARTED and consumer and stages[NAMES.index(consumer)].state \
                != NOT_STARTED:
            flag = "--" + spec.supplied_by.split(".")[1].replace("_", "-")
            s.state = NOT_RUN
            s.detail = (f"the {consumer} stage ran with a model from elsewhere ({flag}, "
                        f"{spec.supplied_by})")
    kmeans = stages[NAMES.index("kmeans")]
    if kmeans.state == NOT_STARTED and stages[0].state == FINISHED:
        kmeans.detail = ("k-means writes nothing until its fit ends: while it fits, it shows "
                         "here as not started")
    return RunStatus(output.uri, _iso(_now()), stages)


# formatting ---------------------------------------------------------------------------------

def _ago(iso: str | None, now: float) -> str:
    if not iso:
        return ""
    try:
        then = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return ""
    secs = max(0.0, now - then)
    if secs < 90:
        return f"{secs:.0f} s ago"
    if secs < 90 * 60:
        return f"{secs / 60:.0f} min ago"
    if secs < 48 * 3600:
        return f"{secs / 3600:.1f} h ago"
    return f"{secs / 86400:.0f} days ago"


def _hours(h: float | None) -> str:
    if h is None:
        return "-"
    if h * 3600 < 90:
        return f"{h * 3600:.1f} s"
    if h < 1:
        return f"{h * 60:.1f} min"
    return f"{h:.2f} h" if h < 10 else f"{h:,.1f} h"


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _table(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


STATE_WORDS = {FINISHED: "finished", FAILED: "failed", INCOMPLETE: "incomplete",
               NOT_STARTED: "not started", NOT_RUN: "not run"}


def format_status(status: RunStatus, stages: list[str], now: float | None = None) -> str:
    now = _now() if now is None else now
    header = ("stage", "state", "units", "rows", "errors", "audio", "wall", "x real time")
    rows = [header]
    for s in status.stages:
        units = "-"
        if s.units_done is not None:
            units = f"{s.units_done}/{'?' if s.units_total is None else s.units_total}"
        rows.append((s.stage, STATE_WORDS[s.state], units,
                     "-" if s.rows is None else f"{s.rows:,}",
                     "-" if s.errors is None else f"{s.errors_total:,}",
                     _hours(s.audio_hours), _seconds(s.wall_seconds),
                     "-" if s.x_real_time is None else f"{s.x_real_time:,.0f}x"))
    lines = [f"run {status.output}", ""] + _table(rows, right={2, 3, 4, 5, 6, 7}) + [""]
    for s in status.stages:
        notes = []
        if s.errors:
            notes.append(f"{s.errors_total:,} inputs failed: "
                         + ", ".join(f"{k} {v:,}" for k, v in sorted(s.errors.items()))
                         + " (`timbrespace-ray errors` lists them)")
        if s.failure:
            ago = _ago(s.last_progress_at, now)
            notes.append(f"failed{' ' + ago if ago else ''}: {s.failure}")
        if s.detail:
            notes.append(s.detail)
        if s.state == INCOMPLETE:
            ago = _ago(s.last_progress_at, now)
            notes.append(f"last progress {ago}" if ago else "no progress recorded yet")
        if notes and (s.state != NOT_STARTED or s.stage in stages):
            lines += [f"{s.stage + ':' if i == 0 else '':{len(s.stage) + 1}} {note}"
                      for i, note in enumerate(notes)]
    unfinished = status.unfinished(stages)
    every = stages == status.default_stages()
    failed = status.failed(stages)
    if failed:
        lines.append(f"failed: {', '.join(failed)} (too many of its inputs failed; the stages "
                     "after it do not run)")
    if unfinished:
        lines.append(f"not finished: {', '.join(unfinished)}"
                     + ("" if every else f" (asked: {', '.join(stages)})"))
        if any(status.get(s).state == INCOMPLETE for s in unfinished):
            lines.append("an incomplete stage is either still running or was stopped (its last "
                         "progress tells which); rerunning its command resumes it")
        if every and any(status.get(s).state == NOT_STARTED for s in unfinished):
            lines.append("(every stage is asked about; --stage names some, e.g. --stage features)")
    else:
        lines.append(f"finished: {'every stage' if every else ', '.join(stages)}")
    return "\n".join(lines)


# errors -------------------------------------------------------------------------------------

ERROR_COLUMNS = ERRORS_SCHEMA.names  # source, utt_id, stage, error_type, message


@dataclass
class ErrorRows:
    output: str
    rows: list[dict]  # every matching row, in order: stage, error_type, utt_id
    by_type: dict[str, int]

    def to_dict(self, limit: int | None) -> dict:
        shown = self.rows if limit is None else self.rows[:limit]
        return {"output": self.output, "total": len(self.rows), "shown": len(shown),
                "by_type": self.by_type, "rows": shown}


def read_errors(output: Location, stages: list[str] | None = None,
                types: list[str] | None = None) -> ErrorRows:
    """The error rows of a run (of the given stages and error types), read from the error
    tables alone, with only the error columns."""
    if not listing(output):
        raise InspectionError(f"no timbrespace-ray run at {output.uri}: nothing is there")
    folder = output.child(ERRORS)
    names = sorted(n for n in listing(folder)
                   if n.endswith(".parquet") and not n.startswith((".", "_")))
    # the stage names a table after itself (`features-000012.parquet`): skip other stages' files
    stage_names = None if stages is None else set(stages)
    if stage_names is not None:
        names = [n for n in names if "-" not in n or n.rsplit("-", 1)[0] in stage_names]
    paths = [folder.child(n).path for n in names]
    tables = []
    if paths:
        with storage_errors("read", folder.uri):
            blobs = folder.fs.cat(paths, on_error="return")  # concurrent on object stores
        for path in paths:
            blob = blobs.get(path)
            if blob is None or isinstance(blob, FileNotFoundError):
                continue  # removed since the listing
            if isinstance(blob, BaseException):
                with storage_errors("read", folder.child(posixpath.basename(path)).uri):
                    raise blob
            part = pq.ParquetFile(io.BytesIO(blob))
            tables.append(part.read(columns=[c for c in ERROR_COLUMNS
                                             if c in part.schema_arrow.names]))
    rows: list[dict] = []
    if tables:
        table = pa.concat_tables(tables, promote_options="default")
        if stage_names is not None and "stage" in table.column_names:
            table = table.filter(pc.is_in(table.column("stage"), pa.array(sorted(stage_names))))
        if types:
            wanted = {t.lower() for t in types}
            keep = [str(t).lower() in wanted for t in table.column("error_type").to_pylist()]
            table = table.filter(pa.array(keep, pa.bool_()))
        rows = table.to_pylist()
    order = {name: i for i, name in enumerate(NAMES)}
    rows = [{c: r.get(c) for c in ("stage", "error_type", "utt_id", "source", "message")}
            for r in rows]
    rows.sort(key=lambda r: (order.get(r["stage"], len(order)), r["stage"] or "",
                             r["error_type"] or "", r["utt_id"] or "", r["source"] or ""))
    return ErrorRows(output.uri, rows, dict(sorted(Counter(r["error_type"] for r in rows).items())))


def format_errors(errors: ErrorRows, limit: int | None, width: int) -> str:
    if not errors.rows:
        return f"no error rows in {errors.output}/{ERRORS}"
    total = len(errors.rows)
    shown = errors.rows if limit is None else errors.rows[:limit]
    lines = [f"{total:,} error row{'s' if total != 1 else ''}: "
             + ", ".join(f"{k} {v:,}" for k, v in errors.by_type.items()), ""]
    if shown:
        stage_w = max(len("stage"), *(len(r["stage"] or "") for r in shown))
        type_w = max(len("error_type"), *(len(r["error_type"] or "") for r in shown))
        utt_w = min(40, max(len("utt_id"), *(len(r["utt_id"] or "") for r in shown)))
        msg_w = max(20, width - stage_w - type_w - utt_w - 6)
        table = [("stage", "error_type", "utt_id", "message")]
        for r in shown:
            table.append((r["stage"] or "", r["error_type"] or "",
                          clip(r["utt_id"], utt_w, keep_end=True), clip(r["message"], msg_w)))
        lines += _table(table, right=set())
    if len(shown) < total:
        lines += ["", f"... and {total - len(shown):,} more (--limit 0 shows all; --csv or --json "
                      "gives every row with its source and whole message)"]
    return "\n".join(lines)


def errors_csv(errors: ErrorRows, limit: int | None, stream) -> None:
    import csv

    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["stage", "error_type", "utt_id", "source", "message"])
    for r in errors.rows if limit is None else errors.rows[:limit]:
        writer.writerow([r["stage"], r["error_type"], r["utt_id"], r["source"], r["message"]])
