"""Tokens stage over a features stage's output, with the published model."""
import shutil

import duckdb
import numpy as np
import pytest

from helpers.data import DEMO_CORPUS, N120_MODEL, load_vector
from helpers.corpus import SHORT
from timbrespace_ray.config import load_config
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.errors import UpstreamIncompleteError
from timbrespace_ray.stages.tokens import TokensStage
from timbrespace_ray.storage import Location

quiet = lambda s: None  # noqa: E731


@pytest.fixture(scope="module")
def features_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for p in SHORT[:4]:
        shutil.copy(p, root / p.name)
    out = tmp_path_factory.mktemp("out")
    FeaturesStage(Location.of(str(out)), str(root), load_config().features).run(LocalExecutor())
    return out


def test_tokens_equal_reference_tokens_f32(features_out):
    summary = TokensStage(Location.of(str(features_out)), str(N120_MODEL)).run(LocalExecutor())
    assert summary.rows == 4 and summary.audio_hours > 0
    rows = duckdb.sql(f"select utt_id, n_frames, tokens from '{features_out}/tokens/*.parquet'").fetchall()
    assert len(rows) == 4
    for utt_id, n_frames, tokens in rows:
        expected = load_vector(utt_id.removesuffix(".wav"))["tokens_f32"]
        assert n_frames == len(tokens) == len(expected)
        assert np.mean(np.asarray(tokens) == expected) >= 0.99, utt_id
    schema = duckdb.sql(f"describe select * from '{features_out}/tokens/*.parquet'").fetchall()
    assert ("tokens", "SMALLINT[]") in [(c[0], c[1]) for c in schema]


def test_tokens_need_complete_features(tmp_path):
    with pytest.raises(UpstreamIncompleteError, match="timbrespace-ray features"):
        TokensStage(Location.of(str(tmp_path)), str(N120_MODEL)).plan()


def test_demo_corpus_has_reference_vectors():
    # the tokens test above relies on every bundled recording having reference vectors
    assert all(load_vector(p.stem)["tokens_f32"].size for p in DEMO_CORPUS.glob("*.wav"))
