"""Fault injection, inputs: a zoo of bad and unusual files in one corpus, run once through the
features stage in-process and once on a real Ray cluster. Every input ends up as a features row
or as exactly one errors row with a clear message, the stage finishes, and nothing is lost:
inputs seen = rows + errors, in the StageSummary and in the Parquet tables (counted with duckdb).

The per-kind expectations live in tests/helpers/zoo.py; docs/reliability.md publishes them (checked at
the end of this module)."""
from __future__ import annotations

import json
import math
import os
import posixpath
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from helpers import zoo
from timbrespace_ray.config import load_config
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.storage import Location
from helpers.logs import lines_said

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"


def _rows(out: Path) -> dict[str, dict]:
    rel = duckdb.sql(f"select utt_id, source, duration_s, sample_rate, n_frames, len(f0) as f0_len "
                     f"from '{out}/features/*.parquet'")
    rows = [dict(zip(rel.columns, r)) for r in rel.fetchall()]
    assert len(rows) == len({r["utt_id"] for r in rows}), "an input has two features rows"
    return {r["utt_id"]: r for r in rows}


def _errors(out: Path) -> list[dict]:
    if not list((out / "errors").glob("*.parquet")):
        return []
    rel = duckdb.sql(f"select * from '{out}/errors/*.parquet'")
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def _run_local(input_uri: Path, out: Path, **features):
    cfg = load_config(**{f"features.{k}": v for k, v in features.items()})
    stage = FeaturesStage(Location.of(str(out)), str(input_uri), cfg.features)
    with lines_said() as lines:
        summary = stage.run(LocalExecutor())
    return summary, lines


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("zoo")
    root = base / "corpus"
    kinds = zoo.build_zoo(root)
    out = base / "out"
    summary, lines = _run_local(root, out)
    return {"base": base, "root": root, "kinds": kinds, "out": out, "summary": summary,
            "lines": lines, "rows": _rows(out), "errors": _errors(out)}


@pytest.fixture(scope="module")
def manifest_run(zoo_run):
    base = zoo_run["base"]
    manifest = base / "manifest.csv"
    kinds = zoo.build_manifest(manifest, zoo_run["root"])
    out = base / "out-manifest"
    # 2 of its 3 rows fail on purpose: more than the stage allows by default
    summary, lines = _run_local(manifest, out, max_duration_s=zoo.MANIFEST_MAX_DURATION_S,
                                max_error_share=1.0)
    return {"kinds": kinds, "out": out, "summary": summary, "rows": _rows(out),
            "errors": _errors(out)}


def _check_kind(run: dict, name: str) -> None:
    kind = run["kinds"][name]
    rows, errors = run["rows"], run["errors"]
    errors_by_id: dict[str, list[dict]] = {}
    for e in errors:
        errors_by_id.setdefault(e["utt_id"], []).append(e)
    for exp in kind.expect:
        got_errors = errors_by_id.get(exp.utt_id, [])
        if exp.processed:
            assert not got_errors, f"{exp.utt_id}: expected a features row, got {got_errors}"
            assert exp.utt_id in rows, f"{exp.utt_id}: no features row"
            row = rows[exp.utt_id]
            assert row["n_frames"] == row["f0_len"] > 0
            assert row["source"].startswith("file://")
            for column, value in exp.values:
                if isinstance(value, float):
                    assert math.isclose(row[column], value, rel_tol=1e-3), (column, row[column])
                else:
                    assert row[column] == value, (column, row[column])
        else:
            assert exp.utt_id not in rows, f"{exp.utt_id}: expected an error, got a features row"
            assert len(got_errors) == 1, f"{exp.utt_id}: expected one errors row, got {got_errors}"
            err = got_errors[0]
            assert err["stage"] == "features"
            assert err["error_type"] == exp.error_type, err
            assert exp.message in err["message"], err
            # actionable: one line that names the input it is about
            assert "\n" not in err["message"]
            assert posixpath.basename(exp.utt_id.rstrip("/")) in err["message"], err
    for rel in kind.not_inputs:
        assert not (set(rows) | set(errors_by_id)) & {rel}, f"{rel} was taken as an input"
        assert not any(rel in r["source"] for r in [*rows.values(), *errors]), rel


@pytest.mark.parametrize("name", zoo.KIND_NAMES)
def test_zoo_kind(zoo_run, name):
    _check_kind(zoo_run, name)


@pytest.mark.parametrize("name", zoo.MANIFEST_KINDS)
def test_manifest_kind(manifest_run, name):
    _check_kind(manifest_run, name)


