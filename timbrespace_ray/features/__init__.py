"""The six Timbrespace prosodic features (spec: prosodic-features.md)."""
from .analysis import FEATURE_NAMES, analyse
from .config import FeatureConfig
from .extractor import ProsodicFeatureExtractor

__all__ = ["FEATURE_NAMES", "FeatureConfig", "ProsodicFeatureExtractor", "analyse"]
