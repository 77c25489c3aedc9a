"""The whole pipeline's output on the bundled corpus (the demo's run, shared with the terminal
test): every stage reported, tables that follow their contracts, models and reports that load
safely, the evaluation (the documentation's queries: tests/test_docs_snippets.py)."""
import json

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from timbrespace_ray.cli import main
from timbrespace_ray.clustering import KMeansModel
from timbrespace_ray.encoder import load_encoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline_out(demo):
    """The demo's run (conftest.py): every stage over the bundled corpus, then evaluate."""
    out, raw, _ = demo
    return out, raw


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
    assert all(n == m and mx < 32 for _, n, m, mx in tokens)
    emb = pq.read_table(out / "embeddings")
    assert str(emb.schema.field("embedding").type) == "fixed_size_list<element: float>[128]"
    assert set(emb.column("utt_id").to_pylist()) == {r[0] for r in feats}
    assert np.isfinite(np.stack(emb.column("embedding").to_numpy(zero_copy_only=False))).all()
    assert [p.name for p in (out / "errors").iterdir()] == ["empty.parquet"]  # nothing failed
    assert pq.read_metadata(out / "errors" / "empty.parquet").num_rows == 0
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
    assert model.n_clusters == 32
    assert torch.load(out / "kmeans" / "cluster_centers.pt", weights_only=True).shape == (32, 6)
    assert "CLUSTER DISTRIBUTION" in (out / "kmeans" / "report.txt").read_text()
    assert json.loads((out / "kmeans" / "quality.json").read_text())["n_clusters"] == 32
    assert (out / "kmeans" / "clusters.png").read_bytes()[:4] == b"\x89PNG"
    encoder = load_encoder(str(out / "encoder"))
    assert encoder.hidden_dim == 128 and encoder.vocab_size == 34
    metrics = [json.loads(line) for line in (out / "encoder" / "metrics.jsonl").read_text().splitlines()]
    # the demo fixture's 10 steps, logged every 5
    assert [m["step"] for m in metrics if m["kind"] == "step"] == [5, 10]
    assert json.loads((out / "encoder" / "training.json").read_text())["step"] == 10


def test_evaluate_speakers_on_the_pipeline_output(pipeline_out, capsys):
    out, raw = pipeline_out
    # the demo evaluates all recordings: with a few percent held out of 10, no speaker would
    # have a pair
    folder = out / "evaluation" / "speaker"
    doc = json.loads((folder / "evaluation.json").read_text())
    assert list(doc["representations"]) == [
        "embeddings", "embeddings, normalised", "feature statistics", "bag of tokens",
        "untrained encoder", "untrained encoder, centred"]
    assert all(0 <= r["auc"] <= 1 for r in doc["representations"].values())
    assert doc["utterances"]["evaluated"] == 10 and doc["labels"]["count"] == 6
    assert doc["representations"]["embeddings"]["pairs"]["target"] == 10  # 5 LibriVox files
    assert "| representation" in raw and "| untrained encoder, centred" in raw
    assert (folder / "roc_det.png").read_bytes()[:4] == b"\x89PNG"
    assert "| bag of tokens" in (folder / "evaluation.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", "--output", str(out), "--label", "accent"]) == 2
    assert "the labels there are speaker, corpus, language, pitch_level" in capsys.readouterr().err
