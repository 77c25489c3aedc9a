"""The user documentation as the docs tests read it: README.md and docs/*.md, their fenced code
blocks (with the `<!-- not run: REASON -->` marker a block may carry on the line before it),
their relative links and their headings' anchors. The rules: docs/development.md."""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNNABLE = ("sh", "bash", "console", "sql", "python")
NOT_RUN = ("text", "csv", "yaml")  # printed output, data, configuration files (loaded, not run)
MARKER = re.compile(r"^<!--\s*not run\b(?::\s*(?P<reason>.*?))?\s*-->$")
# placeholders a page may write in a block that runs, and what the test puts in their place
PLACEHOLDERS = {"<your corpus>": "timbrespace_ray/demo_corpus/manifest.csv",
                "<folder>": "demo_output"}
PLACEHOLDER = re.compile(r"<[a-z][a-z ]*[a-z]>")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence
    lang: str
    code: str
    not_run: str | None  # the marker's reason ("" for a marker without one); None: no marker

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def page_name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@lru_cache(maxsize=None)
def blocks(path: Path) -> tuple[Block, ...]:
    """The fenced blocks of a page, in order."""
    found, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```"):
            i += 1
            continue
        start, lang = i, fence[3:].strip()
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        prose_before = [line.strip() for line in lines[:start] if line.strip()]
        marker = MARKER.match(prose_before[-1]) if prose_before else None
        found.append(Block(page_name(path), start + 1, lang,
                           textwrap.dedent("\n".join(lines[start + 1:i])),
                           None if marker is None else (marker["reason"] or "")))
        i += 1
    return tuple(found)


def all_blocks() -> list[Block]:
    return [b for page in pages() for b in blocks(page)]


def prose(path: Path) -> str:
    """A page without its fenced blocks (links and headings in code are not links or headings)."""
    out, inside = [], False
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif not inside:
            out.append(line)
    return "\n".join(out)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated heading numbered."""
    found, times = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose(path), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(f"{slug}-{times[slug]}" if slug in times else slug)
        times[slug] = times.get(slug, 0) + 1
    return found


def links(path: Path) -> list[str]:
    """The relative links of a page (not web addresses)."""
    return [t for t in LINK.findall(prose(path)) if not re.match(r"[a-z]+:", t)]


def substituted(code: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        code = code.replace(placeholder, value)
    return code


def shell_script(block: Block) -> str:
    """What a shell block runs: the whole block, or in a console block the commands after a
    `$ ` prompt (with their continuation lines)."""
    if block.lang != "console":
        return block.code
    commands, continuing = [], False
    for line in block.code.splitlines():
        if continuing:
            commands.append(line)
        elif line.startswith("$ "):
            commands.append(line[2:])
        else:  # output
            continue
        continuing = line.rstrip().endswith("\\")
    return "\n".join(commands)


@lru_cache
def documented_error_types() -> frozenset[str]:
    """The `error_type`s an error row may have, as docs/outputs.md lists them."""
    text = (REPO / "docs" / "outputs.md").read_text()
    return frozenset(re.findall(r"^\| `(\w+)` \| (?:is|has|could|names|decodes|holds|uses) ",
                                text, re.M))
