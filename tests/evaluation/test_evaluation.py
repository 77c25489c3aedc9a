"""The evaluation's representations and utterance choice on hand-made tables, and
`run_evaluation` / `timbrespace-ray evaluate` on a tiny hand-made pipeline output."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from timbrespace_ray.cli import main
from timbrespace_ray.config import PipelineConfig
from timbrespace_ray.encoder import (EmbeddingNormalization, ProsodicSequenceEncoder, embed,
                                     split_windows)
from timbrespace_ray.encoder import precision
from timbrespace_ray.encoder.batching import collate
from timbrespace_ray.encoder.split import is_validation, split_position
from timbrespace_ray.errors import ConfigError, ModelFormatError
from timbrespace_ray.errors import InconsistentPartsError
from timbrespace_ray.evaluation.report import DESCRIPTIONS, card_section
from timbrespace_ray.evaluation.representations import (compared, encoder_vectors,
                                                        feature_statistics, standardised,
                                                        token_frequencies, untrained_encoder)
from timbrespace_ray.evaluation.run import NOT_HELD_OUT, run_evaluation, run_evaluations
from timbrespace_ray.evaluation.selection import SAMPLE_SEED, Holdout, candidates, cutoff
from timbrespace_ray.features import FEATURE_NAMES
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.storage import Location
from timbrespace_ray.tables import carried_metadata, provenance, write_table
from helpers.logs import lines_said
from timbrespace_ray.layout import RunLayout
from timbrespace_ray.stages.train import TRAINING_RECORD

TINY = {"vocab_size": 6, "hidden_dim": 8, "num_layers": 1, "nhead": 2, "pos_max_len": 16}


def offsets_of(rows):
    return np.r_[0, np.cumsum([len(r) for r in rows])]


# ---- representations ------------------------------------------------------------------------

def test_feature_statistics_over_measured_frames():
    rng = np.random.default_rng(0)
    utterances = []
    for n, unmeasured_f1 in [(30, False), (12, True), (5, False)]:
        frames = {k: rng.random(n) for k in FEATURE_NAMES}
        silent = rng.random(n) < 0.4  # outside voiced segments: every feature 0
        for k in FEATURE_NAMES:
            frames[k][silent] = 0.0
        # a tracker target not assigned in some voiced frames: F0 (the others keep values,
        # as the snr does from F1 and F2), F2
        frames["f0"][rng.random(n) < 0.2] = 0.0
        frames["f2"][rng.random(n) < 0.3] = 0.0
        if unmeasured_f1:
            frames["f1"][:] = 0.0
        utterances.append(frames)
    flat = {k: np.concatenate([u[k] for u in utterances]) for k in FEATURE_NAMES}
    stats = feature_statistics(flat, offsets_of([u["f0"] for u in utterances]))
    assert stats.shape == (3, 12)
    for row, u in enumerate(utterances):
        for k, name in enumerate(FEATURE_NAMES):
            by = {"f1": "f1", "f2": "f2"}.get(name, "f0")
            values = u[name][u[by] != 0]
            if len(values) == 0:
                assert np.isnan(stats[row, 2 * k:2 * k + 2]).all()
            else:
                np.testing.assert_allclose(stats[row, 2 * k:2 * k + 2],
                                           [np.mean(values), np.std(values)], atol=1e-12)
    assert np.isnan(stats[1, 4])  # f1 never measured in the second utterance


def test_token_frequencies_are_shares_of_frames():
    rows = [np.array([0, 0, 3, 5]), np.array([2]), np.array([], int), np.array([5, 5, 5])]
    freqs = token_frequencies(np.concatenate(rows), offsets_of(rows), 6)
    for f, r in zip(freqs, rows):
        np.testing.assert_allclose(f, np.bincount(r, minlength=6) / max(len(r), 1))


def test_standardised_columns():
    x = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0], [5.0, 5.0, 4.0], [7.0, 5.0, np.nan]])
    z = standardised(x)
    np.testing.assert_allclose(z[:, 0], (x[:, 0] - 4) / np.std(x[:, 0]))
    np.testing.assert_array_equal(z[:, 1], 0.0)  # constant
    np.testing.assert_allclose(z[:, 2], [0.0, -1.0, 1.0, 0.0])  # missing -> the mean


def test_untrained_encoder_is_seeded_and_leaves_the_random_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b = untrained_encoder(TINY), untrained_encoder(TINY)
    assert torch.equal(torch.rand(3), expected)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_encoder_vectors_are_token_weighted_means_of_windows(monkeypatch):
    # float32 on every CPU: bf16's rounding differs between batchings more than the tolerance
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    model = untrained_encoder(TINY)
    rows = [np.arange(40) % 6, np.array([1, 2, 3]), np.arange(16) % 5]  # 40 tokens: 3 windows
    got = encoder_vectors(model, np.concatenate(rows), offsets_of(rows), batch_tokens=32)
    for row, seq in zip(got, rows):
        windows = split_windows(len(seq), 16)
        batch = collate([seq[s:s + n] for _, s, n in windows])
        vectors = embed(model, batch.tokens, batch.lengths).numpy()
        weights = np.array([n for *_, n in windows], float)
        np.testing.assert_allclose(row, (vectors * weights[:, None]).sum(0) / weights.sum(),
                                   atol=1e-5)


def test_compared_representations():
    rng = np.random.default_rng(5)
    vectors = {"embeddings": rng.normal(size=(7, 8)), "untrained encoder": rng.normal(size=(7, 8)),
               "feature statistics": rng.normal(size=(7, 12)),
               "token frequencies": rng.dirichlet(np.ones(6), size=7)}
    normalization = EmbeddingNormalization.fit(rng.normal(size=(30, 8)), "whiten")
    got = compared(vectors, normalization)
    np.testing.assert_allclose(got["embeddings, normalised"],
                               normalization.apply(vectors["embeddings"]))
    roots = np.sqrt(vectors["token frequencies"])
    np.testing.assert_allclose(got["bag of tokens"], roots - roots.mean(0))
    stats = vectors["feature statistics"]
    np.testing.assert_allclose(got["feature statistics"], (stats - stats.mean(0)) / stats.std(0))
    untrained = vectors["untrained encoder"]
    np.testing.assert_array_equal(got["untrained encoder"], untrained)
    np.testing.assert_allclose(got["untrained encoder, centred"], untrained - untrained.mean(0))
    np.testing.assert_array_equal(got["embeddings"], vectors["embeddings"])


# ---- which utterances -----------------------------------------------------------------------

def test_candidates_once_each_labelled_and_held_out():
    ids = ["u1", "u1", "u2", "u3", "u3", "u4", "u5"]  # one row per window
    labels = ["a", "a", None, "b", "b", "a", "c"]
    found = candidates(ids, labels, None, None)
    assert sorted(found.utt_ids) == ["u1", "u3", "u4", "u5"]
    assert list(found.positions) == sorted(split_position(u, SAMPLE_SEED) for u in found.utt_ids)
    assert (found.seen, found.unlabelled, found.trained_on) == (5, 1, 0)
    assert dict(zip(found.utt_ids, found.labels)) == {"u1": "a", "u3": "b", "u4": "a", "u5": "c"}
    holdout = Holdout(0.5, "speaker", 7)
    keys = ["s1", "s1", "s2", "s3", "s3", "s4", "s5"]
    held = candidates(ids, labels, keys, holdout)
    expected = {u for u, k, lab in zip(ids, keys, labels) if lab and is_validation(k, 0.5, 7)}
    assert set(held.utt_ids) == expected and held.trained_on == 4 - len(expected)
    first = held.first_of_each_label()
    assert all(first[lab] == min(p for p, m in zip(held.positions, held.labels) if m == lab)
               for lab in first)


def test_cutoff_keeps_the_first_in_sampling_order():
    parts = [np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.3]), np.array([])]
    assert cutoff(parts, 3) == 0.3
    assert cutoff(parts, 5) == np.inf == cutoff(parts, 9)


def test_holdout_from_the_encoder_success_document():
    assert Holdout.of({"step": 3}) is None
    assert Holdout.of({"validation": {"fraction": 0.1, "key": "utt_id", "seed": 2}}) == \
        Holdout(0.1, "utt_id", 2)
    with pytest.raises(ModelFormatError, match="validation"):
        Holdout.of({"validation": {"fraction": 0.1}})


# ---- run_evaluation on a hand-made output ---------------------------------------------------

SPEAKERS = ["ann"] * 5 + ["bob"] * 4 + ["cy"] * 3 + [None]


def write_output(root, n_parts=2, speaker="speaker"):
    """features/tokens/embeddings parts of 13 utterances (3 speakers, one unlabelled; in the
    column `speaker`) whose embeddings are their speaker's direction plus noise, and an encoder
    folder."""
    rng = np.random.default_rng(0)
    out = Location.of(str(root))
    config = ProsodicSequenceEncoder(**TINY).config
    directions = {s: rng.normal(size=8) for s in ("ann", "bob", "cy", None)}
    carried = [speaker, "gender"]
    rows = [[] for _ in range(n_parts)]
    for i, who in enumerate(SPEAKERS):
        n = int(rng.integers(10, 40))
        frames = {k: np.where(rng.random(n) < 0.3, 0.0, rng.random(n)).astype(np.float32)
                  for k in FEATURE_NAMES}
        rows[i % n_parts].append({"utt_id": f"utt{i:02d}", speaker: who, "gender": "f",
                                  "n_frames": n, "tokens": rng.integers(0, 6, n).astype(np.int16),
                                  **frames})
    def meta(stage, settings):
        return {**provenance(stage, settings), **carried_metadata(carried)}

    for p, part_rows in enumerate(rows):
        name = f"part-{p:06d}.parquet"
        base = {"utt_id": [r["utt_id"] for r in part_rows],
                "n_frames": pa.array([r["n_frames"] for r in part_rows], pa.int32())}
        tail = {k: [r[k] for r in part_rows] for k in carried}
        write_table(out.child("features", name), pa.table({
            **base, **{k: pa.array([r[k] for r in part_rows], pa.list_(pa.float32()))
                       for k in FEATURE_NAMES}, **tail}), meta("features", {}))
        write_table(out.child("tokens", name), pa.table({
            **base, "tokens": pa.array([r["tokens"] for r in part_rows], pa.list_(pa.int16())),
            **tail}), meta("tokens", {"n_clusters": 6}))
        windows = [(r, w, s, n) for r in part_rows for w, s, n in split_windows(r["n_frames"], 16)]
        vectors = np.stack([directions[r[speaker]] + 0.3 * rng.normal(size=8)
                            for r, *_ in windows]).astype(np.float32)
        write_table(out.child("embeddings", name), pa.table({
            "utt_id": [r["utt_id"] for r, *_ in windows],
            "window": pa.array([w for _, w, _, _ in windows], pa.int32()),
            "start_frame": pa.array([s for *_, s, _ in windows], pa.int32()),
            "n_frames": pa.array([n for *_, n in windows], pa.int32()),
            **{k: [r[k] for r, *_ in windows] for k in carried},
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 8)}),
            meta("embeddings", {"model": config}))
    layout = RunLayout(out)
    for stage in ("features", "tokens", "train", "embed"):
        layout.summary(stage).write_json({"stage": stage})
    out.child("encoder", TRAINING_RECORD).write_json({"step": 1})
    return out


def evaluate(root, label="speaker", **kw):
    with lines_said() as lines:
        doc = run_evaluation(PipelineConfig(output=str(root)), label, **kw,
                             executor=LocalExecutor())
    return doc, "\n".join(lines)


@pytest.fixture
def output(tmp_path):
    return write_output(tmp_path / "out")


def test_evaluation_of_a_small_output(output, tmp_path):
    doc, printed = evaluate(tmp_path / "out")
    folder = tmp_path / "out" / "evaluation" / "speaker"
    written = json.loads((folder / "evaluation.json").read_text())
    assert written == doc and list(written["representations"]) == list(DESCRIPTIONS)
    assert (folder / "roc_det.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (folder / "evaluation.md").read_text()
    assert doc["utterances"] | {"validation": None} == {
        "requested": "heldout", "which": "all", "held_out": False, "validation": None,
        "trained_on": None,
        "seen": 13, "unlabelled": 1, "left_out_as_trained_on": 0, "evaluated": 12, "sampled": False,
        "max_utterances": 20_000}
    assert doc["labels"]["count"] == 3 and doc["normalization"]["source"].startswith("fitted")
    for name, r in doc["representations"].items():
        assert 0 <= r["auc"] <= 1 and 0 <= r["eer"] <= 1, name
        assert r["pairs"] == {"scored": 66, "total": 66, "sampled": False, "target": 19,
                              "non_target": 47}
        assert f"| {name}" in markdown and f"| {name}" in printed
    assert doc["representations"]["embeddings"]["dim"] == 8
    assert doc["representations"]["feature statistics"]["dim"] == 12
    assert doc["representations"]["bag of tokens"]["dim"] == 6
    # the embeddings were made to separate the speakers; the random baselines were not
    assert doc["representations"]["embeddings"]["auc"] > 0.95
    assert doc["representations"]["embeddings"]["nearest_neighbour"]["accuracy"] == 1.0
    assert doc["representations"]["bag of tokens"]["auc"] < 0.8
    assert NOT_HELD_OUT in markdown and NOT_HELD_OUT in printed


def test_held_out_utterances_and_the_stored_normalisation(output, tmp_path):
    validation = {"fraction": 0.5, "key": "utt_id", "seed": 3}
    output.child("encoder", TRAINING_RECORD).write_json({"step": 1, "validation": validation})
    output.child("encoder", "normalization.json").write_atomic(
        EmbeddingNormalization.fit(np.random.default_rng(1).normal(size=(20, 8)),
                                   "whiten").to_json().encode())
    held = [f"utt{i:02d}" for i, s in enumerate(SPEAKERS)
            if s and is_validation(f"utt{i:02d}", 0.5, 3)]
    assert len({SPEAKERS[int(u[3:])] for u in held}) >= 2  # the seed leaves something to compare
    doc, printed = evaluate(tmp_path / "out")
    u = doc["utterances"]
    assert (u["which"], u["held_out"], u["validation"]) == ("heldout", True, validation)
    assert u["evaluated"] == len(held) and u["left_out_as_trained_on"] == 12 - len(held)
    assert NOT_HELD_OUT not in printed
    assert doc["normalization"] == {"source": "encoder", "method": "whiten", "fitted_on": 20}
    doc, printed = evaluate(tmp_path / "out", utterances="all")
    assert doc["utterances"]["evaluated"] == 12 and NOT_HELD_OUT in printed


def test_a_sample_beyond_max_utterances(output, tmp_path):
    doc, _ = evaluate(tmp_path / "out", max_utterances=6, max_pairs=10)
    assert doc["utterances"]["evaluated"] == 6 and doc["utterances"]["sampled"]
    pairs = doc["representations"]["embeddings"]["pairs"]
    assert pairs["scored"] == 10 and pairs["total"] == 15 and pairs["sampled"]


def test_parts_report_only_positions_below_a_bound_and_the_sample_is_the_same(
        output, tmp_path, monkeypatch, caplog):
    from timbrespace_ray.evaluation import parts as parts_mod, run as run_mod

    reported = []
    real = parts_mod.candidate_positions

    def counted(part, spec):
        found = real(part, spec)
        reported.append((spec.position_bound, len(found.positions)))
        return found

    monkeypatch.setattr(run_mod, "candidate_positions", counted)
    monkeypatch.setattr(run_mod, "SAMPLE_MARGIN", 1e9)  # no bound: every position reported
    whole, _ = evaluate(tmp_path / "out", max_utterances=3, max_pairs=10)
    assert {b for b, _ in reported} == {1.0}
    every = sum(n for _, n in reported)
    reported.clear()
    monkeypatch.setattr(run_mod, "SAMPLE_MARGIN", 0.2)  # a bound too low at first: raised
    bounded, _ = evaluate(tmp_path / "out", max_utterances=3, max_pairs=10)
    bounds = sorted({b for b, _ in reported})
    assert len(bounds) >= 2 and bounds[0] < 1.0
    assert sum(n for b, n in reported if b == bounds[-1]) < every
    assert bounded["utterances"] == whole["utterances"]
    assert bounded["representations"] == whole["representations"]


def test_errors_name_what_to_do(output, tmp_path):
    with pytest.raises(ConfigError, match="no label column 'accent'.*labels there are speaker, "
                       "gender$"):
        evaluate(tmp_path / "out", label="accent")
    with pytest.raises(ConfigError, match="fewer than 2 distinct 'gender' labels"):
        evaluate(tmp_path / "out", label="gender")
    output.child("encoder", TRAINING_RECORD).write_json(
        {"validation": {"fraction": 0.0, "key": "utt_id", "seed": 0}})
    with pytest.raises(ConfigError, match="among the 0 labelled.*--utterances all"):
        evaluate(tmp_path / "out")
    RunLayout(output).summary("tokens").remove()
    with pytest.raises(ConfigError, match="complete 'tokens' stage.*`timbrespace-ray tokens`"):
        evaluate(tmp_path / "out")


def test_the_default_label_is_the_speaker_column_the_profile_stage_finds(tmp_path):
    write_output(tmp_path / "out", speaker="client_id")
    doc, printed = evaluate(tmp_path / "out", label=None)
    assert doc["label"] == "client_id" and doc["labels"]["count"] == 3
    assert ("evaluate: label 'client_id', the speaker column 'client_id' (found among speaker, "
            "speaker_id, spk_id, client_id)") in printed
    assert (tmp_path / "out" / "evaluation" / "client_id" / "evaluation.json").exists()
    # profile.speaker_column (--speaker-column) decides it for evaluate too
    with pytest.raises(ConfigError, match="fewer than 2 distinct 'gender' labels"):
        run_evaluation(PipelineConfig(output=str(tmp_path / "out"),
                                      profile={"speaker_column": "gender"}),
                       executor=LocalExecutor())
    write_output(tmp_path / "other", speaker="reader")
    with pytest.raises(ConfigError, match=r"no --label given and no speaker column carried "
                       r"\(looked for speaker, speaker_id, spk_id, client_id\): name the "
                       r"column to tell apart with --label \(the tables carry reader, gender\)"):
        evaluate(tmp_path / "other", label=None)


def test_parts_that_disagree_are_an_error(tmp_path):
    write_output(tmp_path / "out", n_parts=1)
    write_output(tmp_path / "other", n_parts=2)  # its part 0 holds only half the utterances
    Location.of(str(tmp_path / "out" / "tokens" / "part-000000.parquet")).write_atomic(
        (tmp_path / "other" / "tokens" / "part-000000.parquet").read_bytes())
    with pytest.raises(InconsistentPartsError, match="not in tokens/part-000000.parquet"):
        evaluate(tmp_path / "out", utterances="all")


def test_cli_unknown_label_exits_2_naming_the_carried_columns(output, tmp_path, capsys):
    assert main(["evaluate", "--output", str(tmp_path / "out"), "--label", "accent"]) == 2
    assert "the labels there are speaker, gender" in capsys.readouterr().err


def test_every_default_label_and_the_profile_levels(output, tmp_path):
    """Without --label: the speaker column, gender (one value here: left out, with a line),
    and once profiled the pitch, variation and rate levels, joined from the profiles parts by
    utt_id; their AUCs side by side in evaluation/summary.md."""
    pitch = {"ann": "high", "bob": "high", "cy": "low", None: None}
    for part in ("part-000000.parquet", "part-000001.parquet"):
        ids = pq.read_table(tmp_path / "out" / "features" / part).column("utt_id")
        who = [SPEAKERS[int(u[3:])] for u in ids.to_pylist()]
        write_table(output.child("profiles", part), pa.table({
            "utt_id": ids, "pitch_level": [pitch[w] for w in who],
            "variation_level": ["medium" if w == "ann" else "monotone" for w in who],
            "rate_level": ["fast" if i % 2 else "slow" for i in range(len(who))]}),
            provenance("profile", {}))
    config = PipelineConfig(output=str(tmp_path / "out"))
    with lines_said() as lines:
        docs = run_evaluations(config, executor=LocalExecutor())
    assert list(docs) == ["speaker"]  # not profiled yet: no level labels
    RunLayout(output).summary("profile").write_json({"stage": "profile"})
    with lines_said() as lines:
        docs = run_evaluations(config, executor=LocalExecutor())
    assert list(docs) == ["speaker", "pitch_level", "variation_level", "rate_level"]
    assert any(line.startswith("evaluate: gender left out: fewer than 2 distinct 'gender'")
               for line in lines)
    level = docs["pitch_level"]
    assert level["labels"]["count"] == 2 and level["utterances"]["evaluated"] == 12
    assert level["representations"]["embeddings"]["pairs"]["target"] == 9 * 8 // 2 + 3
    assert docs["variation_level"]["utterances"]["evaluated"] == 13
    summary = (tmp_path / "out" / "evaluation" / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| representation"))
    assert [c.strip() for c in header.split("|")[2:6]] == [
        "speaker", "pitch_level", "variation_level", "rate_level"]


def test_an_encoder_trained_on_another_run_never_saw_these_utterances(output, tmp_path):
    """training.json's trained_on names the run whose tokens trained the encoder: another run's
    encoder evaluates every labelled utterance as unseen, this run's holds out its split."""
    validation = {"fraction": 0.5, "key": "utt_id", "seed": 3}
    record = output.child("encoder", TRAINING_RECORD)
    record.write_json({"step": 1, "validation": validation, "trained_on": "s3://b/other-run"})
    doc, printed = evaluate(tmp_path / "out")
    u = doc["utterances"]
    assert (u["which"], u["held_out"], u["evaluated"], u["validation"]) == (
        "unseen", True, 12, None)
    assert "the encoder was trained on s3://b/other-run: every utterance here is unseen" in printed
    assert NOT_HELD_OUT not in printed and any("unseen by it" in c for c in doc["caveats"])
    record.write_json({"step": 1, "validation": validation, "trained_on": output.uri})
    doc, _ = evaluate(tmp_path / "out")
    held = [i for i, s in enumerate(SPEAKERS) if s and is_validation(f"utt{i:02d}", 0.5, 3)]
    assert doc["utterances"]["which"] == "heldout" and doc["utterances"]["evaluated"] == len(held)


