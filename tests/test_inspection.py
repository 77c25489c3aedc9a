"""`timbrespace-ray status` and `errors` on real runs: finished, interrupted (what a stopped
driver leaves: the markers of the units it finished, no summary), with failed inputs, local
and on S3. Expected numbers come from the corpus the tests build, not from the code."""
import csv
import io
import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
import yaml

from helpers.runs import BAD, FAILING_SHARE, INPUTS, failed_run_config
from timbrespace_ray import inspection, markers
from timbrespace_ray.cli import main
from timbrespace_ray.errors import StageFailedError
from timbrespace_ray.pipeline import run_stage
from timbrespace_ray.executors import LocalExecutor

class Interrupt(Exception):
    pass


class StopsAfter(LocalExecutor):
    """Runs `n` units (over every map step it is given), then stops as a killed driver does:
    the units it finished have their parts and markers, the rest nothing, and no summary."""

    def __init__(self, n: int):
        self.left = n

    def map(self, stage, units, on_result):
        stage.setup()
        for unit in units:
            if self.left == 0:
                raise Interrupt
            self.left -= 1
            on_result(stage.run_unit(unit))


@pytest.fixture
def manifest(failed_manifest):
    return failed_manifest


def config(manifest, out, storage_options=None, **options):
    return failed_run_config(manifest, out, storage_options, **options)


@pytest.fixture
def finished(failed_run):
    return failed_run


def cli(capsys, *args):
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def status_json(capsys, *args):
    code, out, _ = cli(capsys, "status", *args, "--json")
    doc = json.loads(out)
    assert doc["exit_code"] == code
    return code, doc, {s["stage"]: s for s in doc["stages"]}


def copy_features(src, dst):
    for name in ("_run/features", "_run/history", "features", "errors"):
        shutil.copytree(src / name, dst / name)
    return dst


def recent(iso, within_s=600):
    then = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    return -5 <= time.time() - then <= within_s


# a finished run ------------------------------------------------------------------------------

def test_status_of_a_finished_run(finished, capsys):
    code, doc, st = status_json(capsys, str(finished))
    f = st["features"]
    assert f["state"] == "finished"
    assert (f["units_done"], f["units_total"]) == (INPUTS, INPUTS)
    assert (f["inputs"], f["rows"]) == (INPUTS, 3)
    assert f["errors"] == {"AudioDecodeError": 2, "FileNotFoundError": 2} and f["errors_total"] == 4
    assert 0 < f["audio_hours"] < 0.05 and f["wall_seconds"] > 0 and f["x_real_time"] > 0
    assert f["units_run"] == INPUTS and recent(f["finished_at"])
    # profile: two map steps (measures, levels) over the features' parts; its rows are the
    # utterances that have features
    p = st["profile"]
    assert (p["state"], p["units_done"], p["units_total"], p["rows"]) == ("finished", 2 * INPUTS,
                                                                         2 * INPUTS, 3)
    assert (st["tokens"]["state"], st["tokens"]["units_total"], st["tokens"]["rows"]) == (
        "finished", INPUTS, 3)
    # tokens came from a published model: k-means was never needed
    assert st["kmeans"]["state"] == "not_run" and "--kmeans-model" in st["kmeans"]["detail"]
    assert st["train"]["state"] == st["embed"]["state"] == "not_started"
    # asked: every stage the pipeline still needs (train, embed), so not finished
    assert code == 3 and doc["unfinished"] == ["train", "embed"]
    assert doc["asked"] == ["features", "profile", "tokens", "train", "embed"]

    code, doc, _ = status_json(capsys, str(finished), "--stage", "features", "--stage",
                                      "profile,tokens")
    assert code == 0 and doc["finished"] and doc["asked"] == ["features", "profile", "tokens"]
    # a stage asked for by name that never ran is not finished
    assert cli(capsys, "status", str(finished), "--stage", "kmeans")[0] == 3
    assert cli(capsys, "status", str(finished), "--stage", "embeddings")[0] == 3


