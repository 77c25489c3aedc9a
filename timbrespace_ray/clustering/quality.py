"""How good a k-means partition is: `quality.json` and a `report.txt` for people.

The report keeps the sections of the original toolkit's report (configuration, cluster
distribution, quality metrics, feature importance, assessment). Definitions, all computed in
float64 over every frame unless said otherwise:

- inertia: sum over frames of the squared distance to the frame's model centre.
- silhouette: scikit-learn's, on a seeded uniform sample (default 20,000 frames); also its std
  and the mean per cluster.
- Calinski-Harabasz and Davies-Bouldin: scikit-learn's definitions (they use the mean of each
  cluster's frames as its centroid and ignore empty clusters), computed here from per-cluster
  sums in two passes so that millions of frames cost seconds.
- size balance: min/max ratio of the non-empty cluster sizes, and their coefficient of variation
  (std/mean over all k clusters, the original's "balance ratio").
- entropy of the cluster-size distribution in bits, and the effective number of clusters
  2**entropy (= exp of the entropy in nats).
- intra-cluster distance of a cluster: mean Euclidean distance of its frames to its centre;
  inter-cluster distances: between centres. Separation ratio of a cluster: distance to the
  nearest other centre over the sum of the two clusters' intra-cluster distances (> 1: the two
  mean radii do not overlap).
- BIC and AIC of the partition read as a hard-assignment mixture of spherical Gaussians with one
  shared variance (the maximum-likelihood one, inertia / (frames * dims)); free parameters:
  k * dims means, k - 1 weights, 1 variance. Lower is better.
- feature importance: see `feature_importance`.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from ..features.analysis import FEATURE_NAMES
from .fit import sample_indices

QUALITY_FILE = "quality.json"
REPORT_FILE = "report.txt"
SILHOUETTE_SAMPLE = 20_000
_CHUNK = 1 << 20  # rows per pass step: bounds the temporary (chunk, dims) float64 arrays
# assessment thresholds (silhouette bands as commonly read; balance and usage as in the report)
GOOD_SILHOUETTE, FAIR_SILHOUETTE = 0.5, 0.25
IMBALANCED_CV = 1.0
UNDERUSED_EFFECTIVE_SHARE = 0.6


def feature_importance(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(global (dims,), per cluster (k, dims)) importance of each feature, from the centres alone.

    A feature matters as much as the centres spread along it: with D[c, f] the squared
    deviation of centre c from the mean of the centres along feature f, the global importance
    is sum_c D[:, f] normalised to sum 1 (each feature's share of the centres' variance), and
    a cluster's importance is its row D[c] normalised to sum 1 (which features set that centre
    apart). On the published model's centres the global vector equals its stored
    `feature_importance`. Rows of a centre sitting exactly on the mean are uniform.
    """
    c = np.asarray(centers, dtype=np.float64)
    dev = (c - c.mean(axis=0)) ** 2
    total = dev.sum()
    overall = dev.sum(axis=0) / total if total > 0 else np.full(c.shape[1], 1.0 / c.shape[1])
    rows = dev.sum(axis=1, keepdims=True)
    per_cluster = np.divide(dev, rows, out=np.full_like(dev, 1.0 / c.shape[1]), where=rows > 0)
    return overall, per_cluster


def cluster_quality(x: np.ndarray, labels: np.ndarray, centers: np.ndarray, *,
                    feature_centers: np.ndarray | None = None,
                    feature_names: tuple[str, ...] = FEATURE_NAMES,
                    silhouette_sample: int = SILHOUETTE_SAMPLE, seed: int = 0) -> dict:
    """Quality metrics (JSON-ready) of the partition `labels` of frames `x` around `centers`.

    `feature_centers` are the centres in the named-feature space when `x` is a reduced space
    (the importance is about features, not PCA components); by default `centers` itself.
    """
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    centers = np.asarray(centers, dtype=np.float64)
    n, k = x.shape[0], centers.shape[0]
    if labels.shape != (n,) or n == 0 or centers.shape[1] != x.shape[1]:
        raise ValueError(f"need labels for every frame and centres of the frames' dims; got x "
                         f"{x.shape}, labels {labels.shape}, centres {centers.shape}")
    sizes = np.bincount(labels, minlength=k)
    if sizes.shape[0] != k:
        raise ValueError(f"labels go up to {sizes.shape[0] - 1} but there are {k} centres")
    present = sizes > 0
    sums = np.stack([np.bincount(labels, weights=x[:, f], minlength=k)
                     for f in range(x.shape[1])], axis=1)
    means = sums / np.maximum(sizes, 1)[:, None]
    to_centre = _distances(x, labels, centers)
    to_mean = _distances(x, labels, means)
    intra = np.bincount(labels, weights=to_centre, minlength=k) / np.maximum(sizes, 1)
    inertia = float(np.dot(to_centre, to_centre))
    importance, per_cluster = feature_importance(
        centers if feature_centers is None else feature_centers)
    return {
        "n_samples": int(n),
        "n_clusters": int(k),
        "n_dims": int(x.shape[1]),
        "feature_names": list(feature_names),
        "cluster_sizes": sizes.tolist(),
        **_size_stats(sizes),
        "inertia": inertia,
        "inertia_per_sample": inertia / n,
        "silhouette": _silhouette(x, labels, k, silhouette_sample, seed),
        "calinski_harabasz": _calinski_harabasz(sizes[present], means[present], x, to_mean),
        "davies_bouldin": _davies_bouldin(
            np.bincount(labels, weights=to_mean, minlength=k)[present] / sizes[present],
            means[present]),
        **_information_criteria(n, x.shape[1], sizes[present], inertia),
        **_distance_stats(centers, intra, present),
        "feature_importance": importance.tolist(),
        "cluster_feature_importance": per_cluster.tolist(),
    }


