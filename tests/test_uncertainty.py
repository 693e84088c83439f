"""Tests for stitchlib.uncertainty: replicates equal the index recomputed on the resampled images, intervals
equal scipy's, and calibration on data with known population values (coverage, permutation p-values)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.stats
import threadpoolctl
import torch

from stitchlib import catalog, stitching
from stitchlib import similarity as S
from stitchlib import uncertainty as U


@pytest.fixture(autouse=True, scope="module")
def single_threaded_blas():
    with threadpoolctl.threadpool_limits(1):
        yield


def related(rng, n, shapes, noise=0.5):
    """Activations of the given per-image shapes driven by shared latent factors (so indices are well inside
    (0, 1)); (n, C, H, W) arrays or (n, p) for 1-tuples."""
    lat = rng.normal(size=(n, 6))
    return [(lat @ rng.normal(size=(6, int(np.prod(s)))) + noise * rng.normal(size=(n, int(np.prod(s))))
             ).reshape(n, *s) for s in shapes]


def resampled_value(measure, A, B, c, reshape):
    idx = np.repeat(np.arange(len(A)), c.astype(int))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = S.layer_stats(A[idx], reshape=reshape, loadings=True)
        return S.similarity(measure, a, S.layer_stats(B[idx], reshape=reshape))


# --------------------------------------------------------------------------- replicates are the real thing
@pytest.mark.parametrize("reshape,shapes", [
    ("flatten", [(3, 2, 2), (4, 2, 2)]),       # p = 12, 16 < n: the basis route
    ("flatten", [(40, 2, 2), (30, 2, 2)]),     # r·r > n: the n × n Gram route (CKA)
    ("pool", [(5, 3, 3), (4, 3, 3)]),
    ("positions", [(4, 3, 3), (5, 3, 3)]),     # rows = images × 9 positions: images resampled as blocks
])
def test_replicates_equal_the_index_recomputed_on_the_resampled_images(rng, reshape, shapes):
    """Every replicate of every index (debiased CKA aside, see below) is the index computed from scratch on the
    resampled images' activations, and the estimate is stitchlib.similarity's value."""
    n = 60
    A, B = related(rng, n, shapes)
    sa, sb = S.layer_stats(A, reshape=reshape, loadings=True), S.layer_stats(B, reshape=reshape, loadings=True)
    measures = [m for m in catalog.INDICES if m != "lcka_debiased"]
    if reshape == "flatten" and shapes[0][0] == 40:
        measures = ["lcka", "opd"]  # rank ≥ n − 1: the CCA family is undefined (tested below)
    C = U.resample_counts(n, 3, seed=1)
    boot = U.index_bootstrap([sa], [sb], measures, counts=C, jackknife=False)
    for m in measures:
        np.testing.assert_allclose(boot[m].estimate[0, 0], S.pairwise([sa], [sb], [m])[m][0, 0], rtol=1e-10,
                                   atol=1e-12, err_msg=m)
        direct = [resampled_value(m, A, B, c, reshape) for c in C]
        np.testing.assert_allclose(boot[m].replicates[:, 0, 0], direct, rtol=1e-8, atol=1e-10, err_msg=m)


def weighted_hsic(K, L, w):
    """HSIC_u's three expectations, each a w-weighted mean over tuples of distinct rows (brute force)."""
    i = np.arange(len(w))
    I2, J2 = np.meshgrid(i, i, indexing="ij")
    w2 = w[I2] * w[J2] * (I2 != J2)
    I3, J3, Q3 = np.meshgrid(i, i, i, indexing="ij")
    w3 = w[I3] * w[J3] * w[Q3] * (I3 != J3) * (I3 != Q3) * (J3 != Q3)
    I4, J4, Q4, R4 = np.meshgrid(i, i, i, i, indexing="ij")
    w4 = w[I4] * w[J4] * w[Q4] * w[R4] * (I4 != J4) * (I4 != Q4) * (I4 != R4) * (J4 != Q4) * (J4 != R4) * (Q4 != R4)
    return ((w2 * K * L).sum() / w2.sum() + (w4 * K[I4, J4] * L[Q4, R4]).sum() / w4.sum()
            - 2 * (w3 * K[I3, J3] * L[I3, Q3]).sum() / w3.sum())


