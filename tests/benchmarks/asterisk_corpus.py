"""A real multi-speaker corpus for benchmarks: the Asterisk voice prompts packaged by Debian.

What it fetches: the voice-prompt packages below with `apt-get download` (no root, nothing
installed) into a cache folder (default ~/.cache/timbrespace_ray/asterisk), unpacked there with
`dpkg-deb -x`; a package already unpacked there is not fetched again. Nothing of it is committed
to this repository: it is built at benchmark time only.

Voices (one professional voice talent each; the label is the *speaker*, language is separate):
  allison_smith   asterisk-core-sounds-en-wav (en-US) + asterisk-core-sounds-es-wav (es-MX):
                  one person; the shared copyright file's `Files: *` stanza credits Allison
                  Smith for both and the folders are en_US_f_Allison / es_MX_f_Allison
  june_wallack    asterisk-core-sounds-fr-wav (fr-CA)
  carlo_flora     asterisk-core-sounds-it-wav (it-IT, male)
  ivrvoice_ru     asterisk-core-sounds-ru-wav (ru-RU, female; the talent is not named, the
                  prompts are "provided by Maxim Topal, ivrvoice.ru")
  paola_dal_zot   asterisk-prompt-it-menardi-wav (it-IT, female; copyright Marco Menardi and
                  Paola Dal Zot, "(?the voice?)": the folder is it_IT_f_Menardi, so his wife)
  armelle_desjardins  asterisk-prompt-fr-armelle (fr; raw GSM 6.10, decoded to WAV here)
  july_jimenez    asterisk-prompt-es-co (es-CO; raw GSM 6.10, decoded to WAV here)
All audio is 8 kHz mono telephone speech: the features stage upsamples it to its 16 kHz, so
nothing lies above 4 kHz (the extractor analyses up to 6 kHz); the corpus is for speaker and
language structure, not for the upper formant bands.

Licences (read from each package's usr/share/doc/<pkg>/copyright and recorded in corpus.json):
core sounds en/es/fr CC-BY-SA-3.0, ru and it CC-BY-3.0; Menardi CC BY-SA 3.0 Italy; Armelle a
BSD-style notice (Michel Gutierrez); es-co GPL-2. Attribution travels in corpus.json.

Utterances: every prompt file of >= 1.0 s, less exact byte duplicates within a speaker, the
silence/ folder and the non-speech prompts (tones, beeps, and tt-monkeys: the same monkey
recording in every package, which would otherwise be one "utterance" shared by five speakers).
--max-per-speaker (default 400; 0 = all) keeps the utterances with the lowest hash of their
relative path, so voices are balanced and the choice is stable. `split` is heldout when a hash
of `speaker/relative path` falls under --heldout-fraction (default 0.25).

Output, in <cache>/corpus-max<N>-heldout<F>/: manifest.csv (path, speaker, language, package,
split; absolute paths, read by timbrespace_ray.inputs.manifest) and corpus.json.

Run: .venv/bin/python tests/benchmarks/asterisk_corpus.py [--cache DIR] [--max-per-speaker N]
     [--heldout-fraction F]
From other benchmark code: `from asterisk_corpus import build_corpus; manifest = build_corpus()`.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from packaged_speech import CorpusError, decode_gsm, dep5_stanza, fetch, index, stable_hash

DEFAULT_CACHE = Path("~/.cache/timbrespace_ray/asterisk")
SOUNDS = Path("usr/share/asterisk/sounds")
MIN_SECONDS = 1.0
# not the talent's voice: tones, beeps, and the monkeys (one recording copied into each package)
NON_SPEECH = {"tt-monkeys", "beep", "beeperr", "ascending-2tone", "descending-2tone"}


@dataclass(frozen=True)
class Voice:
    package: str
    speaker: str
    language: str
    credit: str               # text the package's licence stanza or README must hold: the
    #                           speaker label is checked against it at build time
    stanza: str | None = None  # machine-readable copyright: the `Files:` pattern that applies


# The five core-sounds packages share one copyright file whose stanzas are per language.
VOICES = (
    Voice("asterisk-core-sounds-en-wav", "allison_smith", "en-US", "Allison Smith", "*"),
    Voice("asterisk-core-sounds-es-wav", "allison_smith", "es-MX", "Allison Smith", "*"),
    Voice("asterisk-core-sounds-fr-wav", "june_wallack", "fr-CA", "June Wallack", "fr-*"),
    Voice("asterisk-core-sounds-it-wav", "carlo_flora", "it-IT", "Carlo Flora", "it-*"),
    Voice("asterisk-core-sounds-ru-wav", "ivrvoice_ru", "ru-RU", "ivrvoice.ru", "ru-*"),
    Voice("asterisk-prompt-it-menardi-wav", "paola_dal_zot", "it-IT", "Paola Dal Zot", "*"),
    Voice("asterisk-prompt-fr-armelle", "armelle_desjardins", "fr", "Armelle Desjardins"),
    Voice("asterisk-prompt-es-co", "july_jimenez", "es-CO", "July E. Jim"),
)
# free-form copyright files: first match wins (Armelle's also names the GPL, for the packaging)
FREE_FORM_LICENCES = (
    (r"Redistribution and use, with or without modification, are permitted",
     "BSD-style (keep the copyright notice)"),
    (r"GNU General Public License.{0,200}?version 2", "GPL-2"),
)


def licence(voice: Voice, root: Path) -> tuple[str, str]:
    """(licence, credit line) from the package's copyright, after checking that it credits the
    voice this module labels it with (a repackaged voice must not keep a wrong speaker label)."""
    doc = root / "usr/share/doc" / voice.package
    text = (doc / "copyright").read_text(errors="replace")
    if voice.stanza is not None:  # DEP-5: the stanza whose `Files:` names the pattern
        fields = dep5_stanza(text, voice.stanza)
        if fields is not None and voice.credit in fields["text"]:
            return fields.get("License", "?"), fields.get("Copyright", "").strip()
        raise CorpusError(f"{voice.package}: no `Files: {voice.stanza}` stanza crediting "
                          f"{voice.credit!r} in {doc}/copyright; check the speaker label")
    # free-form: the README (LEEME) may name the talent; it is Latin-1 in es-co
    readmes = [p.read_text(encoding="latin-1") for p in sorted(doc.iterdir())
               if p.is_file() and not p.name.endswith(".gz")]
    if not any(voice.credit in t for t in readmes):
        raise CorpusError(f"{voice.package}: {doc} does not credit {voice.credit!r}")
    line = next((ln.strip() for t in readmes for ln in t.splitlines() if voice.credit in ln), "")
    for pattern, name in FREE_FORM_LICENCES:
        if re.search(pattern, text, re.S):
            return name, line
    return "unknown (see copyright)", line


def prompt_files(root: Path):
    """(path relative to the sounds folder, file) of the package's speech prompts."""
    sounds = root / SOUNDS
    # os.walk does not follow the symlinked folders (digits/fr -> fr/digits) of the GSM packages
    for folder, dirs, files in os.walk(sounds):
        dirs[:] = sorted(d for d in dirs if d != "silence")  # silence/1..10.wav: no speech
        for name in sorted(files):
            path = Path(folder, name)
            stem, ext = os.path.splitext(name)
            if not path.is_symlink() and ext in (".wav", ".gsm") and stem not in NON_SPEECH:
                yield path.relative_to(sounds).as_posix(), path


