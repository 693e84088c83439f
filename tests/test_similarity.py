"""Tests for stitchlib.similarity against direct float64 feature-space implementations of each definition."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.linalg
import threadpoolctl
from sklearn.datasets import load_digits

from stitchlib import catalog
from stitchlib import similarity as S

ALL = list(S.KERNELS)
CCA_FAMILY = ["pwcca", "mean_cca", "svcca", "r2_lr", "dm_struct"]


@pytest.fixture(autouse=True, scope="module")
def single_threaded_blas():
    """One BLAS thread: these matrices are small, and multi-threaded OpenBLAS on a shared 2-core machine spends
    10× longer spinning than computing."""
    with threadpoolctl.threadpool_limits(1):
        yield


# ----------------------------------------------------------------------------- textbook references (feature space)
def centre(X):
    X = np.asarray(X, dtype=np.float64)
    return X - X.mean(0)


def ref_lcka(A, B):
    A, B = centre(A), centre(B)
    return np.linalg.norm(B.T @ A) ** 2 / (np.linalg.norm(A.T @ A) * np.linalg.norm(B.T @ B))


def ref_hsic_unbiased(K, L):
    """Song et al. (2012), eq. 5, on Gram matrices with zeroed diagonals."""
    n = len(K)
    K, L, one = K.copy(), L.copy(), np.ones(n)
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))


def ref_lcka_debiased(A, B):
    """Raw (uncentred) linear Grams: the unbiased estimator needs no centring."""
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    K, L = A @ A.T, B @ B.T
    return ref_hsic_unbiased(K, L) / np.sqrt(ref_hsic_unbiased(K, K) * ref_hsic_unbiased(L, L))


def inv_sqrt(C, lam=0.0):
    """(C + λI)^{-1/2} by eigh; a pseudo-inverse on the numerically non-zero eigenspace when λ = 0."""
    w, V = scipy.linalg.eigh(C)
    keep = w > w.max() * 1e-12 if lam == 0 else np.ones_like(w, bool)
    return (V[:, keep] / np.sqrt(w[keep] + lam)) @ V[:, keep].T


def ref_cca(A, B, lam_a=0.0, lam_b=0.0):
    """Canonical correlations and A's canonical weights by explicit whitening of the covariances."""
    A, B = centre(A), centre(B)
    Wa, Wb = inv_sqrt(A.T @ A, lam_a), inv_sqrt(B.T @ B, lam_b)
    P, rho, _ = np.linalg.svd(Wa @ A.T @ B @ Wb)
    k = min(np.linalg.matrix_rank(A), np.linalg.matrix_rank(B))
    return rho[:k], Wa @ P[:, :k]


def ref_mean_cca(A, B):
    return ref_cca(A, B)[0].mean()


def ref_pwcca(A, B):
    rho, w = ref_cca(A, B)
    variates = centre(A) @ w  # n × k, columns A w_A^i (unit norm)
    alpha = np.abs(variates.T @ centre(A)).sum(1)  # α_i = Σ_j |<A w_A^i, a_j>|
    return (alpha * rho).sum() / alpha.sum()


def ref_svcca(A, B, variance=0.99):
    def reduce(X):
        U, s, Vt = np.linalg.svd(centre(X), full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) / (s**2).sum(), variance) + 1)
        return centre(X) @ Vt[:k].T

    return ref_mean_cca(reduce(A), reduce(B))


def ref_opd(A, B):
    A, B = centre(A), centre(B)
    A, B = A / np.linalg.norm(A), B / np.linalg.norm(B)
    return (A**2).sum() + (B**2).sum() - 2 * np.linalg.svd(B.T @ A, compute_uv=False).sum()


def ref_r2_lr(A, B):
    A1 = np.c_[np.asarray(A, np.float64), np.ones(len(A))]  # least squares with bias
    M = np.linalg.lstsq(A1, B, rcond=None)[0]
    return 1 - np.linalg.norm(A1 @ M - B) ** 2 / np.linalg.norm(centre(B)) ** 2