@pytest.mark.parametrize("reshape,shapes,k", [("flatten", [(30,), (30,)], 1), ("flatten", [(3,), (2,)], 1),
                                              ("positions", [(3, 2, 1), (2, 2, 1)], 2)])
def test_debiased_cka_replicates_never_pair_an_image_with_its_copy(rng, reshape, shapes, k):
    """Debiased CKA's replicate: each expectation of HSIC_u weighted by the counts over tuples of distinct
    original rows (Gram route, basis route, positions); at c = 1 Song's estimator."""
    n = 9
    A, B = (rng.normal(size=(n, *s)) for s in shapes)
    sa, sb = S.layer_stats(A, reshape=reshape), S.layer_stats(B, reshape=reshape)
    rows = (lambda X: X.reshape(n, -1)) if k == 1 else (lambda X: np.moveaxis(X, 1, -1).reshape(n * k, -1))
    X, Y = rows(A) - rows(A).mean(0), rows(B) - rows(B).mean(0)
    K, L = X @ X.T, Y @ Y.T
    C = np.vstack([np.ones(n), U.resample_counts(n, 3, seed=3)])
    boot = U.index_bootstrap([sa], [sb], ["lcka_debiased"], counts=C, jackknife=False)["lcka_debiased"]
    for c, value in zip(C, boot.replicates[:, 0, 0]):
        w = np.repeat(c, k)
        ref = weighted_hsic(K, L, w) / np.sqrt(weighted_hsic(K, K, w) * weighted_hsic(L, L, w))
        assert value == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert boot.replicates[0, 0, 0] == pytest.approx(S.lcka_debiased(A, B, reshape=reshape), rel=1e-10)


def test_cca_replicates_that_lose_rank_are_undefined(rng):
    """r_a + r_b close to n: the point estimate exists, but resamples (≈ 63 % distinct images) would make
    canonical correlations 1 by construction — those replicates are NaN and so is the interval."""
    n = 40
    A, B = related(rng, n, [(14,), (14,)])
    sa, sb = S.layer_stats(A, loadings=True), S.layer_stats(B)
    boot = U.index_bootstrap([sa], [sb], ["mean_cca", "pwcca", "lcka"], replicates=20, jackknife=False)
    assert np.isfinite(boot["mean_cca"].estimate).all()
    assert boot["mean_cca"].undefined[0, 0] == 20 and boot["pwcca"].undefined[0, 0] == 20
    assert np.isnan(boot["mean_cca"].interval()[0]).all()
    assert boot["lcka"].undefined[0, 0] == 0 and np.isfinite(boot["lcka"].interval()[0]).all()


def test_resamples_are_deterministic_shared_and_extendable():
    C = U.resample_counts(50, 8, seed=4)
    assert (C.sum(1) == 50).all() and C.dtype == float
    np.testing.assert_array_equal(U.resample_counts(50, 5, seed=4), C[:5])
    np.testing.assert_array_equal(U.resample_counts(50, 3, seed=4, start=5), C[5:])
    assert not np.array_equal(U.resample_counts(50, 8, seed=5), C)
    np.testing.assert_array_equal(U.jackknife_counts(4), 1 - np.eye(4))


def test_mismatched_images_are_refused(rng):
    sa = S.layer_stats(rng.normal(size=(30, 5)), name="a")
    sb = S.layer_stats(rng.normal(size=(31, 5)), name="b")
    with pytest.raises(ValueError, match="'a' and 'b'.*same images"):
        U.index_bootstrap([sa], [sb], ["lcka"], replicates=2)
    with pytest.raises(ValueError, match="counts must be"):
        U.index_bootstrap([sa], [sa], ["lcka"], counts=np.ones((2, 29)))


