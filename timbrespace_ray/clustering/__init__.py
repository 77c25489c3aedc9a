"""k-means over weighted prosodic frames, and the tokens it assigns."""
from .model import FEATURE_WEIGHTS, KMeansModel, weighted_frames

__all__ = ["FEATURE_WEIGHTS", "KMeansModel", "weighted_frames"]
