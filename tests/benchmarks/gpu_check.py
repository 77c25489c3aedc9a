"""GPU check: the tokens, train and embed stages on a CUDA GPU in bf16 (and k-means through cuML
when it imports), with the throughput of each, in one command and a few minutes, without Ray.

What runs, all in this process (no Ray: the GPU machine has none), through the product's code:
  input    the bundled real speech (timbrespace_ray/demo_corpus, 10 recordings, 95 s) as feature
           rows: a features stage output (`--features DIR`, e.g. the one `--prepare` writes),
           the features stage run here in-process (`--features stage`), or the reference
           features of the same recordings in tests/data/vectors (`--features vectors`: no
           audio decoding, no feature JIT). Copies of those rows, named as
           bench_feature_stage.build_corpus names its copies of the files (that module imports
           Ray, so it is not imported here), make a corpus of `--hours` (default 32 h: 1,218
           copies, 7.2 M frames, enough for the k-means stage's default sample of 7 M), written
           as a finished features stage (parts of `--unit-hours`). Only 5,886 frames are
           distinct: k-means converges in fewer iterations than on a real corpus (time per
           iteration is the comparable figure); every other step costs what it would.
  kmeans   the k-means stage's own sample (`per_part_counts` + `sample_part`, the
           `KMeansStageConfig` defaults) fitted with `fit_kmeans(device="cuda")`, i.e. cuML, one
           fit per restart seed; without cuML it says "cuML not importable: skipped". On
           `--device cpu` it fits on the CPU with the configured method, as the stage does there.
  tokens   `TokensStage(use_gpu=True)` run by `runner.run_map_stage` with the `LocalExecutor`
           (the stage's setup/process per unit, its Parquet in and out), after a warm-up run on
           one copy; the published LibriSpeech k = 120 model (tests/data/models) unless
           `--kmeans-model`. Then its CUDA kernel `assign_on_gpu` alone on the k-means sample,
           and its agreement with the CPU path (`KMeansModel.assign`, numba).
  train    what the train stage's Ray Train loop does on a GPU worker, without Ray Train:
           `TrainStageConfig(**config.ORIGINAL_RECIPE).resolved(use_gpu=True)` (the original's
           58 M model, batch 16, max_len 2000, bf16: the largest step a user may set), `plan_training_memory` against the GPU's
           free memory, `make_optimizer`, `training_batches` over pools of the tokens stage's
           output (validation utterances held out by `is_validation`), `train_step`.
           `--train-warmup` untimed steps, then `--train-steps` timed ones.
  embed    `EmbedStage(use_gpu=True)` (its defaults: batch 32 windows, bf16) by `run_map_stage`
           on the trained 58 M encoder and on the recipe's small one (`config.RECIPE`,
           random weights), each after a warm-up run; then `embed_windows` alone (bf16) on the
           same token sequences.
Every timing on CUDA is bracketed by `torch.cuda.synchronize()`. Printed per step: the work,
seconds, frames/s or tokens/s, x real time (audio seconds handled per second; 62.5 frames or
tokens per second of audio), the GPU memory peak (torch's allocator; for cuML, device memory in
use sampled every 20 ms), and sanity figures (losses finite, token ids in range, embeddings
finite, a row per sequence). Then a summary table; `--json PATH` writes the same as JSON. Exit 1
when a sanity check or a step failed (the other steps still run), 2 when CUDA was asked for and
is missing.

On the GPU machine (the repo root as working directory; python3 with torch+CUDA, numpy,
pyarrow, numba, scipy, scikit-learn, fsspec; no Ray, pydantic, soundfile, soxr or ducc0, which
`import timbrespace_ray` needs: their wheels travel in .gpucheck/whl), carry [".gpucheck"] and run:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpucheck/whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && set -o pipefail && python3 tests/benchmarks/gpu_check.py --features .gpucheck/features --json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log

(expected 2-3 minutes on one H200, much of it imports, corpus writing and Parquet; give it a
600 s timeout. Without pip there, `for w in .gpucheck/whl/*.whl; do python3 -m zipfile -e $w
/tmp/site; done` installs the same files.) .gpucheck/ (listed in .git/info/exclude; 19.3 MiB:
ten wheels, 15 MB of them ducc0, and the features stage's output for the demo corpus, 0.2 MB)
is made on a CPU machine with the venv:

    .venv/bin/python tests/benchmarks/gpu_check.py --prepare .gpucheck [--wheel-python 3.12]

which runs the features stage in-process on timbrespace_ray/demo_corpus/manifest.csv and
downloads, for CPython `--wheel-python` on manylinux x86_64, the wheels of this venv's versions of
the packages above (`pip download --no-deps --only-binary=:all:`).

Elsewhere: `make gpu-check` (the venv, any CUDA machine). The CPU path, what CI runs
(tests/benchmarks/test_gpu_check.py; --tiny: 0.03 h of the recordings of at most 10 s, k = 16, a 32 x 1
encoder in the original's slot, 3 training steps), takes seconds:

    .venv/bin/python tests/benchmarks/gpu_check.py --device cpu --tiny --features vectors
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere, installed or not
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from timbrespace_ray.clustering.fit import fit_kmeans, select_backend  # noqa: E402
from timbrespace_ray.clustering.model import KMeansModel  # noqa: E402
from timbrespace_ray.config import (ORIGINAL_RECIPE, EmbedStageConfig,  # noqa: E402
                                    KMeansStageConfig, TrainStageConfig)
from timbrespace_ray.encoder import (ProsodicSequenceEncoder, embed_windows,  # noqa: E402
                                     load_encoder, make_optimizer, save_encoder)
from timbrespace_ray.encoder.loop import (paired_batches, train_step,  # noqa: E402
                                          training_batches)
from timbrespace_ray.encoder.memory import (available_memory_bytes,  # noqa: E402
                                            plan_training_memory)
from timbrespace_ray.encoder.split import is_validation  # noqa: E402
from timbrespace_ray.encoder.precision import compute_dtype  # noqa: E402
from timbrespace_ray.features.analysis import FEATURE_NAMES  # noqa: E402
from timbrespace_ray.features.config import FeatureConfig  # noqa: E402
from timbrespace_ray.layout import RunLayout  # noqa: E402
from timbrespace_ray.executors import LocalExecutor  # noqa: E402
from timbrespace_ray.stages.embed import EmbedStage  # noqa: E402
from timbrespace_ray.stages.sampling import per_part_counts, sample_part  # noqa: E402
from timbrespace_ray.stages.tokens import TokensStage, assign_on_gpu  # noqa: E402
from timbrespace_ray.storage import Location  # noqa: E402
from timbrespace_ray.tables import (carried_metadata, flat_lists, provenance,  # noqa: E402
                                    read_settings, write_table)

DEMO_CORPUS = ROOT / "timbrespace_ray" / "demo_corpus"
DEMO_MANIFEST = DEMO_CORPUS / "manifest.csv"
VECTORS = ROOT / "tests" / "data" / "vectors"
N120_MODEL = ROOT / "tests" / "data" / "models" / "timbrespace_librispeech_n120"
DEFAULT_PREPARED = ROOT / ".gpucheck" / "features"
# frames (= tokens) per second of audio: the extractor's hop (16 ms)
FRAMES_PER_SECOND = 1000.0 / FeatureConfig().hop_ms
GIB = 2.0**30
# what `import timbrespace_ray` needs beyond a CUDA machine's usual numpy/torch/pyarrow/numba/
# scipy/scikit-learn/fsspec (pydantic for the configs; soundfile, soxr, ducc0 for audio and
# the filterbank), with their own dependencies
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection",
          "typing-extensions", "soundfile", "cffi", "pycparser", "soxr", "ducc0")
# --tiny: shapes small enough for a CI run on 2 CPUs in seconds
TINY = {"hours": 0.03, "unit_hours": 0.01, "max_utterance_s": 10.0, "train_steps": 3,
        "train_warmup": 1,
        "kmeans": {"n_clusters": 16, "max_frames": 20_000, "max_iter": 50},
        "train": {"hidden_dim": 32, "num_layers": 1, "nhead": 2, "max_len": 128,
                  "batch_size": 4}}


# -- small helpers ---------------------------------------------------------------------------

def say(text: str = "") -> None:
    print(text, flush=True)


_STARTED = time.perf_counter()


def section(title: str) -> None:
    say(f"\n== {title} ==  [{time.perf_counter() - _STARTED:.1f} s since start]")


class Measured:
    """Wall time of a block, synchronised with the GPU on both ends, and its GPU memory peak:
    torch's allocator peak, and with `sample` the device memory in use (all allocators,
    e.g. cuML's), sampled every 20 ms."""

    def __init__(self, device: torch.device, sample: bool = False):
        self.cuda = device.type == "cuda"
        self.sample = sample and self.cuda
        self.seconds = 0.0
        self.torch_peak: int | None = None
        self.device_peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sampler(self) -> None:
        peak = 0
        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            peak = max(peak, total - free)
            self._stop.wait(0.02)
        free, total = torch.cuda.mem_get_info()
        self.device_peak = max(peak, total - free)

    def __enter__(self) -> "Measured":
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if self.sample:
            self._thread = threading.Thread(target=self._sampler, daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._t0
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        if self.cuda:
            self.torch_peak = torch.cuda.max_memory_allocated()

    def peak_gib(self) -> float | None:
        peak = self.device_peak if self.device_peak is not None else self.torch_peak
        return None if peak is None else peak / GIB

    def peak_text(self) -> str:
        if not self.cuda:
            return "GPU peak -"
        parts = [f"torch {self.torch_peak / GIB:.2f} GiB"]
        if self.device_peak is not None:
            parts.append(f"device in use {self.device_peak / GIB:.2f} GiB (sampled)")
        return "GPU peak " + ", ".join(parts)


class Report:
    """Results per step (for the summary table and --json) and the problems found."""

    def __init__(self):
        self.rows: list[dict] = []
        self.problems: list[str] = []
        self.info: dict = {}

    def add(self, step: str, work: str, seconds: float, amount: float, unit: str,
            audio_seconds: float | None, measured: Measured | None = None, **extra) -> dict:
        rate = amount / seconds if seconds > 0 else float("nan")
        xrt = audio_seconds / seconds if audio_seconds is not None and seconds > 0 else None
        row = {"step": step, "work": work, "seconds": seconds, "amount": amount,
               "rate": rate, "rate_unit": f"{unit}/s", "x_real_time": xrt,
               "gpu_peak_gib": measured.peak_gib() if measured else None, **extra}
        self.rows.append(row)
        peak = measured.peak_text() if measured else ""
        say(f"  -> {step}: {work}: {seconds:.2f} s, {rate:,.0f} {unit}/s"
            + (f", {xrt:,.0f}x real time" if xrt is not None else "")
            + (f", {peak}" if peak else ""))
        return row

    def skip(self, step: str, reason: str) -> None:
        self.rows.append({"step": step, "skipped": reason})
        say(f"  -> {step}: {reason}")

    def problem(self, text: str) -> None:
        self.problems.append(text)
        say(f"  PROBLEM: {text}")

    def check(self, ok: bool, text: str) -> bool:
        if not ok:
            self.problem(text)
        return ok


@contextlib.contextmanager
def guarded(report: Report, step: str):
    """A failing step is reported with its traceback; the steps after it still run."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - one device run should say everything it can
        traceback.print_exc(file=sys.stdout)
        report.problem(f"{step} failed: {type(exc).__name__}: {exc}")


class _Indented(logging.Handler):
    """The stages' log lines, indented under the check's own."""

    def emit(self, record: logging.LogRecord) -> None:
        say(f"    {record.getMessage()}")


# -- machine -----------------------------------------------------------------------------------

def module_version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - cuML raises more than ImportError on a bad driver
        first = str(exc).splitlines()[0][:80] if str(exc) else ""
        return f"not importable ({type(exc).__name__}: {first})"
    return str(getattr(module, "__version__", "?"))


def machine(device: torch.device, report: Report) -> None:
    section("machine")
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cpu": cpu, "cpus": os.cpu_count(),
            "numpy": np.__version__, "pyarrow": pa.__version__,
            "numba": module_version("numba"), "sklearn": module_version("sklearn"),
            "cupy": module_version("cupy"), "cuml": module_version("cuml"),
            "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / GIB,
                    gpu_capability=f"{props.major}.{props.minor}",
                    gpu_count=torch.cuda.device_count(),
                    bf16_supported=torch.cuda.is_bf16_supported(),
                    cudnn=torch.backends.cudnn.version())
        with contextlib.suppress(Exception):
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                  "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 else None
        say(f"GPU: {info['gpu']} ({info['gpu_memory_gib']:.1f} GiB, compute capability "
            f"{info['gpu_capability']}, {info['gpu_count']} visible), driver {info.get('driver')}, "
            f"bf16 supported: {info['bf16_supported']}")
    else:
        say("GPU: none used (--device cpu)")
    say(f"torch {info['torch']} (CUDA {info['torch_cuda']}, cuDNN {info.get('cudnn')}), "
        f"python {info['python']}, numpy {info['numpy']}, pyarrow {info['pyarrow']}, "
        f"numba {info['numba']}, scikit-learn {info['sklearn']}")
    say(f"cupy {info['cupy']}; cuML {info['cuml']}")
    say(f"CPU: {info['cpu']}, {info['cpus']} CPUs; Ray imported: {'ray' in sys.modules}")
    report.info["machine"] = info


# -- input: feature rows of the bundled recordings, and a corpus of copies of them -------------

def _demo_rows() -> list[dict]:
    import csv

    with DEMO_MANIFEST.open(newline="") as fh:
        return sorted(csv.DictReader(fh), key=lambda r: r["path"])


def vector_features() -> pa.Table:
    """The features table of the demo recordings from their reference features
    (tests/data/vectors/<name>.npz `expected_*`: the numbers the extractor reproduces), laid out
    as the features stage writes it (no pitch_hz column: no later stage reads it)."""
    import soundfile as sf  # `import timbrespace_ray` needs it anyway

    from timbrespace_ray.stages.features import BASE_FIELDS

    rows = _demo_rows()
    metadata = [k for k in rows[0] if k != "path"]
    columns: dict[str, list] = {name: [] for name, _ in BASE_FIELDS}
    columns.update({k: [] for k in metadata})
    values: dict[str, list] = {k: [] for k in FEATURE_NAMES}
    offsets = [0]
    for r in rows:
        wav = DEMO_CORPUS / r["path"]
        with np.load(VECTORS / f"{wav.stem}.npz") as vec:
            n = len(vec["expected_f0"])
            row = {"utt_id": r["path"], "source": str(wav), "start_s": None, "end_s": None,
                   "duration_s": len(vec["wav16k"]) / 16000.0,
                   "sample_rate": sf.info(str(wav)).samplerate,
                   "n_frames": n}
            for k in FEATURE_NAMES:
                values[k].append(vec[f"expected_{k}"].astype(np.float32))
        for name, _ in BASE_FIELDS:
            columns[name].append(row[name])
        for k in metadata:
            columns[k].append(r[k])
        offsets.append(offsets[-1] + n)
    arrays = {name: pa.array(columns[name], typ) for name, typ in BASE_FIELDS}
    arrays.update({k: pa.array(columns[k], pa.string()) for k in metadata})
    off = pa.array(np.asarray(offsets, np.int32))
    arrays.update({k: pa.ListArray.from_arrays(off, pa.array(np.concatenate(values[k]),
                                                             pa.float32()))
                   for k in FEATURE_NAMES})
    meta = {**provenance("features", {"source": "tests/data/vectors expected_* (reference "
                                                "features of timbrespace_ray/demo_corpus)"}),
            **carried_metadata(metadata)}
    return pa.table(arrays).replace_schema_metadata(meta)


def run_features_stage(target: Path) -> Path:
    """The features stage, in this process, on the demo corpus (with its speakers); returns
    the stage's folder."""
    from timbrespace_ray.config import FeaturesStageConfig
    from timbrespace_ray.stages.features import FeaturesStage

    stage = FeaturesStage(Location.of(str(target)), str(DEMO_MANIFEST), FeaturesStageConfig())
    stage.run(LocalExecutor())
    return target / "features"


def read_features(path: Path) -> pa.Table:
    """A features Parquet file, or the part files of a features stage folder, as one table."""
    files = [path] if path.is_file() else sorted(path.glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no features part files (part-*.parquet) in {path}")
    tables = [pq.read_table(f) for f in files]
    table = pa.concat_tables(tables)
    return table.replace_schema_metadata(tables[0].schema.metadata)


def load_input(spec: str, scratch: Path) -> tuple[pa.Table, str]:
    if spec == "vectors":
        return vector_features(), "reference features of the demo corpus (tests/data/vectors)"
    if spec == "stage":
        t0 = time.perf_counter()
        folder = run_features_stage(scratch / "extract")
        return read_features(folder), (f"the features stage run now on the demo corpus "
                                       f"({time.perf_counter() - t0:.1f} s)")
    return read_features(Path(spec)), f"features stage output {spec}"


def write_corpus(base: pa.Table, root: Path, hours: float, unit_hours: float) -> dict:
    """Copies of `base`'s rows up to `hours` of audio as a finished features stage under
    `root/features` (parts of `unit_hours`); copy c's utterances are `copy<c>/<utt_id>`."""
    per_copy = float(pc.sum(base.column("duration_s")).as_py())
    copies = max(1, math.ceil(hours * 3600 / per_copy))
    per_part = max(1, round(unit_hours * 3600 / per_copy))
    ids = base.column("utt_id").to_pylist()
    index = base.schema.get_field_index("utt_id")
    out = Location.of(str(root)).child("features")
    parts = 0
    for start in range(0, copies, per_part):
        n = min(per_part, copies - start)
        table = pa.concat_tables([base] * n)
        table = table.set_column(index, "utt_id", pa.array(
            [f"copy{c:05d}/{u}" for c in range(start, start + n) for u in ids], pa.string()))
        write_table(out.child(f"part-{parts:06d}.parquet"), table, base.schema.metadata or {})
        parts += 1
    frames = copies * int(pc.sum(base.column("n_frames")).as_py())
    RunLayout(Location.of(str(root))).summary("features").write_json(
        {"stage": "features", "detail": {"text": "copies written by gpu_check"},
         "units_total": parts})
    return {"copies": copies, "parts": parts, "utterances": copies * base.num_rows,
            "frames": frames, "audio_seconds": copies * per_copy}


def feature_parts(root: Path) -> list[Path]:
    return sorted((root / "features").glob("part-*.parquet"))


# -- steps -------------------------------------------------------------------------------------

def kmeans_sample(root: Path, cfg: KMeansStageConfig) -> np.ndarray:
    """The k-means stage's sample: per-part counts, then each part's seeded draw."""
    parts = feature_parts(root)
    frames = [int(np.sum(pq.read_table(p, columns=["n_frames"]).column("n_frames").to_numpy()))
              for p in parts]
    counts = per_part_counts(frames, cfg.max_frames, cfg.seed)
    samples = [sample_part(pq.read_table(p, columns=list(FEATURE_NAMES)), k, cfg.seed, i)
               for i, (p, k) in enumerate(zip(parts, counts)) if k]
    return np.concatenate(samples)


def cuml_problem() -> str | None:
    try:
        importlib.import_module("cuml.cluster")
    except Exception as exc:  # noqa: BLE001
        return f"cuML not importable: skipped ({type(exc).__name__}: {exc})"
    if select_backend("auto") != "cuml":
        return "cuML imports but sees no CUDA GPU (cupy): skipped"
    return None


def step_kmeans(x: np.ndarray, cfg: KMeansStageConfig, device: torch.device,
                report: Report) -> None:
    section("kmeans")
    seeds = [cfg.seed + i for i in range(cfg.n_init)]
    say(f"sample: {len(x):,} weighted frames ({len(x) / FRAMES_PER_SECOND / 3600:.1f} h), "
        f"k = {cfg.n_clusters}, max_iter {cfg.max_iter}, restarts {seeds}")
    if device.type == "cuda":
        problem = cuml_problem()
        if problem:
            report.skip("kmeans (cuML)", problem)
            return
        backend, dev = "cuML", "cuda"
        # first call: cuML/RAFT initialisation and kernel loading
        fit_kmeans(x[:200_000], cfg.n_clusters, seed=cfg.seed, max_iter=5, device=dev)
    else:
        backend, dev = "CPU", "cpu"
    for seed in seeds:
        with Measured(device, sample=True) as m:
            fit = fit_kmeans(x, cfg.n_clusters, seed=seed, max_iter=cfg.max_iter,
                             method=cfg.method, device=dev, threads=max(1, int(cfg.cpus_per_fit)))
        say(f"  seed {seed}: {fit.backend} {fit.method}, {fit.n_iter} iterations "
            f"({1000 * m.seconds / max(fit.n_iter, 1):.1f} ms each), inertia {fit.inertia:.4g}")
        report.check(np.isfinite(fit.inertia) and np.isfinite(fit.centers).all(),
                     f"k-means seed {seed}: non-finite inertia or centres")
        report.add(f"kmeans ({backend}, seed {seed})", f"{len(x):,} frames, k={cfg.n_clusters}",
                   m.seconds, len(x), "frames", len(x) / FRAMES_PER_SECOND, m,
                   iterations=fit.n_iter, inertia=fit.inertia, backend=fit.backend)


def stage_summary_row(report: Report, step: str, summary, measured: Measured,
                      unit: str) -> dict:
    """A map stage's figures: throughput over its units' busy time (setup and planning, paid
    once per worker, are in the wall time printed beside it)."""
    busy = summary.busy_seconds
    say(f"  {summary.units_run} units, {summary.rows} rows, {summary.frames:,} {unit}, "
        f"busy {busy:.2f} s, wall {measured.seconds:.2f} s (with setup)")
    return report.add(step, f"{summary.frames:,} {unit}, {summary.audio_hours:.2f} h",
                      busy, summary.frames, unit, summary.audio_hours * 3600, measured,
                      wall_seconds=measured.seconds, rows=summary.rows)


def step_tokens(warm: Path, main: Path, model_dir: str, x: np.ndarray | None,
                device: torch.device, report: Report) -> None:
    section("tokens")
    use_gpu = device.type == "cuda"
    say(f"TokensStage(use_gpu={use_gpu}), k-means model {model_dir}")
    TokensStage(Location.of(str(warm)), model_dir, use_gpu=use_gpu).run(LocalExecutor())
    with Measured(device) as m:
        summary = TokensStage(Location.of(str(main)), model_dir, use_gpu=use_gpu).run(LocalExecutor())
    stage_summary_row(report, "tokens stage", summary, m, "frames")
    model = KMeansModel.load(model_dir)
    part = sorted((main / "tokens").glob("part-*.parquet"))[0]
    tokens = pq.read_table(part, columns=["tokens"]).column("tokens").combine_chunks()
    ids = tokens.flatten().to_numpy()
    report.check(len(ids) > 0 and int(ids.min()) >= 0 and int(ids.max()) < model.n_clusters,
                 f"token ids outside [0, {model.n_clusters}) in {part.name}")
    if x is None or not use_gpu:
        say("  assign_on_gpu alone: not on this device")
        return
    projected = np.ascontiguousarray(model.project(x), dtype=np.float32)
    assign_on_gpu(model.cluster_centers, projected[:4096])  # warm-up
    with Measured(device) as m:
        gpu = assign_on_gpu(model.cluster_centers, projected)
    report.add("tokens kernel (assign_on_gpu)", f"{len(projected):,} frames, k={model.n_clusters}",
               m.seconds, len(projected), "frames", len(projected) / FRAMES_PER_SECOND, m)
    n_ref = min(len(projected), 1_000_000)
    model.assign(projected[:1024])  # numba compile
    t0 = time.perf_counter()
    cpu = model.assign(projected[:n_ref])
    cpu_s = time.perf_counter() - t0
    agree = float(np.mean(cpu == gpu[:n_ref]))
    say(f"  CPU path (KMeansModel.assign, numba, 1 thread) on {n_ref:,} frames: {cpu_s:.2f} s, "
        f"{n_ref / cpu_s:,.0f} frames/s; GPU tokens agree with it on {agree:.5%} of frames")
    report.rows[-1].update(cpu_frames_per_s=n_ref / cpu_s, agreement_with_cpu=agree)
    report.check(agree >= 0.999, f"GPU tokens agree with the CPU path on only {agree:.4%}")


def token_sequences(root: Path) -> tuple[list[str], list[np.ndarray], int]:
    """(utt_ids, token arrays, n_clusters) of a tokens stage's output."""
    parts = sorted((root / "tokens").glob("part-*.parquet"))
    ids: list[str] = []
    seqs: list[np.ndarray] = []
    for p in parts:
        table = pq.read_table(p, columns=["utt_id", "tokens"])
        values, offsets = flat_lists(table.column("tokens"))
        ids.extend(table.column("utt_id").to_pylist())
        seqs.extend(values[a:b] for a, b in zip(offsets[:-1], offsets[1:]))
    n_clusters = int(read_settings(Location.of(str(parts[0]))).get("n_clusters", 120))
    return ids, seqs, n_clusters


def step_train(main: Path, device: torch.device, overrides: dict, warmup: int, steps: int,
               scratch: Path, report: Report) -> Path | None:
    section("train")
    ids, seqs, n_clusters = token_sequences(main)
    tc = TrainStageConfig(**{**ORIGINAL_RECIPE, **overrides}).resolved(use_gpu=True)
    tc = tc.model_copy(update={"max_len": min(tc.max_len, tc.pos_max_len)})
    train = [s for u, s in zip(ids, seqs) if not is_validation(u, tc.validation_fraction, tc.seed)]
    model_kwargs = tc.model_kwargs(n_clusters)
    rows = tc.batch_size * (2 if tc.contrastive_weight else 1)
    memory = (torch.cuda.mem_get_info(device)[0] if device.type == "cuda"
              else available_memory_bytes())
    checkpointing, need = plan_training_memory(model_kwargs, rows, tc.max_len, memory,
                                               tc.activation_checkpointing)
    torch.set_num_threads(max(1, round(tc.cpus_per_worker)))  # as the stage's worker does
    torch.manual_seed(tc.seed)
    model = ProsodicSequenceEncoder(**model_kwargs)
    model.activation_checkpointing = checkpointing
    model.to(device)
    total = warmup + steps
    optimizer, scheduler = make_optimizer(model, tc.lr, tc.weight_decay,
                                          min(tc.warmup_steps, total // 10), total)
    params = sum(p.numel() for p in model.parameters())
    dtype = compute_dtype(device, tc.bf16)
    say(f"the original's model{' (--tiny shapes)' if overrides else ''}: {params / 1e6:.1f} M parameters "
        f"({tc.hidden_dim} x {tc.num_layers} layers, {tc.nhead} heads), batch {tc.batch_size} x "
        f"max_len {tc.max_len}, lr {tc.lr:g}, {dtype} on {device}; {len(train):,} training "
        f"sequences ({len(seqs) - len(train):,} held out); activation checkpointing "
        f"{'on' if checkpointing else 'off'}, memory estimate {need / GIB:.1f} GiB of "
        f"{memory / GIB:.1f} GiB free")

    def batches():
        pool = tc.batch_size * tc.pool_batches
        for epoch in range(1_000_000):
            rng = np.random.default_rng([tc.seed, 0, epoch])
            pools = (train[i:i + pool] for i in range(0, len(train), pool))
            yield from (paired_batches if tc.contrastive_weight else training_batches)(
                pools, tc.batch_size, tc.max_len, rng)

    stream = batches()

    def step():
        return train_step(model, optimizer, scheduler, next(stream), device, tc.grad_clip,
                          tc.bf16, tc.contrastive_weight, tc.contrastive_temperature)

    first = [step() for _ in range(warmup)]
    with Measured(device) as m:
        timed = [step() for _ in range(steps)]
    tokens = sum(s["tokens"] for s in timed)
    own = tokens / sum(s["tokens"] / s["tokens_per_s"] for s in timed if s["tokens_per_s"] > 0)
    losses = [s["loss"] for s in first + timed]
    say(f"  {steps} timed steps after {warmup} warm-up: {m.seconds / steps * 1000:.0f} ms/step, "
        f"{tokens / steps:,.0f} tokens/step, "
        f"padding {np.mean([s['padding_fraction'] for s in timed]):.1%}; "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, accuracy {timed[-1]['accuracy']:.3f}")
    say(f"  train_step's own tokens/s figure (what the stage logs): {own:,.0f}")
    report.add("train (original's 58 M)", f"{steps} steps, {tokens:,} tokens, {params / 1e6:.1f} M",
               m.seconds, tokens, "tokens", tokens / FRAMES_PER_SECOND, m,
               params=params, dtype=dtype, activation_checkpointing=checkpointing,
               memory_estimate_gib=need / GIB, loss_first=losses[0], loss_last=losses[-1],
               step_reported_tokens_per_s=own, ms_per_step=1000 * m.seconds / steps)
    report.check(all(math.isfinite(v) for v in losses), f"non-finite training loss: {losses}")
    folder = scratch / "encoder_original"
    save_encoder(folder, model)
    return folder


def small_encoder(n_clusters: int, scratch: Path) -> Path:
    """The recipe's encoder (random weights, seeded), saved as the train stage saves."""
    tc = TrainStageConfig().resolved(use_gpu=False)
    torch.manual_seed(tc.seed)
    folder = scratch / "encoder_recipe"
    save_encoder(folder, ProsodicSequenceEncoder(**tc.model_kwargs(n_clusters)))
    return folder


def step_embed(label: str, encoder: Path, warm: Path, main: Path, device: torch.device,
               report: Report) -> None:
    cfg = EmbedStageConfig()
    use_gpu = device.type == "cuda"
    model = load_encoder(encoder)
    params = sum(p.numel() for p in model.parameters())
    say(f"{label}: {params / 1e6:.1f} M parameters ({model.hidden_dim} x {model.num_layers} "
        f"layers), EmbedStage(use_gpu={use_gpu}), batch {cfg.batch_tokens} padded tokens, "
        f"{compute_dtype(device, cfg.bf16)}")
    for root in (warm, main):  # the stage again, from nothing
        for folder in ("embeddings", "_run/embed"):
            shutil.rmtree(root / folder, ignore_errors=True)
    EmbedStage(Location.of(str(warm)), cfg, str(encoder), use_gpu=use_gpu).run(LocalExecutor())
    with Measured(device) as m:
        summary = EmbedStage(Location.of(str(main)), cfg, str(encoder),
                                           use_gpu=use_gpu).run(LocalExecutor())
    stage_summary_row(report, f"embed stage, {label}", summary, m, "tokens")
    out = pq.read_table(sorted((main / "embeddings").glob("part-*.parquet"))[0],
                        columns=["embedding"])
    vectors = out.column("embedding").combine_chunks().flatten().to_numpy()
    report.check(out.schema.field("embedding").type.list_size == model.hidden_dim
                 and np.isfinite(vectors).all(), f"embed stage, {label}: bad embeddings")
    _, seqs, _ = token_sequences(main)
    model.to(device)
    embed_windows(model, seqs[:64], cfg.batch_tokens, cfg.bf16)  # warm-up
    with Measured(device) as m:
        windows, vectors = embed_windows(model, seqs, cfg.batch_tokens, cfg.bf16)
    n_tokens = int(sum(w[3] for w in windows))
    report.add(f"embed_windows, {label}", f"{len(windows):,} windows, {n_tokens:,} tokens",
               m.seconds, n_tokens, "tokens", n_tokens / FRAMES_PER_SECOND, m,
               windows_per_s=len(windows) / m.seconds, params=params)
    report.check(np.isfinite(vectors).all() and vectors.shape == (len(windows), model.hidden_dim),
                 f"embed_windows, {label}: non-finite or misshapen vectors")
    report.check(summary.rows == len(seqs), f"embed stage, {label}: {summary.rows} rows for "
                 f"{len(seqs)} sequences")
    del model
    if use_gpu:
        torch.cuda.empty_cache()


def summary_table(report: Report) -> None:
    section("summary")
    say(f"{'step':<40} {'seconds':>8} {'throughput':>22} {'x real time':>12} {'GPU peak':>9}")
    for r in report.rows:
        if "skipped" in r:
            say(f"{r['step']:<40} {r['skipped']}")
            continue
        xrt = f"{r['x_real_time']:,.0f}x" if r["x_real_time"] is not None else "-"
        peak = f"{r['gpu_peak_gib']:.2f} GiB" if r["gpu_peak_gib"] is not None else "-"
        say(f"{r['step']:<40} {r['seconds']:>8.2f} {r['rate']:>14,.0f} {r['rate_unit']:<8}"
            f"{xrt:>12} {peak:>9}")
    say(f"problems: {len(report.problems)}" + "".join(f"\n  - {p}" for p in report.problems))


# -- --prepare ---------------------------------------------------------------------------------

def prepare(target: Path, python: str) -> None:
    """What the GPU machine needs and lacks: the features stage's output for the demo corpus
    and the wheels `import timbrespace_ray` needs there."""
    from importlib.metadata import version

    target.mkdir(parents=True, exist_ok=True)
    section("features")
    with tempfile.TemporaryDirectory() as tmp:
        folder = run_features_stage(Path(tmp))
        shutil.rmtree(target / "features", ignore_errors=True)
        (target / "features").mkdir()
        for f in folder.glob("part-*.parquet"):
            shutil.copy(f, target / "features" / f.name)
    section(f"wheels for CPython {python}, manylinux x86_64")
    whl = target / "whl"
    shutil.rmtree(whl, ignore_errors=True)
    whl.mkdir()
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux2014_x86_64", "-d", str(whl), *pins], check=True)
    for f in sorted(target.rglob("*")):
        if f.is_file():
            say(f"  {f.relative_to(target)}  {f.stat().st_size / 1e6:.2f} MB")
    total = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    say(f"{target}: {total / 2**20:.1f} MiB in all")


# -- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="small shapes, seconds on a CPU (CI)")
    parser.add_argument("--features", default=None,
                        help="'vectors', 'stage', or a features stage folder/Parquet file "
                             "(default: .gpucheck/features if present, else 'stage')")
    parser.add_argument("--hours", type=float, default=32.0, help="corpus size (copies)")
    parser.add_argument("--unit-hours", type=float, default=2.0, help="audio per part file")
    parser.add_argument("--max-utterance-s", type=float, default=None,
                        help="leave out longer recordings (--tiny: 10 s, the two 30 s ones)")
    parser.add_argument("--train-steps", type=int, default=100, help="timed training steps")
    parser.add_argument("--train-warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--kmeans-model", default=str(N120_MODEL),
                        help="k-means model directory for the tokens stage")
    parser.add_argument("--skip-kmeans", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it")
    parser.add_argument("--prepare", default=None, metavar="DIR",
                        help="write DIR/features and DIR/whl for the GPU machine, then exit")
    parser.add_argument("--wheel-python", default="3.12", help="the GPU machine's Python")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    package = logging.getLogger("timbrespace_ray")
    if not any(isinstance(h, _Indented) for h in package.handlers):
        package.addHandler(_Indented())
    package.setLevel(logging.INFO)
    if args.prepare:
        prepare(Path(args.prepare), args.wheel_python)
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("gpu_check: CUDA is not available here (torch "
                  f"{torch.__version__}); run with --device cpu [--tiny] for the CPU path",
                  file=sys.stderr)
            return 2
        torch.cuda.init()
        torch.zeros(1, device=device)  # the CUDA context now, not inside the first timing
    if args.tiny:
        args.hours, args.unit_hours = TINY["hours"], TINY["unit_hours"]
        args.max_utterance_s = TINY["max_utterance_s"]
        args.train_steps, args.train_warmup = TINY["train_steps"], TINY["train_warmup"]
    features = args.features or (str(DEFAULT_PREPARED) if DEFAULT_PREPARED.is_dir() else "stage")
    started = time.perf_counter()
    report = Report()
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        machine(device, report)
        section("input")
        base, described = load_input(features, scratch)
        if args.max_utterance_s:
            base = base.filter(pc.less_equal(base.column("duration_s"), args.max_utterance_s))
            described += f", recordings of at most {args.max_utterance_s:g} s"
        per_copy = float(pc.sum(base.column("duration_s")).as_py())
        say(f"{base.num_rows} recordings, {per_copy:.1f} s, "
            f"{int(pc.sum(base.column('n_frames')).as_py()):,} frames: {described}")
        t0 = time.perf_counter()
        warm = scratch / "warm"
        main_root = scratch / "main"
        for root in (warm, main_root):
            shutil.rmtree(root, ignore_errors=True)
        write_corpus(base, warm, 0, 1)
        corpus = write_corpus(base, main_root, args.hours, args.unit_hours)
        say(f"corpus: {corpus['copies']} copies = {corpus['utterances']:,} utterances, "
            f"{corpus['audio_seconds'] / 3600:.2f} h, {corpus['frames']:,} frames in "
            f"{corpus['parts']} parts ({time.perf_counter() - t0:.1f} s to write); warm-up "
            f"runs use one copy")
        report.info["corpus"] = corpus

        kcfg = KMeansStageConfig(**(TINY["kmeans"] if args.tiny else {}))
        x = None
        with guarded(report, "kmeans"):
            x = kmeans_sample(main_root, kcfg)
            if args.skip_kmeans:
                section("kmeans")
                report.skip("kmeans", "--skip-kmeans")
            else:
                step_kmeans(x, kcfg, device, report)
        tokens_ok = False
        with guarded(report, "tokens"):
            step_tokens(warm, main_root, args.kmeans_model, x, device, report)
            tokens_ok = True
        if not tokens_ok:
            raise RuntimeError("no tokens: train and embed cannot run")
        del x
        trained = None
        with guarded(report, "train"):
            trained = step_train(main_root, device, TINY["train"] if args.tiny else {},
                                 args.train_warmup, args.train_steps, scratch, report)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        section("embed")
        _, _, n_clusters = token_sequences(warm)
        if trained is None:
            say("(training failed: the original's encoder with random weights)")
            tc = TrainStageConfig(**{**ORIGINAL_RECIPE, **(TINY["train"] if args.tiny else {})}
                                  ).resolved(use_gpu=True)
            trained = scratch / "encoder_original"
            save_encoder(trained, ProsodicSequenceEncoder(**tc.model_kwargs(n_clusters)))
        label = "original's (tiny)" if args.tiny else "original's 58 M"
        with guarded(report, f"embed {label}"):
            step_embed(label, trained, warm, main_root, device, report)
        with guarded(report, "embed recipe"):
            step_embed("recipe small", small_encoder(n_clusters, scratch), warm, main_root,
                       device, report)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stdout)
        report.problem(f"stopped: {type(exc).__name__}: {exc}")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    report.info["total_seconds"] = time.perf_counter() - started
    summary_table(report)
    say(f"total {report.info['total_seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": report.info, "results": report.rows,
                                               "problems": report.problems}, indent=1,
                                              default=str))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
