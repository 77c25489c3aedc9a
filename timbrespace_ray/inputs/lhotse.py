"""lhotse manifests: a CutSet, or a RecordingSet with its SupervisionSet, as input.

Each supervision is one segment (utterance) of its recording, named by the supervision's id; a
cut without supervisions is one segment named by the cut's id, and a recording without any
supervision (a RecordingSet given alone, or one of its recordings that no supervision names) is
one segment, the whole recording, named by the recording's id. A cut that spans its whole
recording is read whole too (no start_s/end_s), so a CutSet made by `CutSet.from_manifests`
gives the same rows as the RecordingSet and SupervisionSet it was made from.

The input is planned on the driver: the manifest is read through fsspec (local, s3://, ...)
one JSON line at a time and each record is parsed with lhotse's own classes (`Recording`,
`SupervisionSegment`, `MonoCut`/`MultiCut` via lhotse's `deserialize_cut`); the plan items are
plain JSON, so workers need neither lhotse nor the manifest. lhotse is an optional extra
(`pip install 'timbrespace-ray[lhotse]'`); without it a lhotse manifest is an InputError that
says so. One part is not left to lhotse: a recording's `transforms` are taken off before
`Recording.from_dict` and parsed one by one, because lhotse refuses a whole manifest for one
transform name it does not know, where here that recording's segments become error rows.

Times. A cut's supervisions are relative to the cut: the segment is
[cut.start + sup.start, cut.start + sup.start + sup.duration] of the recording. A supervision
that sticks out of its cut is clipped to the cut as lhotse clips it
(`SupervisionSegment.trim(cut.duration)`: a negative start becomes 0, an end past the cut's
end becomes its end), and start_s/end_s say the clipped range; one wholly outside its cut is
clipped to nothing and becomes a SegmentRangeError row. Supervisions of a RecordingSet are in
the recording's own time, unclipped: one that ends after its recording is the stage's
SegmentRangeError row (beyond END_TOLERANCE_S).

Channels. The channels averaged to mono are, for a supervision in a cut, the supervision's own
channel(s) when they are channels of the cut (as lhotse's `trim_to_supervisions` gives each
supervision of a MultiCut its own channels), else the cut's channel(s) (a MonoCut whose
supervisions kept lhotse's default channel 0); for a cut without supervisions the cut's
channel(s); for a supervision of a RecordingSet its channel(s); for a whole recording all its
channels. A supervision on a channel its recording does not have is a SegmentRangeError row
that says the recording's channels. A cut's `channel` may be an int or a list; absent or None
means all the recording's channels. The segments of one audio file and one channel selection
are one plan item, so the file is decoded once for all of them.

Audio sources. `type: file` is a path: absolute, or relative, which is resolved against the
manifest's folder (not the working directory, as lhotse itself would: a manifest then reads
the same from any machine and from s3://); `type: url` is any fsspec URL (s3://, gs://,
http(s):// ...), read with the stage's storage options. A recording with several sources (one
file per channel, as AMI) is read from the source that holds every selected channel, with the
channel ids mapped to that file's own channel order; a selection spread over several files is
an UnsupportedInputError row per segment. `type: memory` is not read: its bytes cannot be
written to JSON lines (lhotse only keeps them in memory, pickles or Shar), so a JSONL manifest
that says memory has no audio to read. `command`, `shar` and other types are
UnsupportedInputError rows, one per segment.

Transforms. A recording with `transforms` is UnsupportedInputError rows, except transforms that
leave the 16 kHz signal the features analyse unchanged: `Resample` to 16 kHz or to the rate it
starts from (the stage resamples the source file to its own rate anyway; at a configured
features sample_rate above 16 kHz the analysis then sees the source's band above 8 kHz, which
lhotse's resampled audio would not hold), and `Speed`, `Tempo` or `Volume` with factor 1.

Cut types. MonoCut and MultiCut are read; MixedCut, PaddingCut and any other type are
UnsupportedInputError rows, one per supervision (or one named by the cut's id when it has
none), never a failed run. A cut without a recording (features only) is the same.

A line of a CutSet that is not a cut lhotse reads (not JSON, odd values) is that line's
InputError rows, one per supervision it names (`<manifest name>:<line>` when it is not JSON).
A RecordingSet or SupervisionSet with such a line, or a gzipped manifest cut short, is an
InputError for the whole input: the records after the damage cannot be counted, so no error
row could stand for them.

Metadata columns. `recording_id` always; `speaker`, `language`, `gender` and `text` when some
supervision has them (each can be named in features.metadata_columns either way). `custom`:
each scalar entry (string, number, bool) is a column of its own, named after its key, or
`custom_<key>` when the key is a column we write ourselves (recording_id, speaker, ..., utt_id,
source, f0 ...); entries holding lists, dicts or arrays are not carried. A cut's custom and
its supervision's custom are merged, the supervision's entries winning. The type of a custom
column is the type its values share (ints with floats: float64; anything else mixed: string).

One supervision in several cuts (overlapping cuts) is one segment when every copy is the same
range and channels; copies that differ (a supervision cut by windows) are an InputError naming
the cuts, since their rows could not be told apart.
"""
from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import InputError, SegmentRangeError, UnsupportedInputError
from ..storage import Location, not_regular
from .base import Corpus, InputFile, InputOptions, ReadContext, Reader, Recording, relative_uri
from .files import segmented_item, segmented_recording
from .manifest import PATH_COLUMNS
from .metadata import plain_value, reserved_columns, select_columns, shared_type
from .tabular import first_record, record_lines, records

