"""Audio files, one utterance each: found by listing a folder or prefix, or named alone."""
from __future__ import annotations

from collections.abc import Iterator

from ..audio import AUDIO_EXTENSIONS
from ..errors import FileTooLargeError
from ..storage import Location
from .base import ReadContext, Reader, Recording, Segment, plan_item


def is_audio(name: str) -> bool:
    return name.lower().endswith(AUDIO_EXTENSIONS)


def open_checked(source: str, size: int, ctx: ReadContext):
    """A file object for `source`, refusing a file over features.max_file_bytes before any of
    it is read (a whole-file decode holds the file's samples in memory)."""
    loc = Location.of(source, dict(ctx.storage_options))
    size = size if size >= 0 else loc.fs.size(loc.path)
    if size > ctx.max_file_bytes:
        raise FileTooLargeError(
            f"{size / 2**20:.0f} MiB is over the {ctx.max_file_bytes / 2**20:.0f} MiB "
            "limit (features.max_file_bytes)")
    return loc.fs.open(loc.path, "rb")


class AudioFileReader(Reader):
    name = "file"

    @staticmethod
    def item(utt_id: str, source: str, size: int) -> dict:
        return plan_item(AudioFileReader, count=1, size=size, source=source, utt_id=utt_id)

    @classmethod
    def read(cls, item: dict, ctx: ReadContext) -> Iterator[Recording]:
        source, size = item["source"], item["size"]
        yield Recording(source, [Segment(item["utt_id"])],
                        open=lambda: open_checked(source, size, ctx))


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
