"""The train stage's step budget from the corpus's size and its early stopping, in this process,
on a corpus whose validation loss rises from the first steps (helpers.token_corpus)."""
import json

import pytest
import torch

from helpers.token_corpus import EARLY_STOPPING, held_out_sequences, unseen_tokens_corpus
from timbrespace_ray.config import load_config
from timbrespace_ray.encoder import load_encoder
from timbrespace_ray.encoder.loop import validation_metrics
from timbrespace_ray.executors import LocalExecutor, local
from timbrespace_ray.stages.train import TrainStage
from timbrespace_ray.storage import Location

# 6 training utterances (the stage counts 12 x (1 - 0.5)) in batches of 4: 2 steps an epoch,
# 30 epochs: 60 steps planned. Validations at steps 5, 10, 15...: the first is the best, the
# next two are worse, and patience 2 stops the run at step 15
TINY = EARLY_STOPPING


def _rows(out, kind):
    lines = (out / "encoder" / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if m["kind"] == kind]


def _check_stopped_at_15_with_step_5s_weights(out, tc, detail):
    assert (detail["steps_planned"], detail["step"], detail["stop_reason"]) == (
        60, 15, "early stopping")
    validation = _rows(out, "validation")
    assert [m["step"] for m in validation] == [5, 10, 15]
    losses = [m["loss"] for m in validation]
    assert losses[0] < losses[1] and losses[0] < losses[2]
    assert (detail["best_step"], detail["encoder_step"]) == (5, 5)
    assert detail["best_loss"] == losses[0] and detail["final_loss"] == losses[2]
    assert [m["step"] for m in _rows(out, "step")] == [10, 15]  # the last step is logged
    # the encoder written is step 5's: it scores the held-out utterances as step 5 did
    model = load_encoder(str(out / "encoder"))
    held = held_out_sequences(Location.of(str(out)))
    again = validation_metrics(model, held, tc.max_len, tc.batch_size, torch.device("cpu"),
                               tc.seed, tc.bf16)
    assert again["loss"] == pytest.approx(losses[0], rel=1e-5)
    assert again["loss"] != pytest.approx(losses[2], rel=1e-2)


def test_early_stopping_keeps_the_best_weights_and_says_why(tmp_path, said):
    output = unseen_tokens_corpus(str(tmp_path))
    cfg = load_config(**TINY)
    detail = TrainStage(output, cfg.train).run(LocalExecutor()).detail
    _check_stopped_at_15_with_step_5s_weights(tmp_path, cfg.train, detail)
    record = json.loads((tmp_path / "encoder" / "training.json").read_text())
    assert record == {k: v for k, v in detail.items() if k != "text"}
    assert record["early_stopping"] == {"patience": 2, "min_delta": 0.0, "validation_every": 5}
    assert any(line.startswith("train: 12 sequences") and "60 steps (30.0 epochs)" in line
               for line in said)
    assert (f"train: stopped early at step 15 of 60 (validation loss {detail['final_loss']:.4f}, "
            f"best {detail['best_loss']:.4f} at step 5; patience 2)") in said[-1]
    assert "encoder: step 5's weights" in said[-1]


class _Killed(Exception):
    pass


def test_a_run_killed_mid_training_resumes_with_its_early_stopping_state(tmp_path, said,
                                                                         monkeypatch):
    """Killed just after the checkpoint of step 10 (best: step 5, one worse validation since),
    the rerun needs that state to stop at step 15 with step 5's weights: started afresh from
    step 10 it would take step 15 for the best and go on to step 25."""
    output = unseen_tokens_corpus(str(tmp_path))
    cfg = load_config(**TINY)

    def report(self, metrics):
        if metrics["step"] == 10:
            raise _Killed
    monkeypatch.setattr(local._Context, "report", report)
    with pytest.raises(_Killed):
        TrainStage(output, cfg.train).run(LocalExecutor())
    assert not (tmp_path / "_run" / "train" / "summary.json").exists()
    monkeypatch.undo()

    said.clear()
    detail = TrainStage(output, cfg.train).run(LocalExecutor()).detail
    assert any("steps 10 -> 60" in line for line in said)
    _check_stopped_at_15_with_step_5s_weights(tmp_path, cfg.train, detail)
