"""Each new input form read from S3 (SeaweedFS) by a real Ray cluster, the driver killed with
SIGKILL mid-stage, then rerun: the rows equal a clean in-process run's, none twice, none lost."""
import json

import duckdb
import pytest

from helpers.forms import FORMS
from helpers.reliability import (  # noqa: F401 (no_leftover_drivers: a fixture)
    Driver, markers, no_leftover_drivers, run_cli, wait_until)
from timbrespace_ray.config import load_config
from timbrespace_ray.pipeline import run_stage
from timbrespace_ray.executors import LocalExecutor

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_drivers")]


def table(out, name, local_root, s3_root):
    """Rows by utt_id; `source` relative to where the corpus was read from (it is the same
    corpus in two places), error messages left out (they name that place too)."""
    return duckdb.sql(
        f"select * exclude (source{', message' if name == 'errors' else ''}), "
        f"replace(replace(source, '{s3_root}', ''), 'file://{local_root}', '') as source "
        f"from '{out}/{name}/*.parquet' order by utt_id").fetchall()


@pytest.mark.parametrize("form", sorted(FORMS))
def test_form_from_s3_resumes_after_kill_9(form, s3_server, s3_bucket, ray_cluster, ray_s3_env,
                                           tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    name, counts = FORMS[form](corpus)
    config = tmp_path / "c.yaml"
    # the workers get the credentials with the stage, from the config (a cluster's nodes are
    # not started with the driver's environment)
    config.write_text(json.dumps({"features": {"files_per_unit": 1},
                                  "storage": {"storage_options": s3_server.storage_options}}))

    # the reference: a clean run in this process, from the local copy
    clean = tmp_path / "clean"
    cfg = load_config(str(config), input=str(corpus / name), output=str(clean))
    summary = run_stage("features", cfg, LocalExecutor())
    assert (summary.inputs, summary.rows, sum(summary.errors.values())) == \
        (counts["inputs"], counts["rows"], counts["errors"])
    assert summary.units_total == counts["units"]

    s3_server.filesystem().put(f"{corpus}/", f"{s3_bucket}/corpus/", recursive=True)
    out = tmp_path / "out"
    args = ["--input", f"s3://{s3_bucket}/corpus/{name}", "--output", str(out), "--config",
            str(config), "--address", ray_cluster.address, "--no-progress"]
    driver = Driver("features", args, ray_s3_env)
    folder = out / "_run" / "features"
    wait_until(lambda: markers(folder) >= 3 or driver.proc.poll() is not None, 240,
               what="3 finished units")
    assert driver.proc.poll() is None, f"the driver ended first:\n{driver.output[-3000:]}"
    driver.freeze()
    done = markers(folder)
    assert 3 <= done < counts["units"] and not (folder / "summary.json").exists(), done
    driver.kill()

    output = run_cli("features", args, ray_s3_env)
    assert f"inputs seen {counts['inputs']} = rows {counts['rows']} + errors {counts['errors']}" in output
    assert f"{counts['units']} units, " in output and "0 already done" not in output
    s3_root = f"s3://{s3_bucket}/corpus"
    for name_ in ("features", "errors"):
        assert table(out, name_, corpus, s3_root) == table(clean, name_, corpus, s3_root), name_
    ids = [r[0] for r in table(out, "features", corpus, s3_root)]
    assert len(ids) == len(set(ids)) == counts["rows"]
