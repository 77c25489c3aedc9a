"""`timbrespace-ray` command line: `run`, one subcommand per stage, `evaluate`, `status`,
`errors` and `demo`, with one grammar: `--output`, `--config`, `--storage-option` and `--set`
on every command, each flag naming the config key it sets and its default."""
from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Any, Callable

from . import __version__
from .errors import StageFailedError, TimbrespaceError
from .stages.registry import STAGES

PACKAGE_LOGGER = "timbrespace_ray"
EXIT_INTERRUPTED = 130
EXIT_CODES = f"""exit codes:
  0    done (status: every stage asked is finished)
  1    a bug, with its traceback (--address http://...: the Ray job did not succeed)
  {TimbrespaceError.exit_code}    an error the command explains on stderr (bad input, config or storage, a stage
       not run yet; status, errors: no run at OUTPUT)
  3    status: a stage asked is not finished
  {StageFailedError.exit_code}    a stage failed: every input, or more than features.max_error_share of them,
       failed; its rows are kept, the stages after it do not run, and a rerun redoes no
       unit: it fails again, or accepts the stage with a higher share (--set
       features.max_error_share=SHARE) (status: a stage asked has failed)
  {EXIT_INTERRUPTED}  interrupted (rerun the same command to resume)"""


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


@dataclass(frozen=True)
class Flag:
    """A command-line option that sets one config key; its help says the key and the default
    (the config field's, or `default_text` where the field's default is None: what None means)."""

    flag: str
    key: str
    help: str
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    const: Any = None  # a switch: sets `key` to `const`
    default_text: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add(self, group) -> None:
        text = f"{self.help} ({self._default()}; config: {self.key})"
        if self.const is not None:
            group.add_argument(self.flag, dest=self.dest, action="store_const", const=self.const,
                               help=text)
        else:
            group.add_argument(self.flag, dest=self.dest, type=self.type, metavar=self.metavar,
                               help=text)

    def _default(self) -> str:
        if self.default_text:
            return self.default_text
        from .config import field_default

        value = field_default(self.key)
        if value is None:
            raise ValueError(f"{self.flag}: {self.key} defaults to None; say what that means")
        return f"default: {value}"


def _comma_list(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


OUTPUT_FLAG = Flag("--output", "output", "the run's output folder: a local path or a URI "
                   "(s3://, gs://, ...)", metavar="FOLDER", default_text="default: the config's")
RAY_FLAGS = (
    Flag("--address", "ray.address", "the Ray cluster: 'auto', ray://host:10001, or a "
         "dashboard http://host:8265 to submit this command as a Ray job",
         default_text="default: RAY_ADDRESS, else an embedded local Ray"),
    Flag("--num-cpus", "ray.num_cpus", "CPUs of an embedded local Ray", type=int, metavar="N",
         default_text="default: all of this machine's"),
    Flag("--no-progress", "ray.progress_bars", "progress lines at a bounded rate, as in a log, "
         "instead of live bars", const=False,
         default_text="default: live bars where the output is a terminal"),
    Flag("--verbose", "ray.verbose", "Ray's own output too: the workers' logs and Ray Data's "
         "INFO lines", const=True, default_text="default: Ray's warnings and errors only"),
)
INPUT_FLAGS = (
    Flag("--input", "input", "the corpus: an audio folder or prefix, tar shard(s), a manifest, "
         "a Parquet audio dataset or a lhotse manifest", metavar="CORPUS",
         default_text="default: the config's"),
    Flag("--audio-column", "features.audio_column", "Parquet audio datasets: the "
         "struct<bytes, path> column", metavar="COLUMN",
         default_text="default: found from the schema"),
    Flag("--id-column", "features.id_column", "Parquet audio datasets: the column giving "
         "utt_id", metavar="COLUMN",
         default_text="default: utt_id, id or key when present, else <shard>/<row>"),
    Flag("--path-column", "features.path_column", "manifests: the column of audio paths",
         metavar="COLUMN", default_text="default: the first of path, audio_filepath, "
         "audio_path, file_name, file the manifest has"),
    Flag("--metadata-columns", "features.metadata_columns", "the input's columns to carry into "
         "every table, comma-separated", type=_comma_list, metavar="COLUMN,...",
         default_text="default: every scalar column"),
    Flag("--supervisions", "features.lhotse_supervisions", "lhotse: the SupervisionSet of a "
         "RecordingSet input", metavar="URI",
         default_text="default: the file beside it named 'supervisions' for 'recordings'"),
)
SPEAKER_FLAG = Flag("--speaker-column", "profile.speaker_column", "the carried column naming "
                    "each utterance's speaker: the speakers table's rows, evaluate's default "
                    "label", metavar="COLUMN", default_text="default: the first of speaker, "
                    "speaker_id, spk_id, client_id carried")
# each stage's own options, by command name (`run` takes them all)
STAGE_FLAGS: dict[str, tuple[Flag, ...]] = {
    "profile": (
        Flag("--bins", "profile.bins", "level the profiles on another run's bins (its output "
             "folder, or its _run/profile/bins.json)", metavar="URI",
             default_text="default: fitted on this corpus"),
        SPEAKER_FLAG,
    ),
    "kmeans": (
        Flag("--n-clusters", "kmeans.n_clusters", "number of clusters", type=int, metavar="K"),
        Flag("--max-frames", "kmeans.max_frames", "frames sampled for the fit", type=int,
             metavar="N"),
    ),
    "tokens": (
        Flag("--kmeans-model", "tokens.kmeans_model", "the k-means model folder: any in the "
             "original's format, e.g. a published model", metavar="URI",
             default_text="default: OUTPUT/kmeans"),
    ),
    "embed": (
        Flag("--checkpoint", "embed.checkpoint", "the encoder folder, an original .ckpt, or "
             "'pretrained' (the encoder shipped with the package)", metavar="URI",
             default_text="default: OUTPUT/encoder, else the shipped one"),
    ),
}


def _config_options(parser: argparse.ArgumentParser, config_default: str,
                    settings: bool = True) -> None:
    """--config, --storage-option and (for commands that run stages) --set."""
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", metavar="YAML", help="the config file (jobs/configs/ has "
                       f"examples); flags override its keys (default: {config_default})")
    group.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an fsspec storage option over the config's "
                       "storage.storage_options, e.g. endpoint_url=https://minio:9000 or "
                       "client_kwargs.region_name=us-west-2; repeat it for more (default: "
                       "none; credentials are better left to the environment)")
    if settings:
        group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           dest="settings", help="any config key, dotted, e.g. "
                           "--set kmeans.n_init=4; repeat it for more; the flags above win "
                           "over it (default: none)")