REF = {"lcka": ref_lcka, "lcka_debiased": ref_lcka_debiased, "pwcca": ref_pwcca, "mean_cca": ref_mean_cca,
       "svcca": ref_svcca, "opd": ref_opd, "r2_lr": ref_r2_lr, "dm_struct": lambda A, B: 1 - ref_r2_lr(A, B)}


# ----------------------------------------------------------------------------- data
def correlated(n=300, p1=40, p2=60, seed=0):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, 10))
    A = Z @ rng.standard_normal((10, p1)) + 0.5 * rng.standard_normal((n, p1)) + 3.0
    B = np.tanh(Z @ rng.standard_normal((10, p2))) + 0.5 * rng.standard_normal((n, p2))
    return A, B


@pytest.fixture(scope="module")
def digits():
    """A = the 64 raw pixels of 500 digits; B = a fixed random tanh feature map of them (100 features)."""
    A = load_digits().data[:500].astype(np.float64)
    rng = np.random.default_rng(1)
    B = np.tanh(A @ rng.standard_normal((64, 100)) / 40 + rng.standard_normal(100))
    return A, B


def one(measure, A, B, **kw):
    a = S.layer_stats(A, name="A", loadings=True, **kw)
    b = S.layer_stats(B, name="B", **kw)
    return S.pairwise([a], [b], [measure])[measure][0, 0]


# ----------------------------------------------------------------------------- agreement with the definitions
@pytest.mark.parametrize("measure", ALL)
def test_matches_reference_random(measure):
    A, B = correlated()
    assert S.similarity(measure, A, B) == pytest.approx(REF[measure](A, B), abs=1e-10)


@pytest.mark.parametrize("measure", ALL)
def test_matches_reference_digits(digits, measure):
    A, B = digits
    assert np.linalg.matrix_rank(centre(A)) < 64  # some pixels are constant: rank handling is exercised
    assert S.similarity(measure, A, B) == pytest.approx(REF[measure](A, B), abs=1e-9)
    assert S.similarity(measure, B, A) == pytest.approx(REF[measure](B, A), abs=1e-9)


def test_public_functions_are_the_registry(digits):
    A, B = digits
    fns = {"lcka": S.lcka, "lcka_debiased": S.lcka_debiased, "pwcca": S.pwcca, "mean_cca": S.mean_cca,
           "svcca": S.svcca, "opd": S.opd, "r2_lr": S.r2_lr, "dm_struct": S.dm_struct}
    assert set(fns) == set(S.KERNELS)
    for name, fn in fns.items():
        assert fn(A, B) == pytest.approx(REF[name](A, B), abs=1e-9)


def test_svcca_dims_rule():
    A, B = correlated()
    assert S.svcca(A, B, variance=0.9) == pytest.approx(ref_svcca(A, B, 0.9), abs=1e-10)
    Ua, _, Vta = np.linalg.svd(centre(A), full_matrices=False)
    Ub, _, Vtb = np.linalg.svd(centre(B), full_matrices=False)
    expected = ref_mean_cca(centre(A) @ Vta[:7].T, centre(B) @ Vtb[:7].T)
    assert S.svcca(A, B, dims=7) == pytest.approx(expected, abs=1e-10)


def test_ridge_variants_match_explicit_formulas():
    A, B = correlated(n=120, p1=40, p2=150)  # B has rank n - 1: unregularised CCA is degenerate
    eps = 0.1
    lam_a = eps * (centre(A) ** 2).sum() / min(119, 40)
    lam_b = eps * (centre(B) ** 2).sum() / min(119, 150)
    rho, w = ref_cca(A, B, lam_a, lam_b)
    rho = rho[:40]
    assert S.mean_cca(A, B, regularization=eps) == pytest.approx(rho.mean(), abs=1e-10)
    v = centre(A) @ w[:, :40]
    v /= np.linalg.norm(v, axis=0)
    alpha = np.abs(v.T @ centre(A)).sum(1)
    assert S.pwcca(A, B, regularization=eps) == pytest.approx((alpha * rho).sum() / alpha.sum(), abs=1e-10)
    lam_b2 = eps * (centre(B) ** 2).sum() / 119  # r2_lr B -> A: ridge on the rank-deficient source
    M = np.linalg.solve(centre(B).T @ centre(B) + lam_b2 * np.eye(150), centre(B).T @ centre(A))
    r2 = 1 - np.linalg.norm(centre(B) @ M - centre(A)) ** 2 / np.linalg.norm(centre(A)) ** 2
    assert S.r2_lr(B, A, regularization=eps) == pytest.approx(r2, abs=1e-10)
    assert S.dm_struct(B, A, regularization=eps) == pytest.approx(1 - r2, abs=1e-10)
    assert 0 < S.mean_cca(A, B, regularization=eps) < 1 and r2 < 1


