"""Finding a corpus's utterances, whatever form it ships in.

Each input form is a `Reader` (base.py): on the driver it plans items from the input's
listing or schema (discovery.py), on a worker it turns one item back into `Recording`s with
their segments and metadata. Forms: audio files (files.py), tar/WebDataset shards (tar.py),
path or segment manifests (manifest.py), Parquet audio datasets (audio_dataset.py) and lhotse
manifests (lhotse.py).
"""
from . import audio_dataset, files, lhotse, manifest, tar  # noqa: F401  (register the readers)
from ..errors import (DatasetShardError, InputError, MissingAudioError, SegmentRangeError,
                      TarShardError, UnsupportedInputError)
from .base import END_TOLERANCE_S, InputOptions, ReadContext, Reader, Recording, Segment, read_item
from .discovery import Corpus, discover

__all__ = ["Corpus", "DatasetShardError", "END_TOLERANCE_S", "InputError", "InputOptions",
           "MissingAudioError", "ReadContext", "Reader", "Recording", "Segment",
           "SegmentRangeError", "TarShardError", "UnsupportedInputError", "discover", "read_item"]
