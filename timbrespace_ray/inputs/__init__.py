"""Finding a corpus's utterances, whatever form it ships in.

Each input form is a `Reader` (base.py): on the driver it recognises its input and plans it
into items (discovery.py asks the registered readers in turn), on a worker it turns one item
back into `Recording`s with their segments and metadata. A new form is one module here,
imported below so that its reader registers. Forms: audio files (files.py), tar/WebDataset
shards (tar.py), path or segment manifests (manifest.py; JSON lines ones, NeMo's included, in
json_lines.py), Common Voice release tables (common_voice.py), Parquet audio datasets
(audio_dataset.py) and lhotse manifests (lhotse.py). A folder's AudioFolder metadata
(audiofolder.py) is read with its audio files.
"""
# imported so that their readers register
from . import audio_dataset, common_voice, files, json_lines, lhotse, manifest, tar  # noqa: F401
from ..errors import (DatasetShardError, InputError, MissingAudioError, SegmentRangeError,
                      TarShardError, UnsupportedInputError)
from .base import (END_TOLERANCE_S, Corpus, InputOptions, ReadContext, Reader, Recording, Segment,
                   read_item)
from .discovery import discover

__all__ = ["Corpus", "DatasetShardError", "END_TOLERANCE_S", "InputError", "InputOptions",
           "MissingAudioError", "ReadContext", "Reader", "Recording", "Segment",
           "SegmentRangeError", "TarShardError", "UnsupportedInputError", "discover", "read_item"]