# ----------------------------------------------------------------------------- properties
def test_invariances():
    A, B = correlated(n=200, p1=30, p2=50, seed=3)
    rng = np.random.default_rng(4)
    Q = np.linalg.qr(rng.standard_normal((30, 30)))[0]
    G = rng.standard_normal((30, 30)) + 3 * np.eye(30)  # invertible, not orthogonal
    Gb = rng.standard_normal((50, 50)) + 3 * np.eye(50)
    A_orth = 7.5 * A @ Q + 2.0
    for m in ("lcka", "lcka_debiased", "opd"):  # orthogonal maps, isotropic scaling, translation
        assert S.similarity(m, A_orth, B) == pytest.approx(S.similarity(m, A, B), abs=1e-10)
        assert S.similarity(m, A @ G, B) != pytest.approx(S.similarity(m, A, B), abs=1e-3)
    for m in ("mean_cca", "r2_lr"):  # invertible linear maps of the source
        assert S.similarity(m, A @ G - 1.0, B) == pytest.approx(S.similarity(m, A, B), abs=1e-10)
    for m in ("mean_cca", "pwcca"):  # invertible linear maps of the target
        assert S.similarity(m, A, B @ Gb) == pytest.approx(S.similarity(m, A, B), abs=1e-10)
    assert S.pwcca(A @ G, B) != pytest.approx(S.pwcca(A, B), abs=1e-4)  # weights depend on A's neurons


def test_symmetry_flags_are_true():
    A, B = correlated()
    a, b = S.layer_stats(A, loadings=True), S.layer_stats(B, loadings=True)
    ab, ba = S.pairwise([a], [b], ALL), S.pairwise([b], [a], ALL)
    for m in ALL:
        same = ab[m][0, 0] == pytest.approx(ba[m][0, 0], abs=1e-12)
        assert same == catalog.MEASURES[m].symmetric, m


def test_registry():
    assert set(S.KERNELS) == set(catalog.INDICES)  # every index of the registry has a kernel, and only those
    assert {m for m in catalog.INDICES if not catalog.MEASURES[m].higher_is_similar} == {"opd", "dm_struct"}
    with pytest.raises(ValueError, match="unknown measure"):
        S.pairwise([], [], ["cka"])


def test_self_similarity_is_extreme():
    A, _ = correlated()
    a = S.layer_stats(A, loadings=True)
    res = S.pairwise([a], [a], ALL)
    best = {"lcka": 1, "lcka_debiased": 1, "pwcca": 1, "mean_cca": 1, "svcca": 1, "opd": 0, "r2_lr": 1, "dm_struct": 0}
    for m in ALL:
        assert res[m][0, 0] == pytest.approx(best[m], abs=1e-12), m


def test_debiased_cka_is_zero_for_independent_wide_layers():
    n, p = 500, 65_536
    rng = np.random.default_rng(5)
    a = S.layer_stats(rng.standard_normal((n, p), dtype=np.float32))
    b = S.layer_stats(rng.standard_normal((n, p), dtype=np.float32))
    assert a.route == "gram"
    res = S.pairwise([a], [b], ["lcka", "lcka_debiased"])
    assert abs(res["lcka_debiased"][0, 0]) < 0.01
    assert res["lcka"][0, 0] > 0.95


