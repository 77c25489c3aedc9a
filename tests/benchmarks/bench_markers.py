"""Resume and status of a stage of 100,000 units on S3: what finding the finished ones costs.

A SeaweedFS S3 server on loopback (`tests/helpers/infra/s3.py`), reached through a proxy that
adds --latency-ms to every request (30 ms: about what a cloud object store adds;
`tests/helpers/infra/proxy.py`), holds a run whose features stage planned --units units and
finished them all but its summary: `_run/features/plan.parquet` and one marker per unit in
`_run/features/done/` (a UnitStats JSON each, as the stage writes them). Then, each timed:

  resume    the stage's own resume path, `MapStage.execute` with nothing left to run: the
            plan, the listing of the markers (by prefix, concurrently), its saved totals
            (`_run/features/totals.json`) and the markers they do not cover (read in batches
            fsspec sends at once): with totals missing the last --since units (a driver
            killed between two saves), with totals that cover every unit, and with --unsaved
            none saved (every marker read: a run whose driver died before its first save);
  status    `inspection.run_status` (what `timbrespace-ray status` prints): listings and the
            plan's footer, no marker opened;
  the same two, one request after another: the folder's plain listing (one page of 1,000 names
  after another) and the markers read one by one, timed on --sample markers and projected to
  all of them.

Run: .venv/bin/python tests/benchmarks/bench_markers.py [--units 100000] [--latency-ms 30]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from helpers.infra.proxy import FlakyProxy  # noqa: E402
from helpers.infra.s3 import SeaweedS3  # noqa: E402
from timbrespace_ray import inspection  # noqa: E402
from timbrespace_ray.executors import LocalExecutor  # noqa: E402
from timbrespace_ray.executors.base import UnitStats, WorkUnit  # noqa: E402
from timbrespace_ray.markers import listing  # noqa: E402
from timbrespace_ray.stages.base import MapStage  # noqa: E402
from timbrespace_ray.stages.plan import PlanWriter  # noqa: E402
from timbrespace_ray.stages.totals import TOTALS, Totals  # noqa: E402
from timbrespace_ray.storage import Location  # noqa: E402


class FinishedStage(MapStage):
    """A features stage whose units are all done: resuming it runs none."""

    name = "features"

    def __init__(self, output: Location, units: list[WorkUnit]):
        super().__init__(output)
        self.folder = output.child("features")
        self.units = units

    def plan(self) -> list[WorkUnit]:
        return self.units

    def process(self, unit: WorkUnit) -> UnitStats:
        raise AssertionError("every unit is done: none should run")


def populate(output: Location, n: int) -> list[WorkUnit]:
    units = [WorkUnit(i, ({"reader": "file", "count": 1, "size": 1000, "alone": False,
                           "source": f"s3://corpus/{i}.wav", "utt_id": f"{i}.wav"},))
             for i in range(n)]
    plan = PlanWriter(output.child("_run", "features", "plan.parquet"))
    for unit in units:
        plan.add(list(unit.items))
    plan.close({})
    done = output.child("_run", "features", "done")
    stats = {f"{done.path}/{u.name}.json": json.dumps(asdict(marker_stats(u))).encode()
             for u in units}
    paths = sorted(stats)
    for i in range(0, len(paths), 5000):
        output.fs.pipe({p: stats[p] for p in paths[i:i + 5000]})
    return units


def marker_stats(unit: WorkUnit) -> UnitStats:
    return UnitStats(unit.index, inputs=1, rows=1, frames=500, audio_seconds=8.0,
                     busy_seconds=0.5, started_at=1.7e9)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--unsaved", action="store_true",
                        help="also resume with no totals saved: every marker read (about 9 ms "
                        "each at 30 ms of latency: 15 min for 100,000)")
    parser.add_argument("--since", type=int, default=1000,
                        help="units finished after the last save of the totals")
    parser.add_argument("--sample", type=int, default=300,
                        help="markers read one by one, projected to all")
    args = parser.parse_args()
    with SeaweedS3.start() as s3:
        bucket = s3.create_bucket("markers")
        direct = Location.of(f"s3://{bucket}/run", s3.storage_options)
        _, upload = timed(lambda: populate(direct, args.units))
        print(f"{args.units:,} markers and the plan written in {upload:.0f} s (direct)")
        port = int(s3.endpoint_url.rsplit(":", 1)[1])
        latency = args.latency_ms / 1000
        with FlakyProxy(("127.0.0.1", port), latency_s=(latency, latency),
                        max_lifetime_s=3600.0, idle_timeout_s=600.0) as proxy:
            opts = {**s3.storage_options, "endpoint_url": proxy.url}
            output = Location.of(f"s3://{bucket}/run", opts)
            units = [WorkUnit(i, ()) for i in range(args.units)]
            stage = FinishedStage(output, units)
            where = output.child("_run", "features", TOTALS)
            resumes = {}
            since = min(args.since, args.units)
            cases = (["no totals saved"] if args.unsaved else []) + [
                f"totals saved, {since:,} units finished since", "totals cover every unit"]
            for case in cases:
                if case == "no totals saved":
                    where.remove()
                if "since" in case:  # what a driver killed between two saves leaves
                    partial = Totals()
                    for u in units[:args.units - since]:
                        partial.add(marker_stats(u))
                    partial.save(where)
                summary, resumes[case] = timed(lambda: stage.execute(LocalExecutor()))
                assert summary.units_total == args.units and summary.units_run == 0
                assert summary.rows == args.units and summary.frames == 500 * args.units
                # the last case starts from the totals the one before saved
            status, status_s = timed(lambda: inspection.run_status(output))
            features = status.get("features")
            assert features.units_done == args.units, features
            done = output.child("_run", "features", "done")
            names, plain_listing = timed(lambda: listing(done))
            assert len(names) == args.units
            sample = sorted(names)[:args.sample]
            _, one_by_one = timed(lambda: [done.child(n).read_bytes() for n in sample])
            serial = plain_listing + one_by_one * args.units / len(sample)
        print(f"latency {args.latency_ms:g} ms per request, {args.units:,} units all done:")
        for case, seconds in resumes.items():
            print(f"  resume, {case:48s} {seconds:8.1f} s")
        print(f"  status (listings and the plan's footer){'':25s} {status_s:8.1f} s")
        print(f"  one request after another: the plain listing {plain_listing:.1f} s + "
              f"{args.units:,} marker reads ~{serial - plain_listing:,.0f} s (timed on "
              f"{len(sample)}) = ~{serial:,.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
