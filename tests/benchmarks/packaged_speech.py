"""Recordings shipped in Debian packages, for benchmark corpora built at benchmark time.

`fetch` downloads a package with `apt-get download` (nothing installed) and unpacks it with
`dpkg-deb -x` under <cache>/pkgs/<package>; `dep5_stanza` reads the licence that applies to a
file pattern from a machine-readable copyright file; `index` keeps the decodable, long enough,
non-duplicate recordings of one voice. Used by asterisk_corpus.py and speech_sets.py.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import unquote

import soundfile as sf


class CorpusError(RuntimeError):
    pass


def stable_hash(text: str) -> int:
    """A hash that does not change between runs (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest(), "big")


def _apt_download(package: str, folder: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise CorpusError("apt-get and dpkg-deb are needed: this corpus is built from Debian "
                          "packages (run on Debian or Ubuntu)")
    done = subprocess.run(["apt-get", "download", package], cwd=folder, capture_output=True,
                          text=True)
    if done.returncode == 0:
        return
    err = done.stderr.strip()
    if re.search(r"Unable to locate package|Can't select candidate|has no installation", err):
        raise LookupError(f"{package}: not in this system's package lists (`apt-get update` "
                          f"refreshes them): {err.splitlines()[-1]}")
    if re.search(r"Could not resolve|Failed to fetch|Temporary failure|Connection|timed out", err):
        raise CorpusError(f"the Debian archive is unreachable (apt-get download {package}): {err}")
    raise CorpusError(f"apt-get download {package} failed ({done.returncode}): {err}")


def fetch(package: str, cache: Path) -> Path:
    """The package unpacked under cache/pkgs/<package>; fetched only when not there yet."""
    root = cache / "pkgs" / package
    if root.is_dir():  # renamed into place only once completely unpacked
        return root
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{package}_*.deb")):
        _apt_download(package, debs)
    deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
    partial = root.with_name(package + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        deb.unlink()  # a truncated download: fetched again next time
        raise CorpusError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()}")
    (partial / ".version").write_text(unquote(deb.name.split("_")[1]))
    partial.rename(root)
    deb.unlink()  # the unpacked tree is what is kept
    return root


def dep5_stanza(text: str, pattern: str) -> dict[str, str] | None:
    """The fields of the machine-readable copyright stanza whose `Files:` lists `pattern`,
    with the stanza's whole text under "text"; None when no stanza lists it."""
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M))
        if pattern in fields.get("Files", "").split():
            return {**fields, "text": stanza}
    return None


def decode_gsm(src: Path, dst: Path) -> None:
    """Raw GSM 6.10 (headerless, 8 kHz mono) to 16-bit WAV: the pipeline reads no .gsm."""
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp.wav")
    if "GSM610" in sf.available_subtypes("RAW"):
        audio, rate = sf.read(src, format="RAW", subtype="GSM610", samplerate=8000, channels=1)
        sf.write(tmp, audio, rate, subtype="PCM_16")
    elif shutil.which("sox"):
        subprocess.run(["sox", "-t", "gsm", str(src), "-b", "16", str(tmp)], check=True)
    else:
        raise CorpusError("neither soundfile nor sox decodes GSM 6.10")
    tmp.rename(dst)


def index(files: Iterable[tuple[str, Path]], seen: set[bytes], stats: dict,
          min_seconds: float, readable: Callable[[str, Path], Path] = lambda rel, path: path
          ) -> list[tuple[str, Path, float]]:
    """(relative path, readable path, seconds) of one voice's recordings of >= min_seconds.

    files: (relative path, file) pairs; readable: the file soundfile reads for one of them
    (a decoded copy for formats it does not read). A file whose bytes are in `seen` (this
    voice's earlier files) is dropped; stats counts "duplicates_dropped" and "short_dropped".
    """
    found = []
    for rel, path in files:
        digest = hashlib.sha1(path.read_bytes()).digest()
        if digest in seen:  # the same bytes twice for this speaker
            stats["duplicates_dropped"] = stats.get("duplicates_dropped", 0) + 1
            continue
        seen.add(digest)
        audio = readable(rel, path)
        seconds = sf.info(str(audio)).duration
        if seconds < min_seconds:
            stats["short_dropped"] = stats.get("short_dropped", 0) + 1
            continue
        found.append((rel, audio, seconds))
    return found