INSTALL = "pip install 'timbrespace-ray[lhotse]'"
READ_CUT_TYPES = ("MonoCut", "MultiCut", "Cut")  # "Cut": MonoCut before lhotse 0.8
SUPERVISION_FIELDS = ("speaker", "language", "gender", "text")
FIXED_COLUMNS = ("recording_id",) + SUPERVISION_FIELDS
ANALYSIS_RATE = 16_000
ERRORS = {cls.__name__: cls for cls in (UnsupportedInputError, SegmentRangeError, InputError)}


# detection ------------------------------------------------------------------------------------
def _kind(doc: dict | None) -> str | None:
    """Which lhotse manifest a record belongs to (None: not a lhotse record)."""
    if not isinstance(doc, dict) or "id" not in doc or any(c in doc for c in PATH_COLUMNS):
        return None
    if isinstance(doc.get("type"), str) and doc["type"].endswith("Cut"):
        return "cuts"
    if "sources" in doc and "sampling_rate" in doc:
        return "recordings"
    if {"recording_id", "start", "duration"} <= doc.keys():
        return "supervisions"
    if {"num_features", "storage_type"} <= doc.keys():
        return "features"
    return None


def is_lhotse(first: dict) -> bool:
    """Whether the first record of a JSON lines file is a lhotse cut, recording, supervision or
    features manifest (told by its keys; a path manifest has an audio path column, lhotse
    never)."""
    return _kind(first) is not None


def _lhotse(where: str):
    try:
        import lhotse
    except ImportError:
        raise InputError(f"{where} is a lhotse manifest; reading it needs lhotse: "
                         f"{INSTALL}") from None
    return lhotse


# planning -------------------------------------------------------------------------------------
def plan_manifest(manifest: Location, options: InputOptions) -> tuple[list[dict], dict[str, str]]:
    """Plan items (one per audio file and channel selection, with all its segments, plus error
    items for what cannot be read) and the metadata columns."""
    kind = _kind(first_record(manifest))
    if kind == "supervisions":
        raise InputError(
            f"{manifest.uri} is a lhotse SupervisionSet, which holds no audio: pass the "
            f"RecordingSet as the input, with --supervisions {manifest.uri} "
            "(features.lhotse_supervisions)")
    if kind == "features":
        raise InputError(f"{manifest.uri} is a lhotse FeatureSet, which holds no audio: pass the "
                         "CutSet or the RecordingSet (with its SupervisionSet)")
    _lhotse(manifest.uri)
    planner = _Planner(manifest)
    if kind == "cuts":
        if options.supervisions:
            raise InputError(f"{manifest.uri} is a lhotse CutSet, whose cuts carry their "
                             "supervisions: --supervisions is for a RecordingSet input")
        for line, doc in record_lines(manifest):
            planner.add_cut_line(doc, line)
    else:
        _plan_recordings(planner, manifest, options)
    return planner.finish(options.metadata_columns)


