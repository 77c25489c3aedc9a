"""What the input forms cost: Parquet audio datasets and segment manifests against plain files,
and planning a segment manifest of a million rows.

Four figures, each measured in one run of this script:
  (1) dataset: the features stage on a Parquet audio dataset (written with Hugging Face
      `datasets`: an `Audio` column with the files' bytes embedded, as `push_to_hub` writes it,
      several shards) against the stage on the same WAV files as plain files in folders. Both
      hold the bundled recordings of real speech, copied to reach --minutes of audio.
  (2) segments: long recordings (the bundled speech concatenated into WAVs of about
      --recording-minutes each) cut into utterances of 3-15 s by a Parquet manifest with
      `start`/`end` columns, against the same utterances written as plain WAV files of their own
      (the very samples the stage decodes for each segment, 16 kHz, 16 bit: both sides analyse
      identical audio, which the benchmark checks by their frame counts).
  (3) planning: `FeaturesStage(...).stored_plan()` (the input planned, the plan written in
      chunks) on a Parquet segment manifest of --plan-rows rows with a `speaker` and a `text`
      column, over --plan-recordings recordings that need not exist (planning opens no audio),
      then on a folder of --list-files empty audio files, each in a fresh subprocess: its time
      and the process's peak RSS (VmHWM), with the RSS after imports.
  (4) long: one --long-hours recording (16 kHz, 16 bit) with --long-segments segments of 1-4 s
      spread over all of it, through the features stage in a fresh subprocess (one worker's
      work, LocalExecutor): its peak RSS against the memory the stage asks of Ray per worker
      and against the recording decoded whole.

(1) and (2) run the stage end to end (plan, actor pool start-up, decode, extract, Parquet,
markers) through `RayExecutor(num_cpus=--cpus)` on one embedded Ray, after a warm-up run of each
form on a small corpus. The plain-file baseline and the candidate run back to back in the same
process, in the order A B B A by default (--rounds 2: each side once early and once late, so a
busy or quiet moment of a shared machine weighs on both); the ratio is the baseline's total wall
time over the candidate's (the same audio on both sides), >= 0.9 being the target.

Run: .venv/bin/python tests/benchmarks/bench_inputs.py [--minutes 1200] [--figures
     dataset,segments,planning] [--json out.json]   (or `make bench-inputs`)
Smoke test: .venv/bin/python tests/benchmarks/bench_inputs.py --minutes 3 --rounds 1 \
     --plan-rows 20000 --plan-recordings 100 --list-files 20000
The figures go to stdout; Ray's log and the stage's per-unit progress to stderr (2>/dev/null).
A full run builds ~8 GB of corpora under --tmp, one figure at a time; each stage run of 20 h takes
~40 s on docs/performance.md's 2-core Xeon, ~2 min on a 2-core EPYC VM at a third of its speed.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # `datasets` writes local files only
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench_feature_stage import build_corpus  # noqa: E402  (the same plain-file corpus)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from helpers.data import DEMO_CORPUS  # noqa: E402

SR = 16000
FIGURES = ("dataset", "segments", "planning", "long")
WARM_MINUTES = 1.0


# the machine ---------------------------------------------------------------------------------
def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 2**20
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(),
            "usable_cores": (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else None),
            "memory_gb": None if mem_gb is None else round(mem_gb, 1),
            "python": platform.python_version()}


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def machine_line(m: dict) -> str:
    return (f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
            f"{m['memory_gb']} GB, Python {m['python']}; load average now {load()}")


# corpora -------------------------------------------------------------------------------------
def _demo_files() -> list[Path]:
    return sorted(DEMO_CORPUS.glob("*.wav"))


def build_dataset(plain: Path, root: Path, shards: int | None) -> tuple[int, int, int]:
    """The files under `plain` as a Parquet audio dataset under root/data/, written by
    `datasets` as `push_to_hub` writes one: `Audio` column, bytes embedded, contiguous shards
    named train-XXXXX-of-NNNNN.parquet. Returns (shards, row groups, bytes)."""
    import datasets
    import pyarrow.parquet as pq
    from datasets.table import embed_table_storage

    datasets.disable_progress_bars()
    files = sorted(p for p in plain.rglob("*.wav"))
    total = sum(f.stat().st_size for f in files)
    n = shards or max(4, math.ceil(total / 500e6))  # push_to_hub's default 500 MB shards
    n = min(n, len(files))
    ds = datasets.Dataset.from_dict({
        "id": [str(f.relative_to(plain).with_suffix("")) for f in files],
        "audio": [str(f) for f in files],
        "speaker": [f.parent.name for f in files],
    }).cast_column("audio", datasets.Audio())
    (root / "data").mkdir(parents=True)
    for i in range(n):
        shard = ds.shard(num_shards=n, index=i, contiguous=True).with_format("arrow")
        shard = shard.map(embed_table_storage, batched=True, keep_in_memory=True)
        shard.with_format(None).to_parquet(str(root / "data" / f"train-{i:05d}-of-{n:05d}.parquet"))
    written = sorted((root / "data").glob("*.parquet"))
    return (n, sum(pq.ParquetFile(p).metadata.num_row_groups for p in written),
            sum(p.stat().st_size for p in written))


def _speech_int16() -> list[np.ndarray]:
    import soundfile as sf

    return [sf.read(str(f), dtype="int16")[0] for f in _demo_files()]


def build_segments(root: Path, plain: Path, minutes: float, recording_minutes: float,
                   seed: int = 0) -> dict:
    """Long recordings root/long/recNNN.wav (the bundled speech concatenated, 16 kHz, 16 bit),
    root/segments.parquet cutting them into 3-15 s utterances (gaps of 0.05-0.6 s between
    them), and each segment's own samples as plain/recNNN/segNNNNN.wav."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    from timbrespace_ray.features.analysis import ms_to_sample

    rng = np.random.default_rng(seed)
    speech = _speech_int16()
    rec_minutes = min(recording_minutes, minutes / 2)
    n_recs = max(1, math.ceil(minutes / rec_minutes))
    (root / "long").mkdir(parents=True)
    rows = {"path": [], "start": [], "end": [], "speaker": []}
    rec_s = seg_s = 0.0
    n_segs = 0
    for r in range(n_recs):
        pieces, n = [], 0
        k = r  # each recording starts at another of the bundled files
        while n < rec_minutes * 60 * SR:
            pieces.append(speech[k % len(speech)])
            n += len(pieces[-1])
            k += 1
        audio = np.concatenate(pieces)
        name = f"rec{r:03d}"
        sf.write(str(root / "long" / f"{name}.wav"), audio, SR, subtype="PCM_16")
        rec_s += len(audio) / SR
        length = len(audio) / SR
        folder = plain / name
        folder.mkdir(parents=True)
        t, i = 0.0, 0
        while True:
            start = round(t + rng.uniform(0.05, 0.6), 3)
            end = round(start + rng.uniform(3.0, 15.0), 3)
            if end > length:
                break
            # exactly the samples the stage decodes for this segment (features.py _ranges)
            a, b = ms_to_sample(start * 1000, SR), ms_to_sample(end * 1000, SR)
            sf.write(str(folder / f"seg{i:05d}.wav"), audio[a:b], SR, subtype="PCM_16")
            rows["path"].append(f"long/{name}.wav")
            rows["start"].append(start)
            rows["end"].append(end)
            rows["speaker"].append(f"speaker{r % 7}")
            seg_s += (b - a) / SR
            t, i = end, i + 1
        n_segs += i
    pq.write_table(pa.table(rows), str(root / "segments.parquet"))
    return {"recordings": n_recs, "recording_minutes": round(rec_s / 60 / n_recs, 1),
            "segments": n_segs, "recording_seconds": rec_s, "segment_seconds": seg_s,
            "coverage": seg_s / rec_s}


