"""Fidelity with the papers' public code (issue 17): each rule of paper 1's code (szegedai/stitching-ood, with
Ding et al.'s CCA and Csiszárik et al.'s pseudo-inverse inside it) as a named option, checked against an
independent float64 implementation of that rule written here from the code's definition; and the fixes that make
stitchlib's own defaults deterministic (PWCCA ties) and scale-invariant (rank decisions). Plus the speed path of
DM's normal equations (issue 16, item 6), which must not change a number."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import threadpoolctl
import torch
import yaml

from stitchlib import api, io, ood, pipeline, stitching
from stitchlib import config as sconf
from stitchlib import similarity as S

torch.set_num_threads(1)
TINY = "tests/configs/tiny.yaml"


@pytest.fixture(autouse=True, scope="module")
def single_threaded_blas():
    with threadpoolctl.threadpool_limits(1):
        yield


def tiny_config(**sections):
    return sconf.validate({**yaml.safe_load(open(TINY)), **sections})


def centre(x):
    x = np.asarray(x, np.float64)
    return x - x.mean(0)


def latent(n, widths, seed, noise=0.5):
    """Layers that share 8 latent factors: one (n × w) matrix per width, the first affine, the others tanh."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 8))
    out = [z @ rng.standard_normal((8, widths[0])) + noise * rng.standard_normal((n, widths[0])) + 2.0]
    out += [np.tanh(z @ rng.standard_normal((8, w))) + noise * rng.standard_normal((n, w)) for w in widths[1:]]
    return out


@pytest.fixture(scope="module")
def pooled(trained_resnet, digits16):
    """Real inputs: globally pooled activations of the conftest ResNet-18 (width 8) on the 397 test digits."""
    x = digits16[1].tensors[0]
    with torch.no_grad():
        return {name: trained_resnet.front(x, name).mean((2, 3)).double().numpy()
                for name in ("layer1.0", "layer2.1", "layer3.0", "layer4.1")}


# ----------------------------------------------------------------------------- 1. PWCCA as paper 1's code has it
def ref_pwcca_code(A, B):
    """Paper 1's code's PWCCA (compute_metrics → Ding et al.'s cca_decomp and pwcca_dist), on samples × neurons
    arrays: neurons × samples, centred, Frobenius-normalised; whitening by eigh of AAᵀ; the full SVD of the
    whitened cross matrix; weights of all of A's canonical vectors, normalised over all, summed over min(a, b)."""
    A, B = centre(A).T, centre(B).T
    A, B = A / np.linalg.norm(A), B / np.linalg.norm(B)

    def inv_sqrt(C):  # the code keeps eigenvalues > 0; a relative floor makes it well defined in float64
        w, v = np.linalg.eigh(C)
        keep = w > 1e-12 * w.max()
        return (v[:, keep] / np.sqrt(w[keep])) @ v[:, keep].T

    wa, wb = inv_sqrt(A @ A.T), inv_sqrt(B @ B.T)
    u, rho, _ = np.linalg.svd(wa @ A @ B.T @ wb)
    canonical_a = (u.T @ wa @ A).T
    weights = np.abs(canonical_a.T @ A.T).sum(1)
    weights = weights / weights.sum()
    dim = min(len(weights), len(rho))
    return float(weights[:dim] @ rho[:dim])


def test_pwcca_paper1_matches_the_codes_rule_on_random_and_real_layers(pooled):
    a, b = latent(400, [60, 20], seed=0)
    for x, y in ((a, b), (b, a)):
        assert S.pwcca(x, y, count="paper1") == pytest.approx(ref_pwcca_code(x, y), abs=1e-8)
    for src, tgt in (("layer4.1", "layer1.0"), ("layer3.0", "layer2.1"), ("layer1.0", "layer4.1")):
        x, y = pooled[src], pooled[tgt]
        assert S.pwcca(x, y, count="paper1") == pytest.approx(ref_pwcca_code(x, y), abs=1e-8), (src, tgt)
    # the code's rule is stitchlib's 'rank' rule unless A is wider than B; wider, A's extra directions weigh in
    x, y = pooled["layer1.0"], pooled["layer4.1"]
    assert S.pwcca(x, y, count="paper1") == pytest.approx(S.pwcca(x, y), abs=1e-10)
    x, y = pooled["layer4.1"], pooled["layer1.0"]
    assert S.pwcca(x, y, count="paper1") < S.pwcca(x, y) - 0.1


