"""Audio files, one utterance each: found by listing a folder or prefix, or named alone, with
the columns of the folder's AudioFolder metadata files when it has some (audiofolder.py). Also
the plan item of one recording read for its segments, which manifests and lhotse plan.
"""
from __future__ import annotations

import logging
import math
import posixpath
from collections.abc import Iterable, Iterator

from ..audio import AUDIO_EXTENSIONS, audio_file_size
from ..errors import FileTooLargeError
from ..storage import Location
from ..whole_reads import read_whole
from .audiofolder import folder_metadata, is_metadata_file, named_as_metadata
from .base import (Corpus, InputFile, InputOptions, ReadContext, Reader, Recording, Segment,
                   plan_item)
from .listing import NOT_REGULAR


log = logging.getLogger(__name__)


def is_audio(name: str) -> bool:
    return name.lower().endswith(AUDIO_EXTENSIONS)


# A file up to this size is fetched whole with one request (on object storage a GET, with no
# HEAD before it) and decoded from memory: on a store, round trips cost more than bytes, and
# 64 MiB (over half an hour of 16 kHz 16-bit WAV) is little beside a worker's memory; the
# features stage's prefetch budget bounds how many are held ahead. A larger file is streamed
# in blocks, so a recording of hours is never in memory whole.
WHOLE_READ_BYTES = 64 << 20


def open_checked(source: str, size: int, ctx: ReadContext):
    """The audio of `source`: its bytes when it is small (WHOLE_READ_BYTES), else a file object,
    refusing a file over features.max_file_bytes before any of it is read (a whole-file decode
    holds the file's samples in memory). `size` is the size the plan knows (-1: unknown)."""
    loc = Location.of(source, dict(ctx.storage_options))
    if loc.is_local or size < 0 or size > WHOLE_READ_BYTES:
        # a size known from the plan only says whether one request will do; a large file's
        # current size is looked up once, here, and passed on so that open() does not again.
        # A local file is always looked at (a stat costs microseconds): a FIFO or a device
        # named .wav, or in a manifest, would be read for ever
        size = audio_file_size(loc, source)
    if size > ctx.max_file_bytes:
        raise FileTooLargeError(
            f"{size / 2**20:.0f} MiB is over the {ctx.max_file_bytes / 2**20:.0f} MiB "
            "limit (features.max_file_bytes)")
    if size <= WHOLE_READ_BYTES:
        return read_whole(loc.fs, loc.path, size)
    return loc.fs.open(loc.path, "rb", size=size)


class AudioFileReader(Reader):
    name = "file"
    describes = f"audio files ({', '.join(AUDIO_EXTENSIONS)})"
    extensions = AUDIO_EXTENSIONS

    @classmethod
    def accompanies(cls, loc: Location) -> bool:
        return is_metadata_file(loc)

    @staticmethod
    def item(utt_id: str, source: str, size: int, metadata: dict | None = None) -> dict:
        fields = {} if metadata is None else {"metadata": metadata}
        return plan_item(AudioFileReader, count=1, size=size, source=source, utt_id=utt_id,
                         **fields)

    @classmethod
    def plan(cls, files: Iterable[InputFile], root: Location, options: InputOptions) -> Corpus:
        # what it accompanies is told by name: no audio file is named as metadata; the files
        # are streamed (a folder may hold millions), the metadata files are few
        # (a FIFO named metadata.parquet is not opened: it is an input, its read an error row)
        described = [f for f in files if f.size != NOT_REGULAR and named_as_metadata(f.loc)]
        audio = (f for f in files if f.size == NOT_REGULAR or not named_as_metadata(f.loc))
        if not described:
            return Corpus(cls._items(audio, root))
        found = folder_metadata(described, options)
        return Corpus(cls._described(audio, found, root, described), found.columns)

    @classmethod
    def _items(cls, audio: Iterable[InputFile], root: Location, found=None) -> Iterator[dict]:
        # a folder's file is named by its path below the folder, and its URI is the folder's
        # and that: asking the filesystem for each of millions of URIs takes longer
        folder, uri = root.path.rstrip("/") + "/", root.uri.rstrip("/") + "/"
        for f in audio:
            path = f.loc.path
            if path.startswith(folder):
                name, source = path[len(folder):], uri + path[len(folder):]
            else:
                name, source = f.name_in(root), f.loc.uri
            values = None if found is None else found.by_path.pop(path, None)
            yield cls.item(name, source, f.size, values)

    @classmethod
    def _described(cls, audio: Iterator[InputFile], found, root: Location,
                   described: list[InputFile]) -> Iterator[dict]:
        """The items of the audio files with their metadata rows, then (in path order among
        them) the rows whose file is not among the audio files: each an error row when read."""
        total = matched = 0
        for item in cls._items(audio, root, found):
            total += 1
            matched += "metadata" in item
            yield item
        unmatched = sorted(found.by_path.items())
        log.info("audio folder: metadata for %d of %d audio files from %s%s", matched, total,
                 ", ".join(f.name_in(root) for f in described),
                 f"; {len(unmatched)} of its rows name no audio file of the folder (error rows)"
                 if unmatched else "")
        for path, values in unmatched:
            yield cls.item(posixpath.relpath(path, root.path), root.fs.unstrip_protocol(path), -1,
                           values)

    @classmethod
    def read(cls, item: dict, ctx: ReadContext) -> Iterator[Recording]:
        source, size = item["source"], item["size"]
        yield Recording(source, [Segment(item["utt_id"], metadata=item.get("metadata", {}))],
                        open=lambda: open_checked(source, size, ctx))


def segmented_item(reader: type[Reader], source: str, columns: list[str], segments: list[list],
                   **fields) -> dict:
    """The plan item of one recording read for its `segments` ([utt_id, start_s, end_s,
    metadata values], with `columns` naming the values), in the order they are read."""
    return plan_item(reader, count=len(segments), source=source, columns=columns,
                     segments=sorted(segments, key=segment_order), **fields)


def segment_order(segment: list) -> tuple:
    # whole-recording segments first, then by start (a start the row lacks, NaN, first),
    # then by id: a deterministic order whatever the order of the rows
    start = segment[1]
    return (start is not None, -1.0 if start is None or math.isnan(start) else start, segment[0])


def segmented_recording(item: dict, ctx: ReadContext) -> Recording:
    """The recording of a plan item that lists its segments (`segments`: [utt_id, start_s,
    end_s, metadata values] with `columns` naming the values; optional `channels`)."""
    source, names = item["source"], item["columns"]
    segments = [Segment(utt_id, start, end, dict(zip(names, values)))
                for utt_id, start, end, values in item["segments"]]
    whole = all(s.whole for s in segments)
    # a segmented recording is streamed, so only a whole-file decode is bounded by size
    limit = ctx if whole else ReadContext(ctx.storage_options, max_file_bytes=1 << 62)
    channels = item.get("channels")
    return Recording(source, segments, open=lambda: open_checked(source, -1, limit),
                     channels=None if channels is None else tuple(channels))
