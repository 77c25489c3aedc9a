"""A stage in which too many inputs fail: StageFailedError (exit 4) naming the commonest error
types with an example each, its rows and markers kept, the stages after it refused, and a rerun
that redoes no unit: it fails again, or is accepted with a higher features.max_error_share.
In-process (LocalExecutor), over the manifest of helpers/runs.py: 4 of its 7 inputs fail."""
import json
import shutil

import duckdb
import pytest

from helpers.logs import lines_said
from helpers.runs import ACCEPTING, BAD, FAILING_SHARE, GOOD, INPUTS, failed_run_config
from timbrespace_ray.cli import EXIT_INTERRUPTED, build_parser, main
from timbrespace_ray.errors import StageFailedError, TimbrespaceError
from timbrespace_ray.executors import LocalExecutor, RayExecutor
from timbrespace_ray.inspection import EXIT_FAILED, EXIT_FINISHED, EXIT_NO_RUN, EXIT_UNFINISHED
from timbrespace_ray.pipeline import run_pipeline, run_stage
from timbrespace_ray.stages.base import StageSummary
from timbrespace_ray.stages.failure import failed

# the manifest's order is the units' order: the first input of each type is its example
FIRST = {"AudioDecodeError": "corrupt.wav", "FileNotFoundError": "missing.wav"}


class Counting(LocalExecutor):
    """The in-process executor, counting the units it is given to run."""

    def __init__(self):
        self.units = 0

    def map(self, work, units, on_result):
        self.units += len(units)
        super().map(work, units, on_result)


def count(out, table):
    return duckdb.sql(f"select count(*) from '{out}/{table}/*.parquet'").fetchall()[0][0]


@pytest.fixture(scope="module")
def failed_once(failed_manifest, tmp_path_factory):
    """The features stage run once with a share its 4 failed inputs of 7 exceed: (output,
    error, log lines, units run)."""
    out = tmp_path_factory.mktemp("failed-stage") / "out"
    executor = Counting()
    with lines_said() as lines, pytest.raises(StageFailedError) as raised:
        run_stage("features", failed_run_config(failed_manifest, out,
                                                max_error_share=FAILING_SHARE), executor)
    return out, raised.value, lines, executor.units


@pytest.fixture
def copy(failed_once, tmp_path):
    """The failed run, copied (for a test that reruns it): (output, its error's message)."""
    out, error, _, _ = failed_once
    shutil.copytree(out, tmp_path / "out")
    return tmp_path / "out", str(error).replace(str(out), str(tmp_path / "out"))


def test_too_many_failed_inputs_fail_the_stage_and_say_which(failed_once):
    out, error, lines, units = failed_once
    assert units == INPUTS and error.exit_code == 4
    message = str(error)
    assert message.startswith(f"features: 4 of {INPUTS} inputs failed (57.1 %, over the 50 % "
                              "allowed by features.max_error_share): AudioDecodeError x 2 (e.g. "
                              "corrupt.wav: ")
    assert "FileNotFoundError x 2 (e.g. missing.wav: file not found: " in message
    assert f"rows written: {len(GOOD)} (kept)" in message
    assert f"`timbrespace-ray errors file://{out}` lists them" in message
    assert message.endswith("or accept these rows by rerunning with --set "
                            "features.max_error_share=0.58")
    assert "\n" not in message
    # the log says each type with its example, less clipped
    for kind, utt_id in FIRST.items():
        said = [line for line in lines if line.startswith(f"features: {kind} x 2 (e.g. ")]
        assert len(said) == 1 and utt_id in said[0], lines
    assert f"inputs seen {INPUTS} = rows {len(GOOD)} + errors {len(BAD)}" in "\n".join(lines)


def test_a_failed_stage_keeps_its_rows_and_markers_but_is_not_finished(failed_once):
    out, error, _, _ = failed_once
    assert count(out, "features") == len(GOOD) and count(out, "errors") == len(BAD)
    state = out / "_run" / "features"
    assert len(list((state / "done").glob("*.json"))) == INPUTS
    assert not (state / "summary.json").exists() and not list((out / "_run").glob("history/*"))
    record = json.loads((state / "failed.json").read_text())
    assert record["failure"] == str(error)
    assert (record["inputs"], record["rows"], record["errors"]) == (
        INPUTS, len(GOOD), {"AudioDecodeError": 2, "FileNotFoundError": 2})
    assert {k: v[0] for k, v in record["error_examples"].items()} == FIRST


