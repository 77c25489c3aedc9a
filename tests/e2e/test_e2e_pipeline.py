"""The whole pipeline on the bundled corpus through `ray job submit` on a local Ray cluster."""
import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from helpers.terminal import RAY_LINE
from timbrespace_ray.clustering import KMeansModel
from timbrespace_ray.encoder import load_encoder

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

CONFIG = """
kmeans: {n_clusters: 16, n_init: 2}
train: {hidden_dim: 32, num_layers: 1, nhead: 2, max_len: 256, batch_size: 4, pool_batches: 2,
        max_steps: 20, lr: 0.001, warmup_steps: 2, log_every: 5, checkpoint_every: 10}
embed: {batch_size: 8}
"""


@pytest.fixture(scope="module")
def pipeline_out(ray_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    (tmp / "c.yaml").write_text(CONFIG)
    out = tmp / "out"
    code, logs = ray_cluster.submit_job(
        f"python jobs/pipeline.py run --config {tmp / 'c.yaml'} --input timbrespace_ray/demo_corpus/manifest.csv "
        f"--output {out} --no-progress", working_dir=REPO, timeout_s=600)
    assert code == 0, logs[-4000:]
    return out, logs


def q(sql):
    return duckdb.sql(sql).fetchall()


def test_every_stage_ran_and_reported(pipeline_out):
    out, logs = pipeline_out
    for stage in ("features", "profile", "kmeans", "tokens", "train", "embed"):
        assert f"==> {stage}" in logs
    assert "inputs seen 10 = rows 10 + errors 0" in logs
    for stage in ("features", "profile", "kmeans", "tokens", "train", "embed"):
        assert (out / "_run" / stage / "summary.json").exists(), stage
    runs = sorted(p.name.rsplit("-", 1)[0] for p in (out / "_run" / "history").glob("*.json"))
    assert runs == ["embed", "features", "kmeans", "profile", "profile-measures", "tokens",
                    "train"]


def test_the_job_log_holds_our_lines_not_rays(pipeline_out):
    """`ray job logs` (no terminal): bounded progress lines, none twice in a row, no worker
    output forwarded, no Ray INFO lines, no training line printed twice."""
    _, output = pipeline_out
    # the job's own log: what our driver printed, after the job supervisor's lines (Ray's own,
    # before the entrypoint starts) and before `ray job submit`'s closing ones
    lines = [line for line in output.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("Running entrypoint for job"))
    end = next(i for i, line in enumerate(lines)
               if re.search(r"-- (WebSocket closed for job|Job '[\w-]+' succeeded)", line))
    lines = lines[start + 1:end]
    logs = "\n".join(lines)
    assert lines[0] == "==> features" and len(lines) < 80, logs
    assert not [a for a, b in zip(lines, lines[1:]) if a == b]
    assert not [line for line in lines if RAY_LINE.search(line)]
    assert re.search(r"^train: [\d.]+ M parameters, 1 worker\(s\) on cpu in (float32|bfloat16)",
                     logs, re.MULTILINE), logs
    progress = [line for line in lines if re.match(r"\[[\w-]+\] \d+/\d+ (units|steps) \(", line)]
    assert len(progress) <= 20, progress  # 5 map stages of 10 units and 20 steps: not one each


def test_tables_follow_the_data_contracts(pipeline_out):
    out, _ = pipeline_out
    feats = q(f"select utt_id, source, duration_s, sample_rate, n_frames, len(f0), len(snr) "
              f"from '{out}/features/*.parquet'")
    assert len(feats) == 10 and all(r[4] == r[5] == r[6] > 0 and r[3] == 16000 for r in feats)
    schema = pq.read_schema(next((out / "features").glob("part-*.parquet")))
    assert str(schema.field("f0").type) == "list<element: float>"
    assert b"timbrespace_ray.settings" in schema.metadata
    tokens = q(f"select utt_id, n_frames, len(tokens), list_max(tokens) from '{out}/tokens/*.parquet'")
    assert sorted((u, n) for u, n, _, _ in tokens) == sorted((r[0], r[4]) for r in feats)
    assert all(n == m and mx < 16 for _, n, m, mx in tokens)
    emb = pq.read_table(out / "embeddings")
    assert str(emb.schema.field("embedding").type) == "fixed_size_list<element: float>[32]"
    assert set(emb.column("utt_id").to_pylist()) == {r[0] for r in feats}
    assert np.isfinite(np.stack(emb.column("embedding").to_numpy(zero_copy_only=False))).all()
    assert not (out / "errors").exists() or not list((out / "errors").glob("*.parquet"))
    profiles = q(f"select utt_id, n_frames, pitch_median_hz, description from '{out}/profiles/*.parquet'")
    assert sorted((u, n) for u, n, _, _ in profiles) == sorted((r[0], r[4]) for r in feats)
    assert all(60 < hz < 300 and text.endswith(("voice", "recording")) for _, _, hz, text in profiles)
    assert q(f"select count(*), sum(utterances) from '{out}/speakers/*.parquet'") == [(6, 10)]
    for table in ("features", "tokens", "embeddings", "profiles"):  # the manifest's columns, everywhere
        speakers = q(f"select distinct speaker, corpus, language from '{out}/{table}/*.parquet'")
        assert len(speakers) == 6 and ("LibriVox reader", "LibriVox", "en") in speakers, table


def test_models_and_reports_load_safely(pipeline_out):
    out, _ = pipeline_out
    model = KMeansModel.load(str(out / "kmeans"))
    assert model.n_clusters == 16
    assert torch.load(out / "kmeans" / "cluster_centers.pt", weights_only=True).shape == (16, 6)
    assert "CLUSTER DISTRIBUTION" in (out / "kmeans" / "report.txt").read_text()
    assert json.loads((out / "kmeans" / "quality.json").read_text())["n_clusters"] == 16
    assert (out / "kmeans" / "clusters.png").read_bytes()[:4] == b"\x89PNG"
    encoder = load_encoder(str(out / "encoder"))
    assert encoder.hidden_dim == 32 and encoder.vocab_size == 18
    metrics = [json.loads(line) for line in (out / "encoder" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "step"] == [5, 10, 15, 20]


def _readme_blocks(lang):
    text = (REPO / "README.md").read_text()
    return [b.split("```", 1)[0] for b in text.split(f"```{lang}\n")[1:]]


def test_readme_queries_run_on_the_output(pipeline_out):
    out, _ = pipeline_out
    queries = [b for b in _readme_blocks("sql") if "OUT/" in b]
    assert len(queries) >= 3
    for sql in queries:
        rows = duckdb.sql(sql.replace("OUT/", f"{out}/")).fetchall()
        assert rows, sql
    polars = [b for b in _readme_blocks("python") if "OUT/" in b]
    assert polars
    scope = {}
    exec(polars[0].replace("OUT/", f"{out}/"), scope)
    # the manifest's speaker column, carried: six voices (the five LibriVox files are one reader)
    assert scope["per_speaker"].height == 6 and scope["per_speaker"]["pitch_hz"].min() > 60


def test_evaluate_speakers_on_the_pipeline_output(pipeline_out, ray_cluster):
    out, _ = pipeline_out

    def evaluate(*args):
        return subprocess.run(
            [sys.executable, "-m", "timbrespace_ray.cli", "evaluate", "--output", str(out),
             "--address", ray_cluster.address, "--no-progress", *args],
            env=ray_cluster.env, cwd=REPO, capture_output=True, text=True, timeout=300)

    # all: with a few percent held out of 10 recordings, no speaker would have a pair
    proc = evaluate("--label", "speaker", "--utterances", "all")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = out / "evaluation" / "speaker"
    doc = json.loads((folder / "evaluation.json").read_text())
    assert list(doc["representations"]) == [
        "embeddings", "embeddings, normalised", "feature statistics", "bag of tokens",
        "untrained encoder", "untrained encoder, centred"]
    assert all(0 <= r["auc"] <= 1 for r in doc["representations"].values())
    assert doc["utterances"]["evaluated"] == 10 and doc["labels"]["count"] == 6
    assert doc["representations"]["embeddings"]["pairs"]["target"] == 10  # 5 LibriVox files
    assert "| representation" in proc.stdout and "| untrained encoder, centred" in proc.stdout
    assert (folder / "roc_det.png").read_bytes()[:4] == b"\x89PNG"
    assert "| bag of tokens" in (folder / "evaluation.md").read_text()
    proc = evaluate("--label", "accent")
    assert proc.returncode == 2 and "carry speaker, corpus, language" in proc.stderr
