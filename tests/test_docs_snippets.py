"""Every shell, SQL and Python snippet of README.md and docs/*.md, run against the demo's output
(the session's `demo` run): shell with bash, SQL through DuckDB (it must return rows), Python in
a subprocess, each in a scratch folder where `demo_output` links to the demo's output. A block
marked `<!-- not run: REASON -->` is reported as skipped with its reason. The rules:
docs/development.md."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from helpers.docs import REPO, RUNNABLE, all_blocks, shell_script, substituted

pytestmark = pytest.mark.slow  # the demo's run

BLOCKS = [pytest.param(b, id=b.name, marks=() if b.not_run is None else
                       pytest.mark.skip(reason=f"{b.name} not run: {b.not_run}"))
          for b in all_blocks() if b.lang in RUNNABLE]
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def workdir(demo, tmp_path_factory) -> Path:
    """A scratch folder that looks like a checkout after `make demo`: the repository's top-level
    entries linked in, and `demo_output` linked to the demo's output."""
    here = tmp_path_factory.mktemp("docs-snippets")
    for entry in REPO.iterdir():
        if entry.name not in (".git", ".venv", "demo_output"):
            (here / entry.name).symlink_to(entry)
    (here / "demo_output").symlink_to(demo[0])
    return here


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """This Python's scripts (timbrespace-ray, python) first on PATH, this checkout's package
    imported, Hugging Face's caches in a scratch folder and no network."""
    hf = tmp_path_factory.mktemp("hf-cache")
    return {**os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "HF_HOME": str(hf), "HF_DATASETS_CACHE": str(hf / "datasets"), "HF_HUB_OFFLINE": "1"}


def _run(args: list[str], code: str, cwd: Path, env: dict) -> None:
    done = subprocess.run(args, input=code, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert done.returncode == 0, (f"exit {done.returncode}\n--- code\n{code}\n--- stdout\n"
                                  f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


@pytest.mark.parametrize("block", BLOCKS)
def test_snippet_runs_on_the_demo_output(block, workdir, env, monkeypatch):
    code = substituted(block.code)
    if block.lang == "sql":
        monkeypatch.chdir(workdir)  # relative paths in FROM resolve against the working folder
        rows = duckdb.connect().sql(code).fetchall()
        assert rows, f"{block.name}: the query returned no rows on the demo's output"
    elif block.lang == "python":
        _run([sys.executable, "-"], code, workdir, env)
    else:
        _run(["bash", "-e", "-o", "pipefail", "-s"], substituted(shell_script(block)), workdir, env)
