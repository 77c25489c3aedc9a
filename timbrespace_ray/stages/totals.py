"""A map stage's running totals (`_run/<stage>/totals.json`): the sums of its units' statistics
and which units they cover.

The driver saves them as units finish, so that a resume (and the stage's end) reads one file
plus the markers of the units finished since the last save, not one marker per unit: on an
object store 100,000 marker reads take minutes, the totals one request. Markers stay the truth
of what is done; totals that cover a unit without a marker (a folder tampered with) are not
used, and every marker is read instead.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from ..executors.base import UnitStats
from ..storage import Location

TOTALS = "totals.json"


@dataclass
class Totals:
    covered: set[int] = field(default_factory=set)
    inputs: int = 0
    rows: int = 0
    frames: int = 0
    audio_seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)
    # error type -> [unit, utt_id, message] of the lowest unit with one: the same example
    # whatever order the units finished in
    examples: dict[str, list] = field(default_factory=dict)

    def add(self, stats: UnitStats) -> None:
        if stats.unit in self.covered:
            return
        self.covered.add(stats.unit)
        self.inputs += stats.inputs
        self.rows += stats.rows
        self.frames += stats.frames
        self.audio_seconds += stats.audio_seconds
        self.errors.update(stats.errors)
        for kind, example in stats.error_examples.items():
            if kind not in self.examples or stats.unit < self.examples[kind][0]:
                self.examples[kind] = [stats.unit, *example]

    @property
    def error_examples(self) -> dict[str, list[str]]:
        return {kind: example[1:] for kind, example in self.examples.items()}

    def to_json(self) -> dict:
        return {"covered": _ranges(sorted(self.covered)), "inputs": self.inputs,
                "rows": self.rows, "frames": self.frames, "audio_seconds": self.audio_seconds,
                "errors": dict(self.errors), "examples": self.examples}

    @classmethod
    def from_json(cls, doc: dict) -> "Totals":
        covered = {u for first, last in doc["covered"] for u in range(first, last + 1)}
        return cls(covered, int(doc["inputs"]), int(doc["rows"]), int(doc["frames"]),
                   float(doc["audio_seconds"]), Counter(doc["errors"]), dict(doc["examples"]))

    @classmethod
    def load(cls, location: Location, done: set[int]) -> "Totals":
        """The saved totals, if any and if every unit they cover has its marker (`done`)."""
        try:
            totals = cls.from_json(json.loads(location.read_bytes()))
        except FileNotFoundError:
            return cls()
        except (ValueError, KeyError, TypeError):
            return cls()  # unreadable: the markers say the same, read one by one
        return totals if totals.covered <= done else cls()

    def save(self, location: Location) -> None:
        location.write_json(self.to_json())


def _ranges(units: list[int]) -> list[list[int]]:
    """[[first, last], ...] of runs of consecutive unit indexes (sorted input)."""
    out: list[list[int]] = []
    for u in units:
        if out and u == out[-1][1] + 1:
            out[-1][1] = u
        else:
            out.append([u, u])
    return out