def _flags(parser: argparse.ArgumentParser, title: str, flags) -> None:
    group = parser.add_argument_group(title)
    for flag in flags:
        flag.add(group)
    parser.set_defaults(flags=[*(parser.get_default("flags") or []), *flags])


def _overrides(args) -> dict[str, Any]:
    """The dotted config keys the command line sets: --set, then --storage-option, then the
    flags (later ones win)."""
    from .config import parse_assignment

    out: dict[str, Any] = {}
    for item in getattr(args, "settings", []):
        key, value = parse_assignment(item, "--set")
        out[key] = value
    for item in args.storage_option:
        key, value = parse_assignment(item, "--storage-option")
        out[f"storage.storage_options.{key}"] = value
    for flag in getattr(args, "flags", []):
        value = getattr(args, flag.dest)
        if value is not None:
            out[flag.key] = value
    return out


def _load(args):
    from .config import load_config

    return load_config(args.config, **_overrides(args))


def _stage_command(name: str):
    def run(args) -> int:
        from .pipeline import run_stage

        if getattr(args, "dry_run", False):
            return _dry_run(args, (name,))
        cfg = _load(args)
        with _executor(cfg) as executor:
            run_stage(name, cfg, executor)
        return 0

    return run


def _run(args) -> int:
    from .pipeline import run_pipeline
    from .stages.registry import NAMES

    if args.dry_run:
        return _dry_run(args, NAMES)
    cfg = _load(args)
    with _executor(cfg) as executor:
        run_pipeline(cfg, executor)
    return 0


def _dry_run(args, stages: tuple[str, ...]) -> int:
    """Plan the features stage (the plan is kept) and print what the run would do."""
    from .dry_run import report, summarise
    from .pipeline import output_of
    from .stages.features import FeaturesStage

    cfg = _load(args)
    stage = FeaturesStage.from_config(cfg, output_of(cfg), use_gpu=False)
    summary = summarise(stage.stored_plan(), cfg.storage.storage_options)
    steps = None
    if "train" in stages:
        train = cfg.train.resolved(use_gpu=False)
        steps = train.planned_steps(round(summary.inputs * (1 - train.validation_fraction)))
    _emit(report(summary, stage.layout.plan(stage.name).uri, stages, steps, cfg.ray.num_cpus))
    return 0


def _executor(cfg):
    """The executor of a command, closed at its end (`with`): an embedded Ray stops before the
    command's last line, so nothing of it prints after."""
    from .executors import RayExecutor

    return RayExecutor.of(cfg.ray)


