"""Encoder training on Ray Train, resume, and the embedding stage, on the bundled speech."""
import json
import shutil

import duckdb
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from helpers.data import DEMO_CORPUS, N120_MODEL
from helpers.token_corpus import EARLY_STOPPING, unseen_tokens_corpus
from timbrespace_ray.clustering.model import KMeansModel
from timbrespace_ray.config import load_config
from timbrespace_ray.encoder import (EmbeddingNormalization, ProsodicSequenceEncoder,
                                     embed_utterances, load_encoder)
from timbrespace_ray.encoder.codebook import (PRETRAINED, token_map, translate_tokens,
                                              translated_state)
from timbrespace_ray.errors import ConfigError
from timbrespace_ray.encoder.split import is_validation
from timbrespace_ray.executors import LocalExecutor, RayExecutor
from timbrespace_ray.stages.embed import EmbedStage
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.stages.tokens import TokensStage
from timbrespace_ray.stages import train as train_stage
from timbrespace_ray.stages.train import TrainStage
from timbrespace_ray.storage import Location
from timbrespace_ray.tables import settings_of

quiet = lambda s: None  # noqa: E731
ALL_IDS = sorted(p.name for p in DEMO_CORPUS.glob("*.wav"))
SMALL = {"train.hidden_dim": 64, "train.num_layers": 2, "train.nhead": 4, "train.max_len": 256,
         "train.pos_max_len": 512,  # the 30 s recordings (1872 frames) embed as 4 windows
         "train.batch_size": 4, "train.pool_batches": 4, "train.log_every": 5,
         "train.checkpoint_every": 20, "train.lr": 1e-3, "train.warmup_steps": 5,
         "train.cpus_per_worker": 1.0, "train.validation_fraction": 0.3,
         "train.early_stopping_patience": 0}  # the whole budget: the tests count its steps


@pytest.fixture(scope="module")
def ray_executor():
    import ray

    executor = RayExecutor(num_cpus=2, progress_bars=False)
    executor.connect()
    yield executor
    ray.shutdown()