def utterances(voice: Voice, root: Path, cache: Path, seen: set[bytes], stats: dict,
               min_seconds: float = MIN_SECONDS) -> list:
    """(relative path, wav path, seconds) of the voice's speech prompts of >= min_seconds."""
    def readable(rel: str, path: Path) -> Path:
        if path.suffix != ".gsm":
            return path
        wav = cache / "decoded" / voice.package / Path(rel).with_suffix(".wav")
        decode_gsm(path, wav)
        return wav
    return index(prompt_files(root), seen, stats, min_seconds, readable)


def build_corpus(cache_dir: Path | None = None, max_per_speaker: int = 400,
                 heldout_fraction: float = 0.25) -> Path:
    """Fetch (when needed) and index the voices; returns the manifest CSV's path."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError("heldout_fraction must be in (0, 1): every speaker has both splits")
    cache = Path(cache_dir or DEFAULT_CACHE).expanduser().resolve()
    speakers: dict[str, dict] = {}
    rows: dict[str, list] = {}
    seen: dict[str, set] = {}
    dropped: dict[str, str] = {}
    for voice in VOICES:
        try:
            root = fetch(voice.package, cache)
        except LookupError as exc:
            dropped[voice.package] = str(exc)
            print(f"warning: dropping {voice.speaker}/{voice.language}: {exc}", file=sys.stderr)
            continue
        name, credit = licence(voice, root)
        info = speakers.setdefault(voice.speaker, {
            "packages": [], "languages": [], "licences": {}, "credits": {}, "versions": {},
            "duplicates_dropped": 0, "short_dropped": 0})
        info["packages"].append(voice.package)
        info["languages"].append(voice.language)
        info["licences"][voice.package] = name
        info["credits"][voice.package] = credit
        info["versions"][voice.package] = (root / ".version").read_text()
        found = utterances(voice, root, cache, seen.setdefault(voice.speaker, set()), info)
        rows.setdefault(voice.speaker, []).extend(
            (rel, wav, seconds, voice) for rel, wav, seconds in found)
    if len(dropped) == len(VOICES):
        raise CorpusError("no voice package could be found: the package lists are probably "
                          "missing (run `apt-get update` as root); "
                          + next(iter(dropped.values())))

    out = cache / f"corpus-max{max_per_speaker}-heldout{heldout_fraction:g}"
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for speaker, found in rows.items():
        info = speakers[speaker]
        info["available"] = len(found)
        # the cap keeps the lowest hashes of the relative path: stable, and spread over folders
        # and (for a merged speaker) over languages
        found.sort(key=lambda r: stable_hash(r[0]))
        kept = found[:max_per_speaker] if max_per_speaker > 0 else found
        score = {r[0]: stable_hash(f"{speaker}/{r[0]}") / 2 ** 160 for r in kept}
        heldout = {rel for rel, s in score.items() if s < heldout_fraction}
        if not heldout:  # so that every speaker has both splits, however few utterances
            heldout = {min(score, key=score.get)}
        elif len(heldout) == len(kept):
            heldout.discard(max(score, key=score.get))
        for rel, wav, seconds, voice in sorted(kept, key=lambda r: r[0]):
            split = "heldout" if rel in heldout else "train"
            manifest.append((str(wav), speaker, voice.language, voice.package, split, seconds))
        info.update(utterances=len(kept), hours=round(sum(r[2] for r in kept) / 3600, 4),
                    train=len(kept) - len(heldout), heldout=len(heldout))

    tmp = out / "manifest.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "speaker", "language", "package", "split"])
        writer.writerows(row[:5] for row in manifest)
    tmp.replace(out / "manifest.csv")
    totals = {k: sum(s.get(k, 0) for s in speakers.values())
              for k in ("utterances", "train", "heldout", "available")}
    totals.update(speakers=len(speakers), hours=round(sum(r[5] for r in manifest) / 3600, 4))
    summary = {"source": "Debian Asterisk voice-prompt packages (apt-get download)",
               "min_seconds": MIN_SECONDS, "max_per_speaker": max_per_speaker,
               "heldout_fraction": heldout_fraction, "sample_rate": 8000,
               "speakers": speakers, "dropped_voices": dropped, "totals": totals}
    (out / "corpus.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return out / "manifest.csv"


def table(summary: dict) -> str:
    head = ("speaker", "languages", "packages", "licence", "utts", "hours", "train", "heldout")
    lines = [head]
    for name, s in summary["speakers"].items():
        lines.append((name, ",".join(s["languages"]),
                      ",".join(p.replace("asterisk-", "") for p in s["packages"]),
                      ",".join(sorted(set(s["licences"].values())))[:40], str(s["utterances"]),
                      f"{s['hours']:.3f}", str(s["train"]), str(s["heldout"])))
    t = summary["totals"]
    lines.append((f"total ({t['speakers']})", "", "", "", str(t["utterances"]),
                  f"{t['hours']:.3f}", str(t["train"]), str(t["heldout"])))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help=f"cache folder (default {DEFAULT_CACHE})")
    parser.add_argument("--max-per-speaker", type=int, default=400, help="0: no cap")
    parser.add_argument("--heldout-fraction", type=float, default=0.25)
    args = parser.parse_args()
    try:
        manifest = build_corpus(args.cache, args.max_per_speaker, args.heldout_fraction)
    except (CorpusError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    summary = json.loads((manifest.parent / "corpus.json").read_text())
    print(table(summary))
    for name, s in summary["speakers"].items():
        if len(s["packages"]) > 1:
            print(f"{name}: one voice talent in {', '.join(s['packages'])}")
    for package, why in summary["dropped_voices"].items():
        print(f"dropped {package}: {why}")
    print(manifest)


if __name__ == "__main__":
    main()
