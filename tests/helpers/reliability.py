"""Shared pieces of the runtime reliability tests (dying workers, killed drivers, flaky storage).

* `Driver`: the CLI in a subprocess (through tests/helpers/reliability_driver.py, which can freeze
  itself just before writing a given path), with its output collected by a thread;
* `freeze`/`kill`: SIGSTOP/SIGKILL helpers and `wait_until`, a bounded poll;
* `clean_reference()`: one clean, uninterrupted run of every stage on the shared corpus,
  computed once per pytest process in-process (LocalExecutor), for the tests to compare with;
* `rows()`: a stage's rows through duckdb, sorted, to compare runs row for row.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from helpers.corpus import SHORT

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "reliability_driver.py"
UNIT_ACTOR = "ray::UnitActor"

# a features unit per file; a small k-means; the tiny encoder of test_stage_train_embed.py
CONFIG = {
    "features": {"files_per_unit": 1},
    "kmeans": {"n_clusters": 16, "n_init": 2, "max_frames": 3000, "max_iter": 100,
               "silhouette_sample": 500},
    "tokens": {"cpus_per_worker": 0.5},
    "train": {"hidden_dim": 64, "num_layers": 2, "nhead": 4, "max_len": 256, "batch_size": 4,
              "pool_batches": 4, "log_every": 5, "checkpoint_every": 10, "lr": 1e-3,
              "warmup_steps": 3, "cpus_per_worker": 1.0, "max_steps": 30, "use_gpu": False,
              "early_stopping_patience": 0},  # the whole budget: the tests count its steps
    "embed": {"batch_tokens": 512, "cpus_per_worker": 1.0, "use_gpu": False},
}
N_SPEAKERS = 2


def make_corpus(root: Path) -> dict:
    """N_SPEAKERS folders of the short bundled recordings plus one broken file: one unit each."""
    for i in range(N_SPEAKERS):
        folder = root / f"spk{i}"
        folder.mkdir(parents=True)
        for p in SHORT:
            shutil.copy(p, folder / p.name)
    (root / "spk0" / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    files = N_SPEAKERS * len(SHORT)
    return {"units": files + 1, "rows": files, "errors": 1}


def write_config(path: Path, extra: dict | None = None) -> Path:
    import yaml

    doc = {k: dict(v) for k, v in CONFIG.items()}
    for section, values in (extra or {}).items():
        doc.setdefault(section, {}).update(values) if isinstance(values, dict) else doc.update(
            {section: values})
    path.write_text(yaml.safe_dump(doc))
    return path


# ----------------------------------------------------------------------------- processes
def wait_until(predicate, timeout_s: float, interval_s: float = 0.01, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def proc_state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].split()[0].decode()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace").strip()
    except OSError:
        return ""


def sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


_DRIVERS: list["Driver"] = []


@pytest.fixture
def no_leftover_drivers():
    """Kill (-9) whatever driver a failing test left running or frozen."""
    yield
    while _DRIVERS:
        driver = _DRIVERS.pop()
        if driver.proc.poll() is None:
            driver.kill()


class Driver:
    """The CLI (`stage` + args) in a subprocess of its own session, output collected."""

    def __init__(self, stage: str, args: list[str], env: dict[str, str],
                 pause_before_write: str | None = None):
        env = {**env, "PYTHONUNBUFFERED": "1"}
        env.pop("TSR_PAUSE_BEFORE_WRITE", None)
        if pause_before_write:
            env["TSR_PAUSE_BEFORE_WRITE"] = pause_before_write
        self.stage, self.t0 = stage, time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER), stage, *args], env=env, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace", start_new_session=True)
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        _DRIVERS.append(self)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def printed(self, text: str) -> bool:
        return any(text in line for line in list(self._lines))

    def frozen(self) -> bool:
        return proc_state(self.pid) == "T"

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        wait_until(self.frozen, 10, 0.005, "the driver to stop")

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (kill -9) the driver and reap it."""
        sigkill(self.pid)
        self.proc.wait(timeout=30)
        self._reader.join(10)

    def finish(self, timeout_s: float = 300) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the driver did not finish within {timeout_s:.0f} s; output:\n"
                                 + self.output[-4000:])
        self._reader.join(10)
        return self.proc.returncode, self.output

    def seconds(self) -> float:
        return time.monotonic() - self.t0


def run_cli(stage: str, args: list[str], env: dict[str, str], timeout_s: float = 300) -> str:
    """Run to the end; the output, after checking the exit status is 0."""
    rc, out = Driver(stage, args, env).finish(timeout_s)
    assert rc == 0, f"`{stage}` failed (rc {rc}):\n{out[-4000:]}"
    return out


def cluster_actors(cluster, prefix: str = UNIT_ACTOR) -> dict[int, str]:
    """This cluster's live processes whose title starts with `prefix` -> title."""
    return {pid: cmd for pid, cmd in cluster.processes().items() if cmd.startswith(prefix)}


# ----------------------------------------------------------------------------- outputs
def markers(state: Path) -> int:
    """The units a stage marked done: `state` is its `_run/<stage>/` folder."""
    done = state / "done"
    try:
        return sum(1 for n in os.listdir(done) if n.endswith(".json"))
    except FileNotFoundError:
        return 0


def rows(out: Path | str, name: str, order: str = "utt_id", exclude: str = "") -> list[tuple]:
    """Every row of `<out>/<name>/*.parquet`, sorted (duckdb)."""
    sel = f"* exclude ({exclude})" if exclude else "*"
    with duckdb.connect() as con:
        return con.sql(f"select {sel} from read_parquet('{out}/{name}/*.parquet') "
                       f"order by {order}").fetchall()


def s3_rows(fs, prefix: str, order: tuple[str, ...] = ("utt_id",)) -> list[tuple]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(io.BytesIO(fs.cat_file(p))) for p in sorted(fs.glob(f"{prefix}/*.parquet"))]
    table = pa.concat_tables(tables) if tables else None
    if table is None:
        return []
    with duckdb.connect() as con:
        con.register("t", table)
        return con.sql(f"select * from t order by {', '.join(order)}").fetchall()


# ----------------------------------------------------------------------------- references
_REFERENCE: dict[str, Path] = {}
_LOCK = threading.Lock()


def clean_reference(tmp_path_factory, stages: tuple[str, ...] = ("features", "kmeans", "tokens")
                    ) -> dict[str, Path]:
    """Clean runs in this process (LocalExecutor), once per pytest process: the corpus, the
    config and one output folder holding features, kmeans and tokens."""
    with _LOCK:
        if "out" not in _REFERENCE:
            from timbrespace_ray.config import load_config
            from timbrespace_ray.pipeline import run_stage
            from timbrespace_ray.executors import LocalExecutor

            root = tmp_path_factory.mktemp("reliability-reference")
            corpus = root / "corpus"
            counts = make_corpus(corpus)
            config = write_config(root / "config.yaml")
            out = root / "clean"
            cfg = load_config(str(config), input=str(corpus), output=str(out))
            for stage in ("features", "kmeans", "tokens"):
                run_stage(stage, cfg, LocalExecutor())
            _REFERENCE.update(root=root, corpus=corpus, config=config, out=out)
            _REFERENCE["counts"] = counts
        return dict(_REFERENCE)
