"""The evaluation suite: real speech from Debian packages, in sets split by speaker.

Nothing of it is shipped or committed: the packages are fetched at benchmark time with
`apt-get download` and unpacked with `dpkg-deb -x` (packaged_speech.fetch) under the cache folder
(default ~/.cache/timbrespace_ray/speech_sets). Three sets, one per kind of speech:

  prompts       telephone prompts (8 kHz): the 7 professional voice talents of asterisk_corpus.py
  letters       letters and syllables (44.1 kHz): KLettres (klettres-data), one recording set
                per language folder
  descriptions  short read phrases describing a picture (44.1 kHz): the Tux Paint stamps'
                spoken descriptions (tuxpaint-stamps-default), readers named in its changelog

How each speaker label was established is written per voice in the set's corpus.json
(`labelled_by`), and the text the label rests on is checked in the package at build time.
Rules: one label per person the source names; a folder per language where the source names
nobody (KLettres), keeping one folder of languages that one volunteer may well have recorded
together (en/en_GB, ru/uk, de/nds, da/nb); a folder that credits two readers is left out (Tux
Paint French). `gender` is filled only where the source states it (the Asterisk folder names,
e.g. en_US_f_Allison), never guessed from a name.

Split by speaker: `assign_splits` holds out about a third of each set's voices (at least 3), by a
stable hash. Voices that may be one person share a split in every set: the named voice talents
are only in `prompts`, and the community voices (KLettres, Tux Paint) of one language group are
linked, since a volunteer may have recorded for both projects.

Utterances: files of >= 0.7 s that soundfile decodes whole, less exact byte duplicates within a
set, silence (an active speech level under -50 dBFS), the non-speech a package names (the Asterisk
tones and monkeys), and the Tux Paint alphabet and number stamps (read by other, partly unnamed,
people). No acoustic detector of music or tones is applied: these packages hold none besides the
named ones. At most --max-per-speaker (default 200) per speaker: the lowest hashes of the
relative path, so the choice is stable and no voice dominates.

Output, in <cache>/suite-max<N>/<set>/: manifest.csv (path, utt_id, speaker, language, gender,
kind, set, split; absolute paths, read by timbrespace_ray.inputs.manifest) and corpus.json
(sources, licences, credits, how speakers were labelled, counts).

Run: python tests/benchmarks/speech_sets.py [--cache DIR] [--max-per-speaker N]
From benchmark code: `from speech_sets import build_suite; manifests = build_suite()`.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

import asterisk_corpus
from packaged_speech import CorpusError, dep5_stanza, fetch, index, stable_hash
from timbrespace_ray.features.levels import active_level_db

DEFAULT_CACHE = Path("~/.cache/timbrespace_ray/speech_sets")
MIN_SECONDS = 0.7
MAX_PER_SPEAKER = 200
HELDOUT_FRACTION = 1 / 3
MIN_HELDOUT = 3
# an active speech level (ITU-T P.56) this low is silence: no recording of a voice is this quiet
MIN_SPEECH_DB = -50.0
KINDS = {"prompts": "telephone_prompts", "letters": "letters_syllables",
         "descriptions": "read_phrases"}
# languages one community volunteer may have recorded together: their voices share a split
LANGUAGE_GROUPS = {"en": "en", "ru": "east_slavic", "uk": "east_slavic", "be": "east_slavic",
                   "de": "de", "nds": "de", "da": "nordic", "nb": "nordic", "nn": "nordic"}


@dataclass(frozen=True)
class Voice:
    set: str
    speaker: str
    language: str              # BCP 47
    package: str
    patterns: tuple[str, ...]  # globs of its recordings, relative to the unpacked package
    labelled_by: str
    credit_file: str = ""      # package file where the regex `credit` must match: the label's
    credit: str = ""           # evidence, recorded in corpus.json
    exclude: str = ""          # regex of relative paths to leave out
    gender: str = ""

    @property
    def identity(self) -> str:
        """Voices with one identity may be one person: they get one split in every set."""
        if self.set == "prompts":
            return self.speaker
        base = self.language.split("-")[0]
        return "community:" + LANGUAGE_GROUPS.get(base, base)


def _klettres(folder: str, why: str) -> Voice:
    return Voice("letters", f"klettres_{folder}", folder.replace("_", "-"), "klettres-data",
                 (f"usr/share/klettres/{folder}/alpha/*.ogg",
                  f"usr/share/klettres/{folder}/syllab/*.ogg"), why)


KLETTRES_FOLDER = ("the language folder: KLettres has one recording set per language and the "
                   "package names no reader")
LETTERS = (
    Voice("letters", "klettres_ar", "ar", "klettres-data",
          ("usr/share/klettres/ar/alpha/*.ogg",),
          "the language folder, whose sounds.xml names the reader: Rafik, a child",
          "usr/share/klettres/ar/sounds.xml", r"Rafik, my little nephew's voice"),
    Voice("letters", "klettres_lt", "lt", "klettres-data",
          ("usr/share/klettres/lt/alpha/*.ogg", "usr/share/klettres/lt/syllab/*.ogg"),
          "the language folder, whose sounds.xml credits Liudas Ali\u0161auskas (as maker)",
          "usr/share/klettres/lt/sounds.xml", r"Made by Liudas Ali\u0161auskas"),
    *(_klettres(folder, KLETTRES_FOLDER)
      for folder in ("cs", "da", "de", "en_GB", "es", "fr", "he", "hu", "it", "ml", "nl",
                     "pt_BR", "tn", "uk")),
)
TUXPAINT_CHANGES = "usr/share/doc/tuxpaint-stamps-default/changelog.gz"
# the changelog's credit for each language's descriptive sounds (the Romanian and Russian ones
# in its list of "Descriptive sounds by GCI students")
TUXPAINT = {"be": ("kseniya_buraya", r"Descriptive sounds by Kseniya Buraya"),
            "bg": ("krasimir_petkov", r"Descriptive sounds Krasimir Petkov"),
            "ca": ("pere_pujal", r"Catalan spoken translations of all.*\n\s*Pere Pujal Carabantes"),
            "da": ("joe_dalton", r"Danish descriptive sounds\s+Joe Dalton"),
            "el": ("kiriaki_serafeim", r"Greek descriptive sounds\s+Kiriaki SERAFEIM"),
            "es": ("estefania_ortiz", r"Descriptive sounds Estefan\u00eda Ortiz"),
            "ro": ("tabbytha", r"Romanian:\s+Tabbytha"),
            "ru": ("edwin_veber", r"Rusian:\s+Edwin Veber")}
DESCRIPTIONS = tuple(
    Voice("descriptions", speaker, lang, "tuxpaint-stamps-default",
          (f"usr/share/tuxpaint/stamps/**/*_desc_{lang}.ogg",),
          "the reader the changelog credits with this language's descriptive sounds",
          TUXPAINT_CHANGES, credit, exclude=r"^usr/share/tuxpaint/stamps/symbols/(alphabets|math)/")
    for lang, (speaker, credit) in TUXPAINT.items())


def _asterisk_gender(root: Path) -> str:
    """female/male from the voice folder's name (en_US_f_Allison), else empty."""
    for folder in sorted(p.name for p in (root / asterisk_corpus.SOUNDS).iterdir()):
        match = re.fullmatch(r"[a-z]{2}_[A-Z]{2}_([fm])_\w+", folder)
        if match:
            return {"f": "female", "m": "male"}[match.group(1)]
    return ""