def _plan_recordings(planner: "_Planner", manifest: Location, options: InputOptions) -> None:
    recordings: dict[str, tuple] = {}
    for line, doc in records(manifest):
        if _kind(doc) != "recordings":
            raise InputError(f"{manifest.uri} line {line} is not a lhotse recording "
                             f"(keys {sorted(doc)[:8]})")
        rec, transforms = _recording(doc, manifest, line)
        if rec.id in recordings:
            raise InputError(f"{manifest.uri}: two recordings have the id {rec.id!r}")
        recordings[rec.id] = (rec, transforms)
    by_recording: dict[str, list] = {}
    sup_loc = _supervisions_location(manifest, options.supervisions)
    if sup_loc is not None:
        from lhotse import SupervisionSegment

        for line, doc in records(sup_loc):
            if _kind(doc) != "supervisions":
                raise InputError(f"{sup_loc.uri} line {line} is not a lhotse supervision "
                                 f"(keys {sorted(doc)[:8]}): --supervisions names a "
                                 "SupervisionSet")
            sup = _parse(SupervisionSegment.from_dict, doc, sup_loc, line)
            by_recording.setdefault(sup.recording_id, []).append(sup)
    for rec_id, (rec, transforms) in recordings.items():
        sups = by_recording.pop(rec_id, [])
        if not sups:
            planner.add_segment(rec, transforms, None, rec.id, None, None, {"recording_id": rec.id})
        for sup in sups:
            planner.add_segment(rec, transforms, _channel_list(sup.channel), sup.id, sup.start,
                                sup.start + sup.duration, _supervision_meta(sup, {}))
    for rec_id, sups in by_recording.items():
        planner.add_error(f"{sup_loc.uri}#{rec_id}", InputError(
            f"the supervision's recording {rec_id!r} is not in the RecordingSet {manifest.uri}"),
            [(s.id, _supervision_meta(s, {})) for s in sups])


def _supervisions_location(manifest: Location, given: str | None) -> Location | None:
    """The SupervisionSet of a RecordingSet: the one given, else the file beside the
    RecordingSet named with 'supervisions' for 'recordings', when it exists."""
    if given:
        protocol = given.split("://", 1)[0] if "://" in given else "file"
        protocols = (manifest.fs.protocol,) if isinstance(manifest.fs.protocol, str) \
            else tuple(manifest.fs.protocol)
        if protocol in protocols:  # the input's filesystem, with its storage options
            loc = Location(manifest.fs, manifest.fs._strip_protocol(given))
        else:
            loc = Location.of(given)
        if not loc.exists():
            raise InputError(f"the SupervisionSet {given} (--supervisions) does not exist")
        kind = not_regular(loc)
        if kind:  # a FIFO's read would never end
            raise InputError(f"the SupervisionSet {given} (--supervisions) is {kind}, not a "
                             "file: name the SupervisionSet's file")
        return loc
    name = posixpath.basename(manifest.path)
    if "recordings" not in name:
        return None
    beside = manifest.fs.unstrip_protocol(posixpath.join(
        posixpath.dirname(manifest.path), name.replace("recordings", "supervisions")))
    loc = Location(manifest.fs, manifest.fs._strip_protocol(beside))
    return loc if loc.exists() else None


def _parse(parse, doc: dict, loc: Location, line: int):
    try:
        return parse(doc)
    except Exception as exc:  # lhotse raises TypeError, KeyError, AssertionError, ValueError
        raise InputError(f"{loc.uri} line {line} is not a lhotse manifest record lhotse can "
                         f"read: {type(exc).__name__}: {exc}") from None


def _recording(doc: dict, loc: Location, line: int):
    """(lhotse Recording, its raw transforms): transforms are parsed apart (see the module's
    docstring)."""
    from lhotse import Recording

    doc = dict(doc)
    transforms = doc.pop("transforms", None) or []
    return _parse(Recording.from_dict, doc, loc, line), transforms


def _channel_list(channel: Any) -> list[int] | None:
    if channel is None:
        return None
    if isinstance(channel, (list, tuple)):
        return [int(c) for c in channel]
    return [int(channel)]


