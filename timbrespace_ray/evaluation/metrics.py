"""How well cosine scores between per-utterance vectors tell a label apart (plain numpy).

Two views of the same question. Verification: every pair of utterances is a trial, a target
when both carry the same label; ROC AUC and the equal error rate say how well the cosine score
separates target from non-target trials. Retrieval: leave-one-out 1-NN accuracy, whether each
utterance's nearest other utterance carries its label. Memory stays bounded whatever the number
of utterances: pairs are sampled beyond `max_pairs`, and score matrices are built in row blocks.

Standard errors. The trials of one label (speaker) are not independent of one another: a
speaker who is easy or hard to tell apart moves all of them, so a binomial error over pairs
would be far too small. AUC and EER get a grouped jackknife over labels instead: the labels are
dealt into at most `JACKKNIFE_GROUPS` groups (each label its own group when there are that few),
the figure is recomputed with each group's utterances left out, and the spread of those values
gives the error, sqrt((G - 1) / G * sum((v_g - mean v)^2)). 1-NN accuracy keeps the binomial
error over its queries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_PAIRS = 2_000_000
# beyond this many 1-NN queries a seeded sample of them is scored: each costs a pass over all
# utterances, and the standard error of 50,000 is already below 0.25 percentage points
DEFAULT_MAX_QUERIES = 50_000
# floats in one block of a score matrix or of gathered pair vectors (32 MB in float64)
BLOCK_ELEMENTS = 1 << 22
# false-accept rates at which ROC/DET curves are reported: dense near both ends, where DET plots
# (probit axes) spread them out, so that a few hundred points draw any curve
# groups of labels the jackknife leaves out in turn: the error's own precision grows with them,
# and so does its cost (one pass over the sorted pairs each)
JACKKNIFE_GROUPS = 20
CURVE_GRID = np.unique(np.concatenate([np.linspace(0.0, 1.0, 101), np.logspace(-5, 0, 101),
                                       1.0 - np.logspace(-5, 0, 101)]))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), so dot products are cosines."""
    x = np.asarray(vectors, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def label_codes(labels) -> tuple[np.ndarray, np.ndarray]:
    """(code of each utterance's label, utterances per label)."""
    _, codes, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    return codes.ravel(), counts


@dataclass(frozen=True)
class PairScores:
    scores: np.ndarray  # [P] cosine score of each scored pair
    same: np.ndarray    # [P] whether its two utterances share a label (a target trial)
    total_pairs: int    # pairs there are: n (n - 1) / 2
    sampled: bool       # scores cover a uniform sample of them, not all
    labels: tuple[np.ndarray, np.ndarray] | None = None  # [P] each side's label code


def pair_scores(vectors: np.ndarray, labels, max_pairs: int = DEFAULT_MAX_PAIRS,
                seed: int = 0) -> PairScores:
    """Cosine scores of every pair of distinct utterances, or of `max_pairs` pairs drawn
    uniformly (with replacement, seeded) when there are more."""
    x = unit_rows(vectors)
    codes, _ = label_codes(labels)
    n = len(x)
    total = n * (n - 1) // 2
    if total <= max_pairs:
        first, second = np.triu_indices(n, k=1)
    else:
        # an ordered pair of distinct indices, uniform: each unordered pair equally likely
        rng = np.random.default_rng(seed)
        first = rng.integers(0, n, max_pairs)
        second = rng.integers(0, n - 1, max_pairs)
        second += second >= first
    chunk = max(1, BLOCK_ELEMENTS // max(1, x.shape[1]))
    scores = np.concatenate([np.einsum("ij,ij->i", x[first[s:s + chunk]], x[second[s:s + chunk]])
                             for s in range(0, len(first), chunk)] or [np.zeros(0)])
    return PairScores(scores, codes[first] == codes[second], total, total > max_pairs,
                      (codes[first], codes[second]))


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Probability that a random target trial outscores a random non-target one, ties counted
    half: the Mann-Whitney U statistic from average ranks."""
    order = np.argsort(scores, kind="stable")
    return _auc_of_sorted(scores[order], same[order])


def _auc_of_sorted(scores: np.ndarray, same: np.ndarray) -> float:
    """roc_auc of trials already sorted by increasing score."""
    n_pos, n_neg = _trial_counts(same)
    starts = np.r_[0, np.flatnonzero(np.diff(scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    average_rank = (starts + ends + 1) / 2.0  # 1-based, ties share their mean rank
    ranks = np.repeat(average_rank, ends - starts)
    return float((ranks[same].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-accept rate, true-accept rate) when accepting scores >= each distinct score, from
    the highest down, starting at (0, 0) and ending at (1, 1)."""
    order = np.argsort(-scores, kind="stable")
    return _roc_of_sorted(scores[order], same[order])


def _roc_of_sorted(ordered: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """roc_curve of trials already sorted by decreasing score."""
    n_pos, n_neg = _trial_counts(target)
    last_of_score = np.r_[np.flatnonzero(np.diff(ordered)), len(ordered) - 1]
    tpr = np.r_[0.0, np.cumsum(target)[last_of_score] / n_pos]
    fpr = np.r_[0.0, np.cumsum(~target)[last_of_score] / n_neg]
    return fpr, tpr


def jackknife_errors(pairs: PairScores, groups: int = JACKKNIFE_GROUPS
                     ) -> tuple[float | None, float | None]:
    """(standard error of the AUC, of the EER) by a grouped jackknife over labels (module
    docstring); None where fewer than 2 groups leave both kinds of trial."""
    first, second = pairs.labels
    n_labels = int(max(first.max(initial=-1), second.max(initial=-1))) + 1
    # labels dealt into groups by a fixed permutation, so that a group is no alphabetical run
    group_of = np.random.default_rng(0).permutation(n_labels) % min(groups, n_labels)
    order = np.argsort(-pairs.scores, kind="stable")  # one sort serves every left-out group
    ordered, target = pairs.scores[order], pairs.same[order]
    g1, g2 = group_of[first[order]], group_of[second[order]]
    aucs, eers = [], []
    for g in range(min(groups, n_labels)):
        kept = (g1 != g) & (g2 != g)
        positives = int(np.count_nonzero(target[kept]))
        if positives == 0 or positives == int(np.count_nonzero(kept)):
            continue
        scores, same = ordered[kept], target[kept]
        aucs.append(_auc_of_sorted(scores[::-1], same[::-1]))
        eers.append(equal_error_rate(*_roc_of_sorted(scores, same)))
    return _jackknife(aucs), _jackknife(eers)


def _jackknife(values: list[float]) -> float | None:
    g = len(values)
    if g < 2:
        return None
    v = np.asarray(values)
    return float(math.sqrt((g - 1) / g * np.sum((v - v.mean()) ** 2)))


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The rate at which false accepts equal false rejects (1 - tpr), linearly interpolated
    between the two ROC points where their difference changes sign."""
    gap = fpr - (1.0 - tpr)  # -1 at (0, 0), +1 at (1, 1), non-decreasing between
    k = int(np.argmax(gap >= 0))  # >= 1: the curve starts at (0, 0)
    t = -gap[k - 1] / (gap[k] - gap[k - 1])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def tpr_on_grid(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray = CURVE_GRID) -> np.ndarray:
    """The ROC's true-accept rate at each false-accept rate of `grid`: at a vertical step, its
    top; between steps, the straight line from one step's top to the next one's foot."""
    foot = np.r_[0, np.flatnonzero(np.diff(fpr)) + 1]  # first point of each distinct fpr
    top = np.r_[foot[1:] - 1, len(fpr) - 1]
    x = fpr[foot]
    k = np.searchsorted(x, grid, side="right") - 1
    after = np.minimum(k + 1, len(x) - 1)
    span = x[after] - x[k]
    t = np.divide(grid - x[k], span, out=np.zeros(len(grid)), where=span > 0)
    return tpr[top[k]] + t * (tpr[foot[after]] - tpr[top[k]])


def _trial_counts(same: np.ndarray) -> tuple[int, int]:
    n_pos = int(np.count_nonzero(same))
    n_neg = len(same) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"need target and non-target trials, got {n_pos} and {n_neg}")
    return n_pos, n_neg


@dataclass(frozen=True)
class NearestNeighbour:
    accuracy: float | None  # None: no utterance shares its label with another
    stderr: float | None    # binomial: sqrt(p (1 - p) / queries)
    chance: float | None    # expected accuracy of a neighbour drawn at random (see below)
    queries: int            # utterances scored as queries
    excluded: int           # utterances whose label no other utterance has: never a query
    sampled: bool           # queries are a seeded sample of the eligible utterances


def nearest_neighbour(vectors: np.ndarray, labels, max_queries: int = DEFAULT_MAX_QUERIES,
                      seed: int = 0) -> NearestNeighbour:
    """Leave-one-out 1-NN by cosine: does each utterance's most similar other utterance share
    its label? The chance level is what a neighbour drawn uniformly from the other utterances
    would score, (n_label - 1) / (n - 1) averaged over the queries (close to the sum of squared
    label shares for large labels, and exact for small ones)."""
    x = unit_rows(vectors)
    codes, counts = label_codes(labels)
    n = len(x)
    eligible = np.flatnonzero(counts[codes] >= 2)
    sampled = len(eligible) > max_queries
    queries = (np.sort(np.random.default_rng(seed).choice(eligible, max_queries, replace=False))
               if sampled else eligible)
    if len(queries) == 0:
        return NearestNeighbour(None, None, None, 0, n, False)
    block = max(1, BLOCK_ELEMENTS // n)
    hits = 0
    for s in range(0, len(queries), block):
        rows = queries[s:s + block]
        sims = x[rows] @ x.T
        sims[np.arange(len(rows)), rows] = -np.inf  # leave the query itself out
        hits += int(np.count_nonzero(codes[sims.argmax(axis=1)] == codes[rows]))
    p = hits / len(queries)
    chance = float(np.mean((counts[codes[queries]] - 1) / (n - 1)))
    return NearestNeighbour(p, math.sqrt(p * (1 - p) / len(queries)), chance, len(queries),
                            n - len(eligible), sampled)


def retrieval_figures(vectors: np.ndarray, labels, max_pairs: int = DEFAULT_MAX_PAIRS,
                      max_queries: int = DEFAULT_MAX_QUERIES, seed: int = 0) -> dict:
    """Every figure of one representation, JSON-ready: AUC, EER and the ROC on `CURVE_GRID`
    (None where the pairs hold no target or no non-target trial), and the 1-NN accuracy."""
    pairs = pair_scores(vectors, labels, max_pairs, seed)
    n_target = int(np.count_nonzero(pairs.same))
    figures = {"pairs": {"scored": len(pairs.scores), "total": pairs.total_pairs,
                         "sampled": pairs.sampled, "target": n_target,
                         "non_target": len(pairs.same) - n_target},
               "auc": None, "auc_stderr": None, "eer": None, "eer_stderr": None, "roc": None}
    if 0 < n_target < len(pairs.same):
        fpr, tpr = roc_curve(pairs.scores, pairs.same)
        auc_stderr, eer_stderr = jackknife_errors(pairs)
        figures.update(auc=roc_auc(pairs.scores, pairs.same), auc_stderr=auc_stderr,
                       eer=equal_error_rate(fpr, tpr), eer_stderr=eer_stderr,
                       roc={"fpr": CURVE_GRID.tolist(), "tpr": tpr_on_grid(fpr, tpr).tolist()})
    nn = nearest_neighbour(vectors, labels, max_queries, seed)
    figures["nearest_neighbour"] = {"accuracy": nn.accuracy, "stderr": nn.stderr,
                                    "chance": nn.chance, "queries": nn.queries,
                                    "excluded": nn.excluded, "sampled": nn.sampled}
    return figures