def test_status_table_for_people(finished, capsys):
    code, out, _ = cli(capsys, "status", str(finished), "--stage", "features,tokens")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[3:9]}
    assert rows["features"][1:5] == ["finished", f"{INPUTS}/{INPUTS}", "3", "4"]
    assert rows["tokens"][1:5] == ["finished", f"{INPUTS}/{INPUTS}", "3", "0"]
    assert rows["kmeans"][1:3] == ["not", "run"] and rows["train"][1:3] == ["not", "started"]
    assert "4 inputs failed: AudioDecodeError 2, FileNotFoundError 2" in out
    assert out.rstrip().endswith("finished: features, tokens")


def test_status_reads_no_part_file_and_lists_no_part_folder(finished, capsys, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    touched = []
    for method in ("ls", "cat_file", "_open", "info", "exists", "cat"):
        original = getattr(LocalFileSystem, method)

        def spy(self, path, *a, _original=original, **k):
            touched.append(str(path))
            return _original(self, path, *a, **k)

        monkeypatch.setattr(LocalFileSystem, method, spy)
    assert cli(capsys, "status", str(finished), "--stage", "features")[0] == 0
    assert touched and not [p for p in touched if "part-" in p], touched
    # a finished stage's folder is neither listed nor are its markers
    assert not [p for p in touched if p.rstrip("/").endswith(("/features", "/done"))], touched
    touched.clear()
    assert cli(capsys, "errors", str(finished))[0] == 0
    assert not [p for p in touched if "part-" in p or "/done" in p], touched


# interrupted runs ----------------------------------------------------------------------------

def test_interrupted_features_then_resumed(manifest, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(Interrupt):
        run_stage("features", config(manifest, out), StopsAfter(3))
    code, doc, st = status_json(capsys, str(out))
    f = st["features"]
    assert code == 3 and f["state"] == "incomplete"
    assert (f["units_done"], f["units_total"]) == (3, INPUTS)
    assert f["rows"] is None and f["errors"] is None  # only a summary says; none yet
    assert recent(f["last_progress_at"], 120)
    assert all(st[s]["state"] == "not_started"
               for s in ("profile", "kmeans", "tokens", "train", "embed"))
    code, text, _ = cli(capsys, "status", str(out), "--stage", "features")
    assert code == 3 and f"3/{INPUTS}" in text and "incomplete" in text
    assert "last progress" in text and "either still running or was stopped" in text
    assert text.rstrip().splitlines()[-2] == "not finished: features (asked: features)"

    # what a kill between a unit's part and its marker leaves: the part, no marker
    (out / "_run" / "features" / "done" / "000002.json").unlink()
    assert status_json(capsys, str(out))[2]["features"]["units_done"] == 2

    run_stage("features", config(manifest, out), LocalExecutor())
    code, doc, st = status_json(capsys, str(out), "--stage", "features")
    f = st["features"]
    assert code == 0 and f["state"] == "finished" and f["units_run"] == INPUTS - 2
    assert (f["inputs"], f["rows"], f["errors_total"]) == (INPUTS, 3, 4)
    assert "resumed" in f["detail"]


def test_interrupted_profile_and_tokens(finished, manifest, tmp_path, capsys):
    out = copy_features(finished, tmp_path / "out")
    # profile: every measures unit, the bins, then 2 of the levels units
    with pytest.raises(Interrupt):
        run_stage("profile", config(manifest, out), StopsAfter(INPUTS + 2))
    with pytest.raises(Interrupt):
        run_stage("tokens", config(manifest, out), StopsAfter(4))
    code, doc, st = status_json(capsys, str(out))
    p, t = st["profile"], st["tokens"]
    assert code == 3 and doc["unfinished"] == ["profile", "tokens", "train", "embed"]
    assert (p["state"], p["units_done"], p["units_total"]) == ("incomplete", INPUTS + 2, 2 * INPUTS)
    assert [s["step"] for s in p["steps"]] == ["profile/measures", "profile"]
    assert p["steps"][1]["units_done"] == 2 and "; profile: 2 of" in p["detail"]
    assert (t["state"], t["units_done"], t["units_total"]) == ("incomplete", 4, INPUTS)
    assert st["kmeans"]["state"] == "not_run"  # tokens started with another model

    # profile stopped in its first step
    out2 = copy_features(finished, tmp_path / "out2")
    with pytest.raises(Interrupt):
        run_stage("profile", config(manifest, out2), StopsAfter(5))
    p = status_json(capsys, str(out2), "--stage", "profile")[2]["profile"]
    assert (p["state"], p["units_done"], p["units_total"]) == ("incomplete", 5, 2 * INPUTS)
    assert p["detail"] == (f"profile/measures: 5 of {INPUTS} units done; "
                           f"profile: 0 of {INPUTS} units done")


def test_train_and_kmeans_from_what_they_leave(finished, tmp_path, capsys):
    """k-means and training are not made of units: their folder and checkpoint say it all."""
    out = copy_features(finished, tmp_path / "out")
    (out / "kmeans").mkdir()  # k-means was writing its model's files
    (out / "kmeans" / "kmeans_model.json").write_text("{}")
    ckpt = out / "_run" / "train" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"step": 40, "epoch": 3, "folder": "step-40"}))
    st = status_json(capsys, str(out))[2]
    assert st["kmeans"]["state"] == "incomplete" and "starts it again" in st["kmeans"]["detail"]
    assert st["train"]["state"] == "incomplete" and st["train"]["summary"]["step"] == 40
    assert "step 40" in st["train"]["detail"]


