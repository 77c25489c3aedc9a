"""The train stage's progress on the driver's terminal while Ray Train runs the steps elsewhere.

Rank 0 posts its step, loss and messages to a small actor (at most once a second, and at the
last step); a thread of the driver reads it and moves the stage's bar (or writes its bounded
lines, progress.py). The workers print nothing themselves: Ray Train would forward each line
twice (its print patch logs it, and the worker's captured stdout repeats it)."""
from __future__ import annotations

import threading
import time

from ..progress import StageProgress

POST_INTERVAL_S = 1.0
POLL_INTERVAL_S = 1.0


class _Board:
    """The actor between rank 0 and the driver."""

    def __init__(self):
        self.step, self.facts, self.messages = None, None, []

    def post(self, step: int | None, facts: str | None, messages: list[str]) -> None:
        if step is not None:
            self.step, self.facts = step, facts
        self.messages.extend(messages)

    def take(self) -> tuple[int | None, str | None, list[str]]:
        messages, self.messages = self.messages, []
        return self.step, self.facts, messages


class StepReporter:
    """Rank 0's side (the other ranks get one with no board, and say nothing)."""

    def __init__(self, board, total_steps: int):
        self.board, self.total = board, total_steps
        self.validation_loss: float | None = None
        self._posted = 0.0

    def say(self, text: str) -> None:
        if self.board is not None:
            self.board.post.remote(None, None, [text])

    def validated(self, loss: float) -> None:
        self.validation_loss = loss

    def stepped(self, step: int, m: dict, world: int) -> None:
        now = time.monotonic()
        if self.board is None or (now - self._posted < POST_INTERVAL_S and step < self.total):
            return
        self._posted = now
        held_out = ("" if self.validation_loss is None
                    else f", validation loss {self.validation_loss:.3f}")
        self.board.post.remote(step, f"loss {m['loss']:.3f}, accuracy {m['accuracy']:.3f}"
                               f"{held_out}, {m['tokens_per_s'] * world:,.0f} tokens/s", [])


class TrainProgress:
    """The driver's side: `with TrainProgress(...) as board:` around trainer.fit(), passing
    `board.actor` to the workers."""

    def __init__(self, total_steps: int, first_step: int, live: bool | None):
        import ray

        self.actor = ray.remote(num_cpus=0)(_Board).remote()
        self.progress = StageProgress("train", total_steps, "steps", initial=first_step, live=live)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="train-progress", daemon=True)

    def __enter__(self) -> "TrainProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()
        self.progress.close()

    def _follow(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            self._poll()

    def _poll(self) -> None:
        import ray

        try:
            step, facts, messages = ray.get(self.actor.take.remote(), timeout=30)
        except Exception:  # the board is lost (a cluster being torn down): only the bar stops
            return
        for text in messages:
            self.progress.say(text)
        if step is not None and step > self.progress.done:
            self.progress.advance(step - self.progress.done, facts)
