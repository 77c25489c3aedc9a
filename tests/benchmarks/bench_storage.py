"""What object storage costs the features stage: the same corpus read from local disk, from a
SeaweedFS S3 server on loopback, and from that server behind a proxy that adds a fixed latency
to every request (30 ms by default, about what a cloud object store adds), in one run.

Four input forms, all cut from the bundled recordings of real speech (copied and cut to reach
--minutes of audio per form):
  files     a folder of short WAV files of 3-8 s each (like LibriSpeech utterances), in
            folders of 100;
  tar       the same utterances as WebDataset tar shards (`key.wav` + `key.json` members) of
            about --shard-mb each (default: <= 200 MB and at least 2 shards per CPU);
  dataset   the same utterances as a Parquet audio dataset written by Hugging Face `datasets`
            (`Audio` column, bytes embedded, as `push_to_hub` writes it; bench_inputs.py's
            builder);
  segments  a CSV segment manifest (`path,start,end,speaker`) cutting long recordings (the
            speech concatenated into WAVs of about --recording-minutes) into 3-15 s segments
            (bench_inputs.py's builder); its objects are the recordings (the manifest is read by
            the planner alone).
Each form is uploaded to the server with its fsspec filesystem, then run by the features stage
end to end (`pipeline.run_stage("features", ...)`: plan, actor pool start-up, reads, decode,
extract, Parquet, markers) on one embedded Ray (`RayExecutor(num_cpus=--cpus)`), output on
local disk, from the three sources in turn: local disk, `s3://` direct, `s3://` through the
latency proxy (`tests/helpers/infra/proxy.py`, no faults). A warm-up (Ray, numba caches, s3fs imports)
runs first on a small corpus. The sources of a form run back to back in the order
L S P, P S L, ... (--rounds 2: each once early and once late, so a busy or quiet moment of a
shared machine weighs on all of them). Throughput is the audio over the mean wall time per
run; the ratios are local's total wall over the other source's (the same audio on every side,
checked by the row and frame counts). Target: s3 + latency / local >= 0.8.

SeaweedFS and the proxy run on the workers' cores (a cloud store's servers do not): their CPU
is measured and printed as a share of the machine, and the ratios are printed a second time
with each run's wall less the store's CPU spread over the CPUs (an estimate). The ratios that
the target is judged on keep it in. With --store-core the store runs alone on the machine's
last core and the stage on the others, so that neither its CPU nor the caches it churns are
the workers' (and the ratios are then the client's alone). The workers' own CPU (their
processes' user + system time, sampled from /proc) is printed per utterance for each source:
steadier than wall times on a machine that others share. For the files form, the client CPU
per GET of a short file is measured in this process as well, through s3fs's `cat_file` and
through `whole_reads.read_whole` (the presigned GET that the stage uses), on the same objects.

The proxy also counts the requests of each proxied run (ProxyStats.requests: one per HTTP
request on a keep-alive connection), split into planning (the driver's listing, footers,
manifest) and the workers' reads, per stored object, per unit and per utterance (how many round
trips the reader makes for each input), and the bytes read through it against the bytes stored
(how much a reader reads more than once).

Run: .venv/bin/python tests/benchmarks/bench_storage.py [--minutes 90] [--forms
     files,tar,dataset,segments] [--cpus N] [--store-core] [--latency-ms 30] [--rounds 2]
     [--json out.json]
Smoke test: .venv/bin/python tests/benchmarks/bench_storage.py --minutes 4 --rounds 1
The table goes to stdout; Ray's log and the stage's per-unit progress to stderr (2>/dev/null).
Everything (SeaweedFS, the proxy, Ray) listens on 127.0.0.1 only and is stopped at the end, on
errors too; the corpora live in a temporary folder (about 2 MB per minute of audio, on disk and
in the server, one form at a time). A run of the defaults takes ~20 min on a 2-core VM.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # `datasets` writes local files only
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # never ask for instance credentials

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

# bench_inputs puts tests/ on sys.path (conftest, corpus, infra)
from bench_inputs import (SR, _speech_int16, _version, build_dataset, build_segments,  # noqa: E402
                          load, machine, machine_line)
from helpers.corpus import add_tar_member  # noqa: E402
from helpers.infra.proxy import FlakyProxy  # noqa: E402
from helpers.infra.s3 import SeaweedS3  # noqa: E402

FORMS = ("files", "tar", "dataset", "segments")
SOURCES = ("local", "s3", "s3+lat")
TARGET = 0.8
WARM_MINUTES = 1.0
BUCKET = "bench-storage"
CLIENT_GETS = 200  # short files read by each client in the client CPU comparison


# corpora -------------------------------------------------------------------------------------
def build_short_files(root: Path, minutes: float, seed: int = 0, lo: float = 3.0,
                      hi: float = 8.0, per_folder: int = 100) -> dict:
    """root/spkNNN/uttNNNNNN.wav: pieces of 3-8 s of the bundled speech (16 kHz, 16 bit), each
    cut at a random place of the recordings played in a loop."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    speech = np.concatenate(_speech_int16())
    target = int(minutes * 60 * SR)
    written = i = 0
    while written < target:
        n = int(rng.uniform(lo, hi) * SR)
        start = int(rng.integers(0, speech.shape[0]))
        piece = np.take(speech, np.arange(start, start + n), mode="wrap")
        folder = root / f"spk{i // per_folder:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(str(folder / f"utt{i:06d}.wav"), piece, SR, subtype="PCM_16")
        written += n
        i += 1
    return {"objects": i, "utterances": i, "audio_s": written / SR, "bytes": _bytes(root)}


