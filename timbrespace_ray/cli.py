"""`timbrespace-ray` command line: one subcommand per stage, plus `run`, `evaluate` and `demo`."""
from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys

from .errors import TimbrespaceError
from .stages.registry import STAGES

PACKAGE_LOGGER = "timbrespace_ray"


class _LineHandler(logging.Handler):
    """The package's log records as plain lines on stdout, written above any live bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


def configure_output(progress_bars: bool, verbose: bool) -> None:
    """The command line's output: the package's log lines on stdout (DEBUG ones too with
    --verbose), live bars on a terminal unless --no-progress."""
    from .progress import enable_bars

    logger = logging.getLogger(PACKAGE_LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _LineHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(_LineHandler())
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    enable_bars(progress_bars)


def _common(p: argparse.ArgumentParser, needs_input: bool = False) -> None:
    if needs_input:
        p.add_argument("--input", help="audio folder/prefix, tar shard(s), manifest, Parquet "
                       "audio dataset or lhotse manifest URI")
        p.add_argument("--audio-column", help="Parquet audio datasets: the struct<bytes, path> "
                       "column (default: found from the schema)")
        p.add_argument("--id-column", help="Parquet audio datasets: the column giving utt_id")
        p.add_argument("--metadata-columns", type=lambda v: [c for c in v.split(",") if c],
                       help="comma-separated input columns to carry into every table "
                       "(default: every scalar column)")
        p.add_argument("--supervisions", help="lhotse: the SupervisionSet of a RecordingSet input")
    p.add_argument("--output", help="output folder URI (local path, s3://, ...)")
    p.add_argument("--config", help="YAML config file (see jobs/configs/)")
    p.add_argument("--address", help="Ray cluster: 'auto', ray://host:10001, or a dashboard "
                   "http://host:8265 to submit this command as a Ray job (default: RAY_ADDRESS, "
                   "else an embedded local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs of an embedded local Ray")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar: progress "
                   "lines at a bounded rate, as in a log")
    p.add_argument("--verbose", action="store_true", help="Ray's own output too: the workers' "
                   "logs and Ray Data's INFO lines")


def _kmeans_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-clusters", type=int, help="number of clusters (default 120)")
    p.add_argument("--max-frames", type=int, help="frames sampled for the fit")


def _tokens_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kmeans-model", help="model directory (default OUTPUT/kmeans); any "
                   "directory in the original's format, e.g. a published model")


def _embed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="encoder folder or original .ckpt (default OUTPUT/encoder)")


def _profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bins", help="level the profiles on another run's bins (its output folder, "
                   "or its OUTPUT/_run/profile/bins.json) instead of fitting them on this corpus")


# each stage's own options, by command name (`run` takes them all)
STAGE_OPTIONS = {"profile": _profile_options, "kmeans": _kmeans_options,
                 "tokens": _tokens_options, "embed": _embed_options}


def _load(args):
    from .config import load_config

    return load_config(args.config, **{
        "input": getattr(args, "input", None), "output": args.output,
        "ray.address": args.address, "ray.num_cpus": args.num_cpus,
        "ray.progress_bars": False if args.no_progress else None,
        "ray.verbose": True if args.verbose else None,
        "features.audio_column": getattr(args, "audio_column", None),
        "features.id_column": getattr(args, "id_column", None),
        "features.metadata_columns": getattr(args, "metadata_columns", None),
        "features.lhotse_supervisions": getattr(args, "supervisions", None),
        "kmeans.n_clusters": getattr(args, "n_clusters", None),
        "kmeans.max_frames": getattr(args, "max_frames", None),
        "tokens.kmeans_model": getattr(args, "kmeans_model", None),
        "embed.checkpoint": getattr(args, "checkpoint", None),
        "profile.bins": getattr(args, "bins", None),
    })


def _stage_command(name: str):
    def run(args) -> int:
        from .pipeline import run_stage

        run_stage(name, _load(args))
        return 0

    return run


def _run(args) -> int:
    from .pipeline import run_pipeline

    run_pipeline(_load(args))
    return 0


def _evaluate(args) -> int:
    from .evaluation.run import run_evaluation

    limits = {k: v for k, v in (("max_utterances", args.max_utterances),
                                ("max_pairs", args.max_pairs)) if v is not None}
    run_evaluation(_load(args), args.label, args.utterances, **limits)
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(args.output, args.config, **{
        "ray.num_cpus": args.num_cpus, "ray.progress_bars": False if args.no_progress else None,
        "ray.verbose": True if args.verbose else None})
    return 0


def _inspect_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("output_uri", nargs="?", metavar="OUTPUT",
                   help="the run's output folder URI (default: --output, or the config's)")
    p.add_argument("--output", help=argparse.SUPPRESS)
    p.add_argument("--config", help="YAML config: its output and storage.storage_options")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an fsspec storage option (e.g. endpoint_url=https://minio:9000; "
                   "client_kwargs.region_name=us-west-2), over the config's; credentials are "
                   "better left to the environment")
    p.add_argument("--stage", action="append", metavar="STAGE",
                   help=f"a stage to ask about: {', '.join(s.name for s in STAGES)} "
                   "(repeat it, or commas: --stage features,tokens)")
    p.add_argument("--json", action="store_true", help="JSON for scripts")


def _inspect_target(args):
    """The output Location of `status`/`errors`: OUTPUT (or the config's), reached with the
    config's storage options and the --storage-option ones over them."""
    from .config import load_config
    from .errors import ConfigError
    from .inspection import open_output, storage_options

    cfg = load_config(args.config)
    uri = args.output_uri or args.output or cfg.output
    if not uri:
        raise ConfigError("no output: pass OUTPUT (the run's output folder)")
    return open_output(uri, storage_options(cfg.storage.storage_options, args.storage_option))


def _emit(text: str) -> None:
    """Print, quietly stopping when the reader has gone (`| head`)."""
    import os

    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _status(args) -> int:
    import json

    from .inspection import format_status, resolve_stages, run_status

    stages = resolve_stages(args.stage)
    status = run_status(_inspect_target(args))
    stages = stages or status.default_stages()
    if args.json:
        _emit(json.dumps(status.to_dict(stages), indent=1))
    else:
        _emit(format_status(status, stages))
    return status.exit_code(stages)


def _errors(args) -> int:
    import io
    import json
    import shutil

    from .inspection import errors_csv, format_errors, read_errors, resolve_stages

    types = [t for arg in args.type or [] for t in arg.split(",") if t.strip()] or None
    errors = read_errors(_inspect_target(args), resolve_stages(args.stage), types)
    limit = args.limit if args.limit is None or args.limit > 0 else None
    if args.json:
        _emit(json.dumps(errors.to_dict(limit), indent=1))
    elif args.csv:
        buf = io.StringIO()
        errors_csv(errors, limit, buf)
        _emit(buf.getvalue().rstrip("\n"))
    else:
        width = shutil.get_terminal_size(fallback=(120, 24)).columns
        _emit(format_errors(errors, 20 if args.limit is None else limit, width))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timbrespace-ray",
        description="Timbrespace prosodic features, tokens and embeddings for speech corpora.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for spec in STAGES:  # in pipeline order
        cmd = sub.add_parser(spec.name, help=spec.summary)
        _common(cmd, needs_input=not spec.upstream)
        STAGE_OPTIONS.get(spec.name, lambda p: None)(cmd)
        cmd.set_defaults(func=_stage_command(spec.name))
    run = sub.add_parser("run", help="every stage in order, skipping finished ones")
    _common(run, needs_input=True)
    for add_options in STAGE_OPTIONS.values():
        add_options(run)
    run.set_defaults(func=_run)
    ev = sub.add_parser("evaluate", help="OUTPUT/embeddings -> OUTPUT/evaluation/LABEL/: "
                        "retrieval of a label by cosine, against baselines")
    _common(ev)
    ev.add_argument("--label", required=True, help="the metadata column to tell apart (speaker...)")
    ev.add_argument("--utterances", choices=["heldout", "all"], default="heldout",
                    help="heldout: those the encoder's validation split kept out of training "
                    "(all, with a warning, when it records none); all: every labelled one "
                    "(default: %(default)s)")
    # defaults live with run_evaluation (importing it here would import torch for every command)
    ev.add_argument("--max-utterances", type=int,
                    help="a deterministic sample beyond this many (default 20,000)")
    ev.add_argument("--max-pairs", type=int,
                    help="pairs scored for AUC/EER, a uniform sample beyond (default 2,000,000)")
    ev.set_defaults(func=_evaluate)
    st = sub.add_parser("status", help="each stage of a run: finished, incomplete (n of m "
                        "units) or not started, with its rows, errors, audio and speed; exit 0 "
                        "when the stages asked (default: all) are finished, 3 when not, 2 when "
                        "there is no run")
    _inspect_options(st)
    st.set_defaults(func=_status)
    er = sub.add_parser("errors", help="the inputs a run could not process: OUTPUT/errors/ as a "
                        "table (or --json, --csv)")
    _inspect_options(er)
    er.add_argument("--type", action="append", metavar="ERROR_TYPE",
                    help="only this error type (e.g. AudioDecodeError; repeat it, or commas)")
    er.add_argument("--limit", type=int, help="rows shown (default 20 in the table, all with "
                    "--json/--csv; 0: all)")
    er.add_argument("--csv", action="store_true", help="CSV with every column")
    er.set_defaults(func=_errors)
    demo = sub.add_parser("demo", help="run on the bundled demo corpus and write a report")
    demo.add_argument("--output", default="demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--config", help="YAML config (default: the bundled demo.yaml)")
    demo.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray (default: all)")
    demo.add_argument("--no-progress", action="store_true", help="progress lines, not live bars")
    demo.add_argument("--verbose", action="store_true", help="Ray's own output too")
    demo.set_defaults(func=_demo)
    return parser


def _submit_as_job(address: str, argv: list[str]) -> int:
    """Run this same command as a Ray job on the cluster whose dashboard is at `address`."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    rest, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a == "--address":
            skip = True
        elif not a.startswith("--address="):
            rest.append(a)
    client = JobSubmissionClient(address)
    job_id = client.submit_job(entrypoint="python -m timbrespace_ray.cli " + shlex.join(rest))
    print(f"submitted Ray job {job_id} to {address}; following its logs", file=sys.stderr)
    for chunk in _tail(client, job_id):
        sys.stdout.write(chunk)
    status = client.get_job_status(job_id)
    print(f"job {job_id}: {status}", file=sys.stderr)
    return 0 if status == JobStatus.SUCCEEDED else 1


def _tail(client, job_id):
    import asyncio

    async def collect():
        async for lines in client.tail_job_logs(job_id):
            yield lines

    loop = asyncio.new_event_loop()
    agen = collect()
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def _package_error(exc: BaseException) -> str | None:
    """The one-line message of the package's own error behind `exc`, also when a Ray worker
    raised it: Ray hands the driver a wrapper whose text is the remote traceback."""
    e, seen = exc, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, TimbrespaceError) and not type(e).__module__.startswith("ray"):
            return str(e)
        e = getattr(e, "cause", None) or e.__cause__
    found = re.findall(r"^timbrespace_ray(?:\.\w+)+: (.+)$", str(exc), re.MULTILINE)
    return found[-1] if found else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    configure_output(not getattr(args, "no_progress", False), getattr(args, "verbose", False))
    address = getattr(args, "address", None)
    try:
        if address and address.startswith(("http://", "https://")):
            return _submit_as_job(address, argv)
        return args.func(args)
    except Exception as exc:
        message = _package_error(exc)
        if message is None:
            raise  # not an error the package raised on purpose: a bug, keep its traceback
        print(f"timbrespace-ray: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("timbrespace-ray: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
