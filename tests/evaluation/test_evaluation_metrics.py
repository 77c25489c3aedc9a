"""The evaluation's figures against independent computations (scikit-learn, worked examples)."""
import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve
from sklearn.metrics.pairwise import cosine_similarity

from timbrespace_ray.evaluation import metrics
from timbrespace_ray.evaluation.metrics import (equal_error_rate, nearest_neighbour, pair_scores,
                                                retrieval_figures, roc_auc, roc_curve, tpr_on_grid)


def trials(positives, negatives):
    scores = np.array([*positives, *negatives], float)
    return scores, np.array([True] * len(positives) + [False] * len(negatives))


@pytest.mark.parametrize("decimals", [1, 2, 6])  # coarse rounding: many ties across classes
def test_auc_and_roc_equal_scikit_learn(decimals):
    rng = np.random.default_rng(decimals)
    same = rng.random(3000) < 0.2
    scores = np.round(rng.normal(0.6 * same, 1.0), decimals)
    assert roc_auc(scores, same) == pytest.approx(roc_auc_score(same, scores), abs=1e-12)
    fpr, tpr = roc_curve(scores, same)
    sk_fpr, sk_tpr, _ = sk_roc_curve(same, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)


def test_ties_count_half():
    scores, same = trials([0.5, 0.5], [0.5, 0.1])
    # pairs (pos, neg): 0.5 vs 0.5 twice (half each), 0.5 vs 0.1 twice (one each) -> 3/4
    assert roc_auc(scores, same) == 0.75
    assert roc_auc(*trials([0.3] * 4, [0.3] * 5)) == 0.5


def test_equal_error_rate_worked_examples():
    # ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1): false accepts = false rejects = 1/2 at (.5,.5)
    assert equal_error_rate(*roc_curve(*trials([0.9, 0.6], [0.7, 0.2]))) == pytest.approx(0.5)
    # ROC (0,0) (0,1/3) (0,2/3) (.5,2/3) (.5,1) (1,1): between (0, 2/3) and (.5, 2/3) the miss
    # rate is 1/3 throughout and the false-accept rate reaches 1/3 two thirds of the way
    scores, same = trials([0.9, 0.8, 0.3], [0.5, 0.1])
    assert equal_error_rate(*roc_curve(scores, same)) == pytest.approx(1 / 3)
    assert roc_auc(scores, same) == pytest.approx(5 / 6)


def test_perfect_and_reversed_separation():
    scores, same = trials([0.9, 0.8, 0.85], [0.1, 0.2, 0.3, 0.0])
    assert roc_auc(scores, same) == 1.0
    assert equal_error_rate(*roc_curve(scores, same)) == 0.0
    assert roc_auc(-scores, same) == 0.0
    assert equal_error_rate(*roc_curve(-scores, same)) == 1.0


def test_identical_distributions_are_chance():
    rng = np.random.default_rng(1)
    scores, same = rng.normal(size=200_000), rng.random(200_000) < 0.3
    assert roc_auc(scores, same) == pytest.approx(0.5, abs=0.005)
    assert equal_error_rate(*roc_curve(scores, same)) == pytest.approx(0.5, abs=0.005)


def test_curve_on_the_grid_follows_the_roc():
    fpr, tpr = roc_curve(*trials([0.9, 0.6], [0.7, 0.2]))
    grid = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    # the vertical steps at fpr 0 and 0.5 report their tops; between, linear
    np.testing.assert_allclose(tpr_on_grid(fpr, tpr, grid), [0.5, 0.5, 1.0, 1.0, 1.0])
    # a tie across classes is a diagonal segment: (0, 0) -> (.5, 1)
    fpr, tpr = roc_curve(*trials([0.5], [0.5, 0.1]))
    np.testing.assert_allclose(tpr_on_grid(fpr, tpr, grid), [0.0, 0.5, 1.0, 1.0, 1.0])


def test_all_pairs_when_few_with_their_cosines():
    rng = np.random.default_rng(2)
    x, labels = rng.normal(size=(30, 5)), rng.integers(0, 4, 30)
    pairs = pair_scores(x, labels, max_pairs=1000)
    i, j = np.triu_indices(30, k=1)
    assert not pairs.sampled and pairs.total_pairs == len(pairs.scores) == 435
    np.testing.assert_allclose(pairs.scores, cosine_similarity(x)[i, j], atol=1e-12)
    np.testing.assert_array_equal(pairs.same, labels[i] == labels[j])


def test_pair_sample_is_bounded_seeded_and_uniform(monkeypatch):
    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(3000, 8)), rng.integers(0, 3, 3000)
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 4096)  # several chunks of gathered pairs
    pairs = pair_scores(x, labels, max_pairs=20_000, seed=5)
    assert pairs.sampled and len(pairs.scores) == len(pairs.same) == 20_000
    assert pairs.total_pairs == 3000 * 2999 // 2
    again = pair_scores(x, labels, max_pairs=20_000, seed=5)
    np.testing.assert_array_equal(pairs.scores, again.scores)
    assert not np.array_equal(pairs.scores, pair_scores(x, labels, 20_000, seed=6).scores)
    # never a pair of an utterance with itself (cosine 1; random 8-D vectors are never that close)
    assert pairs.scores.max() < 0.999
    # target share as over all pairs: sum over labels of n_l (n_l - 1) / (n (n - 1))
    counts = np.bincount(labels)
    expected = (counts * (counts - 1)).sum() / (3000 * 2999)
    assert pairs.same.mean() == pytest.approx(expected, abs=0.015)


