"""Fault injection, outputs: a read-only output location and one that fills up, locally (tmpfs
mounts; root ignores file permissions, so read-only is a read-only mount) and on a Ray cluster.

Each gives one clear line naming the location (the CLI exits 2, no traceback), and leaves nothing
a later run could take for complete: no stage summary, no run history, no done marker without its
part files, no partial `*.parquet`, no temporary file. A rerun once there is room finishes with the
same tables as a run that never failed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from helpers.corpus import SHORT
from timbrespace_ray.config import load_config
from timbrespace_ray.errors import StorageError
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.storage import Location

REPO = Path(__file__).resolve().parents[2]
N_INPUTS = len(SHORT) + 1


def _sh(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size, ro=False) -> a fresh tmpfs under tmp_path; unmounted at teardown."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "4m", ro: bool = False) -> Path:
        path = tmp_path / name
        path.mkdir()
        r = _sh("mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if ro else ""), "tmpfs", str(path))
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {r.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        if _sh("umount", str(path)).returncode:
            _sh("umount", "-l", str(path))


def _remount(path: Path, mode: str) -> None:
    r = _sh("mount", "-o", f"remount,{mode}", str(path))
    assert r.returncode == 0, r.stderr


def _used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _fill(path: Path, leave_free: int) -> Path:
    """A filler file that leaves about `leave_free` bytes free on the mount."""
    st = os.statvfs(path)
    filler = path / "filler.bin"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_free))
    return filler


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("out-corpus")
    src = root / "corpus"
    src.mkdir()
    for p in SHORT:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")  # an errors part to write too
    config = root / "config.yaml"
    config.write_text("features:\n  files_per_unit: 1\n")
    return src, config


def _run(src: Path, out: Path):
    cfg = load_config(**{"features.files_per_unit": 1})
    return FeaturesStage(Location.of(str(out)), str(src), cfg.features).run(LocalExecutor())


def _tables(out: Path) -> tuple[list, list]:
    q = "select * exclude (source) from '{}/{}/*.parquet' order by utt_id"
    return (duckdb.sql(q.format(out, "features")).fetchall(),
            duckdb.sql(q.format(out, "errors")).fetchall())


@pytest.fixture
def reference(corpus, tmpfs):
    """A run that never failed, on a roomy tmpfs; with the bytes it took there."""
    src, _ = corpus
    mount = tmpfs("ref", "8m")
    summary = _run(src, mount / "out")
    assert summary.inputs == N_INPUTS
    return {"tables": _tables(mount / "out"), "used": _used(mount), "units": summary.units_total}


def _cli(args: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "timbrespace_ray.cli", "features", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _one_error_line(proc: subprocess.CompletedProcess, location: Path, reason: str) -> str:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    lines = [ln for ln in text.splitlines() if ln.startswith("timbrespace-ray: error:")]
    assert len(lines) == 1, text[-3000:]
    assert f"file://{location}/" in lines[0] and reason in lines[0], lines[0]
    return lines[0]


def _assert_nothing_looks_complete(out: Path, units_total: int) -> int:
    """Nothing here may pass for finished work; returns the number of units marked done."""
    feats, state = out / "features", out / "_run" / "features"
    assert not (state / "summary.json").exists()
    assert not list(out.glob("_run/history/*.json")), "a run summary for a run that failed"
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    for part in out.rglob("*.parquet"):  # every Parquet file is whole
        pq.read_table(part)
    done = sorted((state / "done").glob("*.json")) if (state / "done").exists() else []
    for marker in done:
        stats = Location.of(str(marker)).read_json()
        part = feats / f"part-{marker.stem}.parquet"
        assert part.exists() and pq.read_metadata(part).num_rows == stats["rows"], marker
        if stats["errors"]:
            errors = out / "errors" / f"features-{marker.stem}.parquet"
            assert pq.read_metadata(errors).num_rows == sum(stats["errors"].values()), marker
    assert len(done) < units_total
    return len(done)


def test_read_only_output(corpus, reference, tmpfs):
    src, config = corpus
    ro = tmpfs("ro", "4m", ro=True)
    out = ro / "out"
    proc = _cli(["--input", str(src), "--output", str(out), "--config", str(config), "--no-progress"],
                timeout=120)
    _one_error_line(proc, ro, "Read-only file system")
    assert not list(ro.iterdir()), "nothing can have been written"
    # the same location once writable: the run finishes and equals one that never failed
    _remount(ro, "rw")
    summary = _run(src, out)
    assert summary.inputs == N_INPUTS == summary.rows + sum(summary.errors.values())
    assert _tables(out) == reference["tables"]


def test_full_output_before_anything_is_written(corpus, tmpfs):
    src, config = corpus
    full = tmpfs("full", "64k")
    _fill(full, 0)
    proc = _cli(["--input", str(src), "--output", str(full / "out"), "--config", str(config),
                 "--no-progress"], timeout=120)
    line = _one_error_line(proc, full, "No space left on device")
    assert "errors/empty.parquet" in line  # the first file a run writes
    assert not list(full.rglob("*.parquet")) and not list(full.rglob("summary.json"))


def test_output_fills_up_mid_stage_then_resumes(corpus, reference, tmpfs):
    src, _ = corpus
    mount = tmpfs("mid", "8m")
    filler = _fill(mount, reference["used"] // 2)
    out = mount / "out"
    with pytest.raises(StorageError, match="No space left on device") as info:
        _run(src, out)
    assert f"could not write file://{out}/" in str(info.value) and "\n" not in str(info.value)
    n_done = _assert_nothing_looks_complete(out, reference["units"])
    assert n_done >= 1, "the disk should fill up mid-stage, not before the first unit"
    filler.unlink()
    summary = _run(src, out)
    assert summary.units_run == summary.units_total - n_done
    assert summary.inputs == N_INPUTS == summary.rows + sum(summary.errors.values())
    assert _tables(out) == reference["tables"]


@pytest.mark.slow
def test_output_fills_up_mid_stage_on_a_ray_cluster(corpus, reference, tmpfs, ray_cluster):
    src, config = corpus
    mount = tmpfs("ray-mid", "8m")
    filler = _fill(mount, reference["used"] // 2)
    out = mount / "out"
    args = ["--input", str(src), "--output", str(out), "--config", str(config),
            "--address", ray_cluster.address, "--no-progress"]
    _one_error_line(_cli(args, ray_cluster.env), out, "No space left on device")
    n_done = _assert_nothing_looks_complete(out, reference["units"])
    filler.unlink()
    proc = _cli(args, ray_cluster.env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert f"{reference['units'] - n_done} to run" in proc.stdout
    assert _tables(out) == reference["tables"]