# running the stage ---------------------------------------------------------------------------
class StageRunner:
    """The features stage end to end on one embedded Ray, into a fresh folder each run."""

    def __init__(self, cpus: int, tmp: Path):
        from timbrespace_ray.config import load_config
        from timbrespace_ray.executors import RayExecutor

        self.executor = RayExecutor(num_cpus=cpus, progress_bars=False)
        self.cfg = load_config().features
        self.tmp = tmp
        self.runs = 0

    def __call__(self, input_uri: Path) -> tuple[float, object]:
        from timbrespace_ray.stages.features import FeaturesStage
        from timbrespace_ray.storage import Location

        self.runs += 1
        out = self.tmp / f"out{self.runs:02d}"
        stage = FeaturesStage(Location.of(str(out)), str(input_uri), self.cfg)
        t0 = time.perf_counter()
        summary = stage.run(self.executor)
        wall = time.perf_counter() - t0
        assert summary.rows == summary.inputs and not summary.errors, summary
        shutil.rmtree(out)
        return wall, summary

    def close(self) -> None:
        import ray

        ray.shutdown()
        time.sleep(3)  # Ray's processes exit in the background


def compare(run: StageRunner, base: Path, cand: Path, rounds: int, labels: tuple[str, str],
            echo) -> dict:
    """Baseline and candidate back to back, A B B A ...; per-run walls and the ratio."""
    walls = {"baseline": [], "candidate": []}
    summaries = {}
    order = []
    for r in range(rounds):
        pair = [("baseline", base), ("candidate", cand)]
        for side, uri in (pair if r % 2 == 0 else pair[::-1]):
            wall, summary = run(uri)
            walls[side].append(wall)
            summaries[side] = summary
            order.append(labels[0] if side == "baseline" else labels[1])
            echo(f"    run {len(order)}: {order[-1]:<{max(map(len, labels))}} {wall:6.1f} s  "
                 f"{summary.audio_hours * 3600 / wall:6.0f} x real time  (load {load()})")
    b, c = summaries["baseline"], summaries["candidate"]
    assert b.frames == c.frames and b.rows == c.rows, (b, c)  # the same audio on both sides
    audio_s = c.audio_hours * 3600
    out = {"order": " ".join(order), "audio_hours": round(c.audio_hours, 3),
           "utterances": c.rows, "frames": c.frames}
    cpus = run.executor.num_cpus
    for side, s in summaries.items():
        total = sum(walls[side])
        out[side] = {"walls_s": [round(w, 2) for w in walls[side]],
                     "mean_wall_s": round(total / rounds, 2),
                     "x_real_time": round(audio_s * rounds / total, 1),
                     "x_real_time_per_cpu": round(audio_s * rounds / total / cpus, 1),
                     "units": s.units_total}
    out["ratio"] = round(sum(walls["baseline"]) / sum(walls["candidate"]), 3)
    return out