@pytest.fixture(scope="module")
def tokens_out(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus")
    for p in DEMO_CORPUS.glob("*.wav"):
        shutil.copy(p, corpus / p.name)
    out = tmp_path_factory.mktemp("out")
    loc = Location.of(str(out))
    # two recordings per part: Ray Data reads several blocks, whose order could vary
    features = load_config(**{"features.files_per_unit": 2}).features
    FeaturesStage(loc, str(corpus), features).run(LocalExecutor())
    TokensStage(loc, str(N120_MODEL)).run(LocalExecutor())
    return out


def _metrics(out):
    return [json.loads(line) for line in (out / "encoder" / "metrics.jsonl").read_text().splitlines()]


def test_training_lowers_the_loss_and_resumes(tokens_out, said):
    """In this process (LocalExecutor: one worker); Ray Train runs the same loop in the test
    below, the demo and the reliability tests."""
    loc = Location.of(str(tokens_out))
    cfg = load_config(**SMALL, **{"train.max_steps": 60})
    summary = TrainStage(loc, cfg.train).run(LocalExecutor()).detail
    assert summary["step"] == summary["steps_planned"] == summary["encoder_step"] == 60
    assert summary["stop_reason"] == "step budget"
    assert json.loads((tokens_out / "encoder" / "training.json").read_text()) == {
        k: v for k, v in summary.items() if k != "text"}
    steps = [m for m in _metrics(tokens_out) if m["kind"] == "step"]
    assert [m["step"] for m in steps] == list(range(5, 61, 5))
    assert np.mean([m["loss"] for m in steps[-3:]]) < np.mean([m["loss"] for m in steps[:3]]) - 0.3
    assert all(m["tokens_per_s"] > 0 and 0 <= m["accuracy"] <= 1 for m in steps)
    assert any(m["kind"] == "epoch" for m in _metrics(tokens_out))
    # the held-out utterances (30 % by a hash of utt_id) are scored after every epoch and at
    # the end, and that is the loss the summary reports, not the last batch's
    validation = [m for m in _metrics(tokens_out) if m["kind"] == "validation"]
    held = [u for u in ALL_IDS if is_validation(u, 0.3, 0)]
    assert 1 <= len(held) <= 6
    assert validation[-1]["step"] == 60 and all(m["sequences"] == len(held) for m in validation)
    assert validation[-1]["loss"] < validation[0]["loss"]
    assert summary["final_loss"] == validation[-1]["loss"]
    assert summary["final_loss_kind"] == "validation"
    assert summary["validation"] == {"fraction": 0.3, "key": "utt_id", "seed": 0}
    norm = EmbeddingNormalization.from_json(
        (tokens_out / "encoder" / "normalization.json").read_text())
    assert norm.method == "center" and norm.fitted_on == 10 - len(held)
    model = load_encoder(str(tokens_out / "encoder"))
    assert model.hidden_dim == 64 and model.vocab_size == 122

    # a finished run reruns as a no-op; more steps resume from the checkpoint
    said.clear()
    TrainStage(loc, cfg.train).run(LocalExecutor())
    assert said[0].startswith("train: already complete (60 steps, validation loss ")
    (tokens_out / "_run" / "train" / "summary.json").unlink()
    more = load_config(**SMALL, **{"train.max_steps": 80})
    assert TrainStage(loc, more.train).run(LocalExecutor()).detail["step"] == 80
    resumed = [m["step"] for m in _metrics(tokens_out) if m["kind"] == "step"]
    assert resumed == list(range(5, 81, 5))  # no step trained twice


def test_embeddings_per_window_and_speaker_structure(tokens_out):
    if not (tokens_out / "encoder" / "training.json").exists():
        pytest.fail("needs the trained encoder of the test above")
    loc = Location.of(str(tokens_out))
    cfg = load_config(**{"embed.batch_tokens": 256})
    summary = EmbedStage(loc, cfg.embed).run(LocalExecutor())
    assert summary.rows == 10
    rows = duckdb.sql(f"""select utt_id, "window", start_frame, n_frames, embedding
                          from '{tokens_out}/embeddings/*.parquet' order by utt_id, "window" """).fetchall()
    tokens = dict(duckdb.sql(f"select utt_id, n_frames from '{tokens_out}/tokens/*.parquet'").fetchall())
    covered = {}
    for utt, window, start, n, emb in rows:
        assert len(emb) == 64 and np.all(np.isfinite(emb))
        assert start == covered.get(utt, 0)
        covered[utt] = start + n
    assert covered == tokens
    assert max(w for _, w, *_ in rows) == 3  # sequences longer than pos_max_len are windowed
    # the encoder's stored normalisation, applied: centred on its fit's mean, unit length
    raw, normalized = duckdb.sql(f"""select embedding, embedding_normalized
        from '{tokens_out}/embeddings/*.parquet' limit 3""").fetchnumpy().values()
    mean = np.asarray(json.loads((tokens_out / "encoder" / "normalization.json").read_text())["mean"])
    for r, n in zip(raw, normalized):
        centred = np.asarray(r) - mean
        np.testing.assert_allclose(n, centred / np.linalg.norm(centred), rtol=1e-4, atol=1e-6)
    assert all(n <= 512 for *_, n, _ in rows)
    # same-speaker pairs (the LibriVox reader) should be closer than different-speaker pairs
    emb = {}
    for utt, _, _, n, e in rows:
        emb.setdefault(utt, []).append(np.asarray(e) * n)
    ids = sorted(emb)
    x = np.stack([np.sum(emb[u], 0) for u in ids])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    speaker = ["librivox" if "librivox" in u else u for u in ids]
    sim = x @ x.T
    same = [sim[i, j] for i in range(len(ids)) for j in range(i + 1, len(ids)) if speaker[i] == speaker[j]]
    diff = [sim[i, j] for i in range(len(ids)) for j in range(i + 1, len(ids)) if speaker[i] != speaker[j]]
    auc = np.mean([s > d for s in same for d in diff])
    print(f"same-speaker closer than different-speaker: {auc:.2f} of pairs (chance 0.50)")
    assert len(same) == 10 and auc > 0.6


def test_same_seed_same_weights_whatever_the_part_order(tokens_out, ray_executor, tmp_path,
                                                       monkeypatch):
    """On Ray (Ray Data reads the parts): the same seed trains the same weights whatever order
    the parts are listed in; in this process, another seed trains other weights."""
    assert (tokens_out / "_run" / "tokens" / "summary.json").exists()  # the fixture's tokens
    cfg = load_config(**{**SMALL, "train.max_steps": 12, "train.checkpoint_every": 5})
    weights = {}
    for run, seed, executor in [("a", 0, ray_executor), ("b", 0, ray_executor),
                                ("local", 0, LocalExecutor()), ("other seed", 1, LocalExecutor())]:
        out = tmp_path / run
        for folder in ("tokens", "_run/tokens"):
            shutil.copytree(tokens_out / folder, out / folder)
        if run == "b":  # the parts listed in another order
            monkeypatch.setattr(train_stage, "complete_parts",
                                lambda *a, f=train_stage.complete_parts: f(*a)[::-1])
        stage_cfg = cfg.train.model_copy(update={"seed": seed})
        TrainStage(Location.of(str(out)), stage_cfg).run(executor)
        monkeypatch.undo()
        weights[run] = load_encoder(str(out / "encoder")).state_dict()
        assert (out / "encoder" / "normalization.json").exists()

    def same(x, y):
        return all(torch.equal(weights[x][k], weights[y][k]) for k in weights[x])

    assert same("a", "b") and not same("local", "other seed")
    shape = load_encoder(str(tmp_path / "a" / "encoder")).config
    torch.manual_seed(0)  # training moved the weights from the seed's initial ones
    initial = ProsodicSequenceEncoder(**shape).state_dict()
    assert not all(torch.equal(weights["a"][k], initial[k]) for k in initial)


@pytest.mark.timeout(300)  # a worker that trained on would wait in DDP's all-reduce forever
def test_workers_stop_early_together_on_ray_train(ray_executor, tmp_path):
    """Two Ray Train workers: rank 0 decides and both stop at the same step."""
    output = unseen_tokens_corpus(str(tmp_path))
    # 6 training utterances, batches of 4 on each of 2 workers: 1 step an epoch, 30 planned
    cfg = load_config(**{**EARLY_STOPPING, "train.num_workers": 2,
                         "train.cpus_per_worker": 0.5})  # beside Ray Train's coordinator
    detail = TrainStage(output, cfg.train).run(ray_executor).detail
    assert (detail["steps_planned"], detail["step"], detail["stop_reason"]) == (
        30, 15, "early stopping")
    assert (detail["best_step"], detail["encoder_step"]) == (5, 5)
    assert [m["step"] for m in _metrics(tmp_path) if m["kind"] == "validation"] == [5, 10, 15]


def _tokens_only(tokens_out, target):
    """A copy of the tokens run without anything the train and embed stages wrote."""
    shutil.copytree(tokens_out, target, ignore=lambda d, names: {
        n for n in names if n in ("encoder", "embeddings", "evaluation")
        or (d.endswith("_run") and n in ("train", "embed"))})
    return Location.of(str(target))


def _published_in_pretrained_ids():
    return token_map(KMeansModel.load(str(N120_MODEL)).feature_space_centers(),
                     KMeansModel.load(str(PRETRAINED)).feature_space_centers())


def test_training_starts_from_the_pretrained_encoder_in_this_runs_codebook(tokens_out, tmp_path):
    # the recipe's shape is the shipped encoder's; a step at a negligible learning rate leaves
    # the weights where training started
    still = {"train.max_len": 64, "train.batch_size": 4, "train.max_steps": 1,
             "train.lr": 1e-9, "train.warmup_steps": 0, "train.validation_fraction": 0.3,
             "train.early_stopping_patience": 0, "train.cpus_per_worker": 1.0}
    expected = translated_state(load_encoder(PRETRAINED), _published_in_pretrained_ids(), 122)
    rows = "token_embedding.embedding.weight"
    for init in ("pretrained", "scratch"):
        out = tmp_path / init
        loc = _tokens_only(tokens_out, out)
        detail = TrainStage(loc, load_config(**still, **{"train.init": init}).train).run(
            LocalExecutor()).detail
        assert detail["init"] == init
        state = load_encoder(out / "encoder").state_dict()
        close = all(torch.allclose(state[k], expected[k], atol=1e-4) for k in expected)
        assert close == (init == "pretrained"), init
        assert not torch.allclose(state[rows], load_encoder(PRETRAINED).state_dict()[rows],
                                  atol=1e-4)  # the rows were reordered, not copied as they were
        # the encoder keeps the codebook its ids are ids of: the run's
        assert (out / "encoder" / "kmeans_model.json").read_bytes() == (
            N120_MODEL / "kmeans_model.json").read_bytes()
    # an encoder of another shape named as the start is refused; the default falls back
    with pytest.raises(ConfigError, match="train.init .*shape"):
        TrainStage(_tokens_only(tokens_out, tmp_path / "mismatch"), load_config(**SMALL, **{
            "train.init": str(tmp_path / "pretrained" / "encoder")}).train).run(LocalExecutor())


def test_embed_without_an_encoder_uses_the_pretrained_one(tokens_out, tmp_path):
    loc = _tokens_only(tokens_out, tmp_path / "run")
    EmbedStage(loc, load_config().embed).run(LocalExecutor())
    table = pq.read_table(tmp_path / "run" / "embeddings")
    settings = settings_of(table.schema)
    assert settings["checkpoint"] == str(PRETRAINED) and settings["tokens_translated"]
    tokens = pq.read_table(tmp_path / "run" / "tokens", columns=["utt_id", "tokens"]).to_pydict()
    model = load_encoder(PRETRAINED)
    mapping = _published_in_pretrained_ids()
    short = [i for i, t in enumerate(tokens["tokens"]) if len(t) <= model.pos_max_len][0]
    expected = embed_utterances(model, translate_tokens([np.asarray(tokens["tokens"][short])],
                                                        mapping), 1)[0]
    row = table.filter(pc.equal(table["utt_id"], tokens["utt_id"][short]))
    got = np.asarray(row["embedding"][0].as_py())
    assert got.shape == (model.hidden_dim,)
    assert np.dot(got, expected) / np.linalg.norm(got) / np.linalg.norm(expected) > 0.999
    # without the translation the same tokens embed elsewhere
    untranslated = embed_utterances(model, [np.asarray(tokens["tokens"][short])], 1)[0]
    assert np.dot(got, untranslated) / np.linalg.norm(got) / np.linalg.norm(untranslated) < 0.99
