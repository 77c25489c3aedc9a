"""timbrespace_ray: Timbrespace prosodic features, tokens and embeddings at corpus scale."""
import logging

from .errors import (
    AudioDecodeError,
    AudioReadError,
    AudioTooLongError,
    ConfigError,
    InvalidAudioError,
    ModelFormatError,
    TimbrespaceError,
    UnsupportedSampleRateError,
)
from .features.config import FeatureConfig
from .features.extractor import ProsodicFeatureExtractor

__version__ = "0.2.0"

# the stages say what they do through module loggers; a library user hears it only by
# configuring logging (the command line installs its own handler)
logging.getLogger(__name__).addHandler(logging.NullHandler())

# torch-backed classes load on first use, so that `import timbrespace_ray` stays light for
# feature extraction workers
_LAZY = {
    "ProsodicSequenceEncoder": "timbrespace_ray.encoder",
    "ClusteringPipeline": "timbrespace_ray.clustering",
    "ProsodicClusterSequences": "timbrespace_ray.clustering",
    "ArrayClass": "timbrespace_ray.clustering",
    "KMeansModel": "timbrespace_ray.clustering",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'timbrespace_ray' has no attribute {name!r}")


__all__ = [
    "ArrayClass",
    "AudioDecodeError",
    "AudioReadError",
    "AudioTooLongError",
    "ClusteringPipeline",
    "ConfigError",
    "FeatureConfig",
    "InvalidAudioError",
    "KMeansModel",
    "ModelFormatError",
    "ProsodicClusterSequences",
    "ProsodicFeatureExtractor",
    "ProsodicSequenceEncoder",
    "TimbrespaceError",
    "UnsupportedSampleRateError",
    "__version__",
]