def build_tar_shards(plain: Path, root: Path, shard_bytes: int) -> dict:
    """The WAV files under `plain` as WebDataset shards root/shard-NNNNN.tar, in order:
    `spkNNN/uttNNNNNN.wav` with a `spkNNN/uttNNNNNN.json` sidecar ({"speaker": ...})."""
    root.mkdir(parents=True)
    files = sorted(plain.rglob("*.wav"))
    shards, size, tar = 0, 0, None
    try:
        for f in files:
            data = f.read_bytes()
            if tar is None or size + len(data) > shard_bytes:
                if tar is not None:
                    tar.close()
                tar = tarfile.open(root / f"shard-{shards:05d}.tar", "w")
                shards, size = shards + 1, 0
            key = str(f.relative_to(plain).with_suffix(""))
            add_tar_member(tar, f"{key}.wav", data)
            add_tar_member(tar, f"{key}.json", json.dumps({"speaker": f.parent.name}).encode())
            size += len(data)
    finally:
        if tar is not None:
            tar.close()
    return {"objects": shards, "utterances": len(files), "bytes": _bytes(root)}


def build_segment_manifest(root: Path, minutes: float, recording_minutes: float) -> dict:
    """root/long/recNNN.wav and root/segments.csv (path,start,end,speaker): bench_inputs.py's
    long recordings and 3-15 s segments, the manifest written as CSV."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    throwaway = root.parent / f"{root.name}_plain"  # the builder also writes each segment alone
    info = build_segments(root, throwaway, minutes, recording_minutes)
    shutil.rmtree(throwaway)
    pacsv.write_csv(pq.read_table(str(root / "segments.parquet")), str(root / "segments.csv"))
    (root / "segments.parquet").unlink()
    return {"objects": info["recordings"], "utterances": info["segments"],
            "recording_minutes": info["recording_minutes"], "bytes": _bytes(root)}


def _bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def build_form(form: str, tmp: Path, minutes: float, args, seed: int = 0) -> dict:
    """Build one form under tmp/<form>; returns its description with `local` (the input path)
    and `upload` (the folder to upload) and `key` (the input's path in the bucket)."""
    plain = tmp / f"{form}_plain"
    if form == "files":
        info = build_short_files(tmp / form, minutes, seed)
        return {**info, "upload": tmp / form, "input": ""}
    if form in ("tar", "dataset"):
        built = build_short_files(plain, minutes, seed)
        if form == "tar":
            shard_mb = args.shard_mb or max(1.0, min(200.0, built["bytes"] / 1e6 / (2 * args.cpus)))
            info = build_tar_shards(plain, tmp / form, int(shard_mb * 1e6))
            info["shard_mb"] = round(shard_mb, 1)
        else:
            shards, groups, size = build_dataset(plain, tmp / form, args.dataset_shards)
            info = {"objects": shards, "row_groups": groups, "utterances": built["utterances"],
                    "bytes": size}
        shutil.rmtree(plain)
        return {**info, "audio_s": built["audio_s"], "upload": tmp / form, "input": ""}
    if form == "segments":
        info = build_segment_manifest(tmp / form, minutes, min(args.recording_minutes, minutes / 2))
        return {**info, "audio_s": None, "upload": tmp / form, "input": "segments.csv"}
    raise ValueError(form)


# services ------------------------------------------------------------------------------------
class Services:
    """SeaweedFS on loopback, the latency proxy in front of it, and one embedded Ray; each
    source's input URI and storage options; stop() stops whatever was started."""

    def __init__(self, cpus: int, latency_s: float, store_cores: set[int] | None = None):
        """`store_cores`: the cores SeaweedFS and the proxy run on, and no other process here
        (Ray, the stage's workers: the other cores); None: all of them share every core."""
        from timbrespace_ray.executors import RayExecutor

        self.s3 = self.proxy = None
        if store_cores:
            # this thread's cores are those of every process and thread started from it
            os.sched_setaffinity(0, os.sched_getaffinity(0) - store_cores)
        self.executor = RayExecutor(num_cpus=cpus, progress_bars=False)
        try:
            self.s3 = SeaweedS3.start()
            self.s3.create_bucket(BUCKET)
            port = int(self.s3.endpoint_url.rsplit(":", 1)[1])
            # no faults; lives as long as the benchmark; keep-alive connections idle between runs
            self.proxy = FlakyProxy(("127.0.0.1", port), latency_s=(latency_s, latency_s),
                                    max_lifetime_s=7 * 24 * 3600.0, idle_timeout_s=3600.0)
            self.proxy.start()
            if store_cores:
                self._pin_store(store_cores)
            self.fs = self.s3.filesystem()
        except BaseException:
            self.stop()
            raise

    def _pin_store(self, cores: set[int]) -> None:
        """SeaweedFS's threads and the proxy's onto `cores` (the threads they start later are
        started from these, and keep their cores)."""
        for thread in _threads(self.s3.proc.pid):
            os.sched_setaffinity(thread, cores)
        os.sched_setaffinity(self.proxy._thread.native_id, cores)

    def store_cpu_s(self) -> float:
        """CPU seconds the store has used so far: the SeaweedFS processes and the proxy's
        thread. They share this machine's cores with the workers here; a cloud store's do not."""
        import psutil

        weed = psutil.Process(self.s3.proc.pid)
        procs = [weed, *weed.children(recursive=True)]
        total = sum(sum(p.cpu_times()[:2]) for p in procs if p.is_running())
        native = self.proxy._thread.native_id
        return total + sum(t.user_time + t.system_time for t in psutil.Process().threads()
                           if t.id == native)

    def options(self, source: str) -> dict:
        if source == "local":
            return {}
        opts = self.s3.storage_options
        return opts if source == "s3" else {**opts, "endpoint_url": self.proxy.url}

    def upload(self, local: Path, key: str) -> float:
        t0 = time.perf_counter()
        self.fs.put(str(local) + "/", f"{BUCKET}/{key}/", recursive=True)
        return time.perf_counter() - t0

    def uri(self, source: str, form: dict, key: str) -> str:
        if source == "local":
            base = str(form["upload"])
        else:
            base = f"s3://{BUCKET}/{key}"
        return f"{base}/{form['input']}" if form["input"] else base

    def stop(self) -> None:
        errors = []
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
                time.sleep(2)  # Ray's processes exit in the background
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        for what in (self.proxy, self.s3):
            if what is not None:
                try:
                    what.stop()
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
        if errors:
            raise errors[0]


def _threads(pid: int) -> list[int]:
    """The thread ids of process `pid` and of its descendants (Linux's /proc)."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        found.append(int(tid))
        for child in _children(pid, tid):
            found += _threads(child)
    return found


def _children(pid: int, tid: str | None = None) -> list[int]:
    """The child processes of process `pid`'s thread `tid` (None: of all its threads)."""
    found = []
    for t in [tid] if tid else os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/children") as fh:
                found += [int(c) for c in fh.read().split()]
        except OSError:  # the thread or process is gone
            pass
    return found


class WorkerCpu:
    """The CPU seconds that the stage's workers (Ray's `ray::UnitActor` processes, the
    raylet's children: the analysis, the storage client's threads, the Parquet writes) use
    between start() and stop(), from /proc every SAMPLE_S: what a source costs the workers,
    whether or not they waited for it, and steadier than wall times on a shared machine. A
    worker's CPU after its last sample (at most SAMPLE_S of its shutdown) is not counted."""

    SAMPLE_S = 0.02

    def __init__(self):
        self.raylet: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.raylet is None:
            self.raylet = next(pid for pid in _descendants(os.getpid())
                               if _stat(pid) and _stat(pid)[0] == "raylet")
        self.base = self._sample()  # the workers there before: their CPU from now on
        self.last = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.last.update(self._sample())
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.last.items())

    def _run(self) -> None:
        while not self._stop.wait(self.SAMPLE_S):
            self.last.update(self._sample())

    def _sample(self) -> dict[int, float]:
        found = {}
        for pid in _children(self.raylet):
            stat = _stat(pid)
            if stat and stat[0].startswith("ray::UnitActor"):
                found[pid] = stat[1]
        return found