def test_gram_route_equals_covariance_route():
    A, B = correlated(n=200, p1=60, p2=90)  # p < n: every measure well posed
    g = S.pairwise([S.layer_stats(A, route="gram", loadings=True)], [S.layer_stats(B, route="gram")], ALL)
    c = S.pairwise([S.layer_stats(A, route="cov", loadings=True)], [S.layer_stats(B, route="cov")], ALL)
    for m in ALL:
        assert g[m] == pytest.approx(c[m], abs=1e-10), m
    A, B = correlated(n=80, p1=120, p2=200)  # p > n
    g = S.pairwise([S.layer_stats(A, route="gram")], [S.layer_stats(B, route="gram")])
    c = S.pairwise([S.layer_stats(A, route="cov")], [S.layer_stats(B, route="cov")])
    assert S.layer_stats(A).route == "gram" and S.layer_stats(A, route="gram").rank == 79
    for m in g:
        assert g[m] == pytest.approx(c[m], abs=1e-10), m
        assert g[m][0, 0] == pytest.approx(REF[m](A, B), abs=1e-10), m


def test_pairwise_matrix_and_blocks():
    rng = np.random.default_rng(6)
    layers = [rng.standard_normal((90, p)) @ rng.standard_normal((p, p)) for p in (20, 35, 140)]
    st = [S.layer_stats(x, chunk=13) for x in layers]  # 7 row blocks: exercises the blocked Gram
    res = S.pairwise(st, st[:2], ["lcka", "lcka_debiased", "opd"])
    assert res["opd"].shape == (3, 2)
    for i, x in enumerate(layers):
        for j, y in enumerate(layers[:2]):
            for m in res:
                assert res[m][i, j] == pytest.approx(REF[m](x, y), abs=1e-10)


def test_torch_tensor_input_equals_numpy():
    torch = pytest.importorskip("torch")
    A, B = correlated()
    for m in ALL:
        assert S.similarity(m, torch.from_numpy(A).float(), torch.from_numpy(B)) == pytest.approx(
            S.similarity(m, A.astype(np.float32), B), abs=1e-12)
    bf = torch.from_numpy(A).bfloat16()
    assert S.lcka(bf, B) == pytest.approx(ref_lcka(bf.float().numpy(), B), abs=1e-12)


# ----------------------------------------------------------------------------- reshaping and paper1
def test_reshape_modes():
    rng = np.random.default_rng(7)
    conv = rng.standard_normal((40, 3, 4, 5)).astype(np.float32)
    conv2 = rng.standard_normal((40, 6, 4, 5)).astype(np.float32)
    tok = rng.standard_normal((40, 7, 8)).astype(np.float32)

    def pos(x):
        return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])

    assert S.lcka(conv, conv2, reshape="positions") == pytest.approx(ref_lcka(pos(conv), pos(conv2)), abs=1e-10)
    c64, c64b = conv.astype(np.float64), conv2.astype(np.float64)  # reference pools in float64 too
    assert S.lcka(conv, conv2, reshape="pool") == pytest.approx(ref_lcka(c64.mean((2, 3)), c64b.mean((2, 3))),
                                                                abs=1e-10)
    assert S.lcka(conv, tok) == pytest.approx(ref_lcka(conv.reshape(40, -1), tok.reshape(40, -1)), abs=1e-10)
    assert S.opd(tok, tok[:, ::-1] * 2, reshape="positions") == pytest.approx(
        ref_opd(tok.reshape(-1, 8), (tok[:, ::-1] * 2).reshape(-1, 8)), abs=1e-10)
    assert S.opd(tok, conv, reshape="pool") == pytest.approx(ref_opd(tok.astype(float).mean(1), c64.mean((2, 3))),
                                                             abs=1e-10)
    assert S.layer_stats(conv, reshape="positions").n == 40 * 20
    with pytest.raises(ValueError, match="different numbers of rows"):
        S.lcka(conv, tok, reshape="positions")
    with pytest.raises(ValueError, match="reshape must be one of"):
        S.layer_stats(conv, reshape="tokens")