def print_comparison(res: dict, labels: tuple[str, str], echo) -> None:
    for side, label in zip(("baseline", "candidate"), labels):
        s = res[side]
        walls = " + ".join(f"{w:.1f}" for w in s["walls_s"])
        echo(f"  {label:<38} {s['x_real_time']:6.0f} x real time "
             f"({s['x_real_time_per_cpu']:.0f} per CPU), wall {walls} s, {s['units']} units")
    echo(f"  ratio {labels[1]} / {labels[0]}: {res['ratio']:.3f}  (target >= 0.90: "
         f"{'MET' if res['ratio'] >= 0.9 else 'NOT MET'}); same {res['utterances']} utterances and "
         f"{res['frames']} frames on both sides")


def figure_dataset(args, run: StageRunner, tmp: Path, echo) -> dict:
    warm_plain, warm_ds = tmp / "warm_plain", tmp / "warm_ds"
    build_corpus(warm_plain, WARM_MINUTES)
    build_dataset(warm_plain, warm_ds, 2)
    plain, ds = tmp / "plain", tmp / "ds"
    t0 = time.perf_counter()
    audio_s = build_corpus(plain, args.minutes)
    shards, groups, size = build_dataset(plain, ds, args.shards)
    built = time.perf_counter() - t0
    os.sync()  # the copies' write-back must not run during the measurements
    files = sum(1 for _ in plain.rglob("*.wav"))
    echo(f"\n(1) Parquet audio dataset against plain WAV files: {audio_s / 3600:.2f} h of real "
         f"speech, {files} files ({sum(f.stat().st_size for f in plain.rglob('*.wav')) / 1e9:.2f} "
         f"GB) and the same as {shards} Parquet shards ({groups} row groups) written by datasets "
         f"{_version('datasets')} ({size / 1e9:.2f} GB; built in {built:.0f} s)")
    echo(f"  {machine_line(args.machine)}")
    echo(f"  features stage end to end, RayExecutor(num_cpus={args.cpus}), embedded Ray, after a "
         f"warm-up run of each form on {WARM_MINUTES:g} min; runs back to back in this process, "
         "order below")
    run(warm_plain), run(warm_ds)
    labels = ("plain WAV files", "Parquet audio dataset")
    res = compare(run, plain, ds, args.rounds, labels, echo)
    print_comparison(res, labels, echo)
    res.update(files=files, shards=shards, row_groups=groups, dataset_bytes=size, plain_bytes=sum(
        f.stat().st_size for f in plain.rglob("*.wav")))
    for p in (plain, ds, warm_plain, warm_ds):
        shutil.rmtree(p)
    return res


