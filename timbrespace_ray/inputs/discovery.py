"""Which input form a location holds, and its plan items: the driver's half of every reader.

A folder or prefix is listed (audio files, tar shards, Parquet audio dataset shards); a single
file is an audio file, a shard, a manifest, a Parquet audio dataset or a lhotse manifest, told
apart by extension and, for tables, by their schema or first record, never by their name.
"""
from __future__ import annotations

import gzip
import json
import posixpath
from dataclasses import dataclass, field

from ..audio import AUDIO_EXTENSIONS
from ..errors import InputError
from ..storage import Location, redact_uri, storage_errors
from . import audio_dataset, lhotse
from .base import InputOptions
from .files import AudioFileReader, is_audio
from .manifest import MANIFEST_EXTENSIONS, plan_manifest, read_table
from .tar import TarShardReader, is_shard, sniff_metadata

JSONL_EXTENSIONS = (".jsonl", ".jsonl.gz")
LOOKED_FOR = (f"audio files ({', '.join(AUDIO_EXTENSIONS)}), tar shards (.tar), Parquet audio "
              "datasets (*.parquet with an audio column), manifests (.parquet/.csv/.jsonl with a "
              "'path' column) or lhotse manifests (.jsonl/.jsonl.gz)")


@dataclass
class Corpus:
    """A planned input: its items in a deterministic order and its metadata columns."""

    items: list[dict]
    metadata: dict[str, str] = field(default_factory=dict)  # column -> plain type


def discover(input_uri: str, storage_options: dict | None = None,
             options: InputOptions | None = None) -> Corpus:
    """Every utterance under `input_uri`, as plan items; an error when there is none."""
    options = options or InputOptions()
    root = Location.of(input_uri, storage_options)
    if not root.exists():
        raise InputError(f"input not found: {redact_uri(input_uri)}")
    with storage_errors("read the input", input_uri):
        if root.fs.isdir(root.path):
            corpus = _from_listing(root, options)
        else:
            corpus = _from_file(root, options)
    if not corpus.items:
        raise InputError(f"{redact_uri(input_uri)} holds no input: looked for {LOOKED_FOR}")
    _check_unique(corpus.items)
    return corpus


def _from_file(loc: Location, options: InputOptions) -> Corpus:
    name = loc.path.lower()
    base = posixpath.basename(loc.path)
    if is_audio(name):
        return Corpus([AudioFileReader.item(base, loc.uri, loc.fs.size(loc.path))])
    if is_shard(name):
        return Corpus([TarShardReader.item(base, loc.uri, loc.fs.size(loc.path))],
                      sniff_metadata(loc))
    if name.endswith(".parquet"):
        schema = audio_dataset.read_schema(loc)
        if audio_dataset.audio_column(schema, options.audio_column, loc.uri) is not None:
            parent = Location(loc.fs, posixpath.dirname(loc.path))
            return Corpus(*audio_dataset.plan_shards([loc], parent, options))
    elif name.endswith(JSONL_EXTENSIONS):
        first = _first_record(loc)
        if lhotse.is_lhotse(first):
            return Corpus(*lhotse.plan(loc, first, options))
        if name.endswith(".gz"):
            raise InputError(f"{loc.uri} is not a lhotse manifest (its first record has keys "
                             f"{sorted(first)}); a path manifest is a plain .jsonl file")
    elif not name.endswith(MANIFEST_EXTENSIONS):
        raise InputError(f"{loc.uri} is not an input: looked for {LOOKED_FOR}")
    return Corpus(*plan_manifest(loc, read_table(loc), options.metadata_columns))


def _first_record(loc: Location) -> dict:
    with loc.fs.open(loc.path, "rb") as raw:
        fh = gzip.open(raw) if loc.path.lower().endswith(".gz") else raw
        for line in fh:
            if line.strip():
                try:
                    doc = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{loc.uri}: the first line is not JSON ({exc})") from None
                return doc if isinstance(doc, dict) else {}
    return {}


def _from_listing(root: Location, options: InputOptions) -> Corpus:
    found = root.fs.find(root.path, detail=True, withdirs=False)
    items, tables, shards, skipped = [], [], [], []
    for path, info in sorted(found.items()):
        name = posixpath.basename(path)
        rel = posixpath.relpath(path, root.path)
        size = int(info.get("size") or -1)
        if name.startswith("."):
            continue
        if is_audio(name):
            items.append(AudioFileReader.item(rel, root.fs.unstrip_protocol(path), size))
        elif is_shard(name):
            items.append(TarShardReader.item(rel, root.fs.unstrip_protocol(path), size))
            shards.append(Location(root.fs, path))
        elif name.lower().endswith(".parquet"):
            tables.append(Location(root.fs, path))
        elif name.lower().endswith(MANIFEST_EXTENSIONS + JSONL_EXTENSIONS):
            skipped.append(rel)
    metadata = sniff_metadata(shards[0]) if shards else {}
    datasets = [t for t in tables if audio_dataset.audio_column(
        audio_dataset.read_schema(t), options.audio_column, t.uri) is not None]
    skipped += [posixpath.relpath(t.path, root.path) for t in tables if t not in datasets]
    if datasets:
        ds_items, ds_metadata = audio_dataset.plan_shards(datasets, root, options)
        items += ds_items
        metadata = {**metadata, **ds_metadata}
    if not items and skipped:
        raise InputError(
            f"{redact_uri(root.uri)} holds no audio, tar shard or Parquet audio dataset; it holds "
            f"{', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}: to read a manifest, "
            "pass the manifest file itself as the input")
    return Corpus(items, metadata)


def _check_unique(items: list[dict]) -> None:
    """Two inputs with one utt_id would be two rows nobody can tell apart: refuse them."""
    seen: dict[str, str] = {}
    for item in items:
        ids = [s[0] for s in item["segments"]] if "segments" in item else [item.get("utt_id")]
        for utt_id in ids:
            if utt_id is None:
                continue
            if utt_id in seen:
                raise InputError(f"two inputs share utt_id {utt_id!r}: {seen[utt_id]} and "
                                 f"{item['source']}")
            seen[utt_id] = item["source"]