def test_paper1_mode_picks_positions_or_pool():
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((2, 60, 4, 3, 3))
    z = rng.standard_normal((60, 8, 2, 2))
    st = [S.layer_stats(v, reshape="paper1") for v in (x, y, z)]
    res = S.pairwise(st, st, ["opd", "pwcca"])
    assert res["opd"][0, 1] == pytest.approx(ref_opd(x.transpose(0, 2, 3, 1).reshape(-1, 4),
                                                     y.transpose(0, 2, 3, 1).reshape(-1, 4)), abs=1e-10)
    assert res["pwcca"][0, 2] == pytest.approx(ref_pwcca(x.mean((2, 3)), z.mean((2, 3))), abs=1e-10)
    assert res["opd"][2, 0] == pytest.approx(ref_opd(z.mean((2, 3)), x.mean((2, 3))), abs=1e-10)
    with pytest.raises(ValueError, match="paper1"):
        S.pairwise([st[0]], [S.layer_stats(x, reshape="pool")])


# ----------------------------------------------------------------------------- HDF5 streaming
def write_h5(path, layers, complete=True):
    with h5py.File(path, "w") as f:
        for name, (x, layout) in layers.items():
            ds = f.create_dataset(f"layers/{name}", data=x, chunks=(8, *x.shape[1:]))
            ds.attrs["layout"] = layout
        f.create_dataset("labels", data=np.arange(len(next(iter(layers.values()))[0]), dtype=np.int64))
        if complete:
            f.attrs["complete"] = True


@pytest.mark.filterwarnings("ignore:.*canonical correlations are 1")
def test_streamed_equals_in_memory(tmp_path):
    rng = np.random.default_rng(9)
    conv = (rng.standard_normal((50, 6, 4, 4)) + 1).astype(np.float32)
    tok = rng.standard_normal((50, 5, 8)).astype(np.float32)
    path = tmp_path / "acts.h5"
    write_h5(path, {"layer1.0": (conv, "conv"), "block3": (tok, "tokens")})
    for reshape in ("flatten", "positions", "pool"):
        for name, x in (("layer1.0", conv), ("block3", tok)):
            mem = S.layer_stats(x, reshape=reshape, loadings=True)
            st = S.layer_stats_h5(str(path), name, reshape=reshape, chunk=7, loadings=True)
            assert (st.n, st.p, st.route, st.name) == (mem.n, mem.p, mem.route, name)
            np.testing.assert_allclose(st.s, mem.s, rtol=1e-12)
            np.testing.assert_allclose(st.mean, mem.mean, atol=1e-14)
            np.testing.assert_allclose(st.gram_diag, mem.gram_diag, rtol=1e-12)
            ok = ALL if mem.rank < mem.n - 1 else ["lcka", "lcka_debiased", "opd"]
            r_st, r_mem = S.pairwise([st], [st, mem], ok), S.pairwise([mem], [st, mem], ok)
            for m in ok:
                np.testing.assert_allclose(r_st[m], r_mem[m], atol=1e-10)
    assert S.layer_stats_h5(str(path), "layer1.0").route == "gram"  # 96 columns ≥ 50 rows
    sub = S.layer_stats_h5(str(path), "block3", reshape="pool", n=30, chunk=4)
    np.testing.assert_allclose(sub.s, S.layer_stats(tok[:30], reshape="pool").s, rtol=1e-12)
    p1 = S.layer_stats_h5(str(path), "layer1.0", reshape="paper1")
    assert p1.positions.n == 50 * 16 and p1.pool.n == 50