def _evaluate(args) -> int:
    from .evaluation.run import run_evaluations

    limits = {k: v for k, v in (("max_utterances", args.max_utterances),
                                ("max_pairs", args.max_pairs)) if v is not None}
    labels = [c for arg in args.label or [] for c in _comma_list(arg)]
    cfg = _load(args)
    with _executor(cfg) as executor:
        run_evaluations(cfg, labels or None, args.utterances, executor=executor, **limits)
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(args.output, args.config, **_overrides(args))
    return 0


def _inspect_target(args):
    """The output Location of `status`/`errors`: OUTPUT (or --output, or the config's),
    reached with the config's storage options and the --storage-option ones over them."""
    from .errors import ConfigError
    from .inspection import open_output

    cfg = _load(args)
    uri = args.output_uri or cfg.output
    if not uri:
        raise ConfigError("no output: pass OUTPUT (the run's output folder)")
    return open_output(uri, cfg.storage.storage_options)


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

    types = [t for arg in args.type or [] for t in _comma_list(arg)] or None
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


def _command(sub, name: str, help: str, usage: str, examples: tuple[str, ...] = ()):
    """A subcommand whose --help opens with its minimal invocation and examples."""
    text = help[0].upper() + help[1:] + "."
    if examples:
        text += "\n\nexample" + "s" * (len(examples) > 1) + ":\n" + "\n".join(
            f"  {e}" for e in examples)
    return sub.add_parser(name, help=help, usage=f"timbrespace-ray {name} {usage}",
                          description=text, formatter_class=argparse.RawDescriptionHelpFormatter)


def _pipeline_command(cmd, needs_input: bool, stage_flags) -> None:
    """The options of a command that runs stages: input, output, config, Ray, stage flags."""
    if needs_input:
        _flags(cmd, "input", INPUT_FLAGS)
    _flags(cmd, "output", (OUTPUT_FLAG,))
    _config_options(cmd, "none: every key's default")
    _flags(cmd, "Ray", RAY_FLAGS)
    for name, flags in stage_flags:
        _flags(cmd, f"{name} stage", flags)


def _dry_run_option(cmd, what: str) -> None:
    cmd.add_argument("--dry-run", action="store_true",
                     help=f"plan (the plan is kept for the run) and print the inputs, units, "
                     f"bytes, hours of audio and the projected CPU time of {what}; process "
                     "nothing, start no Ray (default: run)")


