"""`timbrespace-ray demo` as a person sees it in a terminal: a live bar per stage, no Ray chatter,
under 80 lines, ending with the stage table and the report's path."""
import re

import pytest

from helpers.terminal import RAY_LINE

pytestmark = pytest.mark.slow


def test_the_demo_fits_on_a_screen_and_ends_with_the_table_and_the_report(demo):
    out, raw, lines = demo
    assert len(lines) < 80, "\n".join(lines)
    assert lines[-1] == f"Report: {out / 'report.md'}" and (out / "report.md").exists()
    table = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    assert [line.split()[0] for line in lines[table + 2:table + 8]] == [
        "features", "profile", "kmeans", "tokens", "train", "embed"]


def test_each_stage_draws_a_live_bar_and_no_line_per_unit(demo):
    _, raw, lines = demo
    for bar in ("features:", "tokens:", "embed:", "train:"):
        assert re.search(re.escape(bar) + r"\s+\d+%\|", raw), bar
    assert not [line for line in lines if re.match(r"\[\w[\w-]*\] \d+/\d+ ", line)]


def test_no_line_twice_in_a_row_and_no_ray_chatter(demo):
    _, _, lines = demo
    repeated = [a for a, b in zip(lines, lines[1:]) if a == b and a.strip()]
    assert not repeated
    assert not [line for line in lines if RAY_LINE.search(line)]
    # training speaks from its workers through the driver, once: Ray Train's print patch would
    # repeat every line a worker printed
    assert len([line for line in lines if re.match(r"train: [\d.]+ M parameters, ", line)]) == 1