@pytest.mark.filterwarnings("ignore:.*canonical correlations are 1")
def test_torch_backend_equals_numpy(tmp_path):
    """device= keeps blocks as torch float64 tensors: the code path CUDA tensors take, run here on the CPU."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    conv = (rng.standard_normal((40, 5, 3, 3)) + 1).astype(np.float32)
    tok = rng.standard_normal((40, 4, 6)).astype(np.float32)
    write_h5(tmp_path / "t.h5", {"layer2.0": (conv, "conv"), "block1": (tok, "tokens")})
    for reshape in ("flatten", "paper1"):
        t = [S.layer_stats_h5(str(tmp_path / "t.h5"), k, reshape=reshape, chunk=9, device="cpu", loadings=True)
             for k in ("layer2.0", "block1")]
        m = [S.layer_stats_h5(str(tmp_path / "t.h5"), k, reshape=reshape, chunk=9, loadings=True)
             for k in ("layer2.0", "block1")]
        assert isinstance((t[0].pool if reshape == "paper1" else t[0]).U, torch.Tensor)
        ok = ALL if reshape == "paper1" else ["lcka", "lcka_debiased", "opd"]
        r_t, r_m = S.pairwise(t, t, ok, svcca_variance=0.9), S.pairwise(m, m, ok, svcca_variance=0.9)
        for k in ok:
            np.testing.assert_allclose(r_t[k], r_m[k], atol=1e-10, err_msg=k)
        with pytest.raises(ValueError, match="backends"):
            S.pairwise(t, m)
        if reshape == "flatten":  # 45 columns, 40 samples
            with pytest.raises(ValueError, match="mean_cca: layer 'layer2.0' has rank 39"):
                S.pairwise(t, t, ["mean_cca"])


def test_h5_refuses_incomplete_or_missing(tmp_path):
    x = np.ones((10, 3, 2, 2), np.float32)
    write_h5(tmp_path / "bad.h5", {"layer1.0": (x, "conv")}, complete=False)
    with pytest.raises(ValueError, match="bad.h5.*incomplete"):
        S.layer_stats_h5(str(tmp_path / "bad.h5"), "layer1.0")
    write_h5(tmp_path / "ok.h5", {"layer1.0": (x, "conv")})
    with pytest.raises(ValueError, match="no layer 'layer9'"):
        S.layer_stats_h5(str(tmp_path / "ok.h5"), "layer9")


# ----------------------------------------------------------------------------- degenerate inputs
@pytest.mark.parametrize("measure", CCA_FAMILY)
def test_rank_ge_n_minus_1_raises_or_regularises(measure):
    A, B = correlated(n=100, p1=150, p2=30)  # A spans all n - 1 centred directions
    a = S.layer_stats(A, name="layer4.1", loadings=True)
    b = S.layer_stats(B, name="block2", loadings=True)
    kw = {"svcca_variance": 1.0} if measure == "svcca" else {}  # SVCCA at 99 % keeps fewer than n - 1 dims
    with pytest.raises(ValueError, match=rf"{measure}: layer 'layer4.1' has rank 99 >= n - 1 = 99 \(n = 100"):
        S.pairwise([a], [b], [measure], **kw)
    value = S.pairwise([a], [b], [measure], regularization=0.05, **kw)[measure][0, 0]
    assert np.isfinite(value) and 0 < value < 1


def test_partially_forced_correlations_warn():
    A, B = correlated(n=50, p1=30, p2=30)
    with pytest.warns(UserWarning, match="at least 11 canonical correlations are 1"):
        S.mean_cca(A, B)


def test_constant_and_non_finite_layers():
    A, _ = correlated()
    for const in (np.full((100, 20), 3.7, np.float32), np.zeros((100, 5, 2, 2))):
        for route in ("gram", "cov"):
            with pytest.raises(ValueError, match="'dead'.*constant"):
                S.layer_stats(const, name="dead", route=route)
    for bad in (np.nan, np.inf):
        X = A.copy()
        X[3, 4] = bad
        with pytest.raises(ValueError, match="'layer2.1'.*NaN or inf"):
            S.layer_stats(X, name="layer2.1")
    with pytest.raises(ValueError, match="different numbers of rows"):
        S.lcka(A, A[:-1])
    with pytest.raises(ValueError, match="loadings=True"):
        S.pairwise([S.layer_stats(A, route="gram")], [S.layer_stats(A)], ["pwcca"])
