"""The default CPU k-means ("bounded", clustering/lloyd.py): Lloyd's iterations with distance
bounds must give scikit-learn's Lloyd result, deterministically, honour frame weights and
survive degenerate inputs."""
import numba
import numpy as np
import pytest
from sklearn.cluster import KMeans

from timbrespace_ray.clustering import DEFAULT_METHOD, fit_kmeans
from timbrespace_ray.clustering import lloyd as kl


def mixture(n=6000, k=12, dims=6, seed=0, spread=0.15):
    """k known centres in [0, 2]^dims and Gaussian frames around them (overlapping a little);
    returns frames, centres, labels."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 2, (k, dims)).astype(np.float32)
    labels = rng.integers(0, k, n)
    x = centres[labels] + rng.normal(0, spread, (n, dims)).astype(np.float32)
    return x.astype(np.float32), centres, labels


def test_default_method_is_bounded():
    assert DEFAULT_METHOD == "bounded"


@pytest.mark.parametrize("dims", [6, 3, 9])
def test_same_iterations_centres_and_labels_as_scikit_learn(dims):
    # from the same starting centres, with tol 0 (run to Lloyd's fixed point), scikit-learn's
    # Lloyd and the bounded one take the same steps: same passes, labels and centres
    x, _, _ = mixture(dims=dims, seed=dims, spread=0.4)
    init = x[:: x.shape[0] // 20][:20].copy()
    km = KMeans(20, init=init, n_init=1, max_iter=500, tol=0, algorithm="lloyd").fit(x)
    centres, labels, inertia, passes = kl.lloyd(x, None, init, max_iter=500, tol=0)
    assert passes == km.n_iter_
    np.testing.assert_array_equal(labels, km.labels_)
    np.testing.assert_allclose(centres, km.cluster_centers_, atol=2e-6)
    exact = float(((x.astype(np.float64) - centres[labels]) ** 2).sum())
    assert inertia == pytest.approx(exact, rel=1e-6)


def test_tolerance_stops_like_scikit_learn():
    x, _, _ = mixture(seed=3, spread=0.5)
    init = x[:30].copy()
    tol = 1e-4
    km = KMeans(30, init=init, n_init=1, max_iter=500, tol=tol, algorithm="lloyd").fit(x)
    centres, _, _, passes = kl.lloyd(x, None, init, max_iter=500,
                                     tol=tol * kl.mean_variance(x, None))
    assert passes == km.n_iter_
    np.testing.assert_allclose(centres, km.cluster_centers_, atol=2e-6)


def test_fit_finds_known_centres():
    x, centres, labels = mixture(n=20000, seed=1, spread=0.05)
    r = fit_kmeans(x, 12, seed=0)
    assert (r.backend, r.method) == ("numba", "bounded")
    assert r.centers.dtype == np.float32 and r.centers.shape == (12, 6)
    gaps = np.linalg.norm(centres[:, None] - r.centers[None], axis=2)
    assert gaps.min(axis=1).max() < 0.01  # every true centre has a fitted one next to it
    true_inertia = float(((x.astype(np.float64) - centres[labels]) ** 2).sum())
    assert 0.99 * true_inertia <= r.inertia <= 1.001 * true_inertia
    assert r.details["warm_frames"] == 12 * 200 and r.details["warm_iter"] >= 1


def test_matches_scikit_learn_inertia_from_the_same_seeds():
    # the whole fit against scikit-learn's warm-lloyd over a few seeds: a different
    # k-means++ lands in different local minima, but not in worse ones on average
    x, _, _ = mixture(n=30000, k=40, seed=2, spread=0.3)
    ours = [fit_kmeans(x, 40, seed=s).inertia for s in range(3)]
    theirs = [fit_kmeans(x, 40, seed=s, method="warm-lloyd").inertia for s in range(3)]
    assert np.mean(ours) <= 1.005 * np.mean(theirs)


def test_same_seed_same_result_on_any_thread_count():
    x, _, _ = mixture(n=50000, k=30, seed=4, spread=0.3)  # > 3 blocks of 16384 frames
    runs = [fit_kmeans(x, 30, seed=7, threads=t) for t in (1, 2, 1)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.centers, runs[0].centers)
        assert (r.inertia, r.n_iter) == (runs[0].inertia, runs[0].n_iter)
    other = fit_kmeans(x, 30, seed=8)
    assert not np.array_equal(other.centers, runs[0].centers)
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS  # put back


def test_threads_bound_numba_while_fitting(monkeypatch):
    # the k-means stage passes the CPUs Ray gave the actor as `threads`
    seen = []
    real = kl.lloyd

    def spy(*args, **kwargs):
        seen.append(numba.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(kl, "lloyd", spy)
    x, _, _ = mixture(n=5000, seed=9)
    fit_kmeans(x, 4, seed=0, threads=1)
    assert seen and set(seen) == {1}
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS


def test_weights_count_as_repeated_frames():
    x, _, _ = mixture(n=3000, seed=5, spread=0.4)
    w = np.random.default_rng(0).integers(1, 4, x.shape[0])
    repeated = np.repeat(x, w, axis=0)
    init = x[:12].copy()
    a = kl.lloyd(x, w.astype(np.float64), init, max_iter=300, tol=0)
    b = kl.lloyd(repeated, None, init, max_iter=300, tol=0)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert a[2] == pytest.approx(b[2], rel=1e-9) and a[3] == b[3]
    np.testing.assert_array_equal(a[1], b[1][np.cumsum(w) - 1])
    # k-means++ draws by weight too: a frame of weight 0 is never a centre (the fit itself
    # weighs every frame 1; the weights are the kernels' own, counts by meaning)
    zero = np.where(np.arange(x.shape[0]) % 2 == 0, 0.0, 1.0)
    seeds = kl.kmeans_plusplus(x, zero, 12, 0)
    assert {tuple(r) for r in seeds} <= {tuple(r) for r in x[1::2]}


def test_fewer_distinct_frames_than_clusters():
    rows = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    x = np.repeat(rows, 40, axis=0)
    r = fit_kmeans(x, 8, seed=0)
    assert r.inertia == 0 and np.isfinite(r.centers).all()
    # every distinct frame is a centre; the spare centres sit on frames too
    assert {tuple(c) for c in r.centers} == {tuple(c) for c in rows}


def test_one_cluster_is_the_mean():
    x, _, _ = mixture(n=5000, seed=7)
    r = fit_kmeans(x, 1, seed=0)
    np.testing.assert_allclose(r.centers[0], x.astype(np.float64).mean(axis=0), atol=1e-5)
    total = float(((x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)) ** 2).sum())
    assert r.inertia == pytest.approx(total, rel=1e-5)


def test_all_identical_frames():
    x = np.full((3000, 6), 0.25, np.float32)
    r = fit_kmeans(x, 4, seed=0)
    np.testing.assert_array_equal(r.centers, 0.25)
    assert r.inertia == 0
    zeros = np.zeros((50000, 6), np.float32)  # beyond the warm-up sample
    r = fit_kmeans(zeros, 3, seed=0)
    assert r.inertia == 0 and (r.centers == 0).all()


def test_empty_cluster_takes_the_farthest_frame_as_scikit_learn_does():
    x, _, _ = mixture(n=4000, seed=8, spread=0.3)
    init = x[:10].copy()
    init[3] = 50.0  # no frame is near it: empty after the first pass
    km = KMeans(10, init=init, n_init=1, max_iter=300, tol=0, algorithm="lloyd").fit(x)
    centres, labels, _, passes = kl.lloyd(x, None, init, max_iter=300, tol=0)
    assert np.bincount(labels, minlength=10).min() > 0
    assert passes == km.n_iter_
    np.testing.assert_allclose(centres, km.cluster_centers_, atol=2e-6)


def test_refuses_nan_and_too_few_frames():
    x, _, _ = mixture(n=100)
    bad = x.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_kmeans(bad, 4)
    bad[5, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_kmeans(bad, 4)
    with pytest.raises(ValueError, match="at least"):
        fit_kmeans(x[:3], 4)