def test_pwcca_paper1_reaches_the_indices_job(tmp_path):
    """similarity.pwcca_count: paper1 in the indices job writes the code's value for a pair of conv layers of
    different shapes (reshape paper1 pools them)."""
    cfg = tiny_config()
    specs = {n: sconf.network_spec(cfg, "digits", n) for n in ("rn-s0", "rn-s1")}
    shapes = pipeline.expected_shapes(specs["rn-s0"])
    rng, h5 = np.random.default_rng(3), {}
    for net in specs:
        z = rng.standard_normal((60, 6))
        layers = {k: (np.einsum("nk,kchw->nchw", z, rng.standard_normal((6, *s)))
                      + 0.3 * rng.standard_normal((60, *s))).astype(np.float32) for k, s in shapes.items()}
        with io.ActivationWriter(tmp_path / f"{net}.h5", 60, {"network": net}) as w:
            w.append(np.arange(60), np.zeros((60, 10), np.float32), layers, {k: "conv" for k in layers})
        h5[net] = str(tmp_path / f"{net}.h5")
    settings = {**cfg["similarity"], "measures": ["pwcca"], "pwcca_count": "paper1"}
    pipeline.similarity_indices(specs, h5, [("rn-s0", "rn-s1")], settings, str(tmp_path / "out.csv"))
    t = pd.read_csv(tmp_path / "out.csv").set_index(["source_layer", "target_layer"])["value"]
    x, y = (io.read_layer(h5[net], layer).astype(np.float64).mean((2, 3))  # pooled in float64, as the job does
            for net, layer in (("rn-s0", "layer4.1"), ("rn-s1", "layer2.1")))
    assert t["layer4.1", "layer2.1"] == pytest.approx(ref_pwcca_code(x, y), abs=1e-8)


# ----------------------------------------------------------------------------- 2. PWCCA ties broken deterministically
@pytest.mark.parametrize("count", ["rank", "neurons"])
def test_pwcca_with_forced_unit_correlations_ignores_chunks_and_column_order(count):
    """rank A + rank B > n − 1 forces canonical correlations of exactly 1, whose directions are unique only as a
    subspace; the value must not depend on the row blocks of the factorisation or on the order of B's columns."""
    a, b = latent(60, [40, 35], seed=1, noise=0.7)
    rng = np.random.default_rng(2)
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "… canonical correlations are 1 by construction"
        for chunk in (None, 7, 13):
            for perm in (np.arange(35), rng.permutation(35)):
                sa = S.layer_stats(a, loadings=True, chunk=chunk)
                sb = S.layer_stats(b[:, perm], loadings=True, chunk=chunk)
                values.append(S.pairwise([sa], [sb], ["pwcca"], pwcca_count=count)["pwcca"][0, 0])
    assert np.ptp(values) < 1e-12, values


# ----------------------------------------------------------------------------- 3. scale-invariant rank decisions
def ref_r2_invariant(A, B):
    """R²_LR(A → B) by least squares on A's columns scaled to unit norm (R² does not change under that scaling)."""
    A = centre(A)
    A = A / np.linalg.norm(A, axis=0)
    M = np.linalg.lstsq(A, centre(B), rcond=None)[0]
    return 1 - np.linalg.norm(A @ M - centre(B)) ** 2 / np.linalg.norm(centre(B)) ** 2


@pytest.mark.parametrize("shape", [(300, 20, 15), (40, 60, 15)])  # covariance route; Gram route (p ≥ n)
def test_rank_decisions_do_not_depend_on_column_scale(shape):
    n, p, q = shape
    a, b = latent(n, [p, q], seed=4, noise=0.3)
    if p > n:  # rank 8 + a few noisy columns: R² and CCA stay defined on the Gram route
        a = a[:, :8] @ np.random.default_rng(5).standard_normal((8, p)) + 2.0
        a[:, :5] += 0.3 * np.random.default_rng(6).standard_normal((n, 5))
    scaled = a.copy()
    scaled[:, :5] *= 1e-9  # five channels nine orders of magnitude smaller
    for m in ("r2_lr", "dm_struct", "mean_cca"):
        assert S.similarity(m, scaled, b) == pytest.approx(S.similarity(m, a, b), abs=1e-8), m
    assert S.r2_lr(scaled, b) == pytest.approx(ref_r2_invariant(a, b), abs=1e-8)
    assert S.layer_stats(scaled).rank == S.layer_stats(a).rank
    old = S.pairwise([S.layer_stats(scaled, rank_scale="global")], [S.layer_stats(b)], ["r2_lr"])["r2_lr"][0, 0]
    assert old < S.r2_lr(a, b) - 1e-3  # the unscaled rank drops the small channels' directions