# --------------------------------------------------------------------------- intervals
@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_intervals_equal_scipy_bootstrap_given_the_same_replicates(rng, method):
    """Our BCa/percentile from a replicate distribution equals scipy.stats.bootstrap's on the same one (scipy
    computes the jackknife itself, by calling the statistic on leave-one-out index sets)."""
    n = 40
    num, den = rng.random(n), rng.random(n) + 0.5
    boot = U.stitch_bootstrap(num, den, replicates=300, seed=2)

    def statistic(idx, axis=-1):  # the ratio of sums over the images an index set draws
        return num[idx].sum(axis) / den[idx].sum(axis)

    prior = scipy.stats._resampling.BootstrapResult(None, boot.replicates, None)
    ref = scipy.stats.bootstrap((np.arange(n),), statistic, n_resamples=0, bootstrap_result=prior,
                                method=method, confidence_level=0.9)
    lo, hi = boot.interval(0.9, method)
    assert (lo, hi) == pytest.approx(tuple(ref.confidence_interval), rel=1e-12)


def test_bias_corrected_interval_moves_against_the_bootstrap_bias():
    """bc: replicates that sit above the estimate (a biased statistic) pull the interval down."""
    reps = np.linspace(0.5, 1.5, 1001)
    lo_p, hi_p = U.interval(0.8, reps, method="percentile")
    lo_b, hi_b = U.interval(0.8, reps, method="bc")
    assert lo_b < lo_p and hi_b < hi_p
    np.testing.assert_allclose(U.interval(1.0, reps, method="bc"), U.interval(1.0, reps, method="percentile"))
    with pytest.raises(ValueError, match="jackknife"):
        U.interval(1.0, reps, method="bca")
    assert np.isnan(U.interval(1.0, np.r_[reps, np.nan])[0])


def test_identity_stitch_relative_accuracy_is_a_point_at_one(trained_resnet, digits16):
    """An identity stitch into the receiver's own layer: every resample gives relative accuracy exactly 1."""
    net = trained_resnet
    x, y = digits16[1].tensors
    with torch.no_grad():
        h = net.front(x, 3)
        own = (net(x).argmax(1) == y).double().numpy()
    stitch = stitching.AffineStitch.between(h.shape[1:], h.shape[1:], "conv").set_affine(
        torch.eye(h.shape[1]), torch.zeros(h.shape[1]))
    r = stitching.evaluate(stitch, net, 3, h, h, y, per_image=True)
    np.testing.assert_array_equal(r["per_image"]["correct"], own)
    assert r["per_image"]["err"].sum() / r["per_image"]["norm"].sum() == r["struct"] == 0
    boot = U.stitch_bootstrap(r["per_image"]["correct"], own, replicates=500)
    assert (boot.replicates == 1).all() and (boot.jackknife == 1).all()
    for method in U.METHODS:
        assert boot.interval(method=method) == (1.0, 1.0)


def test_stitch_accuracy_is_paired_with_the_receivers_own_resample():
    """Relative accuracy per replicate = stitched / receiver accuracy on the same images: a stitch that fails
    exactly where the receiver fails has relative accuracy 1 although both accuracies vary."""
    own = np.r_[np.ones(30), np.zeros(10)]
    boot = U.stitch_bootstrap(np.stack([own, np.r_[np.zeros(3), np.ones(27), np.zeros(10)]]), own, replicates=200)
    acc = U.stitch_bootstrap(own, replicates=200)
    assert acc.replicates.std() > 0.03 and (boot.replicates[:, 0] == 1).all()
    assert boot.estimate[1] == pytest.approx(27 / 30)


