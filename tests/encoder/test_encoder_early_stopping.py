"""Early stopping's bookkeeping on validation-loss sequences whose stopping point is known."""
from timbrespace_ray.encoder.early_stopping import EarlyStopping


def _stop_step(early, losses, every=10):
    for i, loss in enumerate(losses, start=1):
        early.update(i * every, loss)
        if early.exhausted:
            return i * every
    return None


def test_stops_after_patience_validations_without_a_new_best():
    early = EarlyStopping(patience=3, min_delta=0.0)
    # best at the 4th validation (step 40), then three that do not beat it
    assert _stop_step(early, [5.0, 4.0, 3.5, 3.0, 3.2, 3.0, 3.1, 2.0]) == 70
    assert (early.best_loss, early.best_step, early.stale) == (3.0, 40, 3)


def test_an_improvement_smaller_than_min_delta_does_not_count():
    early = EarlyStopping(patience=2, min_delta=0.1)
    # 2.95 and 2.91 are lower than 3.0 by less than 0.1: the best stays step 10's
    assert _stop_step(early, [3.0, 2.95, 2.91, 2.5]) == 30
    assert (early.best_loss, early.best_step) == (3.0, 10)


def test_a_new_best_resets_the_count():
    early = EarlyStopping(patience=2, min_delta=0.0)
    assert _stop_step(early, [3.0, 3.1, 2.9, 3.0, 2.8, 2.9, 2.95]) == 70
    assert early.best_step == 50


def test_patience_0_never_stops_but_still_tracks_the_best():
    early = EarlyStopping(patience=0, min_delta=0.0)
    assert not early.enabled
    assert _stop_step(early, [3.0] + [4.0] * 50) is None
    assert early.best_step == 10


def test_the_state_resumes_where_it_was():
    early = EarlyStopping(patience=2, min_delta=0.0)
    _stop_step(early, [3.0, 3.5])  # one validation without improvement
    resumed = EarlyStopping.resumed(2, 0.0, early.state())
    assert resumed == early
    assert resumed.update(30, 3.2) is False and resumed.exhausted  # the second: stop
    assert EarlyStopping.resumed(2, 0.0, None) == EarlyStopping(2, 0.0)