def _supervision_meta(sup, cut_custom: dict) -> dict[str, Any]:
    meta: dict[str, Any] = {"recording_id": sup.recording_id}
    for name in SUPERVISION_FIELDS:
        value = getattr(sup, name, None)
        if value is not None:
            meta[name] = value if isinstance(value, str) else str(value)
    meta.update(_custom({**cut_custom, **(sup.custom or {})}))
    return meta


def _custom(custom: dict | None) -> dict[str, Any]:
    """The scalar entries of a `custom` dict, under their column names."""
    out: dict[str, Any] = {}
    for key, value in (custom or {}).items():
        column = f"custom_{key}" if key in FIXED_COLUMNS or key in reserved_columns() else str(key)
        out[column] = value if value is None or plain_value(value) is not None else _NotScalar
    return out


class _NotScalar:
    """Marks a custom entry that holds a list, dict or array: its column is not carried."""


def _noop_transform(raw: Any) -> bool:
    """Whether a recording transform leaves the 16 kHz signal we analyse as it is."""
    from lhotse.augmentation import AudioTransform

    try:
        transform = AudioTransform.from_dict(dict(raw))
    except Exception:
        return False
    name = type(transform).__name__
    if name == "Resample":
        return transform.target_sampling_rate in (ANALYSIS_RATE, transform.source_sampling_rate)
    if name in ("Speed", "Tempo", "Volume"):
        return float(transform.factor) == 1.0
    return False


def _transform_names(transforms: list) -> str:
    return ", ".join(str(t.get("name", t)) if isinstance(t, dict) else str(t) for t in transforms)


