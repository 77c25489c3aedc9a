"""The features stage's plan, written in chunks: every unit's items come back from its row
group, the index sums up what the units hold, and an extended plan keeps the old units."""
import pyarrow.parquet as pq

from timbrespace_ray.stages import plan as plan_mod
from timbrespace_ray.stages.plan import Plan, PlanWriter, unit_items, write_plan
from timbrespace_ray.storage import Location


def _item(i, size=100, seconds=None):
    item = {"reader": "file", "count": 1, "size": size, "alone": False,
            "source": f"file:///c/{i:03d}.wav", "utt_id": f"{i:03d}.wav"}
    if seconds is not None:
        item["metadata"] = {"duration": seconds}
    return item


def test_units_read_their_own_items_back_across_chunks_and_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(plan_mod, "CHUNK_UNITS", 3)
    monkeypatch.setattr(plan_mod, "GROUP_UNITS", 2)
    index = Location.of(str(tmp_path / "_run" / "features" / "plan.parquet"))
    items = [_item(i, size=-1 if i % 4 == 0 else 100, seconds=2.5 if i % 2 else None)
             for i in range(40)]
    write_plan(index, iter(items), 2, 1 << 30, lambda: {"speaker": "string"})
    plan = Plan.read(index)
    units = plan.units()
    assert len(units) == 20 and [u.index for u in units] == list(range(20))
    chunks = sorted((tmp_path / "_run" / "features" / "plan").glob("chunk-*.parquet"))
    assert len(chunks) == 7 and pq.ParquetFile(chunks[0]).num_row_groups == 2
    assert [i for u in units for i in unit_items(index, u)] == items
    assert plan.metadata == {"speaker": "string"} and plan.readers == {"file": 40}
    assert (plan.total("utterances"), plan.total("items"), plan.total("items_sized")) == (40, 40, 30)
    assert plan.total("bytes_known") == 3000
    assert (plan.total("seconds_known"), plan.total("utterances_timed")) == (50.0, 20)
    assert list(plan.items()) == items

    writer = PlanWriter(index, previous=plan)
    writer.add([_item(100), _item(101)])
    writer.close(plan.metadata)
    grown = Plan.read(index)
    assert grown.index.num_rows == 21 and list(grown.items()) == items + [_item(100), _item(101)]
    assert [i for u in grown.units()[:20] for i in unit_items(index, u)] == items
    assert grown.readers == {"file": 42}


def test_plans_and_parquet_manifests_are_read_without_pyarrow_s_thread_pools(tmp_path):
    """A pyarrow pool task that drops the last reference to the reader of an in-memory file at
    interpreter exit aborts the process (exit 134) after its work is done, about one run in a
    hundred on a busy machine: plans, parts and Parquet manifests are decoded with no pool
    thread started (pq.read_table starts one even unthreaded)."""
    import subprocess
    import sys

    index = Location.of(str(tmp_path / "plan.parquet"))
    write_plan(index, iter([_item(i) for i in range(40)]), 2, 1 << 30, dict)
    code = f"""
import os
import pyarrow as pa
from timbrespace_ray.inputs.tabular import read_table
from timbrespace_ray.stages.plan import Plan
from timbrespace_ray.storage import Location
pa.array([1])  # the allocator's own thread
before = len(os.listdir("/proc/self/task"))
plan = Plan.read(Location.of({str(index.path)!r}))
read_table(Location.of({str(index.path)!r}))
print(plan.index.num_rows, len(os.listdir("/proc/self/task")) - before)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (run.returncode, run.stdout.split()) == (0, ["20", "0"]), run.stderr
