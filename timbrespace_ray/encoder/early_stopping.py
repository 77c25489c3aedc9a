"""Early stopping on the validation loss (plain Python): the best loss so far, its step, and how
many validations in a row have not beaten it by `min_delta`."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    patience: int  # validations without improvement that stop training; 0: never stop
    min_delta: float
    best_loss: float | None = None
    best_step: int | None = None
    stale: int = 0  # validations since the best

    @property
    def enabled(self) -> bool:
        return self.patience > 0

    def update(self, step: int, loss: float) -> bool:
        """Record the validation loss at `step`; True when it is the new best."""
        if self.best_loss is None or loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_step, self.stale = loss, step, 0
            return True
        self.stale += 1
        return False

    @property
    def exhausted(self) -> bool:
        """Whether training should stop: `patience` validations in a row without a new best."""
        return self.enabled and self.stale >= self.patience

    def state(self) -> dict:
        """What a checkpoint keeps (the counters; the settings come from the config)."""
        return {k: v for k, v in asdict(self).items() if k in ("best_loss", "best_step", "stale")}

    @classmethod
    def resumed(cls, patience: int, min_delta: float, state: dict | None) -> "EarlyStopping":
        return cls(patience, min_delta, **(state or {}))
