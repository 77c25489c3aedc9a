"""A map stage's totals: saved as units finish, so a resume reads one file and the markers of
the units finished since, not one marker per unit."""
import json

import pytest

from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.executors.base import UnitStats, WorkUnit
from timbrespace_ray.stages import base
from timbrespace_ray.stages.base import MapStage
from timbrespace_ray.stages.totals import TOTALS, Totals
from timbrespace_ray.storage import Location


class Counting(MapStage):
    name = "features"

    def __init__(self, output: Location, n: int):
        super().__init__(output)
        self.folder = output.child("features")
        self.n = n
        self.processed: list[int] = []

    def plan(self):
        return [WorkUnit(i, ()) for i in range(self.n)]

    def process(self, unit):
        self.processed.append(unit.index)
        stats = UnitStats(unit.index, inputs=2, rows=1, frames=10 * unit.index,
                          audio_seconds=1.5)
        if unit.index % 5 == 3:
            stats.add_error("AudioDecodeError", f"u{unit.index}.wav", "not audio")
        return stats


@pytest.fixture
def read_calls(monkeypatch):
    calls = []
    real = base.read_all

    def counting(folder, names, *args, **kwargs):
        calls.append(list(names))
        return real(folder, names, *args, **kwargs)

    monkeypatch.setattr(base, "read_all", counting)
    return calls


def _figures(summary):
    return (summary.units_total, summary.inputs, summary.rows, summary.frames,
            summary.errors, summary.error_examples, round(summary.audio_hours * 3600, 6))


def test_a_resume_reads_the_totals_and_only_the_markers_they_miss(tmp_path, read_calls):
    out = Location.of(str(tmp_path))
    first = Counting(out, 40).run(LocalExecutor())
    expected = (40, 80, 40, sum(10 * i for i in range(40)), {"AudioDecodeError": 8},
                {"AudioDecodeError": ["u3.wav", "not audio"]}, 60.0)
    assert _figures(first) == expected and read_calls == []  # this run's units: no read
    where = tmp_path / "_run" / "features" / TOTALS
    assert json.loads(where.read_text())["covered"] == [[0, 39]]
    (tmp_path / "_run" / "features" / "summary.json").unlink()  # resume a "finished" stage

    stage = Counting(out, 40)
    assert _figures(stage.run(LocalExecutor())) == expected
    assert stage.processed == [] and read_calls == []  # the totals alone
    # totals saved before the last 10 units finished (a driver killed between two saves)
    partial = Totals()
    for u in range(30):
        partial.add(Counting(out, 40).process(WorkUnit(u, ())))
    partial.save(Location.of(str(where)))
    (tmp_path / "_run" / "features" / "summary.json").unlink()
    assert _figures(Counting(out, 40).run(LocalExecutor())) == expected
    assert read_calls == [[f"{u:06d}.json" for u in range(30, 40)]]
    # totals that count a unit whose marker is gone are not trusted: every marker is read,
    # and the unit runs again
    (tmp_path / "_run" / "features" / "done" / "000007.json").unlink()
    (tmp_path / "_run" / "features" / "summary.json").unlink()
    read_calls.clear()
    stage = Counting(out, 40)
    assert _figures(stage.run(LocalExecutor())) == expected
    assert stage.processed == [7] and len(read_calls[0]) == 39


def test_totals_do_not_depend_on_the_order_units_finish_in():
    stats = [UnitStats(u, inputs=1, rows=1, frames=u, audio_seconds=0.5) for u in range(12)]
    for u in (9, 4):
        stats[u].add_error("SegmentRangeError", f"u{u}", "past the end")
    forward, backward = Totals(), Totals()
    for s in stats:
        forward.add(s)
        forward.add(s)  # counted once
    for s in reversed(stats):
        backward.add(s)
    assert forward.to_json() == backward.to_json()
    assert forward.error_examples == {"SegmentRangeError": ["u4", "past the end"]}
    assert forward.inputs == 12 and forward.errors["SegmentRangeError"] == 2
    again = Totals.from_json(json.loads(json.dumps(forward.to_json())))
    assert again.to_json() == forward.to_json() and again.covered == set(range(12))
    sparse = Totals()
    for u in (0, 1, 2, 5, 7, 8):
        sparse.add(UnitStats(u))
    assert sparse.to_json()["covered"] == [[0, 2], [5, 5], [7, 8]]
