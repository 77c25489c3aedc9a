"""An output folder as its readers see it: every table folder holds only Parquet parts, so each
common reader opens it by its path and counts the same rows; bookkeeping stays in `_run/`; a
folder of the old layout is refused with what to do."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from helpers.runs import BAD, INPUTS
from timbrespace_ray.cli import main
from timbrespace_ray.config import load_config
from timbrespace_ray.errors import ConfigError
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.layout import STATE
from timbrespace_ray.pipeline import run_stage
from timbrespace_ray.stages.registry import table_folders
from timbrespace_ray.tables import ERRORS_SCHEMA

pytestmark = pytest.mark.slow  # the demo, and Ray Data's reader


def _counts(folder) -> dict[str, int]:
    """The rows of a table folder, as each reader counts them, opened by the folder's path."""
    import datasets
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds
    import ray

    path = str(folder)
    counts = {
        "polars": pl.read_parquet(path).height,
        "pyarrow.dataset": ds.dataset(path).count_rows(),
        "duckdb *.parquet": duckdb.sql(
            f"select count(*) from read_parquet('{path}/*.parquet')").fetchall()[0][0],
        "duckdb **/*.parquet": duckdb.sql(
            f"select count(*) from read_parquet('{path}/**/*.parquet')").fetchall()[0][0],
        "ray.data": ray.data.read_parquet(path).count(),
        # datasets' streaming reader opens an empty table too (its builder refuses 0 rows)
        "datasets streaming": sum(1 for _ in datasets.load_dataset(
            "parquet", data_dir=path, split="train", streaming=True)),
    }
    if counts["polars"]:
        counts["datasets"] = datasets.load_dataset("parquet", data_dir=path, split="train").num_rows
    else:
        with pytest.raises(ValueError, match="corresponds to no data"):
            datasets.load_dataset("parquet", data_dir=path, split="train")
    return counts


@pytest.fixture(scope="module")
def ray_data():
    import datasets
    import ray

    from timbrespace_ray.executors import RayExecutor

    datasets.disable_progress_bars()
    RayExecutor(num_cpus=1, progress_bars=False).connect()
    yield
    ray.shutdown()


def test_every_reader_opens_every_table_folder_and_counts_the_same_rows(demo, failed_run,
                                                                         ray_data):
    demo_out = demo[0]
    expected = {  # from the corpora, not from the code: the demo's 10 recordings of 6 speakers
        demo_out: {"features": 10, "profiles": 10, "tokens": 10, "speakers": 6, "errors": 0},
        failed_run: {"features": INPUTS - len(BAD), "profiles": INPUTS - len(BAD),
                     "tokens": INPUTS - len(BAD), "speakers": 2, "errors": len(BAD)},
    }
    for out, rows in expected.items():
        present = sorted(p.name for p in out.iterdir() if p.name in table_folders())
        assert set(rows) <= set(present), present
        for name in present:
            folder = out / name
            # nothing but Parquet parts in a table folder
            assert all(p.is_file() and p.suffix == ".parquet" for p in folder.iterdir()), \
                sorted(p.name for p in folder.iterdir())
            counts = _counts(folder)
            assert len(set(counts.values())) == 1, (folder, counts)
            if name in rows:
                assert counts["polars"] == rows[name], (folder, counts)
        # the embeddings: one row per window, the same for every reader
        if (out / "embeddings").exists():
            assert len(set(_counts(out / "embeddings").values())) == 1
    # errors/ is a table from the first stage on: empty, with its schema, when nothing failed
    (empty,) = (demo_out / "errors").iterdir()
    assert pq.read_schema(empty).remove_metadata() == ERRORS_SCHEMA
    assert (demo_out / STATE / "features" / "summary.json").exists()


def test_a_folder_of_the_old_layout_is_refused_with_what_to_do(tmp_path, capsys):
    old = tmp_path / "old"
    for name in ("_plan", "_runs", "features/_done"):
        (old / name).mkdir(parents=True)
    (old / "features" / "_SUCCESS").write_text("{}")
    message = "written by timbrespace-ray 0.1.*Write to a new output folder"
    cfg = load_config(input=str(tmp_path), output=str(old))
    with pytest.raises(ConfigError, match=message):
        run_stage("tokens", cfg, LocalExecutor())
    assert not (old / STATE).exists() and not (old / "errors").exists()  # nothing written
    for command in (["status", str(old)], ["evaluate", "--output", str(old), "--label", "x"]):
        capsys.readouterr()
        assert main(command) == 2
        assert "written by timbrespace-ray 0.1" in capsys.readouterr().err, command
