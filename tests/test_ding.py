"""Ding et al. statistical tests: low-rank approximations, probes, rank correlations, tables."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from stitchlib import ding
from stitchlib import similarity as sim


def _digits():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=397, stratify=y, random_state=0)


def test_planted_monotone_relation_correlates_perfectly():
    f = np.linspace(0, 1, 12)
    r = ding.rank_correlations(f, np.exp(3 * f))  # monotone, non-linear
    assert r["tau"] == pytest.approx(1) and r["rho"] == pytest.approx(1)
    assert r["tau_p"] < 1e-6 and r["rho_p"] < 1e-6


def test_permuted_relation_is_not_significant():
    f = np.linspace(0, 1, 12)
    d = np.random.default_rng(0).permutation(f)
    r = ding.rank_correlations(f, d)
    assert r["tau_p"] > 0.05 and r["rho_p"] > 0.05
    table = ding.mark(pd.DataFrame([{"dataset": "digits", "model": "rn", "measure": "LCKA", **r}]), 0.05)
    assert "| digits | rn | ≈ 0 | ≈ 0 |" in ding.markdown(table, "T", "")


def test_anticorrelation_is_not_significant_one_sided():
    f = np.linspace(0, 1, 12)
    r = ding.rank_correlations(f, -f)
    assert r["tau"] == pytest.approx(-1) and r["tau_p"] > 0.99


def test_values_equal_up_to_rounding_are_ties():
    """A low-rank approximation that keeps the whole layer has dissimilarity 0 up to rounding (1e-16 or exactly 0,
    as the factorisation falls): those are ties, not an order, so τ does not move with the rounding."""
    f = np.array([0.0025, 0.0025, 0.0025, 0.0025, 0.0, 0.005, 0.0227, 0.181, 0.388])
    d = np.array([0.25, 0.45, 0.71, 0.85])
    noisy = [np.concatenate([np.array(z) * 1e-16, d]) for z in ([0, 1, 0, 0, 1], [2, 1, 0, 7, 1])]
    a, b = (ding.rank_correlations(f, x) for x in noisy)
    exact = ding.rank_correlations(f, np.concatenate([np.zeros(5), d]))
    assert a["tau"] == b["tau"] == exact["tau"] and a["rho"] == b["rho"] == exact["rho"]
    assert ding.rank_correlations(f, np.concatenate([np.arange(5) * 1e-3, d]))["tau"] != exact["tau"]


def test_constant_side_gives_nan_never_significant():
    r = ding.rank_correlations(np.arange(5.0), np.zeros(5))
    assert np.isnan(r["tau"]) and np.isnan(r["tau_p"])
    assert not ding.mark(pd.DataFrame([{**r, "measure": "x"}]), 0.05)["tau_significant"].item()


@pytest.mark.parametrize("layout,shape", [("conv", (20, 6, 3, 3)), ("tokens", (20, 5, 6))])
def test_low_rank_full_rank_returns_input(layout, shape):
    h = np.random.default_rng(1).normal(size=shape)
    lra = ding.LowRank.fit([h[:7], h[7:]], layout)  # streamed in two chunks
    np.testing.assert_allclose(lra.apply(h, 6, layout), h, atol=1e-12)


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_low_rank_equals_truncated_svd_of_centred_rows(rank):
    h = np.random.default_rng(2).normal(size=(30, 7, 2, 2)) * np.arange(1, 8)[None, :, None, None]
    rows = h.transpose(0, 2, 3, 1).reshape(-1, 7)
    mu = rows.mean(0)
    u, s, vt = np.linalg.svd(rows - mu, full_matrices=False)  # textbook: Eckart–Young on the centred rows
    expected = (u[:, :rank] * s[:rank]) @ vt[:rank] + mu
    got = ding.LowRank.fit([h], "conv").apply(h, rank, "conv")
    np.testing.assert_allclose(got.transpose(0, 2, 3, 1).reshape(-1, 7), expected, atol=1e-10)
    assert np.linalg.matrix_rank(got.transpose(0, 2, 3, 1).reshape(-1, 7) - mu) == rank


def test_pooling_commutes_with_low_rank_projection():
    h = np.random.default_rng(3).normal(size=(10, 5, 4, 4))
    lra = ding.LowRank.fit([h], "conv")
    np.testing.assert_allclose(ding.pooled(lra.apply(h, 2, "conv"), "conv"),
                               lra.apply(ding.pooled(h, "conv"), 2, "pool"), atol=1e-12)


def test_rank_grid():
    assert ding.rank_grid(128, 8) == [128, 64, 32, 16, 8, 4, 2, 1]
    g = ding.rank_grid(48, 14)
    assert g[0] == 48 and g[-1] == 1 and g == sorted(set(g), reverse=True)
    assert ding.rank_grid(16, [16, 4, 1]) == [16, 4, 1]
    with pytest.raises(ValueError, match=r"ding.sensitivity.ranks: ranks \[20\] are outside 1..16"):
        ding.rank_grid(16, [20, 1])


def test_probe_on_raw_digits_is_accurate():
    xtr, xte, ytr, yte = _digits()
    assert ding.probe_accuracy(xtr, ytr, xte, yte) > 0.9


def test_probe_matches_scikit_learn_on_the_same_objective():
    xtr, xte, ytr, yte = _digits()
    l2 = 1e-2
    mu = xtr.mean(0)
    scale = np.sqrt(((xtr - mu) ** 2).mean())
    ref = LogisticRegression(C=1 / (l2 * len(xtr)), max_iter=5000, tol=1e-10).fit((xtr - mu) / scale, ytr)
    agree = (ref.predict((xte - mu) / scale) == yte).mean()
    assert ding.probe_accuracy(xtr, ytr, xte, yte, l2=l2, max_iter=500) == pytest.approx(agree, abs=1 / len(yte))


def test_pwcca_counts_the_directions_a_low_rank_approximation_lacks():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    lra = ding.LowRank.fit([a[:, :, None, None]], "conv")
    ac = a - a.mean(0)
    u, _, _ = np.linalg.svd(ac, full_matrices=False)
    alpha = np.abs(u.T @ ac).sum(1)  # Morcos et al.'s weights of A's canonical = principal directions
    stats = lambda x: sim.layer_stats(x, loadings=True)  # noqa: E731
    for r in (6, 4, 2, 1):
        b = lra.apply(a[:, :, None, None], r, "conv")[:, :, 0, 0]
        by_rank = sim.pairwise([stats(a)], [stats(b)], ["pwcca"])["pwcca"][0, 0]
        by_neurons = sim.pairwise([stats(a)], [stats(b)], ["pwcca"], pwcca_count="neurons")["pwcca"][0, 0]
        assert by_rank == pytest.approx(1)  # every correlation the rank count sees is 1: degenerate
        # ρ = 1 on B's span (A's top-r principal directions), 0 on the rest
        assert by_neurons == pytest.approx(alpha[:r].sum() / alpha.sum(), abs=1e-12)


def test_pwcca_neuron_count_agrees_with_rank_count_on_full_rank_layers():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 5))
    sa, sb = sim.layer_stats(a, loadings=True), sim.layer_stats(b, loadings=True)
    for x, y in ((sa, sb), (sb, sa)):
        assert sim.pairwise([x], [y], ["pwcca"], pwcca_count="neurons")["pwcca"][0, 0] == pytest.approx(
            sim.pairwise([x], [y], ["pwcca"])["pwcca"][0, 0], abs=1e-12)


def test_tables_average_layers_and_keep_them():
    rows = []
    for layer, noise in (("l1", 0.0), ("l2", 0.1)):
        f = np.linspace(0, 1, 8)
        rows += [{"dataset": "digits", "model": "rn", "net": "rn-s0", "layer": layer, "functional_distance": v,
                  "d_lcka": v + noise * np.sin(9 * v), "d_dm_func": 1 - v} for v in f]
    per_layer, mean = ding.table2(pd.DataFrame(rows), 0.05)
    assert len(per_layer) == 4 and set(per_layer.layer) == {"l1", "l2"}
    lcka = mean[mean.measure == "LCKA"].iloc[0]
    assert lcka.tau == pytest.approx(per_layer[per_layer.measure == "LCKA"].tau.mean()) and lcka.tau_significant
    dm = mean[mean.measure == "DM (func.)"].iloc[0]
    assert dm.tau == pytest.approx(-1) and not dm.tau_significant
    md = ding.markdown(mean, "Table 2", "note")
    assert "| LCKA τ | LCKA ρ | DM (func.) τ | DM (func.) ρ |" in md and "| ≈ 0 | ≈ 0 |" in md
    # with a second network, each mean gets its interval over the networks (each resampled with its layers)
    two = pd.DataFrame(rows + [{**r, "net": "rn-s1", "d_lcka": 1 - r["d_lcka"]} for r in rows])
    u = {"enabled": True, "replicates": 200, "seed": 0, "level": 0.95, "method": "percentile"}
    lcka = ding.table2(two, 0.05, u)[1].set_index("measure").loc["LCKA"]
    s0 = per_layer[per_layer.measure == "LCKA"].tau.mean()
    assert lcka.tau == pytest.approx(0) and (lcka.tau_low, lcka.tau_high) == (pytest.approx(-s0), pytest.approx(s0))
