"""One picture of a k-means model: frames projected on their first two principal components,
coloured by cluster, beside the size of every cluster."""
from __future__ import annotations

import numpy as np

from .fit import fit_reducer, sample_indices

PLOT_FILE = "clusters.png"
PLOT_SAMPLE = 20_000


def plot_clusters(x: np.ndarray, labels: np.ndarray, centers: np.ndarray, save_path: str, *,
                  sample_size: int = PLOT_SAMPLE, seed: int = 0, title: str | None = None):
    """Write a PNG of a seeded sample of frames `x` (any dims >= 2) in PCA coordinates,
    coloured by `labels`, with the centres marked, and a bar chart of the cluster sizes.
    Returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels)
    k = centers.shape[0]
    picks = sample_indices(x.shape[0], sample_size, seed)
    xs, ls = x[picks], labels[picks]
    pca = fit_reducer(xs, "pca", 2, seed)
    xy, cxy = pca.transform(xs), pca.transform(centers)
    # neighbouring cluster ids get distant hues, so adjacent clusters stay distinguishable
    colours = plt.get_cmap("turbo")(((np.arange(k) * 0.381966) % 1.0) * 0.9 + 0.05)
    sizes = np.bincount(labels, minlength=k)

    fig, (ax, bars) = plt.subplots(1, 2, figsize=(16, 7), gridspec_kw={"width_ratios": [1.1, 1]})
    order = np.random.default_rng(seed).permutation(xy.shape[0])  # no cluster painted on top
    ax.scatter(xy[order, 0], xy[order, 1], c=colours[ls[order]], s=3, alpha=0.5, linewidths=0)
    ax.scatter(cxy[:, 0], cxy[:, 1], marker="x", c="black", s=22, linewidths=1,
               label="cluster centres")
    ratio = pca.explained_variance_ratio
    share = 100 * sizes / max(1, sizes.sum())
    # identical frames (silence is all zeros) pile up on one dot: name the largest clusters
    for c in np.argsort(sizes)[::-1][:3]:
        ax.annotate(f"{c}: {share[c]:.1f}%", cxy[c], xytext=(6, 6), textcoords="offset points",
                    fontsize=9, weight="bold",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8})
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% of variance)")
    ax.set_title(f"{xs.shape[0]:,} of {x.shape[0]:,} frames, coloured by cluster "
                 "(labels: largest clusters, id: share)")
    ax.legend(loc="upper right", fontsize=9)
    ax.grid(alpha=0.3)

    bars.bar(np.arange(k), share, width=1.0, color=colours, edgecolor="none")
    bars.set_yscale("log")  # one silence cluster can hold 20% of the frames and flatten the rest
    bars.axhline(100 / k, color="black", lw=1, ls="--", label=f"uniform ({100 / k:.2f}%)")
    bars.set_xlim(-0.5, k - 0.5)
    bars.set_xlabel("cluster id")
    bars.set_ylabel("share of frames (%, log scale)")
    bars.set_title(f"cluster sizes (k = {k}, {int((sizes == 0).sum())} empty)")
    bars.legend(loc="upper right", fontsize=9)
    bars.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(save_path, dpi=110)
    plt.close(fig)
    return fig