def figure_segments(args, run: StageRunner, tmp: Path, echo) -> dict:
    warm, warm_plain = tmp / "warm_seg", tmp / "warm_seg_plain"
    build_segments(warm, warm_plain, WARM_MINUTES * 2, WARM_MINUTES, seed=1)
    root, plain = tmp / "seg", tmp / "seg_plain"
    t0 = time.perf_counter()
    info = build_segments(root, plain, args.minutes, args.recording_minutes)
    built = time.perf_counter() - t0
    os.sync()
    echo(f"\n(2) Segment manifest over long recordings against the segments as plain WAV files: "
         f"{info['recordings']} recordings of ~{info['recording_minutes']:g} min "
         f"({info['recording_seconds'] / 3600:.2f} h, real speech concatenated, 16 kHz 16-bit "
         f"WAV), a Parquet manifest of {info['segments']} segments of 3-15 s (path, start, end, "
         f"speaker) covering {info['coverage']:.0%} of them; the same segments' samples as "
         f"{info['segments']} WAV files ({info['segment_seconds'] / 3600:.2f} h; built in "
         f"{built:.0f} s)")
    echo(f"  {machine_line(args.machine)}")
    echo(f"  features stage end to end, RayExecutor(num_cpus={args.cpus}), embedded Ray, after a "
         f"warm-up run of each form; runs back to back in this process, order below")
    run(warm / "segments.parquet"), run(warm_plain)
    labels = ("plain WAV files (segments)", "segment manifest")
    res = compare(run, plain, root / "segments.parquet", args.rounds, labels, echo)
    print_comparison(res, labels, echo)
    res.update(info)
    for p in (root, plain, warm, warm_plain):
        shutil.rmtree(p)
    return res


# planning ------------------------------------------------------------------------------------
WORDS = ("the of and to a in that is was he for it with as his on be at by had not are but "
         "from or have an they which one you were her all she there would their we him been has "
         "when who will more no if out so said what up its about into than them can only other "
         "new some could time these two may then do first any my now such like our over man me "
         "even most made after also did many before must through back years where much your way "
         "well down should because each just those people how too little state good very make "
         "world still own see men work long get here between both life being under never day "
         "same another know while last might us great old year off come since against go came "
         "right used take three").split()


