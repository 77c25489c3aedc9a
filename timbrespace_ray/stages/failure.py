"""When a stage fails: every one of its inputs failed, or more than the share it allows.

A stage whose inputs fail one by one (features: a bad recording is an error row) keeps going
and writes the rows that come out. When none come out, or too few, it does not count as
finished: the stages after it would build their models on nothing or on a sliver of the corpus,
and a run in which most inputs fail is almost always a wrong setting rather than a bad corpus.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import StageSummary

TYPES_SAID = 3  # the commonest error types the one-line failure names
TYPES_LOGGED = 5  # ... and the log lines before it
SAID_CHARS, LOGGED_CHARS = 90, 200  # an example's length in each


def clip(text: str, width: int, keep_end: bool = False) -> str:
    """`text` on one line, at most `width` characters, an ellipsis where it was cut."""
    text = " ".join(str(text or "").split())
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    return "…" + text[-(width - 1):] if keep_end else text[:width - 1] + "…"


def failed(summary: StageSummary, max_share: float | None) -> bool:
    """Every input failed, or more than `max_share` of them (None: no share allowed is set)."""
    n = summary.errors_total
    return n > 0 and (n >= summary.inputs or (max_share is not None
                                               and n > max_share * summary.inputs))


def _percent(share: float) -> str:
    return f"{100 * share:.3g} %"


def commonest(summary: StageSummary, limit: int, width: int) -> list[str]:
    """`Type x count (e.g. input: message)` for the commonest error types, most first."""
    out = []
    for kind, count in sorted(summary.errors.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]:
        utt_id, message = (summary.error_examples.get(kind) or ["", ""])[:2]
        # many messages start with their input already
        example = message if utt_id and message.startswith(utt_id) else f"{utt_id}: {message}"
        out.append(f"{kind} x {count:,} (e.g. {clip(example, width)})")
    return out


def failure(summary: StageSummary, max_share: float | None, key: str | None,
            output_uri: str) -> str | None:
    """Why the stage failed, in one line that says what to do; None when it did not."""
    if not failed(summary, max_share):
        return None
    n, inputs = summary.errors_total, summary.inputs
    every = n >= inputs
    why = "every one" if every else (f"{_percent(n / inputs)}, over the {_percent(max_share)} "
                                     f"allowed by {key}")
    types = commonest(summary, TYPES_SAID, SAID_CHARS)
    others = len(summary.errors) - len(types)
    todo = ("a wrong setting (sample rate, path column, mount...) is the likely cause: fix it "
            "and run into a new output folder (a rerun here redoes no unit)")
    if not every:  # the smallest share, in hundredths, that accepts them
        todo += (f", or accept these rows by rerunning with --set "
                 f"{key}={math.ceil(100 * n / inputs) / 100:g}")
    return (f"{summary.stage}: {n:,} of {inputs:,} inputs failed ({why}): " + ", ".join(types)
            + (f", and {others} more error type{'s' if others > 1 else ''}" if others else "")
            + f"; rows written: {summary.rows:,}" + (" (kept)" if summary.rows else "")
            + f"; `timbrespace-ray errors {output_uri}` lists them; {todo}")
