"""tests/benchmarks/gpu_check.py on its CPU path (what CI can run): every step runs through the
product's stages without Ray and prints figures that add up."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "benchmarks" / "gpu_check.py"
SECTIONS = ("machine", "input", "kmeans", "tokens", "train", "embed", "summary")
STEPS = ["kmeans (CPU, seed 0)", "kmeans (CPU, seed 1)", "tokens stage",
         "train (original's 58 M)", "embed stage, original's (tiny)",
         "embed_windows, original's (tiny)", "embed stage, recipe small",
         "embed_windows, recipe small"]


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    proc = run_script("--device", "cpu", "--tiny", "--features", "vectors", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_prints_every_section_and_the_summary_of_every_step(tiny_run):
    proc, doc = tiny_run
    text = proc.stdout
    for title in SECTIONS:
        assert f"\n== {title} ==" in text, title
    assert "Ray imported: False" in text
    assert "GPU: none used (--device cpu)" in text
    table = text.split("== summary ==")[1]
    for step in STEPS:
        assert step in table, step
    assert "problems: 0" in table
    assert doc["problems"] == []
    assert [r["step"] for r in doc["results"]] == STEPS


def test_figures_are_sane_and_add_up(tiny_run):
    _, doc = tiny_run
    corpus = doc["info"]["corpus"]
    # --tiny: copies of the eight bundled recordings of at most 10 s (34.6 s, 2,142 frames)
    assert corpus["utterances"] == 8 * corpus["copies"]
    assert corpus["frames"] == 2142 * corpus["copies"]
    assert corpus["audio_seconds"] == pytest.approx(34.6 * corpus["copies"], rel=0.01)
    rows = {r["step"]: r for r in doc["results"]}
    for step, r in rows.items():
        assert r["seconds"] > 0 and r["amount"] > 0, step
        assert r["rate"] == pytest.approx(r["amount"] / r["seconds"]), step
        assert math.isfinite(r["x_real_time"]) and r["x_real_time"] > 0, step
        assert r["gpu_peak_gib"] is None, step  # nothing ran on a GPU
    # every frame of the corpus is sampled (fewer than max_frames), tokenised and embedded
    for step in STEPS[:2]:
        assert rows[step]["amount"] == corpus["frames"]
        assert rows[step]["backend"] == "numba" and math.isfinite(rows[step]["inertia"])
    tokens = rows["tokens stage"]
    assert tokens["amount"] == corpus["frames"] and tokens["rows"] == corpus["utterances"]
    # x real time of a stage is the corpus's audio over its units' busy time
    assert tokens["x_real_time"] == pytest.approx(corpus["audio_seconds"] / tokens["seconds"])
    for label in ("original's (tiny)", "recipe small"):
        assert rows[f"embed stage, {label}"]["amount"] == corpus["frames"]
        assert rows[f"embed stage, {label}"]["rows"] == corpus["utterances"]
        assert rows[f"embed_windows, {label}"]["amount"] == corpus["frames"]
    # the recipe's encoder: 128 x 2 layers
    assert 0.3e6 < rows["embed_windows, recipe small"]["params"] < 1e6
    train = rows["train (original's 58 M)"]
    assert train["rate_unit"] == "tokens/s"
    # tokens of audio: 62.5 per second (16 ms hop)
    assert train["x_real_time"] == pytest.approx(train["rate"] / 62.5)
    assert math.isfinite(train["loss_first"]) and math.isfinite(train["loss_last"])
    assert train["dtype"] in ("float32", "bfloat16") and train["activation_checkpointing"] is False
    assert train["step_reported_tokens_per_s"] > 0


def test_asking_for_cuda_without_a_gpu_says_so():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the real check would run")
    proc = run_script("--device", "cuda", "--features", "vectors")
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "--device cpu" in proc.stderr
