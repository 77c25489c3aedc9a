"""The user documentation's pages, without running anything: blocks that say what they are,
`not run` markers that give a reason, links and anchors that resolve, configuration examples
that load, and a configuration page that lists every key (with its default) and every
command-line option. Rules: docs/development.md; the snippets run in test_docs_snippets.py."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from helpers.docs import (MARKER, NOT_RUN, PLACEHOLDER, REPO, RUNNABLE, all_blocks, anchors,
                          links, page_name, pages, prose, substituted)
from timbrespace_ray.cli import build_parser
from timbrespace_ray.config import PipelineConfig, load_config

CONFIGURATION = REPO / "docs" / "configuration.md"
# a row of a key table: | `section.key` | `default` or unset | meaning |
KEY_ROW = re.compile(r"^\| `([a-z_][a-z_0-9.]*)` \| (unset|`[^`]*`) \|", re.MULTILINE)


def config_keys(model: type[BaseModel] = PipelineConfig, prefix: str = ""):
    """Every key of the configuration, dotted, with its default."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from config_keys(field.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field.get_default(call_default_factory=True)


def test_the_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def test_every_block_says_what_it_is():
    unknown = [f"{b.name}: {b.lang!r}" for b in all_blocks() if b.lang not in RUNNABLE + NOT_RUN]
    assert not unknown, f"fenced blocks need one of {RUNNABLE + NOT_RUN}: {unknown}"


@pytest.mark.parametrize("page", pages(), ids=page_name)
def test_not_run_markers_give_a_reason_and_stand_before_a_block(page: Path):
    lines = page.read_text().splitlines()
    for i, line in enumerate(lines):
        if "not run" not in line or not line.lstrip().startswith("<!--"):
            continue
        marker = MARKER.match(line.strip())
        assert marker and len((marker["reason"] or "").split()) >= 2, (
            f"{page_name(page)}:{i + 1}: write <!-- not run: REASON --> with the reason")
        following = next((x for x in lines[i + 1:] if x.strip()), "")
        assert following.strip().startswith("```"), (
            f"{page_name(page)}:{i + 1}: a not-run marker goes right before the block it marks")


def test_blocks_that_run_use_only_known_placeholders():
    unknown = [f"{b.name}: {p}" for b in all_blocks()
               if b.lang in RUNNABLE and b.not_run is None
               for p in PLACEHOLDER.findall(substituted(b.code))]
    assert not unknown, f"add a rule to helpers.docs.PLACEHOLDERS or mark the block: {unknown}"


@pytest.mark.parametrize("page", pages(), ids=page_name)
def test_relative_links_and_anchors_resolve(page: Path):
    broken = []
    for link in links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading with that anchor in {path.name}")
    assert not broken, f"{page_name(page)}: {broken}"


def test_anchors_follow_githubs_rule():
    # known by construction: what GitHub shows for these headings of docs/outputs.md
    found = anchors(REPO / "docs" / "outputs.md")
    assert {"status-how-far-each-stage-got", "the-runs-bookkeeping-_run-and-resuming",
            "errors-the-inputs-that-failed"} <= found


def test_yaml_blocks_are_configurations_that_load(tmp_path):
    configs = [b for b in all_blocks() if b.lang == "yaml" and b.not_run is None]
    assert configs
    for block in configs:
        path = tmp_path / "config.yaml"
        path.write_text(block.code)
        load_config(str(path))  # a ConfigError names the key


def test_the_configuration_page_lists_every_key_with_its_default():
    documented = {}
    for key, default in KEY_ROW.findall(CONFIGURATION.read_text()):
        assert key not in documented, f"{key} is listed twice"
        documented[key] = None if default == "unset" else yaml.safe_load(default.strip("`"))
    keys = dict(config_keys())
    assert sorted(set(keys) - set(documented)) == [], "keys missing from docs/configuration.md"
    assert sorted(set(documented) - set(keys)) == [], "docs/configuration.md lists keys that are not in config.py"
    wrong = {k: (documented[k], keys[k]) for k in keys if documented[k] != keys[k]}
    assert not wrong, f"defaults (page, config.py): {wrong}"


def test_the_configuration_page_names_every_command_line_option():
    text = prose(CONFIGURATION)
    parser = build_parser()
    commands = next(a for a in parser._actions if a.choices and a.dest == "command").choices
    options = {o for command in commands.values() for a in command._actions
               for o in a.option_strings if o.startswith("--") and o != "--help"}
    assert options
    missing = sorted(o for o in options if f"`{o}`" not in text)
    assert not missing, f"options missing from docs/configuration.md: {missing}"


def test_the_documented_error_types_are_the_package_s_own_and_every_row_type_is_documented():
    """Each listed type is a class of timbrespace_ray.errors (or FileNotFoundError); whatever an
    input raises becomes one of them (`documented`); and each error-row type the readers and the
    stage raise in the package's source is listed."""
    import ast

    from helpers.docs import REPO, documented_error_types

    from timbrespace_ray import errors
    from timbrespace_ray.stages.features import documented

    listed = documented_error_types()
    assert len(listed) >= 15, listed
    assert all(name == "FileNotFoundError" or issubclass(getattr(errors, name, type(None)),
                                                         errors.TimbrespaceError)
               for name in listed), listed
    for exc in (IsADirectoryError(21, "Is a directory"), OSError(5, "I/O error"),
                ValueError("bad"), KeyError("x"), RuntimeError("x")):
        assert type(documented(exc, "file:///x.wav")).__name__ in listed, exc
    # the error types the readers and the features stage raise for one input
    raised = set()
    for path in [*(REPO / "timbrespace_ray" / "inputs").glob("*.py"),
                 REPO / "timbrespace_ray" / "audio.py",
                 REPO / "timbrespace_ray" / "stages" / "features.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id.endswith("Error") and hasattr(errors, node.func.id):
                raised.add(node.func.id)
    # raised at planning (one line, exit 2) or around a unit, never as an input's row
    not_rows = {"ConfigError", "StorageError", "StageFailedError", "WorkerLostError"}
    assert raised - not_rows <= listed, sorted(raised - not_rows - listed)