def test_the_stages_after_a_failed_one_do_not_run(copy, failed_manifest):
    out, _ = copy
    recorded = json.loads((out / "_run" / "features" / "failed.json").read_text())["failure"]
    cfg = failed_run_config(failed_manifest, out, max_error_share=FAILING_SHARE)
    with pytest.raises(StageFailedError) as raised:
        run_stage("profile", cfg, LocalExecutor())
    assert str(raised.value).startswith("the profile/measures stage needs a complete 'features' "
                                        "stage")
    assert str(raised.value).endswith(f"and it failed: {recorded}")
    executor = Counting()
    with pytest.raises(StageFailedError):
        run_pipeline(cfg, executor)
    assert executor.units == 0
    assert sorted(p.name for p in (out / "_run").iterdir()) == ["features"]


def test_a_rerun_redoes_no_unit_and_fails_again_or_is_accepted_with_a_higher_share(
        copy, failed_manifest):
    out, message = copy
    executor = Counting()
    with pytest.raises(StageFailedError) as raised:
        run_stage("features", failed_run_config(failed_manifest, out,
                                                max_error_share=FAILING_SHARE), executor)
    assert str(raised.value) == message and executor.units == 0

    summary = run_stage("features", failed_run_config(failed_manifest, out,
                                                      max_error_share=ACCEPTING), executor)
    assert executor.units == 0 and summary.units_run == 0
    assert (summary.inputs, summary.rows, summary.errors_total) == (INPUTS, len(GOOD), len(BAD))
    state = out / "_run" / "features"
    assert (state / "summary.json").exists() and not (state / "failed.json").exists()
    assert count(out, "features") == len(GOOD)


def test_every_input_failed_fails_whatever_the_share(tmp_path):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 8)
    (tmp_path / "manifest.csv").write_text("path\ncorrupt.wav\nmissing.wav\n")
    out = tmp_path / "out"
    with pytest.raises(StageFailedError) as raised:
        run_stage("features", failed_run_config(tmp_path / "manifest.csv", out,
                                                max_error_share=1.0), LocalExecutor())
    message = str(raised.value)
    assert message.startswith("features: 2 of 2 inputs failed (every one): AudioDecodeError x 1 "
                              "(e.g. corrupt.wav: ")
    assert "FileNotFoundError x 1 (e.g. missing.wav: " in message
    assert "rows written: 0;" in message and "max_error_share" not in message
    assert count(out, "features") == 0 and count(out, "errors") == 2


@pytest.mark.parametrize("errors, share, fails", [
    (2, 0.5, False), (3, 0.5, True),  # more than the share fails, exactly the share does not
    (0, 0.0, False), (1, 0.0, True), (3, 1.0, False), (4, 1.0, True), (4, None, True),
    (3, None, False)])
def test_the_share_of_failed_inputs_that_fails_a_stage(errors, share, fails):
    summary = StageSummary("features", inputs=4, rows=4 - errors,
                           errors={"AudioDecodeError": errors} if errors else {})
    assert failed(summary, share) is fails


def test_the_command_exits_4_with_the_reason_on_stderr(copy, failed_manifest, capsys,
                                                       monkeypatch):
    out, message = copy

    def no_ray(self):  # a rerun of finished units needs no worker
        raise AssertionError("Ray started")

    monkeypatch.setattr(RayExecutor, "connect", no_ray)
    args = ["--input", str(failed_manifest), "--output", str(out), "--no-progress"]
    for command in ("features", "run"):
        capsys.readouterr()
        assert main([command, *args]) == 4
        err = capsys.readouterr().err
        assert err == f"timbrespace-ray: error: {message}\n"
    assert not (out / "_run" / "profile").exists()
    assert main(["features", *args, "--set", f"features.max_error_share={ACCEPTING}"]) == 0
    assert (out / "_run" / "features" / "summary.json").exists()


def test_help_lists_every_exit_code():
    epilog = build_parser().epilog
    documented = {int(line.split()[0]) for line in epilog.splitlines()
                  if line[:2] == "  " and line.split()[0].isdigit()}
    assert documented == {0, 1, 2, 3, 4, 130}
    assert {EXIT_FINISHED, EXIT_NO_RUN, EXIT_UNFINISHED, EXIT_FAILED, EXIT_INTERRUPTED,
            TimbrespaceError.exit_code, StageFailedError.exit_code} <= documented
    assert "features.max_error_share" in epilog
