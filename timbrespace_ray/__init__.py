"""timbrespace_ray: Timbrespace prosodic features, tokens and embeddings at corpus scale."""
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

__version__ = "0.1.0"

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