def test_rank_tolerance_reaches_every_public_function():
    a, b = latent(200, [30, 25], seed=7)
    loose = 0.2  # keeps only the few directions above 20 % of the largest singular value
    sa = S.layer_stats(a, rtol=loose, loadings=True)
    assert sa.rank < S.layer_stats(a).rank and sa.rtol == loose
    for m in ("lcka", "pwcca", "mean_cca", "r2_lr", "opd"):
        kw = dict(rtol=loose, loadings=True, rank_scale=S.rank_scale_for([m]))  # CKA, OPD: "global"
        expected = S.pairwise([S.layer_stats(a, **kw)], [S.layer_stats(b, **kw)], [m], rtol=loose)[m][0, 0]
        assert getattr(S, m)(a, b, rtol=loose) == pytest.approx(expected, abs=1e-12), m
        assert S.similarity(m, a, b, rtol=loose) == pytest.approx(expected, abs=1e-12), m
        assert api.compare(a, b, [m], reshape="flatten", rtol=loose)[m] == pytest.approx(expected, abs=1e-12), m
    assert S.mean_cca(a, b, rtol=loose) != pytest.approx(S.mean_cca(a, b), abs=1e-3)
    with pytest.raises(ValueError, match="factorised with rtol=0.2.*not rtol=0.01"):
        S.pairwise([sa], [sa], ["lcka"], rtol=0.01)
    assert tiny_config(similarity={"rtol": 1e-5})["similarity"]["rtol"] == 1e-5
    with pytest.raises(sconf.ConfigError, match="similarity.rtol"):
        tiny_config(similarity={"rtol": 2})


# ----------------------------------------------------------------------------- 4. paper1 reshape on token layers
def test_paper1_reshape_compares_token_layers_token_by_token():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((50, 5, 6))
    y = np.tanh(x @ rng.standard_normal((6, 9))) + 0.3 * rng.standard_normal((50, 5, 9))  # same tokens, wider
    z = rng.standard_normal((50, 3, 6))  # fewer tokens
    st = [S.layer_stats(v, reshape="paper1", loadings=True) for v in (x, y, z)]
    res = S.pairwise(st, st, ["mean_cca", "opd"])
    by_token = S.mean_cca(x.reshape(-1, 6), y.reshape(-1, 9))
    assert res["mean_cca"][0, 1] == pytest.approx(by_token, abs=1e-10)
    assert res["mean_cca"][0, 1] != pytest.approx(S.mean_cca(x.mean(1), y.mean(1)), abs=1e-3)
    assert res["opd"][0, 2] == pytest.approx(S.opd(x.mean(1), z.mean(1)), abs=1e-10)


# ----------------------------------------------------------------------------- 5. DM: the code's pinv, DM(struct)
def ref_lstsq_moments(chunks):
    """The previous LeastSquares: every chunk converted to float64 whole, XᵀX in full, sums separately."""
    n, sx, sy, xx, xy = 0, 0.0, 0.0, 0.0, 0.0
    for x, y in chunks:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        n, sx, sy, xx, xy = n + len(x), sx + x.sum(0), sy + y.sum(0), xx + x.T @ x, xy + x.T @ y
    mx, my = sx / n, sy / n
    return mx, my, xx - n * np.outer(mx, mx), xy - n * np.outer(mx, my)