def _descendants(pid: int) -> list[int]:
    return [d for child in _children(pid) for d in (child, *_descendants(child))]


def _stat(pid: int) -> tuple[str, float] | None:
    """(name, CPU seconds: user + system) of process `pid`; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
    # fields[11], [12]: utime, stime (the 14th and 15th of stat), in clock ticks
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StageRunner:
    """`run_stage("features", ...)` into a fresh local output folder, timed; the proxy's
    requests counted during planning and in all."""

    def __init__(self, services: Services, tmp: Path):
        from timbrespace_ray.stages.features import FeaturesStage

        self.services = services
        self.tmp = tmp
        self.runs = 0
        self.workers = WorkerCpu()
        self.plan_s = 0.0
        self.plan_requests = 0
        stats = lambda: services.proxy.stats.requests  # noqa: E731
        original = FeaturesStage.plan

        def timed_plan(stage):  # the driver's own reads (workers use the class unpatched)
            t0, r0 = time.perf_counter(), stats()
            try:
                return original(stage)
            finally:
                self.plan_s = time.perf_counter() - t0
                self.plan_requests = stats() - r0

        self._restore = lambda: setattr(FeaturesStage, "plan", original)
        FeaturesStage.plan = timed_plan

    def __call__(self, source: str, input_uri: str) -> dict:
        from timbrespace_ray.config import load_config
        from timbrespace_ray.pipeline import run_stage

        self.runs += 1
        out = self.tmp / f"out{self.runs:03d}"
        opts = self.services.options(source)
        overrides = {"storage.storage_options": opts} if opts else {}
        cfg = load_config(input=input_uri, output=str(out), **overrides)
        r0, b0 = self.services.proxy.stats.requests, self.services.proxy.stats.bytes_down
        if self.runs > 1:  # Ray runs from the first run on
            self.workers.start()
        c0 = self.services.store_cpu_s()
        t0 = time.perf_counter()
        summary = run_stage("features", cfg, self.services.executor)
        wall = time.perf_counter() - t0
        worker_cpu = self.workers.stop() if self.runs > 1 else 0.0
        store_cpu = self.services.store_cpu_s() - c0
        requests = self.services.proxy.stats.requests - r0
        bytes_down = self.services.proxy.stats.bytes_down - b0
        if summary.errors or summary.rows != summary.inputs:
            raise RuntimeError(f"{source} {input_uri}: the stage recorded errors: {summary}")
        shutil.rmtree(out)
        return {"wall_s": wall, "plan_s": self.plan_s, "requests": requests,
                "bytes_down": bytes_down,
                "plan_requests": self.plan_requests if source == "s3+lat" else 0,
                "rows": summary.rows, "frames": summary.frames, "units": summary.units_total,
                "audio_s": summary.audio_hours * 3600, "busy_s": summary.busy_seconds,
                "store_cpu_s": store_cpu, "worker_cpu_s": worker_cpu}

    def close(self) -> None:
        self._restore()


# measuring -----------------------------------------------------------------------------------
def client_cpu(services: Services, key: str) -> dict:
    """Client CPU per GET of a short file: the first CLIENT_GETS objects under `key` read whole
    by 8 threads of this process, straight from the server (the proxy's thread would count),
    through s3fs's ranged cat_file and through whole_reads.read_whole (a presigned GET); the
    best of 3 passes of each, in turn."""
    from concurrent.futures import ThreadPoolExecutor

    from timbrespace_ray.storage import Location
    from timbrespace_ray.whole_reads import read_whole

    fs = Location.of(f"s3://{BUCKET}/{key}", services.options("s3")).fs
    found = fs.find(f"{BUCKET}/{key}", detail=True)
    objects = [(path, found[path]["size"]) for path in sorted(found)[:CLIENT_GETS]]
    ways = {"s3fs": lambda o: fs.cat_file(o[0], start=0, end=o[1]),
            "presigned": lambda o: read_whole(fs, *o)}
    best = dict.fromkeys(ways, float("inf"))
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            for name, read in ways.items():
                c0 = time.process_time()
                assert [len(data) for data in pool.map(read, objects)] == [o[1] for o in objects]
                best[name] = min(best[name], time.process_time() - c0)
    return {name: cpu / len(objects) * 1000 for name, cpu in best.items()}


def warm_up(services: Services, run: StageRunner, tmp: Path, echo) -> None:
    """Ray, the numba caches, s3fs/botocore imports and the server's first volumes."""
    t0 = time.perf_counter()
    root = tmp / "warm"
    build_short_files(root, WARM_MINUTES, seed=99)
    services.upload(root, "warm")
    form = {"upload": root, "input": ""}
    for source in SOURCES:
        run(source, services.uri(source, form, "warm"))
    shutil.rmtree(root)
    echo(f"warm-up: {WARM_MINUTES:g} min of short files from each source, "
         f"{time.perf_counter() - t0:.0f} s")


def measure_form(name: str, args, services: Services, run: StageRunner, tmp: Path, echo) -> dict:
    t0 = time.perf_counter()
    form = build_form(name, tmp, args.minutes, args)
    built = time.perf_counter() - t0
    os.sync()  # the copies' write-back must not run during the measurements
    uploaded = services.upload(form["upload"], name)
    desc = {"files": "short WAV files", "tar": f"tar shards (~{form.get('shard_mb')} MB)",
            "dataset": f"Parquet audio dataset (datasets {_version('datasets')}, "
                       f"{form.get('row_groups')} row groups)",
            "segments": f"CSV segment manifest over long WAVs (~{form.get('recording_minutes')} "
                        "min each)"}[name]
    echo(f"\n[{name}] {desc}: {form['objects']} objects, {form['utterances']} utterances, "
         f"{form['bytes'] / 1e6:.0f} MB; built in {built:.0f} s, uploaded in {uploaded:.0f} s "
         f"(load {load()})")
    client = client_cpu(services, name) if name == "files" else None
    if client:
        echo(f"  client CPU per GET: s3fs {client['s3fs']:.2f} ms, presigned "
             f"{client['presigned']:.2f} ms")
    runs = {s: [] for s in SOURCES}
    order = []
    for r in range(args.rounds):
        for source in (SOURCES if r % 2 == 0 else SOURCES[::-1]):
            res = run(source, services.uri(source, form, name))
            runs[source].append(res)
            order.append(source)
            req = (f", {res['requests']} requests ({res['plan_requests']} planning)"
                   if source == "s3+lat" else "")
            if source != "local":
                req += f", store CPU {res['store_cpu_s']:.1f} s"
            echo(f"  run {len(order):2d}: {source:<7} {res['wall_s']:6.1f} s "
                 f"(plan {res['plan_s']:4.1f} s) {res['audio_s'] / res['wall_s']:6.0f} x real "
                 "time, "
                 f"{res['units']} units, worker busy {res['busy_s']:.0f} s{req}  (load {load()})")
    first = runs["local"][0]
    for source in SOURCES:  # the same audio from every source
        for res in runs[source]:
            assert (res["rows"], res["frames"]) == (first["rows"], first["frames"]), (source, res)
    audio_s = first["audio_s"]
    out = {"form": name, "description": desc, "objects": form["objects"],
           "utterances": first["rows"], "audio_minutes": audio_s / 60, "bytes": form["bytes"],
           "order": " ".join(order), "runs": runs}
    total = {s: sum(r["wall_s"] for r in runs[s]) for s in SOURCES}
    for s in SOURCES:
        out[f"x_{s}"] = audio_s * args.rounds / total[s]
    out["ratio_s3"] = total["local"] / total["s3"]
    out["ratio_lat"] = total["local"] / total["s3+lat"]
    busy = {s: sum(r["busy_s"] for r in runs[s]) for s in SOURCES}
    out["busy_ratio_s3"] = busy["local"] / busy["s3"]
    out["busy_ratio_lat"] = busy["local"] / busy["s3+lat"]
    # the store's share of this machine's CPU while it served the stage (a cloud store's
    # servers are not the workers' cores)
    for s, key in (("s3", "store_share_s3"), ("s3+lat", "store_share_lat")):
        out[key] = (sum(r["store_cpu_s"] for r in runs[s]) / (total[s] * args.cpus))
    # the same runs as if the store's CPU had been elsewhere: each wall less the store's CPU
    # spread over the CPUs (an estimate: it assumes the workers would have used that time)
    storeless = {s: sum(r["wall_s"] - r["store_cpu_s"] / args.cpus for r in runs[s])
                 for s in SOURCES}
    out["storeless_ratio_s3"] = storeless["local"] / storeless["s3"]
    out["storeless_ratio_lat"] = storeless["local"] / storeless["s3+lat"]
    out["client_cpu_ms"] = client
    # the workers' CPU for the same audio: the source's cost to them, waiting aside
    cpu = {s: sum(r["worker_cpu_s"] for r in runs[s]) for s in SOURCES}
    out["worker_cpu_ms_per_utterance"] = {s: cpu[s] / args.rounds / first["rows"] * 1000
                                          for s in SOURCES}
    out["cpu_ratio_s3"] = cpu["local"] / cpu["s3"]
    out["cpu_ratio_lat"] = cpu["local"] / cpu["s3+lat"]
    lat = runs["s3+lat"]
    reqs = sum(r["requests"] for r in lat) / len(lat)
    plan_reqs = sum(r["plan_requests"] for r in lat) / len(lat)
    out.update(requests=reqs, plan_requests=plan_reqs,
               bytes_down=sum(r["bytes_down"] for r in lat) / len(lat),
               worker_requests_per_object=(reqs - plan_reqs) / form["objects"],
               worker_requests_per_unit=(reqs - plan_reqs) / first["units"],
               worker_requests_per_utterance=(reqs - plan_reqs) / first["rows"],
               requests_per_run=[r["requests"] for r in lat])
    shutil.rmtree(form["upload"])
    services.fs.rm(f"{BUCKET}/{name}", recursive=True)
    return out


def print_table(results: list[dict], args, echo) -> None:
    lat = f"s3+{args.latency_ms:g}ms"
    echo(f"\nfeatures stage, RayExecutor(num_cpus={args.cpus}), {args.rounds} run(s) of each "
         f"source per form; x real time = audio / mean wall; ratio = local wall / source wall")
    head = (f"{'form':<9} {'objects':>7} {'utts':>6} {'audio min':>9} {'local x':>8} {'s3 x':>7} "
            f"{lat + ' x':>11} {'s3/local':>8} {lat + '/local':>15}  target >= {TARGET:g}")
    echo(head)
    echo("-" * len(head))
    for r in results:
        met = "met" if r["ratio_lat"] >= TARGET else "NOT MET"
        echo(f"{r['form']:<9} {r['objects']:>7} {r['utterances']:>6} {r['audio_minutes']:>9.1f} "
             f"{r['x_local']:>8.0f} {r['x_s3']:>7.0f} {r['x_s3+lat']:>11.0f} {r['ratio_s3']:>8.2f} "
             f"{r['ratio_lat']:>15.2f}  {met}")
    echo("\nthe same ratios on the workers' summed unit time (no pool start-up, no idle tail; "
         "what overlapping reads with compute inside a unit can win):")
    for r in results:
        echo(f"{r['form']:<9} s3/local {r['busy_ratio_s3']:.2f}, {lat}/local "
             f"{r['busy_ratio_lat']:.2f}")
    echo("\nthe store's own CPU (SeaweedFS and the latency proxy, on this machine's cores beside "
         "the workers; a cloud store's is elsewhere), as a share of the machine's CPU time:")
    for r in results:
        echo(f"{r['form']:<9} s3 {r['store_share_s3']:.0%}, {lat} {r['store_share_lat']:.0%}")
    echo("\nthe ratios with the store's CPU taken out of each run's wall (wall - store CPU / "
         "CPUs: an estimate of the runs with the store's servers elsewhere):")
    for r in results:
        echo(f"{r['form']:<9} s3/local {r['storeless_ratio_s3']:.2f}, {lat}/local "
             f"{r['storeless_ratio_lat']:.2f}")
    echo("\nthe workers' CPU per utterance (their processes' user + system time: analysis, "
         "storage client, writes; waiting aside), and local's over each source's:")
    for r in results:
        per = r["worker_cpu_ms_per_utterance"]
        echo(f"{r['form']:<9} local {per['local']:.1f} ms, s3 {per['s3']:.1f} ms, {lat} "
             f"{per['s3+lat']:.1f} ms: s3/local {r['cpu_ratio_s3']:.2f}, {lat}/local "
             f"{r['cpu_ratio_lat']:.2f}")
    for r in results:
        if r["client_cpu_ms"]:
            echo(f"\nclient CPU per GET of a short file ({CLIENT_GETS} of the {r['form']} form's "
                 f"objects, 8 threads, best of 3): s3fs cat_file {r['client_cpu_ms']['s3fs']:.2f} "
                 f"ms, presigned GET (read_whole) {r['client_cpu_ms']['presigned']:.2f} ms")
    echo(f"\nrequests through the {args.latency_ms:g} ms proxy, per run (planning on the driver; "
         "workers' reads per stored object and per utterance), and the bytes they read:")
    for r in results:
        echo(f"{r['form']:<9} {' / '.join(str(n) for n in r['requests_per_run'])} requests: "
             f"planning {r['plan_requests']:.0f}, "
             f"workers {r['requests'] - r['plan_requests']:.0f} = "
             f"{r['worker_requests_per_object']:.2f} per object ({r['objects']} objects), "
             f"{r['worker_requests_per_unit']:.2f} per unit ({r['runs']['local'][0]['units']}), "
             f"{r['worker_requests_per_utterance']:.2f} per utterance; "
             f"{r['bytes_down'] / 1e6:.0f} MB read for {r['bytes'] / 1e6:.0f} MB stored")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=90.0,
                    help="audio per form (default 90: runs of 10-40 s from local disk, up to "
                         "~1.5 min through the proxy, on 2 CPUs today; the actor pool's start-up, "
                         "a few seconds, is in every run's wall)")
    ap.add_argument("--cpus", type=int, default=None,
                    help="the stage's CPUs (default: the machine's, less --store-core's one)")
    ap.add_argument("--store-core", action="store_true",
                    help="SeaweedFS and the proxy on the machine's last core, alone, and Ray and "
                         "the stage's workers on the others: the store's CPU and its cache misses "
                         "are then not the workers', as a cloud store's are not")
    ap.add_argument("--forms", default=",".join(FORMS),
                    help=f"which forms to measure, in this order (default {','.join(FORMS)})")
    ap.add_argument("--latency-ms", type=float, default=30.0,
                    help="latency the proxy adds to each request (default 30)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="runs of each source per form: local, s3, s3+latency, then the other way "
                         "round, ... (default 2)")
    ap.add_argument("--shard-mb", type=float, default=0.0,
                    help="tar shard size (default: 200 MB, less so that there are at least 2 "
                         "shards per CPU: each shard is a unit of its own)")
    ap.add_argument("--dataset-shards", type=int, default=None,
                    help="Parquet dataset shards (default: 500 MB each, at least 4)")
    ap.add_argument("--recording-minutes", type=float, default=10.0,
                    help="length of each long recording of the segment manifest")
    ap.add_argument("--tmp", default=None, help="folder for the corpora (default: the system's)")
    ap.add_argument("--json", dest="json_path", default=None, help="also write the figures here")
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if args.store_core and len(cores) < 2:
        ap.error("--store-core needs at least 2 cores")
    store_cores = {cores[-1]} if args.store_core else None
    if args.cpus is None:
        args.cpus = len(cores) - (1 if store_cores else 0)
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    unknown = set(forms) - set(FORMS)
    if unknown:
        ap.error(f"unknown form(s) {sorted(unknown)}: choose from {FORMS}")
    echo = lambda s: print(s, flush=True)  # noqa: E731
    echo(machine_line(machine()))
    results: list[dict] = []
    services = run = None
    try:
        with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_storage_") as tmp:
            tmp = Path(tmp)
            t0 = time.perf_counter()
            services = Services(args.cpus, args.latency_ms / 1000, store_cores)
            echo(f"SeaweedFS {services.s3.endpoint_url} "
                 f"(started in {services.s3.startup_s:.0f} s), "
                 f"proxy {services.proxy.url} adding {args.latency_ms:g} ms per request; "
                 f"{time.perf_counter() - t0:.0f} s")
            if store_cores:
                echo(f"the store on core {cores[-1]} alone, Ray and the stage on "
                     f"{', '.join(map(str, cores[:-1]))}")
            run = StageRunner(services, tmp)
            warm_up(services, run, tmp, echo)
            for name in forms:
                results.append(measure_form(name, args, services, run, tmp, echo))
            print_table(results, args, echo)
    finally:
        if run is not None:
            run.close()
        if services is not None:
            services.stop()
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(
            {"args": vars(args), "machine": machine(), "results": results}, indent=2,
            default=str) + "\n")
        echo(f"\nwritten: {args.json_path}")


if __name__ == "__main__":
    main()
