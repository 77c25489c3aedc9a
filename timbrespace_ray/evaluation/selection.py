"""Which utterances are evaluated: labelled ones, held out from training when the encoder
recorded its validation split, at most `max_utterances` of them (a hash-ordered sample)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..encoder.split import is_validation, split_position
from ..errors import ModelFormatError

# the sample beyond max_utterances: the utterances with the smallest split_position under this
# seed, the same on every run and machine whatever the order the parts are read in
SAMPLE_SEED = 0


@dataclass(frozen=True)
class Holdout:
    """The encoder's validation split (the "validation" entry of its `training.json`): an
    utterance was held out of training when `is_validation(str(<key column>), fraction,
    seed)`."""

    fraction: float
    key: str  # "utt_id" or a metadata column (whole speakers held out, say)
    seed: int

    @classmethod
    def of(cls, success: Mapping) -> "Holdout | None":
        """From an encoder's `training.json`; None when it records no split."""
        entry = success.get("validation")
        if entry is None:
            return None
        try:
            return cls(float(entry["fraction"]), str(entry["key"]), int(entry["seed"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"the encoder's training.json 'validation' entry {entry!r} is not "
                                   "{'fraction', 'key', 'seed'}") from exc

    def held_out(self, keys: Sequence) -> np.ndarray:
        return np.array([is_validation(str(k), self.fraction, self.seed) for k in keys], bool)


@dataclass(frozen=True)
class Candidates:
    """One part's utterances that may be evaluated, in sampling order, and how many of its
    utterances were left out for each reason."""

    utt_ids: list[str]
    labels: list[str]
    positions: np.ndarray  # ascending split_position(utt_id, SAMPLE_SEED)
    seen: int              # utterances in the part
    unlabelled: int        # of them, with a null label
    trained_on: int        # of the labelled ones, in the encoder's training split

    def counts(self) -> dict[str, int]:
        return {"seen": self.seen, "unlabelled": self.unlabelled, "trained_on": self.trained_on}

    def first_of_each_label(self) -> dict[str, float]:
        """The sampling position of each label's first candidate: whether a label is among the
        sample follows from these alone."""
        first: dict[str, float] = {}
        for label, position in zip(self.labels, self.positions):
            first.setdefault(label, float(position))
        return first

    def up_to(self, cutoff: float) -> tuple[list[str], list[str]]:
        """(utt_ids, labels) of the candidates at or before `cutoff` in sampling order."""
        n = int(np.searchsorted(self.positions, cutoff, side="right"))
        return self.utt_ids[:n], self.labels[:n]


def candidates(utt_ids: Sequence[str], labels: Sequence, keys: Sequence | None,
               holdout: Holdout | None) -> Candidates:
    """The labelled (and, with `holdout`, held-out) utterances among one part's rows, once
    each (a part lists an utterance once per window); labels as text."""
    first: dict[str, int] = {}
    for i, u in enumerate(utt_ids):
        first.setdefault(u, i)
    rows = list(first.values())
    labelled = [i for i in rows if labels[i] is not None]
    kept = labelled
    if holdout is not None:
        held = holdout.held_out([keys[i] for i in labelled])
        kept = [i for i, h in zip(labelled, held) if h]
    positions = np.array([split_position(utt_ids[i], SAMPLE_SEED) for i in kept], np.float64)
    order = np.argsort(positions, kind="stable")
    return Candidates([utt_ids[kept[j]] for j in order], [str(labels[kept[j]]) for j in order],
                      positions[order], seen=len(rows), unlabelled=len(rows) - len(labelled),
                      trained_on=len(labelled) - len(kept))


def cutoff(positions: Sequence[np.ndarray], limit: int) -> float:
    """The sampling position of the `limit`-th candidate of all parts (inf: keep every one).
    Each part needs to report only its own `limit` first: no others can be among them."""
    every = np.concatenate([*positions, np.zeros(0)])
    return float(np.partition(every, limit - 1)[limit - 1]) if len(every) > limit else np.inf
