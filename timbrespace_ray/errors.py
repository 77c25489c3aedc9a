"""Typed errors: every failure a user can cause has its own class and an actionable message.

The pipeline turns these into rows of the errors table (`error_type` is the class name), so the
names are part of the public contract.
"""


def one_line(text: str) -> str:
    """`text` on one line, its runs of whitespace as single spaces: an error message or row
    is one line, whatever a library's text (pyarrow's and libsndfile's span several)."""
    return " ".join(text.split())


class TimbrespaceError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 2  # of the command line that stops on it


class InvalidAudioError(TimbrespaceError, ValueError):
    """The samples cannot be analysed: NaN/inf values, wrong dimensions, wrong dtype."""


class AudioDecodeError(TimbrespaceError):
    """The bytes are not audio that libsndfile can decode (corrupt, truncated, not audio)."""


class AudioReadError(TimbrespaceError, OSError):
    """The file could not be read at all (missing, permission denied, storage error)."""


class StorageError(TimbrespaceError, OSError):
    """A location could not be written (read-only, full, no permission, refused credentials)."""


class EmptyAudioError(TimbrespaceError):
    """The file decodes to no samples at all."""


class FileTooLargeError(TimbrespaceError):
    """The file (or tar member) is larger than features.max_file_bytes."""


class AudioTooLongError(TimbrespaceError):
    """The recording exceeds the configured maximum duration."""


class UnsupportedSampleRateError(TimbrespaceError, ValueError):
    """A sample rate that the features are not defined for (see FeatureConfig)."""


class ConfigError(TimbrespaceError, ValueError):
    """A configuration key or value is invalid."""


class TooFewLabelsError(ConfigError):
    """The utterances to evaluate carry fewer than two values of the label."""


class ModelFormatError(TimbrespaceError, ValueError):
    """A model file does not have the expected layout."""


class WorkerLostError(TimbrespaceError):
    """A unit's worker process died again and again while running it: the stage stops."""


class InputError(TimbrespaceError):
    """The input location, manifest or dataset cannot be used."""


class TarShardError(TimbrespaceError):
    """A tar shard (or the rest of it, from some member on) cannot be read."""


class MetadataError(TimbrespaceError):
    """A sample's metadata cannot be kept as it is written: an unreadable sidecar, a key named
    like a column of ours, or a value that its column's type cannot hold."""


class DatasetShardError(TimbrespaceError):
    """A Parquet audio dataset shard (its footer, or the pages of one of its row groups) cannot
    be read: damaged or truncated."""


class MissingAudioError(TimbrespaceError):
    """A dataset row holds no audio: its audio cell is null, or has neither bytes nor a path."""


class SegmentRangeError(TimbrespaceError):
    """A segment starts before its recording, ends after it, ends before it starts, has an
    infinite bound, or names a channel its recording does not have."""


class UnsupportedInputError(TimbrespaceError):
    """An input uses a feature of its format that the pipeline does not read (e.g. a lhotse
    recording with transforms, or a cut that mixes several recordings)."""


class UpstreamIncompleteError(TimbrespaceError):
    """A stage's input stage has not finished."""


class StageFailedError(TimbrespaceError):
    """Every input of a stage failed, or more than its share allowed (features.max_error_share):
    the rows that came out are kept, but the stage is not finished, and a stage that reads it
    stops with this error too."""

    exit_code = 4


class NoPitchTrackError(TimbrespaceError):
    """The features table has no usable pitch_hz track to profile."""


class NoLevelsError(TimbrespaceError):
    """The features table has no speech and noise levels (speech_level_db, noise_level_db) to
    profile."""


class InconsistentPartsError(TimbrespaceError):
    """An utterance of an embeddings part is missing from the same-named tokens or features
    part."""


class InspectionError(TimbrespaceError):
    """The output folder holds no run, or a stage name is unknown."""
