"""The harness of the fuzz suite (tests/fuzz/): a generated input run through the features stage
in this process, the way the command line runs it, and the bad-input contract checked on what
came out.

A case says what its generator built: the utterances it holds (`inputs`, None where a mutation
of the bytes leaves the count unknowable), those left intact (`good`: each must be a features
row), and whether the whole location may be refused (`may_refuse`: only where what was broken
is the location as a whole, e.g. a manifest's header). The expectations come from the
generator, never from the code under test.
"""
from __future__ import annotations

import contextlib
import os
import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from helpers.docs import documented_error_types

from timbrespace_ray.config import load_config
from timbrespace_ray.errors import StageFailedError, TimbrespaceError
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.pipeline import run_stage

# error_type of an errors row: those docs/outputs.md lists
DOCUMENTED_TYPES = documented_error_types()
# every case is a fraction of a second of audio: a case still running after this has hung
CASE_TIMEOUT_S = 20


@dataclass
class Case:
    input: Path  # what --input names
    inputs: int | None  # utterances the generator put there; None: unknowable (byte mutations)
    good: set[str] = field(default_factory=set)  # utt_ids that must come out as features rows
    may_refuse: bool = False  # the location as a whole may be refused at planning
    # utterances that may be no input at all (a FIFO, a member that lost its name...)
    optional: int = 0
    # utt_ids the generator wrote twice (a duplicated tar member): one row at most, the other
    # an error row
    duplicated: set[str] = field(default_factory=set)


@dataclass
class Outcome:
    refused: TimbrespaceError | None
    rows: list[dict]
    errors: list[dict]


class Hung(BaseException):
    """The case ran past CASE_TIMEOUT_S (a BaseException: no `except Exception` swallows it)."""


@contextlib.contextmanager
def _bounded(seconds: int, folder: Path):
    def alarm(signum, frame):
        # first let a thread blocked on a FIFO go, or the stage's own cleanup waits for it
        _release_fifos(folder)
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        _release_fifos(folder)


def _release_fifos(folder: Path) -> None:
    """Open every FIFO under `folder` for writing and close it: a thread of the stage blocked
    opening one for reading then sees its end instead of waiting forever."""
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if stat.S_ISFIFO(os.lstat(path).st_mode):
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def run_case(case: Case, out: Path, timeout_s: int | None = CASE_TIMEOUT_S) -> Outcome:
    """The features stage over `case.input` into `out`, as `timbrespace-ray features` runs it
    (pipeline.run_stage), in this process. A package error while planning is the CLI's one
    line and exit 2 (returned as `refused`); anything else propagates: the CLI's traceback.
    `timeout_s` None: unbounded (the first run of a process compiles the numba kernels)."""
    cfg = load_config(**{"input": str(case.input), "output": str(out),
                         "features.max_error_share": 1.0})
    refused = None
    bound = (_bounded(timeout_s, case.input if case.input.is_dir() else case.input.parent)
             if timeout_s else contextlib.nullcontext())
    with bound:
        try:
            run_stage("features", cfg, LocalExecutor())
        except StageFailedError:
            pass  # every input failed: the tables are written all the same
        except TimbrespaceError as exc:
            refused = exc
    rows = pq.read_table(out / "features").to_pylist() if (out / "features").exists() else []
    errs = pq.read_table(out / "errors").to_pylist() if (out / "errors").exists() else []
    return Outcome(refused, rows, errs)


def check(case: Case, got: Outcome) -> None:
    """The bad-input contract on one case's outcome."""
    if got.refused is not None:
        message = str(got.refused)
        assert case.may_refuse, f"the whole input was refused for one bad input: {message}"
        assert "\n" not in message and message.strip(), repr(message)
        assert not got.rows, "refused at planning, yet features rows were written"
        return
    row_ids = [r["utt_id"] for r in got.rows]
    error_ids = [e["utt_id"] for e in got.errors]
    seen = row_ids + error_ids
    twice = sorted({u for u in seen if seen.count(u) > 1 + (u in case.duplicated)
                    or row_ids.count(u) > 1})
    assert not twice, f"utt_ids written twice: {twice}"
    if case.inputs is not None:
        assert case.inputs - case.optional <= len(seen) <= case.inputs, (
            f"{case.inputs} inputs built, {len(row_ids)} rows + {len(error_ids)} errors came out: "
            f"rows {row_ids}, errors {[(e['utt_id'], e['error_type']) for e in got.errors]}")
    missing = case.good - set(row_ids)
    assert not missing, (f"intact inputs without a features row: {sorted(missing)}; errors: "
                         f"{[(e['utt_id'], e['error_type'], e['message']) for e in got.errors]}")
    for e in got.errors:
        assert e["error_type"] in DOCUMENTED_TYPES, f"undocumented error type: {e}"
        assert e["stage"] == "features", e
        assert e["message"] and "\n" not in e["message"], f"message not one line: {e}"
        assert "Traceback" not in e["message"], e


def run_and_check(case: Case, out: Path) -> Outcome:
    got = run_case(case, out)
    check(case, got)
    return got