def test_network_resampling_weights_pairs_by_their_networks_counts():
    nets = ["n0", "n1", "n2"]
    counts = np.array([[2, 1, 0], [3, 0, 0]], float)
    pairs = [("n0", "n0"), ("n0", "n1"), ("n1", "n0"), ("n2", "n0")]
    np.testing.assert_array_equal(U.pair_weights(pairs, nets, counts), [[2, 2, 2, 0], [3, 0, 0, 0]])
    inter = U.pair_weights(pairs[1:], nets, counts)
    values = np.array([[1.0, 3.0, 7.0], [1.0, 3.0, 7.0]])
    pooled = U.pooled(values, inter)
    assert pooled[0] == 2.0 and np.isnan(pooled[1])  # replicate 1 drew one network: no inter-network pair
    drawn = U.network_counts(3, 2000, seed=1)
    assert (drawn.sum(1) == 3).all() and abs((drawn == 0).all(1).mean()) == 0
    assert ((drawn > 0).sum(1) == 1).mean() == pytest.approx(1 / 9, abs=0.02)


# --------------------------------------------------------------------------- calibration
def gaussian_pair(rng, n, W, sigma):
    X = rng.normal(size=(n, W.shape[0]))
    return X, X @ W + sigma * rng.normal(size=(n, W.shape[1]))


def population_cka(W, sigma):
    """X ~ N(0, I_p), Y = XW + σE: Σ_xy = W, Σ_yy = WᵀW + σ²I; linear CKA's population value is
    ‖Σ_xy‖²_F / (‖Σ_xx‖_F ‖Σ_yy‖_F)."""
    return np.linalg.norm(W) ** 2 / (np.sqrt(W.shape[0]) * np.linalg.norm(W.T @ W + sigma**2 * np.eye(W.shape[1])))


@pytest.mark.parametrize("measure,p,q,n,sigma", [("lcka", 3, 3, 200, 0.5), ("lcka_debiased", 10, 8, 60, 0.5)])
def test_intervals_cover_the_population_cka(measure, p, q, n, sigma):
    """95 % intervals (bc, the workflow's) of 200 simulated data sets cover the population value in 90–99 %."""
    rng = np.random.default_rng(123)
    W = rng.normal(size=(p, q)) / np.sqrt(p)
    pop = population_cka(W, sigma)
    hits = 0
    for k in range(200):
        X, Y = gaussian_pair(rng, n, W, sigma)
        b = U.index_bootstrap([S.layer_stats(X)], [S.layer_stats(Y)], [measure], replicates=200, seed=k,
                              jackknife=False)[measure]
        lo, hi = b.interval(0.95, "bc")
        hits += bool(lo[0, 0] <= pop <= hi[0, 0])
    assert 0.90 <= hits / 200 <= 0.99, hits


def test_permutation_p_values_are_uniform_under_independence_and_small_under_a_relation():
    rng = np.random.default_rng(7)
    W = rng.normal(size=(3, 2))
    p_null, p_planted = [], []
    for k in range(120):
        X, Y = gaussian_pair(rng, 30, W, 1.0)
        sx = S.layer_stats(X)
        p_null.append(U.permutation_test(sx, S.layer_stats(rng.normal(size=(30, 2))), "lcka", permutations=99,
                                         seed=k)["p_value"])
        if k < 20:
            p_planted.append(U.permutation_test(sx, S.layer_stats(Y), "lcka", permutations=99, seed=k)["p_value"])
    assert scipy.stats.kstest(p_null, "uniform").pvalue > 0.01
    assert max(p_planted) <= 0.02


def test_permutation_test_of_a_distance_and_of_positions(rng):
    A, B = related(rng, 30, [(3, 2, 2), (3, 2, 2)], noise=0.1)
    sa, sb = S.layer_stats(A, reshape="positions"), S.layer_stats(B, reshape="positions")
    r = U.permutation_test(sa, sb, "opd", permutations=49)
    assert r["p_value"] == 1 / 50 and (r["null"] > r["value"]).all()  # a distance: the null is farther
    assert r["value"] == pytest.approx(S.opd(A, B, reshape="positions"))
