"""How a long stage shows its progress: a live bar in a terminal, bounded lines in a log.

In a terminal each stage draws one tqdm bar (done/total, rate, ETA, and the stage's own facts:
inputs, hours of audio, x real time, errors; or loss and tokens/s). Where output goes to a file
or a pipe (`ray job logs`, CI, kubectl) a bar would be thousands of carriage returns, so the
same facts come as a line at most every LINE_INTERVAL_S, or sooner after each LINE_STEP of
the work (never closer together than LINE_MIN_GAP_S): a 100,000-unit run prints a few hundred
lines, not one per unit. No Ray here: the map stages and the executors' training feed it.

Lines and messages go to the `timbrespace_ray.progress` logger: a library user hears them only
through a logging configuration of their own. A bar is drawn only where the command line asked
for bars (`enable_bars`), which also routes the log's lines above the bar.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

LINE_INTERVAL_S = 30.0
LINE_STEP = 0.05
LINE_MIN_GAP_S = 10.0

log = logging.getLogger(__name__)
_bars = False


def enable_bars(on: bool) -> None:
    """Let stages draw live bars where stderr is a terminal (the command line does)."""
    global _bars
    _bars = on


def is_terminal(stream: TextIO) -> bool:
    """A terminal that can show a bar: a TTY with a width (a pseudo-terminal nobody sized,
    as under `script` in a CI job, has none, and a bar there would draw nothing)."""
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()):
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):  # not a real file: a test's stand-in
        return True


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class StageProgress:
    """Progress of one stage: `advance(n, facts)` as work finishes, `close()` at the end.

    `live`: draw a bar (default: when bars are enabled and `stream` is a terminal); otherwise
    bounded lines.
    `facts` is a short text of the stage's own figures, shown beside the counts. `initial`: work
    done before (a resumed run), left out of the rate and the ETA."""

    def __init__(self, name: str, total: int, unit: str = "units", *, initial: int = 0,
                 stream: TextIO | None = None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.total, self.unit = name, total, unit
        self.stream = stream or sys.stderr
        self.clock = clock
        self.done = self._last_line_done = initial
        self.facts = ""
        self.t0 = self._last_line = clock()
        # the rate for the ETA is taken from the first work done on: before it, workers start
        self._first: tuple[float, int] | None = None
        self._bar = None
        if live if live is not None else (_bars and is_terminal(self.stream)):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=name, unit=unit[:-1] if unit.endswith("s") else unit,
                             file=self.stream, dynamic_ncols=True, leave=False,
                             bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} "
                                        "{unit}s [{elapsed}<{remaining}]{postfix}")

    def advance(self, n: int = 1, facts: str | None = None) -> None:
        if self._first is None:
            self._first = (self.clock(), self.done + n)
        self.done += n
        if facts is not None:
            self.facts = facts
        if self._bar is not None:
            self._bar.set_postfix_str(self.facts, refresh=False)
            self._bar.update(n)
            return
        now = self.clock()
        gap = now - self._last_line
        stepped = self.done - self._last_line_done >= LINE_STEP * max(self.total, 1)
        if self.done < self.total and (gap >= LINE_INTERVAL_S or (stepped and gap >= LINE_MIN_GAP_S)):
            self._line(now)

    def say(self, text: str) -> None:
        """A message while the stage runs (above its bar, where one is drawn)."""
        log.info(text)
        if self._bar is not None:
            self._bar.refresh()

    def line(self) -> str:
        elapsed = self.clock() - self.t0
        pct = 100 * self.done / self.total if self.total else 100.0
        eta = ""
        if self._first is not None and self._first[1] < self.done < self.total:
            per = (self.clock() - self._first[0]) / (self.done - self._first[1])
            eta = f", ETA {_duration(per * (self.total - self.done))}"
        facts = f" | {self.facts}" if self.facts else ""
        return (f"[{self.name}] {self.done}/{self.total} {self.unit} ({pct:.0f}%){facts} | "
                f"{_duration(elapsed)}{eta}")

    def _line(self, now: float) -> None:
        self._last_line, self._last_line_done = now, self.done
        log.info(self.line())

    def close(self) -> None:
        """Remove the bar (the stage's summary lines follow and say where it ended)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