def test_status_of_a_failed_stage(finished, manifest, tmp_path, capsys):
    """Features finished but for its summary (every marker there), then rerun with a share its
    4 failed inputs of 7 exceed: it fails without running a unit."""
    out = copy_features(finished, tmp_path / "out")
    (out / "_run" / "features" / "summary.json").unlink()
    with pytest.raises(StageFailedError) as raised:
        run_stage("features", config(manifest, out, max_error_share=FAILING_SHARE),
                  LocalExecutor())
    code, doc, st = status_json(capsys, str(out))
    f = st["features"]
    assert code == 4 and doc["failed"] == ["features"] and not doc["finished"]
    assert doc["unfinished"] == ["features", "profile", "kmeans", "tokens", "train", "embed"]
    assert f["state"] == "failed" and f["failure"] == str(raised.value)
    assert (f["units_done"], f["units_total"], f["units_run"]) == (INPUTS, INPUTS, 0)
    assert (f["inputs"], f["rows"], f["errors_total"]) == (INPUTS, 3, len(BAD))
    assert f["finished_at"] is None and recent(f["last_progress_at"], 120)
    assert f"its last run did 0 of {INPUTS} units" in f["detail"]
    assert cli(capsys, "status", str(out), "--stage", "features")[0] == 4

    code, text, _ = cli(capsys, "status", str(out))
    assert code == 4
    row = next(line.split() for line in text.splitlines() if line.startswith("features "))
    assert row[1:5] == ["failed", f"{INPUTS}/{INPUTS}", "3", str(len(BAD))]
    assert f"s ago: {raised.value}" in text
    assert "failed: features (too many of its inputs failed; the stages after it do not run)" \
        in text.splitlines()


# a run with failed inputs ------------------------------------------------------------------