def build_plan_manifest(path: Path, rows: int, recordings: int, seed: int = 0,
                        first_recording: int = 0) -> dict:
    """A Parquet segment manifest: `rows` segments of 3-15 s over `recordings` recordings
    (audio/spkNNN/recNNNNN.wav from `first_recording` on, relative, not written), speaker and
    a 12-word text per row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    rec = np.sort(rng.integers(0, recordings, rows))  # each recording's rows together
    dur = rng.uniform(3, 15, rows)
    gap = rng.uniform(0.05, 0.6, rows)
    ends = np.cumsum(dur + gap)
    first = np.searchsorted(rec, rec)  # the first row of each row's recording
    offset = np.where(first > 0, ends[np.maximum(first - 1, 0)], 0.0)
    end = np.round(ends - offset, 3)
    start = np.round(end - dur, 3)
    numbers = range(first_recording, first_recording + recordings)
    speakers = np.array([f"spk{r % 400:03d}" for r in numbers], dtype=object)
    paths = np.array([f"audio/spk{r % 400:03d}/rec{r:05d}.wav" for r in numbers], dtype=object)
    words = np.array(WORDS, dtype=object)
    text = [" ".join(w) for w in words[rng.integers(0, len(words), (rows, 12))]]
    table = pa.table({"path": pa.array(paths[rec], pa.string()), "start": start, "end": end,
                      "speaker": pa.array(speakers[rec], pa.string()),
                      "text": pa.array(text, pa.string())})
    pq.write_table(table, str(path))
    return {"rows": rows, "recordings": int(len(np.unique(rec))),
            "manifest_bytes": path.stat().st_size}


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def build_listing(root: Path, files: int, per_folder: int = 1000) -> dict:
    """`files` empty .wav files in folders of `per_folder` (planning lists them, opens none)."""
    t0 = time.perf_counter()
    for d in range(-(-files // per_folder)):
        folder = root / f"spk{d:05d}"
        folder.mkdir(parents=True)
        for i in range(min(per_folder, files - d * per_folder)):
            os.close(os.open(folder / f"utt{i:04d}.wav", os.O_CREAT | os.O_WRONLY, 0o644))
    return {"files": files, "folders": -(-files // per_folder), "built_s": time.perf_counter() - t0}


def plan_child(input_uri: str, out: str) -> None:
    """In a fresh process: the features stage's plan of the input; one JSON line with time,
    memory and what the plan holds."""
    import resource

    import pyarrow.parquet  # noqa: F401  (what planning imports, in the baseline)

    from timbrespace_ray.config import load_config
    from timbrespace_ray.stages.features import FeaturesStage
    from timbrespace_ray.storage import Location

    stage = FeaturesStage(Location.of(out), input_uri, load_config().features)
    state = Path(out) / "_run" / "features"
    grown = (state / "plan.parquet").exists()  # planned before: the input has grown since
    rss0, hwm0 = _status_kb("VmRSS"), _status_kb("VmHWM")
    t0 = time.perf_counter()
    added = stage.grow(stage.stored_plan()) if grown else 0
    plan = stage.stored_plan()
    wall = time.perf_counter() - t0
    hwm = _status_kb("VmHWM")
    print(json.dumps({
        "added_units": added, "changes": (json.loads((state / "changes.json").read_text())
                                          if grown else None),
        "plan_s": wall, "units": plan.index.num_rows, "items": plan.total("items"),
        "segments": plan.total("utterances"), "metadata": stage.metadata,
        "index_bytes": (state / "plan.parquet").stat().st_size,
        "chunks": len(list((state / "plan").iterdir())),
        "chunk_bytes": sum(p.stat().st_size for p in (state / "plan").iterdir()),
        "rss_after_imports_mb": rss0 / 1024, "hwm_before_plan_mb": hwm0 / 1024,
        "peak_rss_mb": hwm / 1024,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _plan_in_child(input_uri: str, out: Path, echo, keep: bool = False) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--plan-child", input_uri, str(out)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the planning subprocess failed:\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res["changes"] is not None:
        c = res["changes"]
        echo(f"  the input planned again and compared with its plan: {c['new']:,} new "
             f"utterances in {res['added_units']:,} new units, {c['changed']} changed, "
             f"{c['gone']} gone")
    echo(f"  plan {res['plan_s']:6.1f} s; {res['units']:,} units, {res['items']:,} items, "
         f"{res['segments']:,} utterances, metadata {res['metadata']}; index "
         f"{res['index_bytes'] / 1e6:.1f} MB, {res['chunks']:,} chunks of "
         f"{res['chunk_bytes'] / 1e6:.0f} MB")
    echo(f"  RSS after imports {res['rss_after_imports_mb']:.0f} MB, peak while planning "
         f"{res['peak_rss_mb']:.0f} MB (VmHWM of the planning process, the only one: planning "
         "starts no Ray)")
    if res["changes"] is None:  # a first plan
        met = res["plan_s"] < 300 and res["peak_rss_mb"] < 2048
        echo(f"  under 5 min and under 2 GiB: {'yes' if met else 'NO'}")
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return res


def figure_planning(args, tmp: Path, echo) -> dict:
    manifest = tmp / "plan_manifest.parquet"
    t0 = time.perf_counter()
    info = build_plan_manifest(manifest, args.plan_rows, args.plan_recordings)
    built = time.perf_counter() - t0
    echo(f"\n(3) Planning a segment manifest of {info['rows']:,} rows (Parquet, "
         f"{info['manifest_bytes'] / 1e6:.0f} MB: path, start, end, speaker, text of 12 words) "
         f"over {info['recordings']:,} recordings (not opened: planning reads the manifest only; "
         f"built in {built:.0f} s), then a folder of {args.list_files:,} audio files")
    echo(f"  {machine_line(args.machine)}")
    echo("  FeaturesStage(...).stored_plan(): the input planned and the plan written, in a "
         "fresh Python process (nothing else running in it)")
    res = {"manifest": {**info, **_plan_in_child(str(manifest), tmp / "plan_out", echo,
                                                  keep=bool(args.grow_share))}}
    if args.grow_share:
        import pyarrow as pa
        import pyarrow.parquet as pq

        extra = tmp / "plan_extra.parquet"
        more = build_plan_manifest(extra, round(args.plan_rows * args.grow_share),
                                   max(1, round(args.plan_recordings * args.grow_share)),
                                   seed=1, first_recording=args.plan_recordings)
        pq.write_table(pa.concat_tables([pq.read_table(manifest), pq.read_table(extra)]),
                       str(manifest))
        extra.unlink()
        echo(f"  then {more['rows']:,} rows of {more['recordings']:,} new recordings added to the "
             "manifest, and the stage's plan grown in a fresh process:")
        res["grown"] = {**more, **_plan_in_child(str(manifest), tmp / "plan_out", echo)}
    manifest.unlink()
    if args.list_files:
        folder = tmp / "listing"
        listing = build_listing(folder, args.list_files)
        echo(f"  a folder of {listing['files']:,} empty .wav files in {listing['folders']:,} "
             f"folders (built in {listing['built_s']:.0f} s):")
        res["listing"] = {**listing, **_plan_in_child(str(folder), tmp / "list_out", echo)}
        shutil.rmtree(folder, ignore_errors=True)
    return res


def build_long(root: Path, hours: float, segments: int, seed: int = 0) -> dict:
    """root/long.wav (the bundled speech tiled, written in blocks) and root/segments.csv."""
    import soundfile as sf

    root.mkdir(parents=True)
    speech = np.concatenate(_speech_int16())
    total = int(hours * 3600 * 16000)
    with sf.SoundFile(str(root / "long.wav"), "w", 16000, 1, "PCM_16") as fh:
        for start in range(0, total, speech.shape[0]):
            fh.write(speech[: min(speech.shape[0], total - start)])
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.uniform(0, hours * 3600 - 5, segments))
    ends = starts + rng.uniform(1, 4, segments)
    lines = ["path,start,end,speaker"] + [f"long.wav,{a:.3f},{b:.3f},spk{i % 7}"
                                          for i, (a, b) in enumerate(zip(starts, ends))]
    (root / "segments.csv").write_text("\n".join(lines) + "\n")
    return {"hours": hours, "segments": segments, "segment_hours": float((ends - starts).sum() / 3600),
            "wav_bytes": (root / "long.wav").stat().st_size}


def long_child(manifest: str, out: str) -> None:
    """In a fresh process: the features stage over one long segmented recording."""
    from timbrespace_ray.config import load_config
    from timbrespace_ray.executors import LocalExecutor
    from timbrespace_ray.stages.features import FeaturesStage
    from timbrespace_ray.storage import Location

    stage = FeaturesStage(Location.of(out), manifest, load_config().features)
    stage.setup()
    rss0 = _status_kb("VmRSS")
    t0 = time.perf_counter()
    summary = stage.run(LocalExecutor())
    print(json.dumps({"wall_s": time.perf_counter() - t0, "rows": summary.rows,
                      "errors": summary.errors, "units": summary.units_total,
                      "rss_after_setup_mb": rss0 / 1024, "peak_rss_mb": _status_kb("VmHWM") / 1024,
                      "worker_memory_mb": stage.resources.memory_bytes / 2**20}))


def figure_long(args, tmp: Path, echo) -> dict:
    root = tmp / "long"
    info = build_long(root, args.long_hours, args.long_segments)
    echo(f"\n(4) One {info['hours']:g}-hour recording ({info['wav_bytes'] / 1e9:.2f} GB WAV, 16 kHz "
         f"16 bit) with {info['segments']:,} segments of 1-4 s ({info['segment_hours']:.1f} h "
         "analysed), features stage in a fresh process (one worker's work)")
    echo(f"  {machine_line(args.machine)}")
    proc = subprocess.run([sys.executable, __file__, "--long-child", str(root / "segments.csv"),
                           str(tmp / "long_out")], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the long-recording subprocess failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(info)
    whole_mb = info["hours"] * 3600 * 16000 * 4 / 2**20
    echo(f"  {res['rows']:,} rows, errors {res['errors'] or 'none'}, {res['units']} unit(s), "
         f"{res['wall_s']:.0f} s")
    echo(f"  peak RSS {res['peak_rss_mb']:.0f} MB (after imports and setup {res['rss_after_setup_mb']:.0f}"
         f" MB); the stage asks Ray for {res['worker_memory_mb']:.0f} MB per worker; the "
         f"recording decoded whole would be {whole_mb:.0f} MB of float32 alone")
    met = res["peak_rss_mb"] < res["worker_memory_mb"] and res["rows"] == info["segments"]
    echo(f"  target: within the worker memory bound: {'MET' if met else 'NOT MET'}")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(tmp / "long_out", ignore_errors=True)
    return res


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--plan-child":
        plan_child(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--long-child":
        long_child(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1200.0,
                    help="audio per form in figures 1 and 2 (default 20 h: runs of 30-60 s each "
                         "on 2 CPUs, so the pool's start-up of ~2 s is a small part)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=2,
                    help="runs of each side: round 1 baseline then candidate, round 2 the other "
                         "way round, ... (default 2: A B B A)")
    ap.add_argument("--shards", type=int, default=None,
                    help="Parquet shards of the dataset (default: 500 MB each, at least 4)")
    ap.add_argument("--recording-minutes", type=float, default=30.0,
                    help="length of each long recording of figure 2 (at most half of --minutes)")
    ap.add_argument("--plan-rows", type=int, default=1_000_000)
    ap.add_argument("--plan-recordings", type=int, default=2000)
    ap.add_argument("--grow-share", type=float, default=0.01,
                    help="rows then added to the manifest, as a share of it, and planned as a "
                         "rerun over the grown input does (0: not)")
    ap.add_argument("--list-files", type=int, default=1_000_000,
                    help="files of the folder planned in figure 3 (0: none)")
    ap.add_argument("--long-hours", type=float, default=10.0)
    ap.add_argument("--long-segments", type=int, default=5000)
    ap.add_argument("--figures", default=",".join(FIGURES),
                    help=f"which to measure, in this order (default {','.join(FIGURES)})")
    ap.add_argument("--tmp", default=None, help="folder for the corpora (default: the system's)")
    ap.add_argument("--json", dest="json_path", default=None, help="also write the figures here")
    args = ap.parse_args()
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    unknown = set(figures) - set(FIGURES)
    if unknown:
        ap.error(f"unknown figure(s) {sorted(unknown)}: choose from {FIGURES}")
    args.machine = machine()
    echo = lambda s: print(s, flush=True)  # noqa: E731
    results: dict = {"machine": args.machine, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     "args": {k: v for k, v in vars(args).items() if k != "machine"}}
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_inputs_") as tmp:
        tmp = Path(tmp)
        run = None
        for name in figures:
            if name in ("planning", "long"):
                if run is not None:  # Ray's processes must not share the CPUs with these
                    run.close()
                    run = None
                results[name] = (figure_planning if name == "planning" else figure_long)(args, tmp, echo)
                continue
            if run is None:
                run = StageRunner(args.cpus, tmp)
            fn = figure_dataset if name == "dataset" else figure_segments
            results[name] = fn(args, run, tmp, echo)
        if run is not None:
            run.close()
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2, default=str) + "\n")
        echo(f"\nwritten: {args.json_path}")


if __name__ == "__main__":
    main()