def _check_accounting(run: dict) -> None:
    summary, rows, errors = run["summary"], run["rows"], run["errors"]
    expected = zoo.expectations(run["kinds"])
    n_errors = sum(summary.errors.values())
    # the StageSummary: inputs seen = rows + errors, and equal to what the corpus holds
    assert summary.inputs == summary.rows + n_errors == len(expected)
    assert summary.rows == sum(e.processed for e in expected.values())
    assert summary.errors == dict(Counter(e.error_type for e in expected.values() if not e.processed))
    # the Parquet tables, counted by duckdb, say the same
    out = run["out"]
    n_rows = duckdb.sql(f"select count(*) from '{out}/features/*.parquet'").fetchall()[0][0]
    by_type = dict(duckdb.sql(f"select error_type, count(*) from '{out}/errors/*.parquet' "
                              "group by 1").fetchall())
    assert n_rows == summary.rows and by_type == summary.errors
    # every input exactly once, nothing extra
    error_ids = [e["utt_id"] for e in errors]
    assert len(error_ids) == len(set(error_ids))
    assert sorted([*rows, *error_ids]) == sorted(expected)
    # the run's history and its summary carry the same totals
    runs = list((out / "_run" / "history").glob("features-*.json"))
    assert len(runs) == 1 and (out / "_run" / "features" / "summary.json").exists()
    doc = json.loads(runs[0].read_text())
    assert (doc["inputs"], doc["rows"], doc["errors"]) == (summary.inputs, summary.rows, summary.errors)


def test_every_input_is_one_row_or_one_error(zoo_run):
    _check_accounting(zoo_run)
    line = (f"inputs seen {zoo_run['summary'].inputs} = rows {zoo_run['summary'].rows} + "
            f"errors {sum(zoo_run['summary'].errors.values())}")
    assert any(line in s for s in zoo_run["lines"])


def test_manifest_run_accounts_for_every_row(manifest_run):
    _check_accounting(manifest_run)


def test_zoo_covers_every_kind_it_claims(zoo_run):
    assert tuple(zoo_run["kinds"]) == zoo.KIND_NAMES
    assert len(zoo.KIND_NAMES) + len(zoo.MANIFEST_KINDS) >= 20


def test_archive_members_never_reach_the_disk(zoo_run, manifest_run, tmp_path_factory):
    names = {"escape.wav", "tsr-abs-escape.wav"}
    base = tmp_path_factory.getbasetemp()
    found = [os.path.join(d, f) for top in (base, base.parent) for d, _, files in os.walk(top)
             for f in files if f in names]
    assert not found, found
    assert not Path("/tmp/tsr-abs-escape.wav").exists()
    # ... yet both members were read, by name, from inside the shard
    assert {"shards/escape.tar/../escape.wav",
            "shards/escape.tar//tmp/tsr-abs-escape.wav"} <= set(zoo_run["rows"])


@pytest.mark.slow
def test_ray_cluster_run_equals_the_local_run(zoo_run, ray_cluster, tmp_path):
    out = tmp_path / "ray-out"
    proc = subprocess.run(
        [sys.executable, "-m", "timbrespace_ray.cli", "features", "--input", str(zoo_run["root"]),
         "--output", str(out), "--address", ray_cluster.address, "--no-progress"],
        env=ray_cluster.env, cwd=REPO, capture_output=True, text=True, timeout=400)
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, logs[-4000:]
    s = zoo_run["summary"]
    assert f"inputs seen {s.inputs} = rows {s.rows} + errors {sum(s.errors.values())}" in logs
    assert "Traceback" not in logs
    local = zoo_run["out"]
    for table in ("features", "errors"):
        q = "select * from '{}/" + table + "/*.parquet' order by utt_id"
        got, want = duckdb.sql(q.format(out)).fetchall(), duckdb.sql(q.format(local)).fetchall()
        assert len(got) == len(want) and got == want, table


# --- the published table ---------------------------------------------------------------------

def _doc_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\|\s*`([a-z0-9_]+)`\s*\|", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in line.strip().strip("|").split("|")]
    return rows


def test_published_table_matches_the_tests(zoo_run, manifest_run):
    rows = _doc_rows()
    kinds = {**zoo_run["kinds"], **manifest_run["kinds"]}
    for name, kind in kinds.items():
        assert name in rows, f"docs/reliability.md has no row for {name}"
        _, injected, outcome, test = rows[name][:4]
        for exp in kind.expect:
            assert (exp.error_type or "processed") in outcome, (name, outcome)
        test_fn = "test_zoo_kind" if name in zoo.KIND_NAMES else "test_manifest_kind"
        assert f"test_reliability_inputs.py::{test_fn}[{name}]" in test, (name, test)
    # every other row names a test that exists
    for name, cells in rows.items():
        for ref in re.findall(r"(tests/[\w/]+\.py)::(\w+)", cells[3]):
            path, fn = ref
            assert re.search(rf"^(async )?def {fn}\(", (REPO / path).read_text(), re.M), (name, ref)
    assert len(rows) >= len(kinds)
    s = zoo_run["summary"]
    n_err = sum(s.errors.values())
    assert f"({s.inputs} inputs: {s.rows} processed, {n_err} errors)" in DOC.read_text()
