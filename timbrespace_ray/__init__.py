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

__all__ = [
    "AudioDecodeError",
    "AudioReadError",
    "AudioTooLongError",
    "ConfigError",
    "FeatureConfig",
    "InvalidAudioError",
    "ModelFormatError",
    "ProsodicFeatureExtractor",
    "TimbrespaceError",
    "UnsupportedSampleRateError",
    "__version__",
]