def test_the_card_says_where_the_default_embeddings_stand():
    def row(auc):
        return {"auc": auc, "auc_stderr": 0.01, "eer": 0.3}

    card = {"measured_by": "bench", "machine": "a CPU", "date": "2026-12-06", "sets": {
        "a": {"voices": 3, "utterances": 600, "speaker": {
            "embeddings, fine-tuned from the shipped encoder": row(0.70),
            "feature statistics": row(0.60), "bag of tokens": row(0.65)}},
        "b": {"voices": 5, "utterances": 300, "speaker": {
            "embeddings, fine-tuned from the shipped encoder": row(0.60),
            "feature statistics": row(0.62), "bag of tokens": row(0.75)}}}}
    text = card_section(card)
    assert "lead the best baseline on 1 of 2 sets" in text
    assert "a +0.050 against bag of tokens; b -0.150 against bag of tokens" in text
    assert "| b   | 5               | 300" in text and "0.600 ± 0.010" in text
    assert "better than these embeddings in every set" not in text
    card["sets"]["a"]["speaker"]["feature statistics"] = row(0.80)
    assert "on 0 of 2 sets" in card_section(card)
    assert "better than these embeddings in every set" in card_section(card)
    assert card_section(None) == "No evaluation on voices never heard ships with this package."
