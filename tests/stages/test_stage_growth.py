"""A rerun over an input that has grown: only what is new is planned and processed, the
downstream stages process the new parts with the models already fitted, and inputs that changed
or went are reported, never processed twice or dropped. On local disk in-process, and on S3
through a Ray cluster with the driver killed twice in the middle of the incremental rerun."""
import json
import logging
import shutil

import duckdb
import pytest

from helpers.corpus import SHORT
from helpers.reliability import (  # noqa: F401 (no_leftover_drivers: a fixture)
    Driver, no_leftover_drivers, run_cli, wait_until)
from timbrespace_ray.config import load_config
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.pipeline import run_stage
from timbrespace_ray.stages import growth
from timbrespace_ray.stages.growth import Changes, compare


def _file(name, size):
    return {"reader": "file", "count": 1, "size": size, "alone": False,
            "source": f"file:///c/{name}", "utt_id": name}


def _recording(segments):
    return {"reader": "manifest", "count": len(segments), "size": -1, "alone": False,
            "source": "file:///c/long.wav", "columns": ["speaker"], "segments": segments}


def test_new_inputs_are_planned_and_changed_or_gone_ones_counted(monkeypatch):
    monkeypatch.setattr(growth, "BATCH", 2)  # several spills of each plan
    old = [_file("a.wav", 10), _file("b.wav", 20), _file("d.wav", 5),
           _recording([["s1", 0.0, 1.0, ["x"]], ["s2", 1.0, 2.0, ["x"]]])]
    new = [_file("a.wav", 10), _file("b.wav", 25), _file("c.wav", 7),
           _recording([["s1", 0.0, 1.0, ["x"]], ["s2", 1.0, 2.5, ["x"]], ["s3", 3.0, 4.0, ["y"]]])]
    changes = Changes()
    found = list(compare(old, new, changes))
    by_source = {i["source"]: i for i in found}
    assert sorted(by_source) == ["file:///c/c.wav", "file:///c/long.wav"]
    assert by_source["file:///c/long.wav"]["segments"] == [["s3", 3.0, 4.0, ["y"]]]
    assert by_source["file:///c/long.wav"]["count"] == 1
    assert (changes.new, changes.changed, changes.gone) == (2, 2, 1)
    assert sorted(changes.examples["changed"]) == ["b.wav", "s2"]
    assert changes.examples["gone"] == ["d.wav"]
    same = Changes()
    assert list(compare(new, new, same)) == [] and (same.new, same.changed, same.gone) == (0, 0, 0)
    # the same corpus read from elsewhere: the same rows, changed, never new ones
    moved = [{**i, "source": i["source"].replace("/c/", "/elsewhere/")} for i in new]
    elsewhere = Changes()
    assert list(compare(new, moved, elsewhere)) == []
    assert (elsewhere.new, elsewhere.changed, elsewhere.gone) == (0, 6, 0)


def _ids(out, table):
    return [r[0] for r in duckdb.sql(f"select utt_id from '{out}/{table}/*.parquet' "
                                     "order by utt_id").fetchall()]