def _distances(x: np.ndarray, labels: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Euclidean distance (float64) of every frame to points[its label], in bounded chunks."""
    out = np.empty(x.shape[0])
    for i in range(0, x.shape[0], _CHUNK):
        diff = x[i : i + _CHUNK] - points[labels[i : i + _CHUNK]]
        out[i : i + _CHUNK] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def _size_stats(sizes: np.ndarray) -> dict:
    n, k = int(sizes.sum()), sizes.shape[0]
    p = sizes[sizes > 0] / n
    entropy_bits = float(-(p * np.log2(p)).sum())
    return {
        "size": {
            "min": int(sizes.min()), "max": int(sizes.max()),
            "mean": float(sizes.mean()), "std": float(sizes.std()),
            "cv": float(sizes.std() / sizes.mean()),
            "min_max_ratio": float(sizes[sizes > 0].min() / sizes.max()),
            "largest_share": float(sizes.max() / n), "smallest_share": float(sizes.min() / n),
            "empty_clusters": int(k - p.size),
        },
        "entropy_bits": entropy_bits,
        "effective_n_clusters": float(2.0 ** entropy_bits),
    }


def _silhouette(x, labels, k, sample, seed) -> dict:
    from sklearn.metrics import silhouette_samples

    picks = sample_indices(x.shape[0], sample, seed)
    xs, ls = x[picks], labels[picks]
    used = np.unique(ls)
    if not 2 <= used.size < xs.shape[0]:
        return {"mean": None, "std": None, "sample_size": int(xs.shape[0]), "seed": seed,
                "per_cluster": [None] * k}
    s = silhouette_samples(xs, ls)
    per_cluster = [None] * k
    for c in used:
        per_cluster[int(c)] = float(s[ls == c].mean())
    return {"mean": float(s.mean()), "std": float(s.std()), "sample_size": int(xs.shape[0]),
            "seed": seed, "per_cluster": per_cluster}


def _calinski_harabasz(sizes, means, x, to_mean) -> float | None:
    n, k = int(sizes.sum()), sizes.shape[0]
    if not 1 < k < n:
        return None
    between = float(np.dot(sizes, ((means - x.mean(axis=0, dtype=np.float64)) ** 2).sum(axis=1)))
    within = float(np.dot(to_mean, to_mean))
    return between * (n - k) / (within * (k - 1)) if within > 0 else 1.0


def _davies_bouldin(scatter, means) -> float | None:
    if means.shape[0] < 2:
        return None
    gaps = np.sqrt(((means[:, None, :] - means[None, :, :]) ** 2).sum(axis=2))
    if np.allclose(scatter, 0) or np.allclose(gaps, 0):
        return 0.0
    gaps[gaps == 0] = np.inf
    ratio = (scatter[:, None] + scatter[None, :]) / gaps
    return float(ratio.max(axis=1).mean())


def _information_criteria(n: int, dims: int, sizes: np.ndarray, inertia: float) -> dict:
    variance = max(inertia / (n * dims), np.finfo(float).tiny)
    log_lik = (float(np.dot(sizes, np.log(sizes / n)))
               - n * dims / 2 * (math.log(2 * math.pi * variance) + 1))
    n_params = sizes.shape[0] * dims + sizes.shape[0] - 1 + 1
    bic = -2 * log_lik + n_params * math.log(n)
    aic = -2 * log_lik + 2 * n_params
    return {"bic": bic, "aic": aic, "bic_per_sample": bic / n, "aic_per_sample": aic / n}


def _distance_stats(centers, intra, present) -> dict:
    k = centers.shape[0]
    gaps = np.sqrt(((centers[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2))
    pair = gaps[np.triu_indices(k, 1)]
    np.fill_diagonal(gaps, np.inf)
    nearest = gaps.argmin(axis=1)
    radii = intra[present] + intra[nearest[present]]
    separation = np.where(radii > 0, gaps[present, nearest[present]] / np.maximum(radii, 1e-300),
                          np.inf)
    finite = separation[np.isfinite(separation)]
    return {
        "intra_cluster_distance": {"mean": float(intra[present].mean()),
                                   "std": float(intra[present].std()),
                                   "max": float(intra[present].max()),
                                   "per_cluster": [float(v) if p else None
                                                   for v, p in zip(intra, present)]},
        "inter_cluster_distance": ({"mean": float(pair.mean()), "std": float(pair.std()),
                                    "min": float(pair.min()), "max": float(pair.max())}
                                   if pair.size else None),
        "separation_ratio": ({"mean": float(finite.mean()), "std": float(finite.std()),
                              "min": float(finite.min()), "max": float(finite.max())}
                             if finite.size else None),
    }


def assessment(q: dict) -> dict:
    """An overall rating with observations and advice, by fixed rules on the metrics.

    Rating: GOOD for silhouette >= 0.5, FAIR for >= 0.25, else POOR; one step lower when fewer
    than 60% of the clusters are effectively used (effective number / k).
    """
    sil = q["silhouette"]["mean"]
    size = q["size"]
    used = q["effective_n_clusters"] / q["n_clusters"]
    levels = ["POOR", "FAIR", "GOOD"]
    level = 0 if sil is None else 2 if sil >= GOOD_SILHOUETTE else int(sil >= FAIR_SILHOUETTE)
    observations, advice = [], []
    if sil is None:
        observations.append("Silhouette undefined (fewer than two clusters in the sample)")
    elif sil >= FAIR_SILHOUETTE:
        observations.append(f"Good cluster separation (Silhouette >= {FAIR_SILHOUETTE})")
    else:
        observations.append(f"Weak cluster separation (Silhouette < {FAIR_SILHOUETTE})")
        advice.append("Clusters overlap: consider fewer clusters or a different feature weighting")
    if size["cv"] > IMBALANCED_CV:
        observations.append(f"Imbalanced cluster sizes (CV {size['cv']:.2f} > {IMBALANCED_CV})")
        advice.append("Large clusters (often silence/unvoiced frames) dominate: consider "
                      "subsampling them before fitting")
    if used < UNDERUSED_EFFECTIVE_SHARE:
        level = max(0, level - 1)
        observations.append(f"Many clusters may be underutilized (effective "
                            f"{q['effective_n_clusters']:.1f} of {q['n_clusters']})")
        advice.append("Consider reducing the number of clusters to improve utilization")
    if size["empty_clusters"]:
        observations.append(f"{size['empty_clusters']} empty clusters")
        advice.append("Empty clusters: refit with another seed or more restarts")
    if not advice:
        advice.append("No change needed by these rules")
    return {"rating": levels[level], "observations": observations, "recommendations": advice}


def format_report(q: dict, config: dict) -> str:
    """The human-readable report.txt text of a quality dict and the model's configuration."""
    rule = "-" * 30
    size = q["size"]
    sil = q["silhouette"]
    out = ["=" * 60, "PROSODIC FRAME CLUSTERING ANALYSIS REPORT", "=" * 60, "",
           "MODEL CONFIGURATION:"]
    out += [f"{key.replace('_', ' ').capitalize()}: {value}" for key, value in config.items()
            if not isinstance(value, (dict, list))]
    out += [f"Total training samples: {q['n_samples']}", "", "CLUSTER DISTRIBUTION:", rule]
    n = q["n_samples"]
    out += [f"Cluster {c}: {s} samples ({100 * s / n:.2f}%)"
            for c, s in enumerate(q["cluster_sizes"])]
    out += ["", f"Total samples: {n}", "Cluster membership statistics:",
            f"  Min:  {size['min']} ({100 * size['smallest_share']:.2f}%)",
            f"  Max:  {size['max']} ({100 * size['largest_share']:.2f}%)",
            f"  Mean: {size['mean']:.2f}", f"  Std:  {size['std']:.2f}", "",
            "CLUSTERING QUALITY METRICS:", rule, "Overall Quality Scores:",
            f"  Silhouette Score: {_num(sil['mean'])} (range: -1 to 1, higher is better; "
            f"{sil['sample_size']} sampled frames)",
            f"  Silhouette Score Std: {_num(sil['std'])}",
            f"  Calinski-Harabasz Score: {_num(q['calinski_harabasz'], 2)} (higher is better)",
            f"  Davies-Bouldin Score: {_num(q['davies_bouldin'])} (lower is better)",
            f"  Inertia (WCSS): {q['inertia']:.2f} (lower is better)",
            f"  BIC: {q['bic']:.2f} (lower is better)",
            f"  AIC: {q['aic']:.2f} (lower is better)",
            f"  BIC per sample: {q['bic_per_sample']:.4f}",
            f"  AIC per sample: {q['aic_per_sample']:.4f}", ""]
    intra, inter, sep = (q["intra_cluster_distance"], q["inter_cluster_distance"],
                         q["separation_ratio"])
    out += ["Distance Metrics:",
            f"  Avg Intra-cluster Distance: {intra['mean']:.4f} ± {intra['std']:.4f}",
            f"  Max Intra-cluster Distance: {intra['max']:.4f}"]
    if inter:
        out += [f"  Avg Inter-cluster Distance: {inter['mean']:.4f} ± {inter['std']:.4f}",
                f"  Min Inter-cluster Distance: {inter['min']:.4f}"]
    if sep:
        out += ["", "Cluster Separation Metrics:",
                f"  Avg Separation Ratio: {sep['mean']:.4f} ± {sep['std']:.4f}",
                f"  Min/Max Separation Ratio: {sep['min']:.4f} / {sep['max']:.4f}"]
    out += ["", "Cluster Balance Metrics:",
            f"  Cluster Size Range: {size['min']} - {size['max']} samples",
            f"  Cluster Size Mean ± Std: {size['mean']:.1f} ± {size['std']:.1f}",
            f"  Cluster Balance Ratio (CV): {size['cv']:.4f} (lower is more balanced)",
            f"  Min/Max Size Ratio: {size['min_max_ratio']:.4f} (higher is more balanced)",
            f"  Largest Cluster: {100 * size['largest_share']:.2f}% of data",
            f"  Smallest Cluster: {100 * size['smallest_share']:.2f}% of data",
            f"  Empty Clusters: {size['empty_clusters']}",
            f"  Effective Number of Clusters: {q['effective_n_clusters']:.2f}",
            f"  Cluster Entropy: {q['entropy_bits']:.4f} bits", ""]
    scored = [(s, c) for c, s in enumerate(sil["per_cluster"]) if s is not None]
    if scored:
        scored.sort(reverse=True)
        out += ["Per-Cluster Silhouette Scores:", "  Best performing clusters:"]
        out += [f"    Cluster {c}: {s:.4f}" for s, c in scored[:10]]
        out += ["  Worst performing clusters:"]
        out += [f"    Cluster {c}: {s:.4f}" for s, c in scored[-5:]]
        out.append("")
    names = q["feature_names"]
    out += ["FEATURE IMPORTANCE ANALYSIS:", rule,
            "(share of the centres' spread along each feature; see quality.py)",
            "Features by importance:"]
    out += [f"  {r}. {names[f]}: {v:.4f}" for r, (v, f) in
            enumerate(sorted(((v, f) for f, v in enumerate(q["feature_importance"])),
                             reverse=True), 1)]
    out += ["", "Feature Importance by Cluster (10 largest clusters):"]
    for c in np.argsort(q["cluster_sizes"])[::-1][:10]:
        row = q["cluster_feature_importance"][c]
        out += ["", f"  Cluster_{c}:"]
        out += [f"    {r}. {names[f]}: {row[f]:.4f}"
                for r, f in enumerate(np.argsort(row)[::-1][:5], 1)]
    verdict = assessment(q)
    out += ["", "QUALITY ASSESSMENT SUMMARY:", rule,
            f"Overall Quality Assessment: {verdict['rating']}", "", "Key Observations:"]
    out += [f"  • {o}" for o in verdict["observations"]]
    out += ["", "Recommendations:"] + [f"  • {r}" for r in verdict["recommendations"]]
    out += ["", "Model Selection Notes:",
            "  • Compare BIC across numbers of clusters on the same frames: lower is better",
            "  • Silhouette is estimated on a sample; CH, DB and inertia use every frame", ""]
    return "\n".join(out)


def _num(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_quality(model_dir: str, q: dict, config: dict) -> None:
    """Write quality.json (the metrics, the assessment and `config`) and report.txt."""
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, QUALITY_FILE), "w") as fh:
        json.dump({**q, "assessment": assessment(q), "config": config}, fh, indent=1)
    with open(os.path.join(model_dir, REPORT_FILE), "w") as fh:
        fh.write(format_report(q, config))
