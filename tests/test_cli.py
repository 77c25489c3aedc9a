"""The command line's one grammar: every command takes --output, --config and
--storage-option; `run` takes every stage's flags; every option shows its default; --set and
--storage-option reach the config; `--version`."""
import argparse
import re

import pytest

from timbrespace_ray import __version__
from timbrespace_ray.cli import _inspect_target, _load, build_parser, main
from timbrespace_ray.stages.registry import NAMES

PARSER = build_parser()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(cmd: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in cmd._actions for s in a.option_strings if s.startswith("--")}


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"timbrespace-ray {__version__}"


def test_commands_in_pipeline_order_with_one_grammar():
    commands = _subcommands()
    assert list(commands) == ["run", *NAMES, "evaluate", "status", "errors", "demo"]
    run = _options(commands["run"])
    for name, cmd in commands.items():
        options = _options(cmd)
        assert {"--output", "--config", "--storage-option"} <= set(options), name
        for flag, action in options.items():
            if flag in ("--help", "--version"):
                continue
            text = action.help or ""
            assert re.search(r"\bdefault\b", text) or action.required, (name, flag, text)
        if name in NAMES:  # `run` accepts every stage's flags
            assert set(options) <= set(run), (name, set(options) - set(run))


def test_run_help_opens_with_the_minimal_invocation(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert text.splitlines()[0] == ("usage: timbrespace-ray run --input CORPUS --output FOLDER "
                                    "[options]")
    assert "timbrespace-ray run --input corpus/ --output out/" in text
    assert "(default: 120; config: kmeans.n_clusters)" in " ".join(text.split())


def test_flags_set_and_storage_options_reach_the_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("storage:\n  storage_options:\n    anon: false\n    client_kwargs: "
                      "{region_name: eu-west-1}\nkmeans:\n  n_init: 3\n")
    args = PARSER.parse_args([
        "run", "--config", str(config), "--input", "in/", "--output", "out/", "--set", "kmeans.n_init=4",
        "--set", "kmeans.n_clusters=5", "--n-clusters", "7", "--set", "train.max_steps=10",
        "--storage-option", "endpoint_url=http://127.0.0.1:9", "--storage-option",
        "client_kwargs.region_name=us-west-2", "--storage-option", "secret=0123",
        "--storage-option", "config_kwargs={read_timeout: 5}", "--no-progress"])
    cfg = _load(args)
    assert (cfg.input, cfg.output) == ("in/", "out/")
    assert cfg.kmeans.n_init == 4 and cfg.kmeans.n_clusters == 7  # the flag wins over --set
    assert cfg.train.max_steps == 10 and cfg.ray.progress_bars is False
    assert cfg.storage.storage_options == {  # over the config's
        "anon": False, "endpoint_url": "http://127.0.0.1:9", "client_kwargs": {"region_name": "us-west-2"},
        "secret": "0123", "config_kwargs": {"read_timeout": 5}}  # a credential stays a string


def test_path_and_speaker_column_flags_reach_the_config():
    cfg = _load(PARSER.parse_args(["run", "--input", "m.json", "--output", "o", "--path-column",
                                   "wav", "--speaker-column", "reader"]))
    assert cfg.features.input_options().path_column == "wav"
    assert cfg.profile.speaker_column == "reader"
    args = PARSER.parse_args(["evaluate", "--output", "o", "--speaker-column", "reader"])
    assert args.label is None and _load(args).profile.speaker_column == "reader"
    plain = _load(PARSER.parse_args(["run", "--input", "m.json", "--output", "o"]))
    assert plain.features.path_column is None and plain.profile.speaker_column is None


def test_inspection_reaches_the_output_with_storage_options(tmp_path):
    args = PARSER.parse_args(["status", "--output", str(tmp_path), "--storage-option",
                              "auto_mkdir=true"])
    target = _inspect_target(args)
    assert target.path.rstrip("/").endswith(tmp_path.name) and target.fs.auto_mkdir is True
    positional = _inspect_target(PARSER.parse_args(["errors", str(tmp_path)]))
    assert positional.path == target.path


@pytest.mark.parametrize("argv,message", [
    (["kmeans", "--output", "o", "--set", "kmeans.n_clustres=3"], "kmeans.n_clustres: unknown key"),
    (["kmeans", "--output", "o", "--set", "kmeans.n_clusters"], "--set 'kmeans.n_clusters': "
     "expected KEY=VALUE"),
    (["status", "o", "--storage-option", "=x"], "--storage-option '': expected KEY=VALUE"),
])
def test_bad_settings_are_named(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_dry_run_plans_sums_up_and_processes_nothing(tmp_path, capsys):
    import shutil

    import soundfile as sf

    from helpers.data import DEMO_CORPUS
    from timbrespace_ray.dry_run import CPU_SECONDS_PER_AUDIO_HOUR

    # a manifest of segments (their bounds are the audio) and whole files with a duration
    wav = sorted(DEMO_CORPUS.glob("*.wav"))
    rows = ["path,start,end,speaker"] + [f"{wav[0]},{s},{s + 1.5},a" for s in (0.0, 2.0, 4.0)]
    (tmp_path / "segments.csv").write_text("\n".join(rows) + "\n")
    # --address http:// would submit a job: a dry run plans here instead
    assert main(["run", "--input", str(tmp_path / "segments.csv"), "--output",
                 str(tmp_path / "a"), "--dry-run", "--address", "http://127.0.0.1:9"]) == 0
    text = capsys.readouterr().out
    assert "3 utterances in 1 items (1 manifest)" in text
    assert "audio    4.5 s: 4.5 s from the plan's bounds" in text
    cost = float(re.search(r"features\s+([\d.]+) s", text).group(1))  # CPU-seconds
    assert cost == pytest.approx(CPU_SECONDS_PER_AUDIO_HOUR["features"] * 4.5 / 3600, rel=0.01)
    assert re.search(r"train\s+[\d.]+ (s|min)", text) and re.search(r"all\s+[\d.]+", text)
    assert (tmp_path / "a" / "_run" / "features" / "plan.parquet").exists()
    assert not (tmp_path / "a" / "features").exists()  # no unit ran
    # a folder: durations from the headers (three files: each one sampled, so exact)
    folder = tmp_path / "folder"
    folder.mkdir()
    for p in wav[:3]:
        shutil.copy(p, folder / p.name)
    hours = sum(sf.info(p).duration for p in wav[:3]) / 3600
    assert main(["features", "--input", str(folder), "--output", str(tmp_path / "b"),
                 "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "from 3 sampled headers" in text and "train" not in text
    value, unit = re.search(r"audio    ~([\d.]+) (s|min)", text).groups()
    assert float(value) * (60 if unit == "min" else 1) == pytest.approx(hours * 3600, rel=0.01)
    cost = float(re.search(r"features\s+([\d.]+) s", text).group(1))
    assert cost == pytest.approx(CPU_SECONDS_PER_AUDIO_HOUR["features"] * hours, rel=0.01)
    # the real run then processes the units the dry run planned
    plan = (tmp_path / "b" / "_run" / "features" / "plan.parquet").read_bytes()
    assert main(["features", "--output", str(tmp_path / "b"), "--input", str(folder),
                 "--dry-run"]) == 0
    assert (tmp_path / "b" / "_run" / "features" / "plan.parquet").read_bytes() == plan
