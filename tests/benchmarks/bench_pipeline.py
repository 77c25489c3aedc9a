"""What the whole pipeline costs: all six stages on a few hours of real speech, per stage, and
projected to 1,000 hours of audio.

Corpus: the bundled recordings copied under many names (`bench_feature_stage.build_corpus`) up
to --hours of audio, read through a manifest CSV that gives every copy its recording's real
`speaker` (and `corpus`, `language`) from `timbrespace_ray/demo_corpus/manifest.csv`, so the
profile stage also writes its speakers table. Then `run_pipeline` with the product's defaults
(as `timbrespace-ray run` has them: k-means k = --n-clusters, the training recipe
`config.RECIPE`) on an embedded local Ray of --cpus CPUs, Ray started
before the first stage and its start-up reported apart. Each stage is timed by `on_stage_done`;
rows and audio come from its `_run/<stage>/summary.json`, worker time from its units' markers.

Prints the machine (CPU model, CPUs, whether torch sees CUDA) and, per stage: wall time, x real
time per CPU (audio / wall / CPUs), share of the run, the workers' busy share of wall x CPUs;
then the projected CPU-hours (and GPU-hours when stages ran on GPUs) per 1,000 h of audio:
  - features, profile, tokens, embed (they map over the corpus): linear in audio,
    wall x CPUs x 1000 h / corpus hours. Their fixed start-up (actor pools: seconds) is inside
    the wall, so a small corpus overstates them; the figure from worker-busy time alone, the
    limit a large corpus tends to, is printed beside it;
  - kmeans: fits a uniform sample of at most `kmeans.max_frames` frames, so beyond the corpus
    that fills the sample (printed, in hours) its cost is flat: its fit is scaled to a full
    sample (linear in frames, an estimate: the number of iterations varies), the rest is taken
    as is;
  - train: the recipe's budget for the projected corpus (`max_epochs` epochs, at most
    `step_cap` steps on CPUs). This run takes --train-steps; the figure is seconds per step (steps inside
    an epoch, from `encoder/metrics.jsonl`) plus a fixed part (Ray Train start-up, validation,
    normalisation, checkpoint), projected to the default budget.
The total adds them: map stages per 1,000 h + k-means (flat) + one training run.

Timings on a shared machine are noisy (a CI run or another benchmark may run beside it).

Run: .venv/bin/python tests/benchmarks/bench_pipeline.py [--hours 3] [--cpus N]
     [--train-steps 300] [--n-clusters 120] [--keep DIR]
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_feature_stage import build_corpus  # noqa: E402

from timbrespace_ray.config import RECIPE, load_config  # noqa: E402
from timbrespace_ray.pipeline import run_pipeline  # noqa: E402
from timbrespace_ray.stages.registry import NAMES as STAGES  # noqa: E402
from timbrespace_ray.executors import RayExecutor  # noqa: E402

DEMO_MANIFEST = (Path(__file__).resolve().parents[2] / "timbrespace_ray" / "demo_corpus"
                 / "manifest.csv")
PROJECT_HOURS = 1000.0
# each map stage's units' markers (layout.py)
MARKERS = {"features": ["_run/features/done"],
           "profile": ["_run/profile/measures/done", "_run/profile/done"],
           "tokens": ["_run/tokens/done"], "embed": ["_run/embed/done"]}
MAP_STAGES = tuple(MARKERS)


def write_manifest(corpus: Path) -> tuple[Path, int]:
    """manifest.csv beside the copies: each copy's path and its recording's own metadata."""
    with DEMO_MANIFEST.open(newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    columns = list(next(iter(rows.values())).keys())
    manifest = corpus / "manifest.csv"
    n = 0
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for folder in sorted(p for p in corpus.iterdir() if p.is_dir()):
            for f in sorted(folder.glob("*.wav")):
                w.writerow({**rows[f.name], "path": f"{folder.name}/{f.name}"})
                n += 1
    return manifest, n


def machine() -> dict:
    model = flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line + " "
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    simd = ("AVX-512" if " avx512f " in flags else "AVX2, no AVX-512" if " avx2 " in flags
            else "no AVX2") if flags else "?"
    try:
        import torch

        cuda = torch.cuda.is_available()
        gpu = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if cuda else None
    except Exception:  # noqa: BLE001 - a broken torch is reported, not fatal here
        cuda, gpu = False, None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    return {"cpu": model, "simd": simd, "cpus": os.cpu_count(), "mem_gib": mem, "cuda": cuda,
            "gpu": gpu}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def busy_seconds(out: Path, stage: str) -> float | None:
    if stage not in MARKERS:
        return None
    return sum(json.loads(p.read_text())["busy_seconds"]
               for d in MARKERS[stage] for p in (out / d).glob("*.json"))


def first_unit_delay(out: Path, stage: str, started: float) -> float | None:
    """Seconds from the stage's start to its first unit's start (plan, pool start-up)."""
    if stage not in MARKERS:
        return None
    starts = [json.loads(p.read_text())["started_at"] for p in (out / MARKERS[stage][0]).glob("*.json")]
    return min(starts) - started if starts else None


def train_timing(out: Path, steps: int, wall: float) -> dict:
    """Seconds per step (the training loop's time over its steps, epoch-end validations
    included; also from consecutive logged steps inside one epoch alone) and the fixed rest of
    the stage's wall time."""
    metrics = [json.loads(line) for line in (out / "encoder" / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    logged = [m for m in metrics if m["kind"] == "step"]
    secs = n = 0.0
    for a, b in zip(logged, logged[1:]):
        if a["epoch"] == b["epoch"]:
            secs += b["elapsed_s"] - a["elapsed_s"]
            n += b["step"] - a["step"]
    loop = logged[-1]["elapsed_s"] if logged else 0.0
    epochs = sum(1 for m in metrics if m["kind"] == "epoch")
    per_step = (loop if logged else wall) / steps
    return {"per_step": per_step, "loop": loop, "fixed": wall - loop, "epoch_ends": epochs,
            "within_epoch": secs / n if n else float("nan"), "within_epoch_steps": int(n)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=3.0, help="audio in the corpus (default 3)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the embedded Ray")
    ap.add_argument("--train-steps", type=int, default=300,
                    help="training steps of this run (the product's CPU default is at most "
                         f"{RECIPE['step_cap']}: ~20 min on 2 CPUs); projected to that")
    ap.add_argument("--n-clusters", type=int, default=120, help="kmeans.n_clusters")
    ap.add_argument("--keep", metavar="DIR", help="build the corpus and write the output under "
                    "DIR (new or empty) and keep them")
    args = ap.parse_args()

    if args.keep:
        root = Path(args.keep)
        if root.exists() and any(root.iterdir()):
            sys.exit(f"--keep {root}: not empty (finished stages would be skipped)")
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        t_all = time.perf_counter()
        corpus, out = root / "corpus", root / "output"
        t0 = time.perf_counter()
        audio_s = build_corpus(corpus, args.hours * 60)
        manifest, n_files = write_manifest(corpus)
        os.sync()
        t_corpus = time.perf_counter() - t0
        print(f"corpus: {n_files} WAV files, {audio_s / 3600:.2f} h, built in {t_corpus:.1f} s "
              f"-> {manifest}", flush=True)

        cfg = load_config(input=str(manifest), output=str(out),
                          **{"kmeans.n_clusters": args.n_clusters,
                             "train.max_steps": args.train_steps})
        executor = RayExecutor(num_cpus=args.cpus, progress_bars=False)
        t0 = time.perf_counter()
        executor.connect()
        t_ray = time.perf_counter() - t0
        gpus = executor.gpu_capacity().possible
        cpus = executor.cluster_cpus()

        log: list[tuple[float, str]] = []  # (perf_counter, line) of the stages' messages

        class Lines(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                log.append((time.perf_counter(), record.getMessage()))
                print(record.getMessage(), flush=True)

        package = logging.getLogger("timbrespace_ray")
        package.addHandler(Lines())
        package.setLevel(logging.INFO)

        walls: dict[str, float] = {}
        starts: dict[str, tuple[float, float]] = {}  # (time.time, perf_counter) at the start

        def done(name: str, secs: float) -> None:
            walls[name] = secs
            starts[name] = (time.time() - secs, time.perf_counter() - secs)
            print(f"==> {name} done in {secs:.1f} s", flush=True)

        load_before = os.getloadavg()
        t0 = time.perf_counter()
        run_pipeline(cfg, executor, on_stage_done=done)
        t_pipeline = time.perf_counter() - t0
        timing = {"ray": t_ray, "pipeline": t_pipeline, "all": time.perf_counter() - t_all,
                  "corpus": t_corpus, "load": (load_before, os.getloadavg())}
        report(args, machine(), cpus, gpus, cfg, out, walls, starts, log, timing)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if args.keep:
            print(f"kept: {root} (corpus/, output/)")
        else:
            shutil.rmtree(root, ignore_errors=True)


def kmeans_steps(log: list[tuple[float, str]], start: float, end: float) -> dict:
    """Where the k-means stage's wall time went, from its messages' times: counting frames,
    sampling them, the restarts (actor start-up + fits), writing the model (+ silhouette)."""
    marks = {"count": None, "sample": None, "fit": None, "write": None}
    for t, line in log:
        if not start <= t <= end:
            continue
        if line.startswith("kmeans: sampling"):
            marks["count"] = t
        elif line.startswith("kmeans: k = "):
            marks["sample"] = t
        elif line.startswith("  seed "):
            marks["fit"] = t
        elif line.startswith("kmeans: wrote"):
            marks["write"] = t
    if None in marks.values():
        return {}
    return {"count frames": marks["count"] - start, "sample": marks["sample"] - marks["count"],
            "restarts": marks["fit"] - marks["sample"], "write model": marks["write"] - marks["fit"]}


def report(args, mach, cpus, gpus, cfg, out: Path, walls, starts, log, timing) -> None:
    t_ray = timing["ray"]
    summaries = {s: read_json(out / "_run" / s / "summary.json") for s in STAGES}
    hours = summaries["features"].get("audio_hours") or float("nan")
    frames = summaries["features"].get("frames") or 0
    total = sum(walls.values())
    scale = PROJECT_HOURS / hours
    km = summaries["kmeans"].get("detail") or {}
    on_gpu = {"kmeans": km.get("device") == "cuda", "tokens": gpus > 0 and cfg.tokens.use_gpu is not False,
              "train": gpus > 0 and cfg.train.use_gpu is not False,
              "embed": gpus > 0 and cfg.embed.use_gpu is not False}
    recipe = RECIPE

    rows_of = {
        "features": f"{summaries['features'].get('rows')} utterances, {frames} frames",
        "profile": f"{summaries['profile'].get('rows')} utterances",
        "kmeans": f"{km.get('frames')} frames fitted, k = {km.get('n_clusters')}",
        "tokens": f"{summaries['tokens'].get('rows')} utterances",
        "train": f"{(summaries['train'].get('detail') or {}).get('step')} steps",
        "embed": f"{summaries['embed'].get('rows')} utterances",
    }
    gpu_line = (f"GPU: {mach['gpu']}; Ray sees {gpus:g} GPU(s)" if mach["cuda"] else "GPU: none")
    print()
    print(f"Pipeline cost: {hours:.2f} h of real speech ({summaries['features'].get('inputs')} WAV "
          f"files, the bundled recordings copied; manifest with their speakers), all six stages, "
          f"product defaults, embedded Ray")
    print(f"  machine: {mach['cpu']} ({mach['simd']}), {mach['cpus']} CPUs, {mach['mem_gib']:.0f} GiB; "
          f"Ray used {cpus:g} CPUs; {gpu_line}")
    if gpus:
        print("  stages on GPUs: " + ", ".join(s for s, g in on_gpu.items() if g))
    print(f"  k-means k = {args.n_clusters}; training {args.train_steps} steps "
          f"(the recipe's default: {recipe['max_epochs']:g} epochs, at most "
          f"{recipe.get('step_cap') or 'any number of'} steps) of the "
          f"{'GPU' if on_gpu['train'] else 'CPU'} recipe")
    (b1, b5, _), (a1, a5, _) = timing["load"]
    print(f"  shared machine, other work may run beside it: timings are noisy (load average "
          f"{b1:.1f} / {b5:.1f} (1 / 5 min) before the pipeline, {a1:.1f} / {a5:.1f} after, on "
          f"{mach['cpus']} CPUs)")
    print()
    print(f"  {'stage':9} {'wall s':>8} {'x RT/CPU':>9} {'share':>6} {'busy':>5}  rows")
    for s in STAGES:
        w = walls.get(s, float("nan"))
        busy = busy_seconds(out, s)
        b = f"{busy / (w * cpus):5.0%}" if busy is not None else "    -"
        print(f"  {s:9} {w:8.1f} {hours * 3600 / w / cpus:9.0f} {w / total:6.1%} {b}  {rows_of[s]}")
    print(f"  {'total':9} {total:8.1f} {hours * 3600 / total / cpus:9.0f} {1:6.0%}")
    print(f"  (x RT/CPU = audio / wall / CPUs; busy = the units' worker time / (wall x CPUs), "
          f"map stages; Ray start-up before the first stage: {t_ray:.1f} s, not in the table)")
    delays = {s: first_unit_delay(out, s, starts[s][0]) for s in MAP_STAGES if s in starts}
    print("  until the first unit runs (plan, actor pool start-up): "
          + ", ".join(f"{s} {d:.1f} s" for s, d in delays.items() if d is not None))

    # k-means: flat beyond the corpus that fills the sample
    fits = [(int(m[1]), int(m[2]), float(m[3])) for m in
            (re.search(r"seed (\d+): inertia [^,]+, (\d+) iterations, ([\d.]+) s", line)
             for _, line in log) if m]
    km_start = starts["kmeans"][1]
    km_steps = kmeans_steps(log, km_start, km_start + walls["kmeans"])
    if km_steps:
        print("  k-means: " + ", ".join(f"{k} {v:.1f} s" for k, v in km_steps.items())
              + f", {walls['kmeans'] - sum(km_steps.values()):.1f} s to finish; fits "
              + ", ".join(f"seed {s}: {n} iterations {x:.1f} s" for s, n, x in fits)
              + " (in parallel)")
    fit_wall = max((f[2] for f in fits), default=0.0)
    km_frames = km.get("frames") or 1
    max_frames = cfg.kmeans.max_frames
    fill_hours = max_frames / (frames / hours) if frames else float("nan")
    km_scale = max(1.0, max_frames / km_frames) if km_frames < max_frames else 1.0
    km_proj = walls["kmeans"] - fit_wall + fit_wall * km_scale

    # train: seconds per step + a fixed part
    tt = train_timing(out, args.train_steps, walls["train"])
    # the recipe's budget: epochs of the projected corpus, at most its step cap
    n_train = (summaries["tokens"].get("rows") or 0) * (1 - cfg.train.validation_fraction) * scale
    defaults = cfg.train.model_copy(update={"max_steps": None})  # not this run's steps
    budget = defaults.resolved(on_gpu["train"]).planned_steps(round(n_train))
    budget_how = (f"{recipe['max_epochs']:g} epoch(s) of {PROJECT_HOURS:,.0f} h, at most "
                  f"{recipe.get('step_cap') or 'any number of'} steps")
    train_proj = tt["fixed"] + budget * tt["per_step"]

    def hrs(secs: float, n: float) -> float:
        return secs * n / 3600

    print()
    print(f"Projected CPU-hours per {PROJECT_HOURS:,.0f} h of audio ({cpus:g} CPUs x wall"
          + ("; GPU-hours = GPUs x wall of the stages on GPUs" if gpus else "") + ")")
    cols = f"  {'stage':9} {'CPU-h':>8} {'from busy':>10}" + (f" {'GPU-h':>8}" if gpus else "")
    print(cols + "  how")
    total_cpu = total_busy = total_gpu = 0.0
    for s in STAGES:
        if s in MAP_STAGES:
            cpu_h = hrs(walls[s], cpus) * scale
            busy_h = (busy_seconds(out, s) or 0) / 3600 * scale
            how = f"linear in audio: wall x CPUs x {PROJECT_HOURS:,.0f} h / {hours:.2f} h"
            secs = walls[s] * scale
        elif s == "kmeans":
            cpu_h = busy_h = hrs(km_proj, cpus)
            secs = km_proj
            how = (f"flat beyond {fill_hours:.0f} h (a sample of {max_frames:,} frames fills): "
                   + (f"fit {fit_wall:.1f} s x {km_scale:.1f} + {walls[s] - fit_wall:.1f} s rest "
                      "taken as flat (it labels the sample too: low)"
                      if km_scale > 1 else "the corpus filled it: as measured"))
        else:
            cpu_h = busy_h = hrs(train_proj, cpus)
            secs = train_proj
            how = (f"{budget_how}: {budget} steps x {tt['per_step']:.3f} s "
                   f"+ {tt['fixed']:.0f} s fixed")
        gpu_h = hrs(secs, gpus) if gpus and on_gpu.get(s) else 0.0
        total_cpu += cpu_h
        total_busy += busy_h
        total_gpu += gpu_h
        print(f"  {s:9} {cpu_h:8.2f} {busy_h:10.2f}" + (f" {gpu_h:8.2f}" if gpus else "") + f"  {how}")
    print(f"  {'total':9} {total_cpu:8.2f} {total_busy:10.2f}" + (f" {total_gpu:8.2f}" if gpus else "")
          + f"  = {total_cpu / cpus:.1f} h of wall time on this {cpus:g}-CPU machine")
    print("  (from busy: map stages' worker time alone, without their fixed start-up and Ray's "
          "own processes: the limit a large corpus tends to; k-means and train as in CPU-h)")
    print()
    print(f"Training, per step: {tt['per_step']:.3f} s ({1 / tt['per_step']:.1f} steps/s, "
          f"batch {recipe['batch_size']} x {cfg.train.num_workers} worker(s), "
          f"{cfg.train.resolved(bool(gpus), cpus).cpus_per_worker:g} CPU each); this run: {args.train_steps} steps in "
          f"{walls['train']:.1f} s = {tt['loop']:.1f} s in the loop ({tt['epoch_ends']} epoch "
          f"end(s) with a validation included; the {tt['within_epoch_steps']} logged steps inside "
          f"epochs alone: {tt['within_epoch']:.3f} s per step) + {tt['fixed']:.1f} s fixed (Ray "
          "Train start-up, data ingest, final validation, normalisation, checkpoint)")
    print(f"  the default budget for {PROJECT_HOURS:,.0f} h, {budget} steps: {train_proj:.0f} s "
          f"= {train_proj / 60:.1f} min wall, {hrs(train_proj, cpus):.2f} CPU-hours of this "
          "machine, unless early stopping ends it sooner")
    print(f"\nrun: corpus built in {timing['corpus']:.0f} s, Ray start-up {t_ray:.1f} s, pipeline "
          f"{timing['pipeline']:.0f} s, whole benchmark {timing['all']:.0f} s")


if __name__ == "__main__":
    main()