def _inspect_options(cmd) -> None:
    cmd.add_argument("output_uri", nargs="?", metavar="OUTPUT",
                     help="the run's output folder, as --output (default: --output, or the "
                     "config's)")
    _flags(cmd, "output", (OUTPUT_FLAG,))
    _config_options(cmd, "none", settings=False)
    cmd.add_argument("--stage", action="append", metavar="STAGE",
                     help=f"a stage to ask about: {', '.join(s.name for s in STAGES)} (repeat "
                     "it, or commas: --stage features,tokens; default: every stage)")
    cmd.add_argument("--json", action="store_true", help="JSON for scripts (default: a table)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timbrespace-ray",
        usage="timbrespace-ray COMMAND [options]",
        description="Timbrespace prosodic features, style profiles, tokens and embeddings for "
        "speech corpora, on Ray.\n\nthe whole pipeline over a corpus:\n"
        "  timbrespace-ray run --input CORPUS --output FOLDER\n"
        "each command's options: timbrespace-ray COMMAND --help",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"timbrespace-ray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands (in pipeline order)")
    run = _command(sub, "run", "every stage in pipeline order, skipping finished ones: rerun "
                   "the same command to resume", "--input CORPUS --output FOLDER [options]",
                   ("timbrespace-ray run --input corpus/ --output out/",
                    "timbrespace-ray run --input s3://bucket/manifest.csv --output "
                    "s3://bucket/runs/one --n-clusters 64",
                    "timbrespace-ray run --config job.yaml --address auto"))
    _pipeline_command(run, True, STAGE_FLAGS.items())
    _dry_run_option(run, "every stage")
    run.set_defaults(func=_run)
    for spec in STAGES:
        first = not spec.upstream
        cmd = _command(sub, spec.name, spec.summary,
                       f"{'--input CORPUS ' if first else ''}--output FOLDER [options]",
                       (f"timbrespace-ray {spec.name} {'--input corpus/ ' if first else ''}"
                        "--output out/",))
        _pipeline_command(cmd, first, [(spec.name, STAGE_FLAGS[spec.name])]
                          if spec.name in STAGE_FLAGS else [])
        if first:
            _dry_run_option(cmd, "the stage")
        cmd.set_defaults(func=_stage_command(spec.name))
    ev = _command(sub, "evaluate", "OUTPUT/embeddings -> OUTPUT/evaluation/LABEL/: retrieval "
                  "of a label by cosine, against baselines", "--output FOLDER [--label COLUMN] "
                  "[options]", ("timbrespace-ray evaluate --output out/",
                                "timbrespace-ray evaluate --output out/ --label gender"))
    group = ev.add_argument_group("evaluation")
    group.add_argument("--label", action="append", metavar="COLUMN",
                       help="a label to tell apart: a carried column (speaker, language...) or "
                       "a profile level (pitch_level, variation_level, rate_level, "
                       "noise_level); repeat it, or commas (default: the speaker column as the "
                       "profile stage finds it, language and gender where carried, and the "
                       "pitch, variation and rate levels once profiled)")
    group.add_argument("--utterances", choices=["heldout", "all"], default="heldout",
                       help="heldout: those the encoder's validation split kept out of "
                       "training (all, with a warning, when it records none); all: every "
                       "labelled one (default: %(default)s)")
    # defaults live with run_evaluation (importing it here would import torch for every command)
    group.add_argument("--max-utterances", type=int, metavar="N",
                       help="a deterministic sample beyond this many (default: 20,000)")
    group.add_argument("--max-pairs", type=int, metavar="N",
                       help="pairs scored for AUC/EER, a uniform sample beyond (default: "
                       "2,000,000)")
    _pipeline_command(ev, False, [("profile", (SPEAKER_FLAG,))])
    ev.set_defaults(func=_evaluate)
    st = _command(sub, "status", "each stage of a run: finished, failed, incomplete (n of m "
                  "units) or not started, with its rows, errors, audio and speed; exit 0 when "
                  "the stages asked are finished, 4 when one failed, 3 when one is not "
                  "finished, 2 when there is no run", "OUTPUT [options]",
                  ("timbrespace-ray status out/", "timbrespace-ray status "
                   "s3://bucket/runs/one --storage-option endpoint_url=http://minio:9000"))
    _inspect_options(st)
    st.set_defaults(func=_status)
    er = _command(sub, "errors", "the inputs a run could not process (OUTPUT/errors/) as a "
                  "table, JSON or CSV", "OUTPUT [options]",
                  ("timbrespace-ray errors out/ --type AudioDecodeError",))
    _inspect_options(er)
    er.add_argument("--type", action="append", metavar="ERROR_TYPE",
                    help="only this error type, e.g. AudioDecodeError; repeat it, or commas "
                    "(default: every type)")
    er.add_argument("--limit", type=int, metavar="N", help="rows shown; 0: all (default: 20 in "
                    "the table, all with --json or --csv)")
    er.add_argument("--csv", action="store_true", help="CSV with every column (default: a "
                    "table)")
    er.set_defaults(func=_errors)
    demo = _command(sub, "demo", "the whole pipeline over the bundled recordings on an "
                    "embedded local Ray, and a report", "[options]", ("timbrespace-ray demo",))
    group = demo.add_argument_group("output")
    group.add_argument("--output", default="demo_output", metavar="FOLDER",
                       help="output folder (default: %(default)s)")
    _config_options(demo, "the bundled demo.yaml")
    _flags(demo, "Ray", RAY_FLAGS)
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


def _package_error(exc: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code of the package's own error behind `exc`, also when a
    Ray worker raised it: Ray hands the driver a wrapper whose text is the remote traceback."""
    e, seen = exc, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, TimbrespaceError) and not type(e).__module__.startswith("ray"):
            return str(e), e.exit_code
        e = getattr(e, "cause", None) or e.__cause__
    found = re.findall(r"^timbrespace_ray(?:\.\w+)+: (.+)$", str(exc), re.MULTILINE)
    return (found[-1], TimbrespaceError.exit_code) if found else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    # the switches store the config value they set (False, True), None when not given
    configure_output(getattr(args, "no_progress", None) is None,
                     bool(getattr(args, "verbose", None)))
    address = getattr(args, "address", None)
    try:
        if address and address.startswith(("http://", "https://")) \
                and not getattr(args, "dry_run", False):  # a dry run plans here
            return _submit_as_job(address, argv)
        return args.func(args)
    except Exception as exc:
        error = _package_error(exc)
        if error is None:
            raise  # not an error the package raised on purpose: a bug, keep its traceback
        print(f"timbrespace-ray: error: {error[0]}", file=sys.stderr)
        return error[1]
    except KeyboardInterrupt:
        print("timbrespace-ray: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
