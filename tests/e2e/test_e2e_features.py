"""The features stage end to end on real services: SeaweedFS S3, a local Ray cluster,
`ray job submit`, and a driver killed with SIGKILL."""
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from helpers.corpus import SHORT, mixed_corpus
from helpers.terminal import RAY_LINE

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _read_s3_table(fs, prefix):
    tables = [pq.read_table(io.BytesIO(fs.cat_file(p))) for p in sorted(fs.glob(f"{prefix}/*.parquet"))]
    rows = [r for t in tables for r in t.to_pylist()]
    return sorted(rows, key=lambda r: r["utt_id"]), tables


def test_job_reads_and_writes_s3(s3_server, s3_bucket, ray_cluster, tmp_path):
    corpus = tmp_path / "corpus"
    counts = mixed_corpus(corpus)
    fs = s3_server.filesystem()
    fs.put(str(corpus) + "/", f"{s3_bucket}/corpus/", recursive=True)
    result = ray_cluster.submit_job(
        f"python jobs/pipeline.py features --input s3://{s3_bucket}/corpus "
        f"--output s3://{s3_bucket}/out --no-progress",
        working_dir=REPO, env=s3_server.env, timeout_s=300)
    code, logs = result
    assert code == 0, logs[-3000:]
    assert f"inputs seen {counts['inputs']} = rows {counts['rows']} + errors {counts['errors']}" in logs
    _our_lines_not_rays(logs)
    rows, tables = _read_s3_table(fs, f"{s3_bucket}/out/features")
    assert [r["utt_id"] for r in rows] == ["a/TWO.WAV", "a/b/three.flac", "one.wav",
                                           "shard-000.tar/s/five.wav", "shard-000.tar/s/four.wav"]
    assert all(r["source"].startswith(f"s3://{s3_bucket}/corpus/") for r in rows)
    assert all(len(r["f0"]) == r["n_frames"] > 100 for r in rows)
    errors, _ = _read_s3_table(fs, f"{s3_bucket}/out/errors")
    assert len(errors) == counts["errors"]
    summary = json.loads(fs.cat_file(fs.glob(f"{s3_bucket}/out/_run/history/features-*.json")[0]))
    assert summary["inputs"] == counts["inputs"] and summary["rows"] == counts["rows"]
    assert "Connecting to existing Ray cluster" not in logs  # Ray's INFO lines: not by default
    # the profile stage reads those features from S3 and writes beside them; --verbose: with
    # Ray's own lines
    code, profile_logs = ray_cluster.submit_job(
        f"python jobs/pipeline.py profile --output s3://{s3_bucket}/out --no-progress --verbose",
        working_dir=REPO, env=s3_server.env, timeout_s=300)
    assert code == 0, profile_logs[-3000:]
    assert "Connecting to existing Ray cluster" in profile_logs
    profiles, _ = _read_s3_table(fs, f"{s3_bucket}/out/profiles")
    assert [r["utt_id"] for r in profiles] == [r["utt_id"] for r in rows]
    assert all(r["description"] and r["duration_s"] == f["duration_s"] for r, f in zip(profiles, rows))
    bins = json.loads(fs.cat_file(f"{s3_bucket}/out/_run/profile/bins.json"))
    assert bins["fitted"]["utterances"] == len(rows)
    assert fs.exists(f"{s3_bucket}/out/_run/profile/summary.json")
    # credentials appear nowhere a person or a table could see them
    secret, key = s3_server.secret_key, s3_server.access_key
    texts = [logs, profile_logs, json.dumps(summary)] + [str(t.schema.metadata) for t in tables]
    texts += [json.dumps(e) for e in errors]
    assert not any(secret in t or key in t for t in texts)


def _our_lines_not_rays(output: str) -> None:
    """`ray job logs` (no terminal): the job's own log holds what our driver printed (after the
    job supervisor's lines, Ray's own, before the entrypoint starts, and before `ray job
    submit`'s closing ones): no line twice in a row, no worker output forwarded, no Ray INFO
    line, no progress line per unit."""
    lines = [line for line in output.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("Running entrypoint for job"))
    end = next(i for i, line in enumerate(lines)
               if re.search(r"-- (WebSocket closed for job|Job '[\w-]+' succeeded)", line))
    lines = lines[start + 1:end]
    text = "\n".join(lines)
    assert lines[0].startswith("features: ") and len(lines) < 30, text
    assert not [a for a, b in zip(lines, lines[1:]) if a == b], text
    assert not [line for line in lines if RAY_LINE.search(line)], text
    assert len([line for line in lines if re.match(r"\[[\w/-]+\] \d+/\d+ units \(", line)]) <= 3


def _cli(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "timbrespace_ray.cli", "features", *args],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def _table(out, name):
    return duckdb.sql(f"select * exclude (source) from '{out}/{name}/*.parquet' order by utt_id").fetchall()


def test_resume_after_kill_9_of_the_driver(ray_cluster, tmp_path):
    corpus = tmp_path / "corpus"
    for i in range(6):
        folder = corpus / f"spk{i}"
        folder.mkdir(parents=True)
        for p in SHORT:
            (folder / p.name).write_bytes(p.read_bytes())
    (corpus / "spk0" / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    config = tmp_path / "c.yaml"
    config.write_text("features:\n  files_per_unit: 1\n")
    common = ["--input", str(corpus), "--config", str(config), "--address", ray_cluster.address,
              "--no-progress"]
    clean = tmp_path / "clean"
    proc = _cli([*common, "--output", str(clean)], ray_cluster.env)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]

    resumed = tmp_path / "resumed"
    proc = _cli([*common, "--output", str(resumed)], ray_cluster.env)
    done = resumed / "_run" / "features" / "done"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(done.glob("*.json")) if done.exists() else []) < 5:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    n_done = len(list(done.glob("*.json")))
    assert 5 <= n_done < 49, "the kill should land mid-stage"
    assert not (resumed / "_run" / "features" / "summary.json").exists()

    proc = _cli([*common, "--output", str(resumed)], ray_cluster.env)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    # units already executing when the driver died may still finish and mark themselves done
    done_at_rerun = int(re.search(r"49 units, (\d+) already done", out).group(1))
    assert n_done <= done_at_rerun < 49
    assert f"{49 - done_at_rerun} to run" in out
    assert _table(resumed, "features") == _table(clean, "features")
    assert _table(resumed, "errors") == _table(clean, "errors")
    ids = [r[0] for r in _table(resumed, "features")]
    assert len(ids) == len(set(ids)) == 48

    proc = _cli([*common, "--output", str(resumed)], ray_cluster.env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "already complete" in out


def test_cli_submits_itself_to_a_dashboard_address(ray_cluster, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / SHORT[0].name).write_bytes(SHORT[0].read_bytes())
    proc = _cli(["--input", str(corpus), "--output", str(tmp_path / "out"),
                 "--address", ray_cluster.dashboard_url, "--no-progress"], ray_cluster.env)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "submitted Ray job" in out and "inputs seen 1 = rows 1 + errors 0" in out
    assert (tmp_path / "out" / "_run" / "features" / "summary.json").exists()
