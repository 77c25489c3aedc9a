"""`--dry-run`: what a run would do, before any unit runs (no Ray is started).

The features stage plans, and keeps the plan, so that the real run then processes exactly the
units described. The summary gives the inputs, units and bytes; hours of audio where the plan
knows them (segment bounds, a `duration` column) or can estimate them (the headers of a few
recordings, sampled evenly); and the CPU-hours of each stage at the per-CPU rates measured by
`tests/benchmarks/bench_pipeline.py` (docs/performance.md).
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import soundfile as sf

from .stages.plan import Plan, known_seconds, unit_items
from .storage import Location

log = logging.getLogger(__name__)

# CPU-seconds per hour of audio, from bench_pipeline.py's per-stage CPU-hours per 1,000 h of
# audio (docs/performance.md: a 2-core AMD EPYC with AVX2, float32 encoder; the other machines
# measured are faster)
RATES_MEASURED_ON = "a 2-core AMD EPYC (AVX2), docs/performance.md"
CPU_SECONDS_PER_AUDIO_HOUR = {"features": 18.0, "profile": 3.24, "tokens": 4.32, "embed": 56.5,
                              "kmeans": 0.108}
KMEANS_HOURS_CAP = 31.0  # k-means costs no more once its 7 M-frame sample is full
TRAIN_CPU_SECONDS_PER_STEP = 3.56  # 1.78 s a step on 2 CPUs
HEADER_SAMPLES = 8


@dataclass
class PlanSummary:
    units: int
    inputs: int                # utterances (segments, files, rows) the plan names
    items: int                 # recordings, shards or tables read as one
    readers: Counter = field(default_factory=Counter)
    bytes_known: int = 0
    items_sized: int = 0
    known_seconds: float = 0.0  # from segment bounds or a duration column
    inputs_timed: int = 0
    estimated_seconds: float | None = None  # the other inputs, from sampled headers
    headers_sampled: int = 0

    @property
    def hours(self) -> float | None:
        untimed = self.inputs - self.inputs_timed
        if untimed and self.estimated_seconds is None:
            return None if not self.inputs_timed else self.known_seconds / 3600
        return (self.known_seconds + (self.estimated_seconds or 0.0)) / 3600

    @property
    def complete_hours(self) -> bool:
        return self.inputs_timed == self.inputs or self.estimated_seconds is not None


def summarise(plan: Plan, storage_options: dict | None = None,
              samples: int = HEADER_SAMPLES) -> PlanSummary:
    """The plan summed up from its index alone, and hours estimated from the headers of a few
    recordings of units spread evenly over those the plan does not time."""
    summary = PlanSummary(plan.index.num_rows, plan.total("utterances"), plan.total("items"),
                          Counter(plan.readers), plan.total("bytes_known"),
                          plan.total("items_sized"), plan.total("seconds_known"),
                          plan.total("utterances_timed"))
    untimed_inputs = summary.inputs - summary.inputs_timed
    if untimed_inputs:
        summary.estimated_seconds, summary.headers_sampled = _estimate(
            plan, untimed_inputs, storage_options or {}, samples)
    return summary


def _estimate(plan: Plan, untimed_inputs: int, storage_options: dict, samples: int
              ) -> tuple[float | None, int]:
    """Seconds of the `untimed_inputs` inputs that the plan does not time: the mean duration
    of the recordings whose headers could be read, one from each of `samples` units spread
    evenly over the units with such inputs, times that number (None when no header could be
    read: tar shards, Parquet audio, a codec soundfile cannot read)."""
    untimed = [u for u, n, t in zip(plan.units(), plan.index.column("utterances").to_pylist(),
                                    plan.index.column("utterances_timed").to_pylist()) if t < n]
    step = max(1, len(untimed) // max(1, samples))
    durations = []
    for unit in untimed[::step][:samples]:
        item = next((i for i in unit_items(plan.location, unit)
                     if "source" in i and i["reader"] in ("file", "manifest")
                     and known_seconds(i)[1] < i["count"]), None)
        if item is None:
            continue
        try:
            loc = Location.of(item["source"], storage_options)
            # small blocks: a header is a few KB, an object store's default block is 5 MB
            with loc.fs.open(loc.path, "rb", block_size=1 << 16) as fh:
                durations.append(sf.info(fh).duration)
        except Exception as exc:  # noqa: BLE001 - any unreadable header: left out of the mean
            log.debug("dry run: no header from %s: %s", item["source"], exc)
    if not durations:
        return None, 0
    return untimed_inputs * sum(durations) / len(durations), len(durations)


def projected_cpu_hours(stages: tuple[str, ...], hours: float | None, train_steps: int | None
                        ) -> dict[str, float | None]:
    """CPU-hours of each stage at the measured rates (None where the hours are unknown)."""
    out: dict[str, float | None] = {}
    for stage in stages:
        if stage == "train":
            out[stage] = None if train_steps is None else (
                train_steps * TRAIN_CPU_SECONDS_PER_STEP / 3600)
        elif hours is None:
            out[stage] = None
        else:
            audio = min(hours, KMEANS_HOURS_CAP) if stage == "kmeans" else hours
            out[stage] = CPU_SECONDS_PER_AUDIO_HOUR[stage] * audio / 3600
    return out


def report(summary: PlanSummary, plan_uri: str, stages: tuple[str, ...],
           train_steps: int | None, cpus: int | None = None) -> str:
    """The dry run's text: the plan summed up, then the projected cost."""
    cpus = cpus or os.cpu_count() or 1
    readers = ", ".join(f"{n:,} {r}" for r, n in summary.readers.most_common())
    lines = [f"dry run: nothing processed; the plan is kept in {plan_uri}, and the run uses it",
             f"  inputs   {summary.inputs:,} utterances in {summary.items:,} items ({readers})",
             f"  units    {summary.units:,} (~{summary.inputs / max(1, summary.units):,.0f} "
             "utterances each)",
             "  bytes    " + (
                 "unknown: the plan holds no sizes (a manifest is planned without a request "
                 "per file)" if not summary.items_sized else
                 f"{_bytes(summary.bytes_known)} in the {summary.items_sized:,} items of known "
                 "size" + (f"; {summary.items - summary.items_sized:,} unknown"
                           if summary.items_sized < summary.items else ""))]
    hours = summary.hours
    if hours is None:
        lines.append("  audio    unknown: no segment bounds or duration column, and no header "
                     "could be read")
    else:
        how = [f"{_time(summary.known_seconds / 3600)} from the plan's bounds and durations "
               f"({summary.inputs_timed:,} utterances)"] if summary.inputs_timed else []
        if summary.estimated_seconds is not None:
            how.append(f"~{_time(summary.estimated_seconds / 3600)} estimated for "
                       f"{summary.inputs - summary.inputs_timed:,} utterances from "
                       f"{summary.headers_sampled} sampled headers")
        elif not summary.complete_hours:
            how.append(f"{summary.inputs - summary.inputs_timed:,} utterances of unknown "
                       "duration left out")
        lines.append(f"  audio    {'~' if summary.estimated_seconds else ''}{_time(hours)}: "
                     + "; ".join(how))
    costs = projected_cpu_hours(stages, hours, train_steps)
    lines.append(f"  projected CPU time at the rates measured on {RATES_MEASURED_ON}:")
    for stage, cost in costs.items():
        lines.append(f"    {stage:9s}{'unknown' if cost is None else _time(cost):>10s}")
    if all(c is not None for c in costs.values()):
        total = sum(costs.values())
        lines.append(f"    {'all':9s}{_time(total):>10s}   ~{_time(total / cpus)} of wall time "
                     f"on {cpus} CPUs")
    return "\n".join(lines)


def _bytes(n: float) -> str:
    if n < 1000:
        return f"{n:,.0f} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:,.1f} {unit}"
    return f"{n / 1000:,.1f} TB"


def _time(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.3g} s"
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:,.1f} h"