class _Planner:
    """Collects segments keyed by (audio file, channels) and error segments, then makes items."""

    def __init__(self, manifest: Location):
        self.manifest = manifest
        self.base = Location(manifest.fs, posixpath.dirname(manifest.path))
        self.groups: dict[tuple, dict] = {}  # key -> {"source", "channels", "error", "segments"}
        self.seen: dict[str, tuple] = {}  # utt_id -> (key, start, end, where) of read segments

    # cuts
    def add_cut_line(self, doc: dict | InputError, line: int) -> None:
        """One line of a CutSet: a line that is not a cut lhotse reads is that line's error
        rows (one per supervision it names, else one `<manifest name>:<line>`)."""
        try:
            if isinstance(doc, InputError):
                raise doc
            if _kind(doc) != "cuts":
                raise InputError(f"{self.manifest.uri} line {line} is not a lhotse cut "
                                 f"(keys {sorted(doc)[:8]})")
            segments = self.cut_segments(doc, line)
        except Exception as exc:  # lhotse raises TypeError, KeyError, ValueError... on odd values
            if not isinstance(exc, InputError):
                exc = InputError(f"{self.manifest.uri} line {line} is not a cut lhotse can read: "
                                 f"{type(exc).__name__}: {exc}")
            ids = (_other_cut_supervisions(doc) if isinstance(doc, dict) and "id" in doc
                   else [f"{posixpath.basename(self.manifest.path)}:{line}"])
            self.add_error(f"{self.manifest.uri}#line{line}", exc, [(i, {}) for i in ids])
            return
        for segment in segments:
            self.add_segment(*segment)

    def cut_segments(self, doc: dict, line: int) -> list[tuple]:
        """The add_segment arguments of a cut's segments, all checked before any is added (a
        cut is read whole or is error rows)."""
        cut_id = str(doc["id"])
        where = f"{self.manifest.uri}#{cut_id}"
        if doc["type"] not in READ_CUT_TYPES or not doc.get("recording"):
            what = (f"a lhotse {doc['type']}" if doc["type"] not in READ_CUT_TYPES
                    else "a cut without a recording (features only)")
            self.add_error(where, UnsupportedInputError(
                f"cut {cut_id} is {what}: only MonoCut and MultiCut cuts of a recording are "
                "read (mix, pad or append cuts after the features stage instead)"),
                [(sid, {}) for sid in _other_cut_supervisions(doc)])
            return []
        from lhotse.cut.set import deserialize_cut

        doc = dict(doc)
        rec, transforms = _recording(doc.pop("recording"), self.manifest, line)
        if doc.get("channel") is None:
            doc["channel"] = list(rec.channel_ids)
        cut = _parse(deserialize_cut, doc, self.manifest, line)
        cut.recording = rec
        cut_channels = _channel_list(cut.channel)
        cut_custom = dict(cut.custom or {})
        if not cut.supervisions:
            whole = cut.start == 0 and cut.duration >= rec.duration - 0.5 / rec.sampling_rate
            start, end = (None, None) if whole else (cut.start, cut.start + cut.duration)
            meta = {"recording_id": rec.id, **_custom(cut_custom)}
            return [(rec, transforms, cut_channels, cut.id, start, end, meta, where)]
        segments = []
        for sup in cut.supervisions:
            if sup.start < 0 or sup.start + sup.duration > cut.duration:
                sup = sup.trim(cut.duration)  # as lhotse clips a supervision to its cut
            channels = _channel_list(sup.channel)
            # a supervision on channels of its recording outside its cut (lhotse's default
            # channel 0 in a cut of channel 1) is read on the cut's; one on a channel its
            # recording lacks is an error row (_audio)
            if channels is None or (set(channels) <= set(rec.channel_ids)
                                    and not set(channels) <= set(cut_channels)):
                channels = cut_channels
            start = cut.start + sup.start
            segments.append((rec, transforms, channels, sup.id, start, start + sup.duration,
                             _supervision_meta(sup, cut_custom), where))
        return segments

    # segments
    def add_segment(self, rec, transforms: list, channels: list[int] | None, utt_id: str,
                    start: float | None, end: float | None, meta: dict,
                    where: str | None = None) -> None:
        utt_id = str(utt_id)
        where = where or f"{self.manifest.uri}#{rec.id}"
        try:
            source, file_channels = self._audio(rec, transforms, channels)
        except (UnsupportedInputError, SegmentRangeError, InputError) as exc:
            self.add_error(self._label(rec), exc, [(utt_id, meta)])
            return
        key = ("read", source, file_channels)
        if utt_id in self.seen:
            if self.seen[utt_id][:3] == (key, start, end):
                return  # the same supervision in another, overlapping cut
            raise InputError(
                f"{self.manifest.uri}: {utt_id!r} is two different segments (in "
                f"{self.seen[utt_id][3]} and {where}: other times or channels), whose rows "
                "could not be told apart; give each supervision once (e.g. the cuts before "
                "cut_into_windows, or after trim_to_supervisions)")
        self.seen[utt_id] = (key, start, end, where)
        group = self.groups.setdefault(key, {"source": source, "channels": file_channels,
                                             "error": None, "segments": []})
        group["segments"].append((utt_id, start, end, meta))

    def add_error(self, source: str, exc: Exception, segments: list[tuple[str, dict]]) -> None:
        key = ("error", source, type(exc).__name__, str(exc))
        group = self.groups.setdefault(key, {"source": source, "channels": None,
                                             "error": [type(exc).__name__, str(exc)],
                                             "segments": []})
        group["segments"] += [(str(utt_id), None, None, meta) for utt_id, meta in segments]

    def _label(self, rec) -> str:
        for src in rec.sources:
            if src.type in ("file", "url") and isinstance(src.source, str):
                return relative_uri(self.base, src.source)[0]
        return f"{self.manifest.uri}#{rec.id}"

    def _audio(self, rec, transforms: list, channels: list[int] | None
               ) -> tuple[str, tuple[int, ...]]:
        """(URI of the file, its channel indices) holding `channels` of `rec`."""
        changing = [t for t in transforms if not _noop_transform(t)]
        if changing:
            raise UnsupportedInputError(
                f"recording {rec.id} has transforms ({_transform_names(changing)}) that change "
                "its samples; only Resample to 16 kHz is read (compute features of the original "
                "recordings, without speed or volume perturbation)")
        wanted = list(rec.channel_ids) if channels is None else channels
        unknown = [c for c in wanted if c not in rec.channel_ids]
        if unknown or not wanted:
            raise SegmentRangeError(
                f"channel(s) {unknown or wanted} asked for in recording {rec.id}, which has "
                f"channel(s) {list(rec.channel_ids)}; fix the supervision's channel")
        holders = [s for s in rec.sources if set(wanted) <= set(s.channels)]
        if not holders:
            raise UnsupportedInputError(
                f"recording {rec.id}: channels {wanted} are in several source files; only "
                "channels of one file are read together (select one channel per supervision)")
        src = holders[0]
        if src.type not in ("file", "url") or not isinstance(src.source, str):
            reason = (" (audio bytes cannot be stored in JSON lines)" if src.type == "memory"
                      else "")
            raise UnsupportedInputError(
                f"recording {rec.id} has a lhotse audio source of type {src.type!r}{reason}; "
                "only 'file' and 'url' sources are read")
        uri = relative_uri(self.base, src.source)[0]
        return uri, tuple(src.channels.index(c) for c in wanted)

    # items
    def finish(self, keep) -> tuple[list[dict], dict[str, str]]:
        # an unreadable copy of a segment that is also read (a supervision of a MixedCut that a
        # MonoCut also holds) is not a second row
        done = set(self.seen)
        for group in self.groups.values():
            if group["error"] is not None:
                unique = []
                for segment in group["segments"]:
                    if segment[0] not in done:
                        done.add(segment[0])
                        unique.append(segment)
                group["segments"] = unique
        groups = [g for g in self.groups.values() if g["segments"]]
        available, present = _column_types(s[3] for g in groups for s in g["segments"])
        where = f"lhotse manifest {self.manifest.uri}"
        if keep is None:
            keep = [n for n in available if n in present and available[n] is not None]
        columns = select_columns(available, keep, where)
        names = list(columns)
        items = []
        for group in groups:
            segments = [[u, s, e, [m.get(n) for n in names]] for u, s, e, m in group["segments"]]
            fields = {"channels": None if group["channels"] is None else list(group["channels"])}
            if group["error"] is not None:
                fields["error"] = group["error"]
            items.append(segmented_item(LhotseReader, group["source"], names, segments, **fields))
        return items, columns