def _text(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return raw.decode("utf-8", errors="replace")


def licence(voice: Voice, root: Path) -> tuple[str, str]:
    """(licence, credit line) of a community voice, after checking the label's evidence."""
    doc = root / "usr/share/doc" / voice.package / "copyright"
    stanza = dep5_stanza(doc.read_text(errors="replace"), "*")
    if stanza is None:
        raise CorpusError(f"{voice.package}: no `Files: *` stanza in {doc}")
    credit = ""
    if voice.credit:
        match = re.search(voice.credit, _text(root / voice.credit_file))
        if match is None:
            raise CorpusError(f"{voice.package}: {voice.credit_file} does not match "
                              f"{voice.credit!r}; check the speaker label of {voice.speaker}")
        credit = " ".join(match.group(0).split())
    return stanza.get("License", "?"), credit or stanza.get("Copyright", "").strip()


def _files(voice: Voice, root: Path):
    for pattern in voice.patterns:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not (voice.exclude and re.search(voice.exclude, rel)):
                yield rel, path


def is_speech(path: Path) -> bool:
    """Decodes the whole file; False for (digital or near) silence."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    level = active_level_db(np.ascontiguousarray(audio.mean(axis=1)), rate)
    return bool(level >= MIN_SPEECH_DB)  # NaN (all zeros) is not


def assign_splits(voices: dict[str, dict[str, str]], fraction: float = HELDOUT_FRACTION,
                  min_heldout: int = MIN_HELDOUT) -> dict[str, dict[str, str]]:
    """set -> speaker -> "train" or "heldout", from set -> speaker -> identity.

    Speakers of one identity share a split in every set (the first set, by name, that holds the
    identity decides it). In each set, the identities not yet decided are taken in the order of
    a stable hash and held out while the held-out voices stay within the set's target: a
    `fraction` of its voices, at least `min_heldout`, at most half.
    """
    decided: dict[str, str] = {}
    splits: dict[str, dict[str, str]] = {}
    for name in sorted(voices):
        members: dict[str, list[str]] = {}
        for speaker, identity in sorted(voices[name].items()):
            members.setdefault(identity, []).append(speaker)
        n = len(voices[name])
        target = min(max(min_heldout, round(n * fraction)), n // 2)
        held = sum(len(m) for i, m in members.items() if decided.get(i) == "heldout")
        for identity in sorted((i for i in members if i not in decided), key=stable_hash):
            size = len(members[identity])
            decided[identity] = "heldout" if held + size <= target else "train"
            held += size if decided[identity] == "heldout" else 0
        splits[name] = {s: decided[i] for i, m in members.items() for s in m}
    return splits


def _collect(voice: Voice, root: Path, cache: Path, seen: set, stats: dict) -> list:
    """(relative path, readable path, seconds) of one voice, before the cap and speech check."""
    if voice.set == "prompts":
        source = next(v for v in asterisk_corpus.VOICES if v.package == voice.package)
        return asterisk_corpus.utterances(source, root, cache, seen, stats, MIN_SECONDS)
    return index(_files(voice, root), seen, stats, MIN_SECONDS)


def _prompt_voices(cache: Path) -> list[tuple[Voice, Path, tuple[str, str]]]:
    out = []
    for source in asterisk_corpus.VOICES:
        root = fetch(source.package, cache)
        voice = Voice("prompts", source.speaker, source.language, source.package,
                      (str(asterisk_corpus.SOUNDS),),
                      "one professional voice talent per package, named in its copyright "
                      "file (checked: asterisk_corpus.licence)", gender=_asterisk_gender(root))
        out.append((voice, root, asterisk_corpus.licence(source, root)))
    return out


def _voices(cache: Path) -> list[tuple[Voice, Path, tuple[str, str]]]:
    found = _prompt_voices(cache)
    for voice in LETTERS + DESCRIPTIONS:
        root = fetch(voice.package, cache)
        found.append((voice, root, licence(voice, root)))
    return found


def build_suite(cache: Path | None = None, max_per_speaker: int = MAX_PER_SPEAKER
                ) -> dict[str, Path]:
    """Fetch (when needed) and index every set; set name -> its manifest.csv."""
    cache = Path(cache or DEFAULT_CACHE).expanduser().resolve()
    voices = _voices(cache)
    splits = assign_splits({name: {v.speaker: v.identity for v, _, _ in voices if v.set == name}
                            for name in KINDS})
    manifests = {}
    for name, kind in KINDS.items():
        seen: set[bytes] = set()  # byte duplicates are dropped across the whole set
        rows, speakers = [], {}
        for voice, root, (licence_name, credit) in (x for x in voices if x[0].set == name):
            stats = {"duplicates_dropped": 0, "short_dropped": 0}
            found = _collect(voice, root, cache, seen, stats)
            info = speakers.setdefault(voice.speaker, {
                "split": splits[name][voice.speaker], "gender": voice.gender,
                "labelled_by": voice.labelled_by, "identity": voice.identity, "languages": [],
                "packages": {}, "found": []})
            info["languages"].append(voice.language)
            info["packages"][voice.package] = {
                "version": (root / ".version").read_text(), "licence": licence_name,
                "credit": credit, "available": len(found), **stats}
            info["found"] += [(rel, path, seconds, voice) for rel, path, seconds in found]
        for speaker, info in speakers.items():
            kept = _cap(info.pop("found"), max_per_speaker, info)
            info["utterances"] = len(kept)
            info["hours"] = round(sum(r[2] for r in kept) / 3600, 4)
            for rel, path, seconds, voice in sorted(kept, key=lambda r: r[0]):
                utt_id = f"{name}/{speaker}/{Path(rel).with_suffix('').as_posix()}"
                rows.append((str(path), utt_id, speaker, voice.language, voice.gender, kind,
                             name, info["split"]))
        manifests[name] = _write(cache / f"suite-max{max_per_speaker}" / name, name, kind,
                                 rows, speakers, max_per_speaker)
    return manifests


def _cap(found: list, max_per_speaker: int, info: dict) -> list:
    """The speaker's first max_per_speaker recordings of speech in the order of a stable hash
    of their relative path (spread over folders and, for a speaker in two packages, over both);
    counts the silent ones dropped on the way in info["silent_dropped"]."""
    kept, info["silent_dropped"] = [], 0
    for row in sorted(found, key=lambda r: stable_hash(r[0])):
        if max_per_speaker and len(kept) == max_per_speaker:
            break
        if is_speech(row[1]):
            kept.append(row)
        else:
            info["silent_dropped"] += 1
    return kept


def _write(out: Path, name: str, kind: str, rows: list, speakers: dict,
           max_per_speaker: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "manifest.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "utt_id", "speaker", "language", "gender", "kind", "set",
                         "split"])
        writer.writerows(rows)
    totals = {split: sum(1 for s in speakers.values() if s["split"] == split)
              for split in ("train", "heldout")}
    summary = {"set": name, "kind": kind, "source": "Debian packages (apt-get download)",
               "min_seconds": MIN_SECONDS, "max_per_speaker": max_per_speaker,
               "speakers": speakers,
               "totals": {"voices": len(speakers), "utterances": len(rows),
                          "hours": round(sum(s["hours"] for s in speakers.values()), 4),
                          **{f"{k}_voices": v for k, v in totals.items()}}}
    (out / "corpus.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(out / "manifest.csv")
    return out / "manifest.csv"


def describe(summary: dict) -> str:
    """One set's line: voices, utterances, hours, languages, kinds, licences."""
    speakers, t = summary["speakers"].values(), summary["totals"]
    languages = sorted({lang for s in speakers for lang in s["languages"]})
    licences = sorted({p["licence"] for s in speakers for p in s["packages"].values()})
    return (f"{summary['set']}: {t['voices']} voices ({t['train_voices']} train, "
            f"{t['heldout_voices']} held out), {t['utterances']} utterances, "
            f"{t['hours']:.2f} h, kind {summary['kind']}, {len(languages)} languages "
            f"({', '.join(languages)}), licences: {'; '.join(licences)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help=f"cache folder (default {DEFAULT_CACHE})")
    parser.add_argument("--max-per-speaker", type=int, default=MAX_PER_SPEAKER,
                        help="0: no cap")
    args = parser.parse_args()
    try:
        manifests = build_suite(args.cache, args.max_per_speaker)
    except (CorpusError, LookupError) as exc:
        sys.exit(f"error: {exc}")
    voices = 0
    for manifest in manifests.values():
        summary = json.loads((manifest.parent / "corpus.json").read_text())
        voices += summary["totals"]["voices"]
        print(describe(summary))
        print(f"  {manifest}")
    print(f"{voices} voices in {len(manifests)} sets")


if __name__ == "__main__":
    main()
