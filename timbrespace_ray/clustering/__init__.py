"""k-means over weighted prosodic frames, and the tokens it assigns."""
from .fit import (DEFAULT_METHOD, METHODS, FitResult, UMAPReducer, best_fit, fit_cuml,
                  fit_kmeans, fit_reducer, fit_restarts, sample_frames, sample_indices,
                  select_backend)
from .model import FEATURE_WEIGHTS, KMeansModel, PCAReducer, weighted_frames
from .pipeline import ArrayClass, ClusteringPipeline, ProsodicClusterSequences, write_model_dir
from .plot import plot_clusters
from .quality import assessment, cluster_quality, feature_importance, format_report, write_quality

__all__ = [
    "DEFAULT_METHOD",
    "FEATURE_WEIGHTS",
    "METHODS",
    "ArrayClass",
    "ClusteringPipeline",
    "FitResult",
    "KMeansModel",
    "PCAReducer",
    "ProsodicClusterSequences",
    "UMAPReducer",
    "assessment",
    "best_fit",
    "cluster_quality",
    "feature_importance",
    "fit_cuml",
    "fit_kmeans",
    "fit_reducer",
    "fit_restarts",
    "format_report",
    "plot_clusters",
    "sample_frames",
    "sample_indices",
    "select_backend",
    "weighted_frames",
    "write_model_dir",
    "write_quality",
]