def test_errors_lists_every_failed_input_with_its_type(finished, capsys):
    code, doc_text, _ = cli(capsys, "errors", str(finished), "--json")
    doc = json.loads(doc_text)
    assert code == 0 and doc["total"] == len(BAD) == doc["shown"]
    assert {r["utt_id"]: r["error_type"] for r in doc["rows"]} == BAD
    assert doc["by_type"] == {"AudioDecodeError": 2, "FileNotFoundError": 2}
    assert all(r["stage"] == "features" and r["source"].endswith(r["utt_id"]) for r in doc["rows"])
    assert "empty" in next(r["message"] for r in doc["rows"] if r["utt_id"] == "empty.wav")

    code, text, _ = cli(capsys, "errors", str(finished))
    lines = text.splitlines()
    assert lines[0] == "4 error rows: AudioDecodeError 2, FileNotFoundError 2"
    assert lines[2].split() == ["stage", "error_type", "utt_id", "message"]
    assert [line.split()[1:3] for line in lines[3:]] == [
        ["AudioDecodeError", "corrupt.wav"], ["AudioDecodeError", "empty.wav"],
        ["FileNotFoundError", "missing.wav"], ["FileNotFoundError", "sub/gone.flac"]]

    # --type (any case), --limit, --csv, --stage
    code, text, _ = cli(capsys, "errors", str(finished), "--type", "filenotfounderror",
                        "--limit", "1")
    lines = text.splitlines()
    assert lines[0] == "2 error rows: FileNotFoundError 2"
    assert len(lines) == 6 and "missing.wav" in lines[3] and "and 1 more" in lines[5]
    _, text, _ = cli(capsys, "errors", str(finished), "--csv", "--type", "AudioDecodeError")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["utt_id"] for r in rows) == ["corrupt.wav", "empty.wav"]
    assert set(rows[0]) == {"stage", "error_type", "utt_id", "source", "message"}
    code, text, _ = cli(capsys, "errors", str(finished), "--stage", "tokens")
    assert code == 0 and text.startswith("no error rows")


def test_messages_are_cut_to_the_terminal_width(finished, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "70")
    _, text, _ = cli(capsys, "errors", str(finished))
    table = text.splitlines()[2:]
    assert all(len(line) <= 70 for line in table), table
    assert any(line.endswith("…") for line in table)  # corrupt.wav's message is longer


def test_no_run_is_exit_code_2(tmp_path, finished, capsys):
    code, _, err = cli(capsys, "status", str(tmp_path / "nothing"))
    assert code == 2 and "no timbrespace-ray run" in err and "nothing is there" in err
    code, _, err = cli(capsys, "errors", str(tmp_path / "nothing"))
    assert code == 2 and "no timbrespace-ray run" in err
    code, _, err = cli(capsys, "status", str(finished / "features"))
    assert code == 2 and "pass the run's folder" in err
    code, _, err = cli(capsys, "status", str(finished), "--stage", "nope")
    assert code == 2 and "unknown stage 'nope'" in err


