"""Stage progress: a live bar in a terminal, a bounded number of lines in a log."""
import io

from helpers.logs import lines_said
from timbrespace_ray.progress import LINE_INTERVAL_S, StageProgress, enable_bars


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_large_run_in_a_log_prints_a_bounded_number_of_lines():
    clock, out = Clock(), io.StringIO()
    units, seconds = 100_000, 3600.0  # an hour: a unit every 36 ms
    with lines_said() as lines:
        p = StageProgress("features", units, stream=out, clock=clock)
        for i in range(units):
            clock.t += seconds / units
            p.advance(1, f"{i + 1} inputs")
        p.close()
    # at most one line per LINE_INTERVAL_S, or per 5 % of the work: about 20 + 120, not 100,000
    assert 20 <= len(lines) <= seconds / LINE_INTERVAL_S + 21
    assert all(line.startswith("[features] ") and " units (" in line for line in lines)
    assert out.getvalue() == ""  # no bar where the command line did not ask for one


def test_a_log_line_says_done_total_share_facts_elapsed_and_eta():
    clock, out = Clock(), io.StringIO()
    with lines_said() as lines:
        p = StageProgress("tokens", 10, stream=out, clock=clock)
        clock.t += 12.0  # workers starting: not part of the rate
        p.advance(1, "1 inputs, 0 errors")
        clock.t += 40.0
        p.advance(1, "2 inputs, 0 errors")
    assert lines == [
        "[tokens] 1/10 units (10%) | 1 inputs, 0 errors | 12 s",
        "[tokens] 2/10 units (20%) | 2 inputs, 0 errors | 52 s, ETA 5 min 20 s",
    ]


def test_short_bursts_do_not_print_a_line_each():
    clock, out = Clock(), io.StringIO()
    with lines_said() as lines:
        p = StageProgress("embed", 10, stream=out, clock=clock)
        for _ in range(9):
            clock.t += 0.5
            p.advance()
        clock.t += 0.5
        p.advance()  # the last one is left to the stage's summary
    assert lines == [] and out.getvalue() == ""


def test_a_resumed_run_starts_from_the_work_already_done():
    clock, out = Clock(), io.StringIO()
    with lines_said() as lines:
        p = StageProgress("train", 150, "steps", initial=75, stream=out, clock=clock)
        clock.t += 31.0
        p.advance(5, "loss 2.9")
    assert lines == ["[train] 80/150 steps (53%) | loss 2.9 | 31 s"]


def test_in_a_terminal_one_bar_is_redrawn_and_removed_at_the_end():
    term = Terminal()
    enable_bars(False)
    assert StageProgress("features", 200, stream=term)._bar is None  # bars: the CLI's choice
    enable_bars(True)
    try:
        with lines_said() as lines:
            p = StageProgress("features", 200, stream=term)
            for i in range(200):
                p.advance(1, f"{i + 1} inputs, 0 errors")
            p.say("a message above the bar")
            p.close()
    finally:
        enable_bars(False)
    text = term.getvalue()
    assert "features:" in text and "%|" in text and "200/200 units" in text
    assert "\r" in text and lines == ["a message above the bar"]
    # redrawn in place: no line per unit, and nothing of the bar is left standing
    assert text.count("\n") <= 3
    assert text.rstrip(" ").endswith(("\r", "\x1b[A"))
