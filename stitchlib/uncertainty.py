"""How sure is each number: bootstrap confidence intervals over test images (and networks), permutation tests.

**Resamples.**  A bootstrap replicate draws the n test images with replacement; it is a count vector c ∈ ℕⁿ
(Σc = n, c_i = how often image i is drawn), row b of `resample_counts(n, B, seed)`.  Row b depends on
(seed, n, b) only (rows are drawn 64 at a time, the block seeded with (seed, n, b // 64)), so every job of a
run — every measure, layer pair, network pair and stitch — sees the same resamples: intervals are paired (a
difference of two measures can be bootstrapped from their replicates), and asking for more replicates keeps the
first ones.  The jackknife (for BCa) is the n count vectors 1 − e_i.
Several networks: `network_counts` resamples the networks (seeds) too; a network pair (s, t) weighs c_s·c_t
(intra: c_s).  Networks are crossed with images (every network sees the same test images), so replicate b
applies image resample b to every pair it draws (a "pigeonhole" bootstrap, Owen 2007), not nested draws.

**Indices from the shared layer statistics** (`stitchlib.similarity.LayerStats`; never a new factorisation).
A layer's centred activations are X_c = U diag(s) Vᵀ; Z = U diag(s) (rows × r) are its coordinates in the
orthonormal basis V (rows = images × positions for reshape 'positions', k positions per image; images
otherwise, k = 1).  For counts c, with Z[i] the k rows of image i,

    M_ab(c) = Σ_i c_i Z_a[i]ᵀ Z_b[i],   t_a(c) = Σ_i c_i Z_a[i]ᵀ1,   N(c) = k Σ_i c_i,
    G_ab(c) = M_ab − t_a t_bᵀ / N       (= V_aᵀ A*_cᵀ B*_c V_b of the resampled, re-centred activations),

and every index is a function of G_aa, G_bb, G_ab: linear CKA = ‖G_ab‖²_F / (‖G_aa‖_F ‖G_bb‖_F); OPD from
‖G_ab‖_* and tr G; canonical correlations σ(W_aᵀ G_ab W_b) with W = E Λ^{-1/2} from eigh(G) = E Λ Eᵀ (ridge:
Λ + λ); PWCCA's weights α_i = ‖V_a G_aa u_i‖₁ (V_a = loadings / s); R²_LR = ‖W_aᵀ G_ab‖²_F / tr G_bb; DM(struct) =
1 − R²_LR.  All replicates' M_ab come from one GEMM of the counts (B × n) with the per-image products
Z_a[i]ᵀZ_b[i] (n × r_a·r_b), streamed in blocks of images and replicates.  When r_a·r_b > n (k = 1), CKA uses
the n × n Grams K = Z_aZ_aᵀ instead: ‖M_ab‖²_F = cᵀ(K∘L)c, t_aᵀM_ab t_b = Σ_i c_i (Kc)_i (Lc)_i, ‖t_a‖² = cᵀKc —
one GEMM C·(K∘L) for all replicates.  Each replicate equals the index recomputed from the resampled
activations (tests/test_uncertainty.py checks every measure against that), with one deliberate exception:
debiased CKA (below).

**Debiased CKA on resamples.**  Song et al.'s HSIC_u = E[k_ij l_ij] + E[k_ij l_qr] − 2 E[k_ij l_iq] is a U-statistic
over tuples of *distinct* rows.  On a resample the copies of one image are distinct rows, so the estimator
applied to the resampled rows pairs an image with its own copy — the diagonal bias it exists to remove — and
every replicate is inflated by O(p/n) (intervals then miss the population value: coverage 0.07 instead of 0.95 at
p = 20, n = 100).  Here each of the three expectations is the count-weighted mean over tuples of distinct
original rows (data centred once; at c = 1 this is Song's estimator exactly): coverage 0.96–0.99.

**Rank on resamples** (CCA family, R²_LR, DM(struct)).  A resample holds ≈ 63 % distinct images, so its rank is
min(r, distinct rows − 1).  A replicate is undefined (NaN) when it loses a layer's rank (an eigenvalue of G below
the rank rule of `stitchlib.similarity`), when R²/DM's r_a ≥ distinct rows − 1, or, for CCA measures, when
duplicates push r_a + r_b past distinct rows − 1 (then r_a + r_b − distinct + 1 canonical correlations are 1 by
construction: the replicate would be inflated, not noisy).  An interval with any undefined replicate is NaN
(`Bootstrap.undefined` counts them); use reshape 'pool'/'positions' or more images.  PWCCA is supported with
pwcca_count='rank'.

**Intervals** (`interval`).  ``percentile``: the α/2 and 1 − α/2 quantiles of the replicates.  ``bc``: bias-
corrected percentile, quantiles Φ(2z₀ ± z_{α/2}) with z₀ = Φ⁻¹(share of replicates below the estimate, ties
half).  ``bca``: also accelerated, from the jackknife (Efron & Tibshirani 1993, 14.3; identical to
scipy.stats.bootstrap(method='BCa') given the same replicates, tested).  Plug-in CKA and canonical correlations
are biased upward by O(p/n) and a resample adds that bias again, so percentile intervals sit too high; z₀ removes
it (CKA, p = 5, n = 50: coverage 0.69 percentile, 0.86 bc/bca).  ``bc`` needs no jackknife, so it also serves
pooled (network × image) replicates, which have none.  No interval fixes plug-in CKA where its bias exceeds its
noise (p = q = 20, n = 100: coverage 0): use debiased CKA there.

**Permutation test** (`permutation_test`): permuting the images of one side (blocks of rows for 'positions')
breaks any relation and keeps both layers' statistics; p = (1 + #{null at least as similar}) / (1 + P).

numpy/float64 on the host; statistics held on a device are copied to the host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from stitchlib import catalog
from stitchlib import similarity as sim

__all__ = ["Bootstrap", "METHODS", "resample_counts", "jackknife_counts", "network_counts", "pair_weights",
           "pooled", "cluster_bootstrap", "interval", "mean_ratio", "stitch_bootstrap", "index_bootstrap",
           "permutation_test"]

METHODS = ("percentile", "bc", "bca")
DEFAULT_INDICES = catalog.BOOTSTRAP_INDICES  # resampled over images by default: the Gram route is cheap
_BUDGET = 2**24  # float64 elements per chunk of per-replicate moments (128 MB)
_CKA = ("lcka", "lcka_debiased")
_NEEDS_EIGH = ("pwcca", "mean_cca", "svcca", "r2_lr", "dm_struct")


# ----------------------------------------------------------------------------------------------- resamples
_BLOCK = 64  # resamples drawn per generator


def _draws(n: int, replicates: int, key: list[int], start: int = 0) -> np.ndarray:
    """(replicates, n) float64 counts of n units drawn with replacement, rows start … start + replicates − 1; row b
    is drawn by the generator seeded with (*key, b // 64) alone, so it does not depend on how many are asked."""
    out = np.zeros((replicates, n))
    for block in range(start // _BLOCK, (start + replicates - 1) // _BLOCK + 1 if replicates else 0):
        idx = np.random.default_rng([*key, block]).integers(0, n, (_BLOCK, n))
        counts = np.bincount((idx + n * np.arange(_BLOCK)[:, None]).ravel(), minlength=_BLOCK * n).reshape(_BLOCK, n)
        lo, hi = max(start, block * _BLOCK), min(start + replicates, (block + 1) * _BLOCK)
        out[lo - start:hi - start] = counts[lo - block * _BLOCK:hi - block * _BLOCK]
    return out


def resample_counts(n: int, replicates: int, seed: int = 0, start: int = 0) -> np.ndarray:
    """(replicates, n) counts of bootstrap resamples start … start + replicates − 1 of n images (key (seed, n))."""
    return _draws(n, replicates, [seed, n], start)


def jackknife_counts(n: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Leave-one-image-out count vectors 1 − e_i for i in [start, stop)."""
    stop = n if stop is None else stop
    out = np.ones((stop - start, n))
    out[np.arange(stop - start), np.arange(start, stop)] = 0
    return out


def network_counts(networks: int, replicates: int, seed: int = 0) -> np.ndarray:
    """(replicates, networks) counts of the networks (seeds) drawn with replacement; a stream separate from the
    image resamples (key (seed, networks, 1))."""
    return _draws(networks, replicates, [seed, networks, 1])


def pair_weights(pairs: Sequence[tuple[str, str]], networks: Sequence[str], counts: np.ndarray) -> np.ndarray:
    """(replicates, pairs) weight of each network pair in each replicate: c_s·c_t for s ≠ t, c_s for (s, s)."""
    pos = {net: i for i, net in enumerate(networks)}
    a, b = np.array([pos[s] for s, _ in pairs]), np.array([pos[t] for _, t in pairs])
    return np.where(a == b, counts[:, a], counts[:, a] * counts[:, b])


def pooled(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over the last axis (pairs) per replicate: values (B, …, P), weights (B, P) → (B, …); NaN for
    a replicate of zero total weight (e.g. every draw the same network: no inter-network pair)."""
    w = weights.reshape(weights.shape[0], *([1] * (values.ndim - 2)), weights.shape[1])
    total = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (values * w).sum(-1) / np.where(total > 0, total, 1), np.nan)


def cluster_bootstrap(values: Any, clusters: Sequence[Any], *, replicates: int = 1000, seed: int = 0) -> Bootstrap:
    """The mean of ``values`` (rows) with the rows' clusters (e.g. the networks or runs they come from) resampled
    with replacement (`network_counts`): the mean's uncertainty over those units, keeping each unit's rows."""
    values = np.asarray(values, float)
    names = list(dict.fromkeys(clusters))
    w = network_counts(len(names), replicates, seed)[:, [names.index(c) for c in clusters]]
    return Bootstrap(np.asarray(values.mean()), pooled(np.broadcast_to(values, w.shape), w))


# ----------------------------------------------------------------------------------------------- intervals
def _quantile(sorted_reps: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-element linear-interpolation quantile (numpy's default method) of replicates sorted along axis 0."""
    h = q * (sorted_reps.shape[0] - 1)
    lo = np.clip(np.floor(h).astype(int), 0, sorted_reps.shape[0] - 1)
    hi = np.minimum(lo + 1, sorted_reps.shape[0] - 1)
    a, b = np.take_along_axis(sorted_reps, lo[None], 0)[0], np.take_along_axis(sorted_reps, hi[None], 0)[0]
    return a + (h - lo) * (b - a)


def interval(estimate: Any, replicates: Any, *, level: float = 0.95, method: str = "bc",
             jackknife: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each shaped like ``estimate``, from replicates (B, …) — see the module docstring; BCa needs
    the jackknife values (n, …).  NaN where a replicate, the estimate or the jackknife is NaN.  A constant
    bootstrap distribution (e.g. the relative accuracy of an identity stitch) gives the point [θ, θ]."""
    if method not in METHODS:
        raise ValueError(f"interval method must be one of {METHODS}, got {method!r}")
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    est, reps = np.asarray(estimate, float), np.asarray(replicates, float)
    alpha = (1 - level) / 2
    bad = np.isnan(reps).any(0) | np.isnan(est)
    q_lo, q_hi = np.full(est.shape, alpha), np.full(est.shape, 1 - alpha)
    if method != "percentile":
        z0 = ndtri(((reps < est).sum(0) + (reps <= est).sum(0)) / (2 * reps.shape[0]))
        a = np.zeros(est.shape)
        if method == "bca":
            if jackknife is None:
                raise ValueError("BCa intervals need the jackknife values (e.g. index_bootstrap(..., jackknife=True))")
            jk = np.asarray(jackknife, float)
            bad |= np.isnan(jk).any(0)
            u = jk.mean(0) - jk
            den = (u**2).sum(0) ** 1.5
            a = np.where(den > 0, (u**3).sum(0) / (6 * np.where(den > 0, den, 1)), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            q_lo, q_hi = (ndtr(z0 + (z0 + z) / (1 - a * (z0 + z))) for z in (ndtri(alpha), -ndtri(alpha)))
        bad |= np.isnan(q_lo) | np.isnan(q_hi)
    srt = np.sort(np.where(bad, 0.0, reps), 0)
    lo, hi = (_quantile(srt, np.where(bad, 0.5, q)) for q in (q_lo, q_hi))
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


@dataclass(frozen=True)
class Bootstrap:
    """A statistic's point estimate (shape S), its bootstrap replicates (B, *S) and, for BCa, its jackknife
    values (n, *S).  ``undefined``: replicates that were NaN (see the module docstring), per element."""

    estimate: np.ndarray
    replicates: np.ndarray
    jackknife: np.ndarray | None = None

    @property
    def undefined(self) -> np.ndarray:
        return np.isnan(self.replicates).sum(0)

    def interval(self, level: float = 0.95, method: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(low, high); default BCa when the jackknife is there, else bias-corrected percentile."""
        method = method or ("bca" if self.jackknife is not None else "bc")
        return interval(self.estimate, self.replicates, level=level, method=method, jackknife=self.jackknife)

    def p_best(self, higher_is_better: bool, axis: int = 0) -> np.ndarray:
        """Share of replicates in which each entry is the best along ``axis`` of the statistic (k tied: 1/k each;
        NaN never best)."""
        r = np.where(np.isnan(self.replicates), -np.inf if higher_is_better else np.inf, self.replicates)
        hit = r == (r.max if higher_is_better else r.min)(axis=axis + 1, keepdims=True)
        return (hit / hit.sum(axis + 1, keepdims=True)).mean(0)


def _counts(n: int, replicates: int, seed: int, counts: np.ndarray | None) -> np.ndarray:
    if counts is None:
        return resample_counts(n, replicates, seed)
    counts = np.asarray(counts, float)
    if counts.ndim != 2 or counts.shape[1] != n:
        raise ValueError(f"counts must be (replicates, {n}) for {n} images, got shape {counts.shape}")
    return counts


# ----------------------------------------------------------------------------------------------- stitches
def mean_ratio(num: Any, den: Any, counts: np.ndarray) -> np.ndarray:
    """Σ_i c_i num_i / Σ_i c_i den_i for every count vector: num, den (…, n) (den None: the mean of num) →
    (replicates, …).  Accuracy (num = per-image correctness), relative accuracy (den = the receiver's
    correctness on the same images), held-out DM(struct) (num = ‖T(a_i) − b_i‖², den = ‖b_i‖²)."""
    num = np.asarray(num, float)
    flat = num.reshape(-1, num.shape[-1]).T
    bottom = counts.sum(1, keepdims=True) if den is None else counts @ np.broadcast_to(
        np.asarray(den, float), num.shape).reshape(-1, num.shape[-1]).T
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((counts @ flat) / bottom).reshape(counts.shape[0], *num.shape[:-1])


def stitch_bootstrap(num: Any, den: Any = None, *, replicates: int = 1000, seed: int = 0,
                     counts: np.ndarray | None = None, jackknife: bool = True) -> Bootstrap:
    """`Bootstrap` of `mean_ratio` over test images: e.g. ``stitch_bootstrap(correct, receiver_correct)`` is
    the relative accuracy of stitches (rows of ``correct``, (…, n)) paired with the receiver's accuracy on the
    same resample; an identity stitch gives exactly 1 in every replicate."""
    n = np.shape(num)[-1]
    jk = mean_ratio(num, den, jackknife_counts(n)) if jackknife else None
    est = mean_ratio(num, den, np.ones((1, n)))[0]
    return Bootstrap(est, mean_ratio(num, den, _counts(n, replicates, seed, counts)), jk)


# ----------------------------------------------------------------------------------------------- indices
def _host(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _images(st: sim.LayerStats) -> tuple[int, int]:
    """(images, rows per image) of a layer's statistics."""
    k = math.prod(st.shape) // st.p if st.reshape == "positions" else 1
    if st.n % k:
        raise ValueError(f"layer {st.label}: {st.n} rows are not whole images of {k} positions")
    return st.n // k, k


class _View:
    """One layer's coordinates Z = U diag(s), grouped k rows per image, and its per-image sums."""

    def __init__(self, st: sim.LayerStats):
        self.st, self.r, self.p, self.rows = st, st.rank, st.p, st.n
        self.n, self.k = _images(st)
        s = _host(st.s)
        self.Z = _host(st.U) * s
        self.V = None if st.loadings is None else _host(st.loadings) / s
        self.d = _host(st.gram_diag)  # diag(K) = squared row norms (the module's, so c = 1 gives its values)
        self.T, self.D = self.per_image(self.Z), self.per_image(self.d)
        self._K: np.ndarray | None = None

    @property
    def K(self) -> np.ndarray:
        if self._K is None:
            self._K = self.Z @ self.Z.T
        return self._K

    def per_image(self, x: np.ndarray) -> np.ndarray:
        """Row quantities (rows, …) summed per image → (n, …)."""
        return x.reshape(self.n, self.k, *x.shape[1:]).sum(1)


def _gram(a: _View, b: _View) -> bool:
    """CKA terms from the n × n Grams (one row per image and r_a·r_b > n) rather than from the basis."""
    return a.k == 1 and a.r * b.r > a.n


def _cross(a: _View, b: _View, C: np.ndarray) -> np.ndarray:
    """M_ab(c) = Σ_i c_i Z_a[i]ᵀ Z_b[i] for every row c of C → (m, r_a, r_b), per-image products in blocks."""
    out = np.zeros((C.shape[0], a.r * b.r))
    step = max(1, _BUDGET // max(1, a.k * (a.r + b.r) + a.r * b.r))
    for lo in range(0, a.n, step):
        hi = min(a.n, lo + step)
        za = a.Z[lo * a.k:hi * a.k].reshape(hi - lo, a.k, a.r)
        zb = b.Z[lo * b.k:hi * b.k].reshape(hi - lo, b.k, b.r)
        out += C[:, lo:hi] @ np.matmul(za.transpose(0, 2, 1), zb).reshape(hi - lo, -1)
    return out.reshape(C.shape[0], a.r, b.r)


class _Chunk:
    """Per-replicate moments of a chunk of count vectors C (m × n), cached per layer and per layer pair."""

    def __init__(self, C: np.ndarray, opts: sim.Options, debiased: bool = False):
        self.C, self.opts, self.m, self.debiased = C, opts, C.shape[0], debiased
        self.distinct = (C > 0).sum(1)
        self._cache: dict[Any, Any] = {}

    def _get(self, key: Any, make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def N(self, v: _View) -> np.ndarray:
        return v.k * self.C.sum(1)

    def t(self, v: _View) -> np.ndarray:
        return self._get(("t", id(v)), lambda: self.C @ v.T)

    def M(self, a: _View, b: _View) -> np.ndarray:
        return self._get(("M", id(a), id(b)), lambda: _cross(a, b, self.C))

    def G(self, a: _View, b: _View) -> np.ndarray:
        def make() -> np.ndarray:
            ta, tb = self.t(a), self.t(b)
            return self.M(a, b) - ta[:, :, None] * tb[:, None, :] / self.N(a)[:, None, None]
        return self._get(("G", id(a), id(b)), make)

    def eigh(self, v: _View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Eigenvalues (descending) and eigenvectors of G_vv, and the ridge λ, per replicate."""
        def make() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            G = self.G(v, v)
            w, E = np.linalg.eigh(G)
            lam = self.opts.regularization * np.trace(G, axis1=1, axis2=2) / np.minimum(self.N(v) - 1, v.p)
            return w[:, ::-1], E[:, :, ::-1], lam
        return self._get(("eigh", id(v)), make)

    def rank_ok(self, v: _View, r: Any) -> np.ndarray:
        """The replicate keeps the layer's first r directions (eigenvalues above the rank rule) and r < distinct
        rows − 1 (unregularised; ridge needs only a non-constant layer)."""
        w, _, _ = self.eigh(v)
        if self.opts.regularization:
            return w[:, 0] > 0
        r = np.broadcast_to(np.asarray(r), (self.m,))
        tol = 16 * np.maximum(self.N(v), v.p) * np.finfo(float).eps
        return (w[np.arange(self.m), r - 1] > tol * w[:, 0]) & (r < self.distinct * v.k - 1)

    def terms(self, a: _View, b: _View) -> dict[str, np.ndarray]:
        """Per-replicate sums over the resampled rows, w = the row's image count, K = Z_aZ_aᵀ, L = Z_bZ_bᵀ,
        d = diag K, e = diag L, Q = K∘L:  S1 = wᵀQw, T1 = Σ w(Kw)(Lw), tK = wᵀKw, tL = wᵀLw and, when the chunk
        computes the debiased index (once for both CKAs), S2 = wᵀQw², S3 = (w²)ᵀQw², T2 = Σ w²(Kw)(Lw),
        Ej = Σ wʲde, Fxj = Σ wʲe(Kw), Fyj = Σ wʲd(Lw), Dx2 = Σ w²d, Dy2 = Σ w²e — from the n × n Grams
        (`_gram`) or from the basis."""
        debiased = self.debiased

        def make() -> dict[str, np.ndarray]:
            C = self.C
            pw = self._get("powers", lambda: dict(zip((1, 2, 3, 4), _powers(C)))) if debiased else {}
            out = {f"E{j}": pw[j] @ a.per_image(a.d * b.d) for j in (2, 3, 4)} if debiased else {}
            if _gram(a, b):
                kw, lw = (self._get(("Kw", id(v)), lambda v=v: C @ v.K) for v in (a, b))
                Q = a.K * b.K
                out.update(S1=(C * (C @ Q)).sum(1), T1=(C * kw * lw).sum(1), tK=(C * kw).sum(1), tL=(C * lw).sum(1))
                if debiased:
                    q2 = pw[2] @ Q
                    out.update(S2=(C * q2).sum(1), S3=(pw[2] * q2).sum(1), T2=(pw[2] * kw * lw).sum(1),
                               **{f"Fx{j}": (pw[j] * b.d * kw).sum(1) for j in (2, 3)},
                               **{f"Fy{j}": (pw[j] * a.d * lw).sum(1) for j in (2, 3)})
            else:
                M, tx, ty = self.M(a, b), self.t(a), self.t(b)
                out.update(S1=(M**2).sum((1, 2)), T1=np.einsum("ma,mab,mb->m", tx, M, ty), tK=(tx**2).sum(1),
                           tL=(ty**2).sum(1))
                if debiased:
                    M2 = _cross(a, b, pw[2])
                    ex, dy = a.per_image(b.d[:, None] * a.Z), a.per_image(a.d[:, None] * b.Z)
                    out.update(S2=(M * M2).sum((1, 2)), S3=(M2**2).sum((1, 2)),
                               T2=np.einsum("ma,mab,mb->m", tx, M2, ty),
                               **{f"Fx{j}": ((pw[j] @ ex) * tx).sum(1) for j in (2, 3)},
                               **{f"Fy{j}": ((pw[j] @ dy) * ty).sum(1) for j in (2, 3)})
            if debiased:
                out.update(Dx2=pw[2] @ a.D, Dy2=pw[2] @ b.D)
            return out
        return self._get(("terms", id(a), id(b)), make)


def _powers(C: np.ndarray) -> list[np.ndarray]:
    C2 = C * C
    return [C, C2, C2 * C, C2 * C2]


def _cka(q: _Chunk, a: _View, b: _View) -> np.ndarray:
    def g2(x: _View, y: _View) -> np.ndarray:  # ‖G_xy‖²_F = ‖M‖² − 2 tᵀMt/N + ‖t_x‖²‖t_y‖²/N²
        t, N = q.terms(x, y), q.N(x)
        return t["S1"] - 2 * t["T1"] / N + t["tK"] * t["tL"] / N**2
    return g2(a, b) / np.sqrt(g2(a, a) * g2(b, b))


def _cka_debiased(q: _Chunk, a: _View, b: _View) -> np.ndarray:
    """HSIC_u's three expectations, each a count-weighted mean over tuples of distinct rows (module docstring):
    pairs Σ_{i≠j} w_iw_j k_ij l_ij / P₂, triples Σ w_iw_jw_q k_ij l_iq / P₃, quadruples Σ w_iw_jw_qw_r k_ij l_qr / P₄,
    by inclusion–exclusion of the weighted sums in `_Chunk.terms` (K̃ = K − diag d)."""
    W = [a.k * c.sum(1) for c in _powers(q.C)]
    P2, P3 = W[0]**2 - W[1], W[0]**3 - 3 * W[0] * W[1] + 2 * W[2]
    P4 = W[0]**4 - 6 * W[0]**2 * W[1] + 3 * W[1]**2 + 8 * W[0] * W[2] - 6 * W[3]

    def hsic(x: _View, y: _View) -> np.ndarray:
        t = q.terms(x, y)
        pairs, Q12, Q22 = t["S1"] - t["E2"], t["S2"] - t["E3"], t["S3"] - t["E4"]  # with Q̃ = Q − diag(de)
        w1 = t["T1"] - t["Fx2"] - t["Fy2"] + t["E3"]  # Σ w(K̃w)(L̃w)
        w2 = t["T2"] - t["Fx3"] - t["Fy3"] + t["E4"]  # Σ w²(K̃w)(L̃w)
        quads = (t["tK"] - t["Dx2"]) * (t["tL"] - t["Dy2"]) - 4 * (w2 - Q22) - 2 * Q22
        return pairs / P2 + quads / P4 - 2 * (w1 - Q12) / P3
    kk, ll = hsic(a, a), hsic(b, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((kk > 0) & (ll > 0) & (P4 > 0), hsic(a, b) / np.sqrt(kk * ll), np.nan)


def _opd(q: _Chunk, a: _View, b: _View) -> np.ndarray:
    nuc = np.linalg.svd(q.G(a, b), compute_uv=False).sum(1)
    ta, tb = (np.trace(q.G(v, v), axis1=1, axis2=2) for v in (a, b))
    return np.maximum(0.0, 2 - 2 * nuc / np.sqrt(ta * tb))


def _whitened(q: _Chunk, v: _View, keep: np.ndarray | None = None) -> np.ndarray:
    """W = E (Λ + λ)^{-1/2} (columns past ``keep`` zeroed), so that Wᵀ G W = I on the kept directions."""
    w, E, lam = q.eigh(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        D = 1 / np.sqrt(np.maximum(w + lam[:, None], 0))
    D = np.where(np.isfinite(D), D, 0.0)
    return E * (D if keep is None else D * keep)[:, None, :]


def _cca(q: _Chunk, a: _View, b: _View, ka: Any, kb: Any, vectors: bool = False, keep: tuple = (None, None)):
    """Canonical correlations (m, min(r_a, r_b)) of the kept directions, the validity mask and (``vectors``)
    A's canonical weights u_i in Z coordinates."""
    Wa, Wb = _whitened(q, a, keep[0]), _whitened(q, b, keep[1])
    X = np.swapaxes(Wa, 1, 2) @ q.G(a, b) @ Wb
    ok = q.rank_ok(a, ka) & q.rank_ok(b, kb)
    if not q.opts.regularization:  # duplicates must not push r_a + r_b past the distinct rows
        ok &= (q.distinct * a.k >= a.rows) | (np.asarray(ka) + np.asarray(kb) <= q.distinct * a.k - 1)
    if vectors:
        Y, rho, _ = np.linalg.svd(X, full_matrices=False)
        return np.minimum(rho, 1.0), ok, Wa @ Y
    return np.minimum(np.linalg.svd(X, compute_uv=False), 1.0), ok


def _mean_cca(q: _Chunk, a: _View, b: _View) -> np.ndarray:
    rho, ok = _cca(q, a, b, a.r, b.r)
    return np.where(ok, rho.mean(1), np.nan)


def _svcca(q: _Chunk, a: _View, b: _View) -> np.ndarray:
    o, keeps, ks = q.opts, [], []
    for v in (a, b):
        w = np.maximum(q.eigh(v)[0], 0)
        k = np.full(q.m, min(o.svcca_dims, v.r)) if o.svcca_dims is not None else np.minimum(
            ((w.cumsum(1) / w.sum(1, keepdims=True)) < o.svcca_variance).sum(1) + 1, v.r)
        ks.append(k)
        keeps.append((np.arange(v.r)[None] < k[:, None]).astype(float))
    rho, ok = _cca(q, a, b, ks[0], ks[1], keep=tuple(keeps))
    return np.where(ok, rho.sum(1) / np.minimum(*ks), np.nan)


def _pwcca(q: _Chunk, a: _View, b: _View) -> np.ndarray:
    if q.opts.pwcca_count != "rank":
        raise ValueError(f"bootstrap of pwcca supports pwcca_count='rank' only, not {q.opts.pwcca_count!r}")
    if a.V is None:
        raise ValueError(f"pwcca needs the neuron loadings of layer {a.st.label}: compute its stats with "
                         "loadings=True")
    rho, ok, u = _cca(q, a, b, a.r, b.r, vectors=True)
    Gu = q.G(a, a) @ u
    norm = np.sqrt(np.maximum((u * Gu).sum(1), 0))  # ‖Z u_i‖ (1 unregularised): unit-norm canonical variates
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.abs(a.V @ Gu).sum(1) / norm
        return np.where(ok, (alpha * rho).sum(1) / alpha.sum(1), np.nan)


def _explained(q: _Chunk, a: _View, b: _View) -> tuple[np.ndarray, np.ndarray]:
    """(‖P_A B_c‖² or its ridge form Σ(2f − f²)·…, ‖B_c‖²) per replicate; NaN where A loses rank."""
    w, E, lam = q.eigh(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        g2 = ((np.swapaxes(E, 1, 2) @ q.G(a, b)) ** 2).sum(2) / w
        f = w / (w + lam[:, None])
    expl = np.where(q.rank_ok(a, a.r), ((2 * f - f**2) * g2).sum(1), np.nan)
    return expl, np.trace(q.G(b, b), axis1=1, axis2=2)


def _r2_lr(q: _Chunk, a: _View, b: _View) -> np.ndarray:
    explained, total = _explained(q, a, b)
    return explained / total


def _dm_struct(q: _Chunk, a: _View, b: _View) -> np.ndarray:
    explained, total = _explained(q, a, b)
    return (total - explained) / total


_KERNELS = {"lcka": _cka, "lcka_debiased": _cka_debiased, "opd": _opd, "mean_cca": _mean_cca, "svcca": _svcca,
            "pwcca": _pwcca, "r2_lr": _r2_lr, "dm_struct": _dm_struct}


def _chunk_size(vp: Sequence[tuple[_View, _View]], measures: Sequence[str]) -> int:
    """Replicates per chunk so that the per-replicate moments held at once stay within the budget."""
    basis = any(m not in _CKA for m in measures)
    eig = any(m in _NEEDS_EIGH for m in measures)
    views = {id(v): v for pair in vp for v in pair}.values()
    per = sum((2 * v.n if _gram(v, v) else 3 * v.r**2) + (v.r**2 * (2 + 2 * eig) if basis else 0) + v.r
              for v in views)
    per += max(3 * a.n if _gram(a, b) and not basis else 3 * a.r * b.r for a, b in vp)
    return max(1, min(1024, _BUDGET // per))


def index_bootstrap(stats_a: Sequence[sim.Stats], stats_b: Sequence[sim.Stats],
                    measures: Sequence[str] = ("lcka",), *, replicates: int = 1000, seed: int = 0,
                    counts: np.ndarray | None = None, jackknife: bool = True,
                    pairs: Sequence[tuple[int, int]] | None = None, regularization: float = 0.0,
                    svcca_variance: float = 0.99, svcca_dims: int | None = None,
                    pwcca_count: str = "rank") -> dict[str, Bootstrap]:
    """Bootstrap over test images of every measure for every layer pair, from the layers' statistics
    (`stitchlib.similarity.layer_stats`; the same images in the same order on both sides): {measure:
    Bootstrap with estimate (len_a, len_b), replicates (B, len_a, len_b), jackknife (n, len_a, len_b)}.

    ``counts``: your own (B, n) count vectors (default `resample_counts(n, replicates, seed)`, the workflow's);
    ``jackknife``: also compute the n leave-one-image-out values (for BCa; n more evaluations); ``pairs``: only
    these (i, j) entries (the others NaN; each layer's per-replicate moments are computed once for all).
    Options as for `stitchlib.similarity.pairwise`; replicates the index cannot have (see "Rank on resamples")
    are NaN.
    """
    unknown = [m for m in measures if m not in _KERNELS]
    if unknown or isinstance(measures, str):
        raise ValueError(f"unknown measure(s) {unknown or measures!r}; known: {list(_KERNELS)}")
    opts = sim.Options(regularization, svcca_variance, svcca_dims, pwcca_count)
    pairs = [(i, j) for i in range(len(stats_a)) for j in range(len(stats_b))] if pairs is None else list(pairs)
    views: dict[int, _View] = {}
    vp = [tuple(views.setdefault(id(s), _View(s)) for s in sim.Paper1Stats.resolve(stats_a[i], stats_b[j]))
          for i, j in pairs]
    for a, b in vp:
        if (a.n, a.k) != (b.n, b.k) or a.n != vp[0][0].n:
            raise ValueError(f"layers {a.st.label} and {b.st.label}: {a.n} and {b.n} images of {a.k} and {b.k} "
                             f"rows (first pair: {vp[0][0].n} images); every layer must hold the same images")
    n = vp[0][0].n
    C = _counts(n, replicates, seed, counts)
    size, shape = _chunk_size(vp, measures), (len(stats_a), len(stats_b), len(measures))

    def run(make: Any, total: int) -> np.ndarray:
        out, (rows, cols) = np.full((total, *shape), np.nan), np.array(pairs).reshape(-1, 2).T
        for lo in range(0, total, size):
            q = _Chunk(make(lo, min(total, lo + size)), opts, "lcka_debiased" in measures)
            out[lo:lo + size, rows, cols] = np.stack([np.stack([_KERNELS[m](q, a, b) for m in measures], -1)
                                                      for a, b in vp], 1)
        return out

    est = run(lambda lo, hi: np.ones((1, n)), 1)[0]
    reps = run(lambda lo, hi: C[lo:hi], C.shape[0])
    jk = run(lambda lo, hi: jackknife_counts(n, lo, hi), n) if jackknife else None
    return {m: Bootstrap(est[..., i], reps[..., i], None if jk is None else jk[..., i])
            for i, m in enumerate(measures)}


# ----------------------------------------------------------------------------------------------- permutations
def _permuted(st: sim.Stats, perm: np.ndarray) -> sim.Stats:
    """The statistics of the same layer with its images in order ``perm`` (blocks of rows for 'positions')."""
    if isinstance(st, sim.Paper1Stats):
        return replace(st, positions=_permuted(st.positions, perm), pool=_permuted(st.pool, perm))
    k = _images(st)[1]
    rows = (perm[:, None] * k + np.arange(k)[None]).ravel()
    return replace(st, U=st.U[rows], gram_diag=st.gram_diag[rows])


def permutation_test(a: sim.Stats, b: sim.Stats, measure: str = "lcka", *, permutations: int = 999, seed: int = 0,
                     **options: Any) -> dict[str, Any]:
    """Test "no relation between the two layers": recompute ``measure`` with B's images permuted (rows are
    reordered in B's statistics; nothing is refactorised).  Returns {'value', 'p_value', 'null'
    (permutations,)}; p = (1 + #{null at least as similar as observed}) / (1 + permutations)."""
    def value(bb: sim.Stats) -> float:
        return float(sim.pairwise([a], [bb], [measure], **options)[measure][0, 0])

    n = _images(sim.Paper1Stats.resolve(a, b)[1])[0]
    rng = np.random.default_rng([seed, n])
    obs = value(b)
    null = np.array([value(_permuted(b, rng.permutation(n))) for _ in range(permutations)])
    more = null >= obs if catalog.MEASURES[measure].higher_is_similar else null <= obs
    return {"value": obs, "p_value": (1 + int(more.sum())) / (1 + permutations), "null": null}