def test_blocked_symmetric_update_gives_the_same_moments_and_fit():
    rng = np.random.default_rng(9)
    chunks = [((rng.standard_normal((k, 70)) * np.linspace(0.1, 10, 70) + 3).astype(np.float32),
               rng.standard_normal((k, 33)).astype(np.float32)) for k in (5000, 1, 777)]  # > one block, odd sizes
    ls = stitching.LeastSquares(70, 33)
    for x, y in chunks:
        ls.update(x, y)
    for got, want in zip(ls.centred(), ref_lstsq_moments(chunks)):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-9 * np.abs(want).max())
    x = np.concatenate([c[0] for c in chunks]).astype(np.float64)
    y = np.concatenate([c[1] for c in chunks]).astype(np.float64)
    coef = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]
    w, b = ls.solve()
    np.testing.assert_allclose(w, coef[:70].T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(b, coef[70], rtol=1e-8, atol=1e-10)


def test_pinv_solver_is_the_codes_pseudo_inverse():
    """torch.linalg.pinv([X 1]) @ Y with its default cutoff for float32 (rtol = max(m, n) · eps32): here the
    mean dominates the largest singular value of [X 1] and a low-variance channel falls below the cutoff."""
    rng = np.random.default_rng(10)
    m, c = 40_000, 6
    x = (5 + rng.standard_normal((m, c)) * [1, 1, 1, 1, 1, 2e-3]).astype(np.float32)
    w_true = rng.standard_normal((3, c)) * [1, 1, 1, 1, 1, 500]  # the small channel matters to y
    y = (x @ w_true.T + 0.5 + 0.01 * rng.standard_normal((m, 3))).astype(np.float32)
    ls = stitching.LeastSquares(c, 3)
    for lo in range(0, m, 8192):
        ls.update(x[lo:lo + 8192], y[lo:lo + 8192])
    w, b = ls.solve(solver="pinv")
    x1 = np.c_[x.astype(np.float64), np.ones(m)]
    ref = np.linalg.pinv(x1, rcond=max(x1.shape) * np.finfo(np.float32).eps) @ y.astype(np.float64)
    np.testing.assert_allclose(np.c_[w, b], ref.T, rtol=1e-8, atol=1e-9)
    code = (torch.linalg.pinv(torch.from_numpy(np.c_[x, np.ones((m, 1), np.float32)])) @ torch.from_numpy(y)).T
    np.testing.assert_allclose(np.c_[w, b], code.double().numpy(), atol=5e-3)  # float32 rounding on its side
    exact, b_exact = ls.solve()
    np.testing.assert_allclose(exact, w_true, rtol=0.02, atol=0.01)  # least squares recovers the planted map …
    residual = [float(((y - x @ v.T - c0) ** 2).mean()) for v, c0 in ((exact, b_exact), (w, b))]
    assert residual[1] > 1.5 * residual[0]  # … the code's cutoff drops a direction of the small channel
    assert abs(w[:, 5] - exact[:, 5]).max() > 1
    small = stitching.LeastSquares(c, 3)
    small.update(x[:100], y[:100])  # K = 100 rows: nothing is cut, the two solvers agree
    np.testing.assert_allclose(small.solve(solver="pinv")[0], small.solve()[0], atol=1e-6)


def test_dm_struct_batch_mean_is_the_codes_average(trained_resnet, digits16):
    x = digits16[1].tensors[0][:300]
    with torch.no_grad():
        h = trained_resnet.front(x, "layer2.0")
    stitch = stitching.AffineStitch.between(h.shape[1:], h.shape[1:], "conv")
    stitch.set_affine(torch.eye(h.shape[1]) * 0.9, torch.full((h.shape[1],), 0.05))
    labels = digits16[1].tensors[1][:300]
    whole = stitching.evaluate(stitch, trained_resnet, "layer2.0", h, h, labels, batch_size=128)
    per = stitching.evaluate(stitch, trained_resnet, "layer2.0", h, h, labels, batch_size=128, struct="batch_mean")
    hd = h.double().numpy()
    with torch.no_grad():
        s = stitch(h).double().numpy()  # the stitch's own float32 output; the sums are the point
    assert np.abs(s - (0.9 * hd + 0.05)).max() < 1e-5
    ratios = [((s[i:i + 128] - hd[i:i + 128]) ** 2).sum() / (hd[i:i + 128] ** 2).sum() for i in range(0, 300, 128)]
    assert per["struct"] == pytest.approx(np.mean(ratios), rel=1e-10)
    assert whole["struct"] == pytest.approx(((s - hd) ** 2).sum() / (hd**2).sum(), rel=1e-10)
    assert per["accuracy"] == whole["accuracy"]


# ----------------------------------------------------------------------------- 6. OOD: the code's choices
def ref_fpr_at_recall(pos, neg, level=0.95):
    """Hendrycks et al.'s fpr_and_fdr_at_recall as paper 1's code calls it (get_measures(−E_in, −E_other))."""
    score = np.r_[pos, neg]
    truth = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    order = np.argsort(score, kind="mergesort")[::-1]
    score, truth = score[order], truth[order]
    idx = np.r_[np.where(np.diff(score))[0], len(truth) - 1]
    tps = np.cumsum(truth)[idx]
    fps = 1 + idx - tps
    recall = tps / tps[-1]
    last = tps.searchsorted(tps[-1])
    recall, fps = np.r_[recall[last::-1], 1], np.r_[fps[last::-1], 0]
    return fps[np.argmin(np.abs(recall - level))] / len(neg)


def test_fpr95_closest_is_the_codes_rule():
    rng = np.random.default_rng(11)
    for trial in range(20):
        e_in = np.round(rng.normal(-10, 2, 97 + trial), 1)  # rounded: ties among scores
        e_out = np.round(rng.normal(-8 + trial / 10, 2, 120), 1)
        got = ood.ood_metrics(e_in, e_out, fpr_rule="closest")["fpr95"]
        assert got == pytest.approx(ref_fpr_at_recall(-e_in, -e_out), abs=1e-15), trial
    e_in = np.arange(10.0)  # TPR steps of 0.1: 'closest' takes TPR 0.9 (< 95 %), 'at_least' TPR 1.0, where the
    e_out = np.r_[[9.0] * 3, [20.0] * 7]  # three outliers tie with the last ID energy
    assert ood.ood_metrics(e_in, e_out, fpr_rule="closest")["fpr95"] == 0.0 == ref_fpr_at_recall(-e_in, -e_out)
    assert ood.ood_metrics(e_in, e_out)["fpr95"] == pytest.approx(0.3)


def test_iteration_stepped_schedule_and_token_detector_without_positions(monkeypatch):
    """lr_step='iteration' counts the schedule in batches (paper 1's stage 2: ×0.1 after epochs // 2 batches);
    positional=False leaves no positional embedding, so token 0's output ignores the order of the others."""
    seen: list[float] = []
    step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: (seen.append(self.param_groups[0]["lr"]),
                                                                        step(self, *a, **k))[1])
    rng = torch.Generator().manual_seed(0)
    x, y, xo = torch.randn(64, 5, 6, generator=rng), torch.randint(0, 3, (64,), generator=rng), torch.randn(40, 5, 6)
    cfg = sconf.ood_settings(tiny_config(ood={"preset": "paper1", "finetune": {"epochs": 4, "batch_size": 32},
                                              "pretrain": {"epochs": 1, "batch_size": 32}}))
    assert cfg["finetune"]["milestones"] == [2] and cfg["finetune"]["lr_step"] == "iteration"
    assert cfg["detector"]["tokens"]["positional"] is False and cfg["fpr95"] == "closest"
    torch.manual_seed(0)
    det = ood.build_detector("tokens", (5, 6), 3, hidden_dim=8, depth=1, heads=1, mlp_dim=8,
                             positional=cfg["detector"]["tokens"]["positional"])
    ood.train_detector(det, x, y, xo, {k: cfg[k] for k in ("pretrain", "finetune")}, seed=0, progress=lambda s: 0)
    fin = seen[2:]  # 2 pretraining batches; 4 epochs × 4 batches of 16 ID + 16 outliers
    assert len(fin) == 16 and fin[:2] == [1e-3] * 2 and np.allclose(fin[2:], 1e-4)
    assert not any("pos_embedding" in k for k in det.state_dict())
    perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(4, generator=rng)])
    with torch.no_grad():
        torch.testing.assert_close(det(x[:8, perm]), det(x[:8]), rtol=1e-5, atol=1e-5)
    ood.load_detector(ood.detector_spec(det), ood.detector_state(det))  # round trip without the embedding