def _column_types(metas) -> tuple[dict[str, str | None], set[str]]:
    """(every candidate column -> its plain type, None for non-scalars; the columns that some
    segment has a value for)."""
    types: dict[str, set] = {name: {"string"} for name in FIXED_COLUMNS}
    present: set[str] = {"recording_id"}
    for meta in metas:
        for name, value in meta.items():
            seen = types.setdefault(name, set())
            if value is None:
                continue
            present.add(name)
            seen.add(None if value is _NotScalar else plain_value(value))
    return {name: shared_type(seen) for name, seen in types.items()}, present


def _other_cut_supervisions(doc: dict) -> list[str]:
    """The supervision ids of a cut we do not read (one row each), else the cut's id."""
    try:
        if doc.get("type") == "MixedCut":
            from lhotse.cut import MixedCut

            ids = [s.id for s in MixedCut.from_dict(json.loads(json.dumps(doc))).supervisions]
        else:
            ids = [s["id"] for s in doc.get("supervisions") or []]
    except Exception:
        ids = []
    return list(dict.fromkeys(str(i) for i in ids)) or [str(doc["id"])]


# reading --------------------------------------------------------------------------------------
class LhotseReader(Reader):
    name = "lhotse"
    describes = "lhotse manifests (.jsonl/.jsonl.gz)"
    extensions = (".jsonl", ".jsonl.gz")
    priority = 1  # before the JSON lines manifest (json_lines.py): told apart by the first record
    in_folders = False  # it names files that its folder may hold too

    @classmethod
    def recognises(cls, loc: Location, options: InputOptions) -> bool:
        return super().recognises(loc, options) and is_lhotse(first_record(loc))

    @classmethod
    def plan(cls, files: Iterable[InputFile], root: Location, options: InputOptions) -> Corpus:
        (manifest,) = files
        return Corpus(*plan_manifest(manifest.loc, options))

    @classmethod
    def read(cls, item: dict, ctx: ReadContext) -> Iterator[Recording]:
        recording = segmented_recording(item, ctx)
        if item.get("error"):
            kind, message = item["error"]
            recording.open = None
            recording.error = ERRORS.get(kind, UnsupportedInputError)(message)
        yield recording