def test_a_grown_folder_is_processed_incrementally_through_tokens(tmp_path, caplog):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    for name, src in zip(("one.wav", "two.wav", "three.wav"), SHORT):
        shutil.copy(src, corpus / name)
    cfg = load_config(input=str(corpus), output=str(out), **{"kmeans.n_clusters": 8})
    for stage in ("features", "kmeans", "tokens"):
        run_stage(stage, cfg, LocalExecutor())
    model = (out / "kmeans" / "kmeans_model.json").read_bytes()
    first_parts = sorted(p.name for p in (out / "features").glob("part-*.parquet"))

    shutil.copy(SHORT[3], corpus / "four.wav")
    shutil.copy(SHORT[4], corpus / "five.wav")
    (corpus / "one.wav").unlink()
    shutil.copy(SHORT[4], corpus / "two.wav")  # another recording under the same name
    caplog.set_level(logging.INFO, logger="timbrespace_ray")
    summary = run_stage("features", cfg, LocalExecutor())
    assert (summary.units_total, summary.units_run) == (5, 2)
    assert (summary.inputs, summary.rows) == (5, 5)
    # the old parts are as they were; the new ones are beside them
    parts = sorted(p.name for p in (out / "features").glob("part-*.parquet"))
    assert parts[:3] == first_parts and len(parts) == 5
    assert _ids(out, "features") == ["five.wav", "four.wav", "one.wav", "three.wav", "two.wav"]
    changes = json.loads((out / "_run" / "features" / "changes.json").read_text())
    assert (changes["new"], changes["changed"], changes["gone"], changes["units_added"]) == \
        (2, 1, 1, 2)
    assert changes["examples"] == {"changed": ["two.wav"], "gone": ["one.wav"]}
    logged = caplog.text
    assert "2 new utterances (2 new units)" in logged
    assert "1 inputs changed since they were processed (two.wav)" in logged
    assert "1 inputs no longer in the input (one.wav)" in logged

    caplog.clear()
    run_stage("kmeans", cfg, LocalExecutor())
    assert (out / "kmeans" / "kmeans_model.json").read_bytes() == model
    assert "it is reused as it is" in caplog.text
    tokens = run_stage("tokens", cfg, LocalExecutor())
    assert (tokens.units_total, tokens.units_run) == (5, 2)
    assert _ids(out, "tokens") == _ids(out, "features")

    caplog.clear()  # nothing new: nothing runs, and the differences are said again
    again = run_stage("features", cfg, LocalExecutor())
    assert (again.units_total, again.rows) == (5, 5)
    assert "0 new utterances (0 new units); nothing to do" in caplog.text
    assert "features: already complete" in caplog.text
    assert run_stage("tokens", cfg, LocalExecutor()).units_total == 5
    assert "tokens: already complete" in caplog.text

    caplog.clear()  # the input gone: the finished stage stands, and that is said
    shutil.rmtree(corpus)
    assert run_stage("features", cfg, LocalExecutor()).rows == 5
    assert "the input could not be planned again" in caplog.text and "input not found" in caplog.text


@pytest.mark.slow
@pytest.mark.usefixtures("no_leftover_drivers")
def test_a_grown_s3_corpus_resumes_after_the_driver_is_killed_twice(
        s3_server, s3_bucket, ray_cluster, ray_s3_env, tmp_path):
    fs = s3_server.filesystem()
    for i, src in enumerate(SHORT[:3]):
        fs.put(str(src), f"{s3_bucket}/corpus/spk{i}/utt.wav")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"storage": {"storage_options": s3_server.storage_options}}))
    out = f"s3://{s3_bucket}/out"
    args = ["--input", f"s3://{s3_bucket}/corpus", "--output", out, "--config", str(config),
            "--address", ray_cluster.address, "--no-progress"]
    # the first run, in this process: what goes through the cluster is the grown corpus's rerun
    run_stage("features", load_config(str(config), input=args[1], output=out), LocalExecutor())
    for i, src in enumerate(SHORT[3:8], start=3):
        fs.put(str(src), f"{s3_bucket}/corpus/spk{i}/utt.wav")
    done = f"{s3_bucket}/out/_run/features/done"

    def markers():
        fs.invalidate_cache()
        return len(fs.ls(done))

    # 1. killed as it writes the grown plan's index: the old plan stands
    driver = Driver("features", args, ray_s3_env, pause_before_write="*/_run/features/plan.parquet")
    wait_until(lambda: driver.frozen() or driver.proc.poll() is not None, 240,
               what="the driver to pause before the grown plan")
    assert driver.frozen(), driver.output[-3000:]
    driver.kill()
    # 2. killed once a new unit is done, the others not all
    driver = Driver("features", args, ray_s3_env)
    wait_until(lambda: markers() > 3 or driver.proc.poll() is not None, 240,
               what="a new unit to finish")
    assert driver.proc.poll() is None, driver.output[-3000:]
    driver.freeze()
    first = markers()
    assert 3 < first < 8, first
    driver.kill()

    output = run_cli("features", args, ray_s3_env)
    assert "units were added to the plan and not all run" in output
    assert "features: 8 units, " in output and ", 0 to run" not in output
    assert "inputs seen 8 = rows 8 + errors 0" in output
    fs.invalidate_cache()
    with fs.open(f"{s3_bucket}/out/_run/features/plan.parquet", "rb") as fh:
        import pyarrow.parquet as pq
        assert pq.read_table(fh).num_rows == 8
    local = tmp_path / "got"
    fs.get(f"{s3_bucket}/out/features/", str(local) + "/", recursive=True)
    ids = [r[0] for r in duckdb.sql(f"select utt_id from '{local}/*.parquet'").fetchall()]
    assert sorted(ids) == [f"spk{i}/utt.wav" for i in range(8)]
    again = run_cli("features", args, ray_s3_env)
    assert "features: already complete" in again and "new utterances" not in again