def circle(degrees):
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


# on a circle, cosine similarity falls with the angle between points
ANGLES = [0, 10, 90, 25, 180]
LABELS = ["a", "a", "b", "b", "c"]


def test_nearest_neighbour_worked_example(monkeypatch):
    # a@0 -> a@10 (hit); a@10 -> a@0 (hit, 10 deg vs 15 deg to b@25); b@90 -> b@25 (hit);
    # b@25 -> a@10 (miss); c has no other c: excluded
    nn = nearest_neighbour(circle(ANGLES), LABELS)
    assert (nn.accuracy, nn.queries, nn.excluded, nn.sampled) == (0.75, 4, 1, False)
    assert nn.stderr == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert nn.chance == pytest.approx(0.25)  # each query: 1 of the 4 other utterances
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 5)  # one query per block
    assert nearest_neighbour(circle(ANGLES), LABELS) == nn


def test_nearest_neighbour_query_sample_is_seeded():
    rng = np.random.default_rng(4)
    x, labels = rng.normal(size=(400, 6)), rng.integers(0, 5, 400)
    nn = nearest_neighbour(x, labels, max_queries=100, seed=1)
    assert nn.sampled and nn.queries == 100
    assert nearest_neighbour(x, labels, max_queries=100, seed=1) == nn
    full = nearest_neighbour(x, labels)
    assert full.queries == 400 and not full.sampled


def test_nearest_neighbour_of_separated_labels_is_perfect():
    x = np.repeat(np.eye(3), 4, axis=0) + 0.01 * np.random.default_rng(0).normal(size=(12, 3))
    nn = nearest_neighbour(x, np.repeat(["x", "y", "z"], 4))
    assert nn.accuracy == 1.0 and nn.stderr == 0.0 and nn.chance == pytest.approx(3 / 11)


def test_figures_are_json_and_say_when_undefined():
    figures = retrieval_figures(circle(ANGLES), LABELS)
    json.dumps(figures)
    assert figures["pairs"] == {"scored": 10, "total": 10, "sampled": False, "target": 2,
                                "non_target": 8}
    assert 0 <= figures["auc"] <= 1 and len(figures["roc"]["fpr"]) == len(figures["roc"]["tpr"])
    # every label once: no target pair and no 1-NN query
    alone = retrieval_figures(circle([0, 50, 100]), ["a", "b", "c"])
    assert alone["auc"] is alone["eer"] is alone["roc"] is None
    assert alone["nearest_neighbour"]["accuracy"] is None
    assert alone["nearest_neighbour"]["excluded"] == 3


@pytest.mark.parametrize("aucs,expected", [
    ({"embeddings": 0.9, "bag of tokens": 0.7, "feature statistics": 0.8},
     "the embeddings come first of 3 by AUC (0.900)"),
    ({"embeddings": 0.6, "bag of tokens": 0.7, "feature statistics": 0.8},
     "by AUC, feature statistics comes first (0.800) and the embeddings last of 3 (0.600)"),
    ({"embeddings": 0.75, "bag of tokens": 0.7, "feature statistics": 0.8, "x": None},
     "by AUC, feature statistics comes first (0.800) and the embeddings 2nd of 3 (0.750)"),
])
def test_the_ranking_sentence_says_what_the_table_says(aucs, expected):
    from timbrespace_ray.evaluation.report import ranking

    assert ranking({"representations": {k: {"auc": v} for k, v in aucs.items()}}) == expected


def test_standard_errors_are_a_jackknife_over_labels():
    """Each label left out in turn (8 labels: one group each), recomputed from scratch with
    scikit-learn's AUC and the plain ROC, gives the same errors as the one-sort jackknife."""
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(8), 6)
    centres = rng.normal(size=(8, 5)) * np.linspace(0.2, 2.0, 8)[:, None]  # easy and hard labels
    x = centres[labels] + rng.normal(size=(len(labels), 5))
    pairs = pair_scores(x, labels)
    auc_se, eer_se = metrics.jackknife_errors(pairs)
    first, second = pairs.labels
    aucs, eers = [], []
    for left_out in range(8):
        kept = (first != left_out) & (second != left_out)
        aucs.append(roc_auc_score(pairs.same[kept], pairs.scores[kept]))
        eers.append(equal_error_rate(*roc_curve(pairs.scores[kept], pairs.same[kept])))

    def jackknife(v):
        return math.sqrt(7 / 8 * np.sum((np.asarray(v) - np.mean(v)) ** 2))

    assert auc_se == pytest.approx(jackknife(aucs), rel=1e-9)
    assert eer_se == pytest.approx(jackknife(eers), rel=1e-9)
    # far above the binomial error a count of independent pairs would suggest
    n_pos = int(pairs.same.sum())
    auc = roc_auc(pairs.scores, pairs.same)
    assert auc_se > 2 * math.sqrt(auc * (1 - auc) / n_pos)
    figures = retrieval_figures(x, labels)
    assert (figures["auc_stderr"], figures["eer_stderr"]) == (auc_se, eer_se)
