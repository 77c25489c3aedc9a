"""The map stages' actor pool on a real embedded Ray: every unit exactly once, a unit whose worker
is killed runs again elsewhere, a unit that kills its worker every time stops the stage with a
message, a failing setup stops it, and the pool's CPUs are free again afterwards."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

DRIVER = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    import ray
    from timbrespace_ray.executors.actor_pool import run_on_actor_pool
    from timbrespace_ray.executors import RayExecutor
    from timbrespace_ray.executors.base import UnitStats, WorkUnit
    from timbrespace_ray.stages.base import MapStage
    from timbrespace_ray.storage import Location

    tmp = Path(sys.argv[1])

    class Probe(MapStage):
        name = "probe"

        def __init__(self, mode):
            super().__init__(Location.of(str(tmp / "out")))
            self.mode = mode

        def plan(self):
            return [WorkUnit(i, ({"i": i},)) for i in range(12)]

        def setup(self):
            if self.mode == "bad setup":
                raise ValueError("no model at s3://models/missing")

        def process(self, unit):
            with open(tmp / "attempts", "a") as fh:
                fh.write(f"{unit.index} {os.getpid()}\\n")
            time.sleep(0.2)
            first = (tmp / f"killed-{unit.index}").exists() is False
            if unit.index == 5 and (self.mode == "dies every time" or first):
                (tmp / f"killed-{unit.index}").touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return UnitStats(unit.index, inputs=1, rows=1)

    ex = RayExecutor(num_cpus=2, progress_bars=False)
    ex.connect()
    stage = Probe(sys.argv[2])
    results, out = [], {}
    try:
        run_on_actor_pool(stage, stage.plan(), results.append, {"num_cpus": 1}, 2, 2, grow=False)
    except Exception as exc:
        out["error"] = [type(exc).__name__, str(exc)]
    out["units"] = sorted(s.unit for s in results)
    time.sleep(1.0)  # the killed actors' resources are returned asynchronously
    out["cpus_free"] = ray.available_resources().get("CPU", 0)
    print("RESULT " + json.dumps(out))
""")


def run(tmp_path, mode: str) -> tuple[dict, list[tuple[int, int]]]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), mode], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    attempts_file = tmp_path / "attempts"
    attempts = ([tuple(map(int, x.split())) for x in attempts_file.read_text().splitlines()]
                if attempts_file.exists() else [])
    return json.loads(line[len("RESULT "):]), attempts


def test_a_killed_worker_s_unit_runs_again_and_every_unit_is_reported_once(tmp_path):
    out, attempts = run(tmp_path, "dies once")
    assert "error" not in out and out["units"] == list(range(12))
    fives = [pid for unit, pid in attempts if unit == 5]
    assert len(fives) == 2 and fives[0] != fives[1]  # again, in another process
    assert out["cpus_free"] == 2  # the pool's actors are gone


def test_a_unit_that_kills_its_worker_every_time_stops_the_stage(tmp_path):
    out, attempts = run(tmp_path, "dies every time")
    assert out["error"][0] == "WorkerLostError"
    assert "probe: unit 5: its worker died 4 times" in out["error"][1]
    assert len([u for u, _ in attempts if u == 5]) == 4
    assert out["cpus_free"] == 2


def test_a_setup_that_fails_stops_the_stage_with_its_message(tmp_path):
    out, attempts = run(tmp_path, "bad setup")
    assert "no model at s3://models/missing" in out["error"][1] and out["units"] == []
    assert attempts == [] and out["cpus_free"] == 2