def test_console_script_exit_codes(finished, tmp_path):
    exe = [sys.executable, "-m", "timbrespace_ray.cli"]
    done = subprocess.run([*exe, "status", str(finished), "--stage", "features"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert subprocess.run([*exe, "status", str(finished)], capture_output=True,
                          timeout=60).returncode == 3
    gone = subprocess.run([*exe, "status", str(tmp_path / "no")], capture_output=True, text=True,
                          timeout=60)
    assert gone.returncode == 2
    assert gone.stderr.startswith("timbrespace-ray: error: no timbrespace-ray run")


def test_the_registry_names_the_stages_as_they_name_themselves(tmp_path):
    from timbrespace_ray.config import PipelineConfig
    from timbrespace_ray.stages import profile, train
    from timbrespace_ray.stages.registry import STAGES
    from timbrespace_ray.storage import Location

    cfg = PipelineConfig(input=str(tmp_path), output=str(tmp_path))
    for spec in STAGES:
        stage = spec.stage_type().from_config(cfg, Location.of(str(tmp_path)), False)
        assert stage.name == spec.name and stage.folder.path.endswith("/" + spec.folder)
        # a stage's earlier map steps keep their state under its own
        assert all(step.startswith(spec.name + "/") for step in spec.steps)
    assert profile.MEASURES in dict((s.name, s.steps) for s in STAGES)["profile"]
    assert (inspection.CHECKPOINT, inspection.CHECKPOINT_STATE) == (train.CHECKPOINT, train.STATE)
    assert inspection.resolve_stages(["embeddings,features", "profiles"]) == [
        "features", "profile", "embed"]


# S3 ------------------------------------------------------------------------------------------

def test_status_and_errors_on_s3(manifest, s3_server, s3_bucket, tmp_path, capsys):
    opts = s3_server.storage_options
    done_uri, stopped_uri = f"s3://{s3_bucket}/run1", f"s3://{s3_bucket}/run2"
    run_stage("features", config(manifest, done_uri, opts), LocalExecutor())
    with pytest.raises(Interrupt):
        run_stage("features", config(manifest, stopped_uri, opts), StopsAfter(2))
    conf = tmp_path / "s3.yaml"
    conf.write_text(yaml.safe_dump({"storage": {"storage_options": opts}}))

    # the config's storage section, as every other command takes it
    code, doc, st = status_json(capsys, done_uri, "--config", str(conf), "--stage", "features")
    f = st["features"]
    assert code == 0 and doc["output"] == done_uri
    assert (f["state"], f["units_total"]) == ("finished", INPUTS)
    assert (f["rows"], f["errors_total"]) == (3, 4)
    code, doc, st = status_json(capsys, stopped_uri, "--config", str(conf))
    f = st["features"]
    assert code == 3
    assert (f["state"], f["units_done"], f["units_total"]) == ("incomplete", 2, INPUTS)
    assert recent(f["last_progress_at"], 300)  # the markers' times, from the same listing

    # --storage-option, nested keys with dots
    flags = ["--storage-option", f"endpoint_url={opts['endpoint_url']}", "--storage-option",
             f"key={opts['key']}", "--storage-option", f"secret={opts['secret']}",
             "--storage-option",
             f"client_kwargs.region_name={opts['client_kwargs']['region_name']}"]
    code, text, _ = cli(capsys, "errors", done_uri, *flags, "--json", "--type", "AudioDecodeError")
    doc = json.loads(text)
    assert code == 0 and {r["utt_id"] for r in doc["rows"]} == {"corrupt.wav", "empty.wav"}
    assert all(r["source"].startswith("file://") for r in doc["rows"])

    code, _, err = cli(capsys, "status", f"s3://{s3_bucket}/nothing-here", "--config", str(conf))
    assert code == 2 and "no timbrespace-ray run" in err
    bad = [f if not f.startswith("secret=") else "secret=wrong" for f in flags]
    code, _, err = cli(capsys, "status", done_uri, *bad)
    assert code == 2 and f"s3://{s3_bucket}/run1" in err and "wrong" not in err, err


def test_markers_of_a_large_stage_are_listed_by_prefix_on_s3(s3_server, s3_bucket):
    """Past 1,000 units the markers are listed a thousand names at a time, concurrently."""
    fs = s3_server.filesystem()
    units = [0, 7, 999, 1000, 1500, 2999, 3000]
    fs.pipe({f"{s3_bucket}/run/_run/features/done/{u:06d}.json": b"{}" for u in units})
    fs.pipe({f"{s3_bucket}/run/_run/features/done/.000008.json.tmp": b"",
             f"{s3_bucket}/run/_run/features/done/sub/000009.json": b"{}"})
    done = inspection.open_output(f"s3://{s3_bucket}/run/_run/features/done",
                                  s3_server.storage_options)
    assert markers.sharded_listing(done, ["000"]) is not None  # s3fs lists by prefix
    found = markers.marker_listing(done, 3001)
    assert sorted(n for n in found if n.endswith(".json")) == [f"{u:06d}.json" for u in units]
    assert {k for k in found if k.endswith(".json")} == {
        k for k in markers.listing(done) if k.endswith(".json")}
    n, newest = inspection._markers(done, 3001)
    assert n == len(units) and -5 <= time.time() - newest <= 300
