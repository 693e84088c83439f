"""Structural similarity indices from shared per-layer statistics.

Every index here (linear CKA, debiased CKA, PWCCA, mean CCA, SVCCA, OPD, R²_LR, DM(struct)) depends on two
activation matrices A (n × p₁) and B (n × p₂) over the same n rows only through their column-centred thin SVDs

    A_c = A − 1 μ_aᵀ = U_a S_a V_aᵀ,        B_c = U_b S_b V_bᵀ,

so each layer is factorised once (`layer_stats`, `layer_stats_h5`) and every layer pair then costs small products
(`pairwise`): with M = U_aᵀ U_b (r_a × r_b) and T = S_a M S_b = V_aᵀ A_cᵀ B_c V_b,

    ‖A_cᵀ B_c‖_F = ‖T‖_F,  ‖A_cᵀ B_c‖_* = Σ σ(T),  canonical correlations = σ(M),  ‖P_A B_c‖_F = ‖M S_b‖_F.

The factorisation takes the cheaper of two routes (both in float64, the data centred first):
  * ``"gram"`` (p ≥ rows): eigh of the n × n Gram K = A_c A_cᵀ = U S² Uᵀ;
  * ``"cov"``  (p < rows): eigh of the p × p covariance A_cᵀ A_c = V S² Vᵀ, then U, S from a thin SVD of A_c V
    (n × r), which restores orthonormality of U to machine precision.
No p × p matrix is formed when p ≥ rows.  Directions with s_i ≤ rtol · s_max are dropped (numerical rank r;
default rtol = sqrt(16 · max(rows, p) · eps), i.e. eigenvalues below 16 · max(rows, p) · eps · λ_max, the matrix-rank
rule applied to K or AᵀA).  Data are read in row blocks (a block of samples at a time), so an HDF5 file is
streamed; the Gram route reads each pair of blocks once (blocks·(blocks+1)/2 block reads).

Arrays and devices: numpy arrays and CPU torch tensors are converted block by block to float64 numpy and all
linear algebra uses numpy/scipy.linalg; CUDA (or other non-CPU) torch tensors stay on their device and everything,
pair products included, runs in torch float64 there.  A LayerStats holds either numpy arrays or device tensors;
`pairwise` returns numpy matrices either way.

Conv / token activations become a 2-D matrix by an explicit ``reshape`` (see `RESHAPES`); ``"paper1"`` is
pair-dependent and yields a `Paper1Stats` holding both the "positions" and the "pool" factorisation (computed
eagerly); `pairwise` picks "positions" for pairs whose per-sample activation shapes are identical, else "pool".

Degenerate regimes: centring leaves n − 1 dimensions, so a layer of rank ≥ n − 1 spans every centred sample
direction; then all canonical correlations and the in-sample R² are exactly 1.  CCA-family measures, R²_LR and
DM(struct) raise `DegenerateInput` (a ValueError) there unless ``regularization=eps`` asks for the ridge variant;
so do a constant (zero-variance) layer, fewer than 2 rows, and debiased CKA on fewer than 4 rows.  The workflow
records NaN for such a pair and logs the message.  Non-finite activations raise a plain ValueError naming the
layer (and the file, from `layer_stats_h5`): a broken input, never recorded as a value.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import h5py
import numpy as np
import scipy.linalg

from stitchlib import catalog

__all__ = [
    "DegenerateInput", "LayerStats", "Paper1Stats", "KERNELS", "RESHAPES", "layer_stats",
    "layer_stats_h5", "pairwise", "similarity", "lcka", "lcka_debiased", "pwcca", "mean_cca", "svcca", "opd",
    "r2_lr", "dm_struct",
]

Array = Any  # numpy.ndarray or torch.Tensor (float64)


class DegenerateInput(ValueError):
    """The measure is undefined, or identically extreme, on these inputs (see the module docstring's
    "Degenerate regimes"); the message names the layer and says what would make it defined."""


Reshape = Literal["flatten", "positions", "pool", "paper1"]
RESHAPES = catalog.RESHAPES
_BLOCK_ELEMENTS = 2**25  # float64 elements per row block by default (256 MB)


# ----------------------------------------------------------------------------------------------- backends
def _is_tensor(x: Any) -> bool:
    """True for a torch tensor (torch is never imported here: a tensor implies it is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class _NumpyOps:
    zeros = staticmethod(lambda shape, like: np.zeros(shape))
    cat = staticmethod(np.concatenate)
    movedim = staticmethod(lambda x: np.moveaxis(x, 1, -1))
    all_finite = staticmethod(lambda x: bool(np.isfinite(x).all()))
    svd = staticmethod(lambda m, full=False: scipy.linalg.svd(m, full_matrices=full, check_finite=False))
    svdvals = staticmethod(lambda m: scipy.linalg.svdvals(m, check_finite=False))

    @staticmethod
    def eigh_desc(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, v = scipy.linalg.eigh(s, overwrite_a=True, check_finite=False)
        return w[::-1], v[:, ::-1]


class _TorchOps:
    zeros = staticmethod(lambda shape, like: like.new_zeros(shape))
    cat = staticmethod(lambda xs: sys.modules["torch"].cat(xs))
    movedim = staticmethod(lambda x: x.movedim(1, -1))
    all_finite = staticmethod(lambda x: bool(sys.modules["torch"].isfinite(x).all()))
    svd = staticmethod(lambda m, full=False: sys.modules["torch"].linalg.svd(m, full_matrices=full))
    svdvals = staticmethod(lambda m: sys.modules["torch"].linalg.svdvals(m))

    @staticmethod
    def eigh_desc(s: Any) -> tuple:
        w, v = sys.modules["torch"].linalg.eigh(s)
        return w.flip(0), v.flip(1)


def _ops(x: Any) -> type:
    return _TorchOps if _is_tensor(x) else _NumpyOps


def _native(x: Any) -> Any:
    """numpy stays numpy, CPU tensors become numpy views, device tensors stay (detached) on their device."""
    if _is_tensor(x):
        x = x.detach()
        if x.device.type != "cpu":
            return x
        return (x.float() if x.dtype == sys.modules["torch"].bfloat16 else x).numpy()
    return np.asarray(x)


def _f64(x: Any) -> Array:
    return x.to(dtype=sys.modules["torch"].float64) if _is_tensor(x) else np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------------------------- statistics
@dataclass(frozen=True, eq=False)
class LayerStats:
    """Factorisation of one layer's centred activation matrix X_c (n rows × p columns), X_c ≈ U diag(s) Vᵀ.

    U (n × r, orthonormal) and s (r, descending) are the left singular vectors and singular values of X_c at
    numerical rank r; gram_diag = diag(X_c X_cᵀ) (n,), needed by the unbiased HSIC; loadings = X_cᵀ U = V diag(s)
    (p × r), the projections of every neuron on the orthonormal sample basis, needed by PWCCA only (kept by
    default on the "cov" route, where p < n makes it no larger than U).  shape is the per-sample activation shape
    before reshaping; n counts rows after reshaping (samples × positions for "positions").
    """

    name: str | None
    n: int
    p: int
    shape: tuple[int, ...]
    reshape: str
    route: str
    mean: Array
    U: Array
    s: Array
    gram_diag: Array
    loadings: Array | None

    @property
    def rank(self) -> int:
        return int(self.s.shape[0])

    @property
    def label(self) -> str:
        return repr(self.name) if self.name is not None else "<unnamed>"


@dataclass(frozen=True, eq=False)
class Paper1Stats:
    """Both factorisations paper 1's PWCCA/OPD code may need; `resolve` picks one per layer pair."""

    name: str | None
    shape: tuple[int, ...]
    positions: LayerStats
    pool: LayerStats

    @staticmethod
    def resolve(a: Stats, b: Stats) -> tuple[LayerStats, LayerStats]:
        """Positions as samples when the per-sample shapes are identical, globally pooled otherwise."""
        if isinstance(a, Paper1Stats) != isinstance(b, Paper1Stats):
            raise ValueError(f"cannot pair a 'paper1' layer with a fixed-reshape layer ({a.name!r}, {b.name!r})")
        if not isinstance(a, Paper1Stats):
            return a, b
        key = "positions" if a.shape == b.shape else "pool"
        return getattr(a, key), getattr(b, key)


Stats = LayerStats | Paper1Stats


def _layout(shape: tuple[int, ...], layout: str | None) -> str | None:
    if len(shape) == 2:
        return None
    layout = layout or ("tokens" if len(shape) == 3 else "conv")
    if layout not in ("conv", "tokens") or (layout == "tokens" and len(shape) != 3) or len(shape) < 3:
        raise ValueError(f"layout {layout!r} does not fit activations of shape {shape} "
                         "((n, C, H, W…) conv, (n, T, D) tokens)")
    return layout


def _out_shape(shape: tuple[int, ...], reshape: str, layout: str | None) -> tuple[int, int]:
    """(rows, columns) of the 2-D matrix that `_rows` makes of activations of this shape."""
    n, per = shape[0], shape[1:]
    if layout is None or reshape == "flatten":
        return n, math.prod(per)
    feat = per[0] if layout == "conv" else per[1]
    return (n * math.prod(per) // feat, feat) if reshape == "positions" else (n, feat)


def _rows(x: Array, reshape: str, layout: str | None) -> Array:
    """A float64 block of samples → 2-D rows × columns according to `reshape` (2-D input passes through)."""
    if layout is None:
        return x
    if reshape == "flatten":
        return x.reshape(x.shape[0], -1)
    if reshape == "pool":
        return x.mean(tuple(range(2, x.ndim))) if layout == "conv" else x.mean(1)
    feat = x.shape[1] if layout == "conv" else x.shape[2]
    return (_ops(x).movedim(x) if layout == "conv" else x).reshape(-1, feat)


def _factorise(blocks: Callable[[], Iterator[Array]], rows: int, p: int, *, name: str | None, route: str,
               rtol: float | None, loadings: bool | None, shape: tuple[int, ...], reshape: str) -> LayerStats:
    """Centre in float64 (pass 1: column means), then factorise by the Gram or the covariance route."""
    if rows < 2:
        raise DegenerateInput(f"layer {name!r}: need at least 2 rows, got {rows}")
    route = ("gram" if p >= rows else "cov") if route == "auto" else route
    if route not in ("gram", "cov"):
        raise ValueError(f"route must be 'auto', 'gram' or 'cov', got {route!r}")
    total, sumsq = 0.0, 0.0
    for x in blocks():
        if not _ops(x).all_finite(x):
            raise ValueError(f"layer {name!r}: activations contain NaN or inf")
        total, sumsq = total + x.sum(0), sumsq + float((x * x).sum())
    mean = total / rows
    ops = _ops(mean)

    def centred() -> Iterator[tuple[int, int, Array]]:
        lo = 0
        for x in blocks():
            yield lo, lo + x.shape[0], x - mean
            lo += x.shape[0]

    tol = 16 * max(rows, p) * np.finfo(np.float64).eps if rtol is None else rtol**2
    if route == "gram":  # K = X_c X_cᵀ block by block (each pair of row blocks once), then eigh(K) = U S² Uᵀ
        K = ops.zeros((rows, rows), mean)
        for i, (lo, hi, xi) in enumerate(centred()):
            for _, (lj, hj, xj) in zip(range(i), centred(), strict=False):
                K[lo:hi, lj:hj] = xi @ xj.T
                K[lj:hj, lo:hi] = K[lo:hi, lj:hj].T
            K[lo:hi, lo:hi] = xi @ xi.T
        d = K.diagonal() * 1.0
        _check_constant(name, float(d.sum()), sumsq)
        w, U = ops.eigh_desc(K)
        r = int((w > tol * w[0]).sum())
        U, s = U[:, :r] * 1.0, w[:r] ** 0.5
        L = sum(xc.T @ U[lo:hi] for lo, hi, xc in centred()) if loadings else None
    else:  # C = X_cᵀ X_c, eigh(C) = V S² Vᵀ, then the thin SVD of X_c V (n × r) gives U, s accurately
        C = sum(xc.T @ xc for _, _, xc in centred())
        _check_constant(name, float(C.trace()), sumsq)
        w, V = ops.eigh_desc(C)
        V = V[:, : int((w > tol * w[0]).sum())]
        parts = [(xc @ V, (xc * xc).sum(1)) for _, _, xc in centred()]
        U, s, Wt = ops.svd(ops.cat([y for y, _ in parts]))
        d = ops.cat([e for _, e in parts])
        L = (V @ Wt.T) * s if loadings is None or loadings else None
    return LayerStats(name, rows, p, shape, reshape, route, mean, U, s, d, L)


def _check_constant(name: str | None, centred_ss: float, raw_ss: float) -> None:
    """‖X_c‖²_F ≤ 1e-20 ‖X‖²_F (rounding of the means only) means the layer carries no variance."""
    if centred_ss <= 1e-20 * raw_ss:
        raise DegenerateInput(f"layer {name!r} is constant over the samples (zero variance after centring): "
                              "similarity to it is undefined")


def _stats(read: Callable[[slice], Any], shape: tuple[int, ...], *, name: str | None, reshape: str,
           layout: str | None, route: str, rtol: float | None, loadings: bool | None, chunk: int | None) -> Stats:
    """Layer statistics of activations of `shape`, read(slice) returning raw sample blocks."""
    if reshape not in RESHAPES:
        raise ValueError(f"reshape must be one of {sorted(RESHAPES)}, got {reshape!r}")
    layout = _layout(shape, layout)
    kw = dict(name=name, layout=layout, route=route, rtol=rtol, loadings=loadings, chunk=chunk)
    if reshape == "paper1":
        if layout is None:
            flat = _stats(read, shape, reshape="flatten", **kw)
            return Paper1Stats(name, shape[1:], flat, flat)
        return Paper1Stats(name, shape[1:], _stats(read, shape, reshape="positions", **kw),
                           _stats(read, shape, reshape="pool", **kw))
    n = shape[0]
    step = chunk or max(1, _BLOCK_ELEMENTS // max(1, math.prod(shape[1:])))

    def blocks() -> Iterator[Array]:
        for i in range(0, n, step):
            yield _rows(_f64(read(slice(i, min(i + step, n)))), reshape, layout)

    rows, p = _out_shape(shape, reshape, layout)
    return _factorise(blocks, rows, p, name=name, route=route, rtol=rtol, loadings=loadings,
                      shape=tuple(shape[1:]), reshape=reshape)


def layer_stats(X: Any, *, name: str | None = None, reshape: Reshape = "flatten", layout: str | None = None,
                route: Literal["auto", "gram", "cov"] = "auto", rtol: float | None = None,
                loadings: bool | None = None, chunk: int | None = None) -> Stats:
    """Per-layer statistics of in-memory activations X: (n, p), (n, C, H, W…) conv or (n, T, D) tokens.

    reshape: see `RESHAPES`; layout: "conv" or "tokens" (inferred: 3-D → tokens, ≥ 4-D → conv; 2-D passes
    through).  route: "auto" (gram when p ≥ rows, else cov) or forced.  rtol: relative singular-value cutoff
    (default see module docstring).  loadings: keep X_cᵀU for PWCCA (None = only on the cov route).  chunk:
    samples per float64 block.  Returns `LayerStats`, or `Paper1Stats` for reshape="paper1".
    """
    X = _native(X)
    if X.ndim < 2:
        raise ValueError(f"layer {name!r}: activations must be at least 2-D (n, …), got shape {tuple(X.shape)}")
    return _stats(lambda sl: X[sl], tuple(X.shape), name=name, reshape=reshape, layout=layout, route=route,
                  rtol=rtol, loadings=loadings, chunk=chunk)


def layer_stats_h5(path: str, layer: str, *, reshape: Reshape = "flatten", n: int | None = None,
                   chunk: int | None = None, route: Literal["auto", "gram", "cov"] = "auto",
                   rtol: float | None = None, loadings: bool | None = None, device: Any = None) -> Stats:
    """`layer_stats` of dataset /layers/<layer> of an activation file, streamed in blocks of `chunk` samples.

    The file must carry the root attribute complete=True; the dataset's attribute `layout` ("conv"/"tokens")
    fixes the layout.  n: use the first n samples (default all).  device: a torch device to compute on (blocks
    are moved there as float64); default numpy on the CPU.
    """
    with h5py.File(path, "r") as f:
        if not bool(f.attrs.get("complete", False)):
            raise ValueError(f"{path}: activation file is incomplete (no root attribute complete=True)")
        if f"layers/{layer}" not in f:
            raise ValueError(f"{path}: no layer {layer!r}; layers: {sorted(f['layers']) if 'layers' in f else []}")
        ds = f[f"layers/{layer}"]
        layout = ds.attrs.get("layout")
        layout = layout.decode() if isinstance(layout, bytes) else layout
        total = ds.shape[0]
        n = total if n is None else n
        if not 2 <= n <= total:
            raise ValueError(f"{path}: layer {layer!r} has {total} samples, asked for n = {n}")
        if device is None:
            read = ds.__getitem__
        else:
            import torch

            def read(sl: slice) -> Any:
                return torch.from_numpy(ds[sl]).to(device=device, dtype=torch.float64)

        try:
            return _stats(read, (n, *ds.shape[1:]), name=layer, reshape=reshape, layout=layout, route=route,
                          rtol=rtol, loadings=loadings, chunk=chunk)
        except ValueError as e:  # name the file: "layer 'x' contains NaN" alone does not say which network
            raise type(e)(f"{path}: {e}") from None


# ----------------------------------------------------------------------------------------------- pair kernels
@dataclass(frozen=True)
class Options:
    """regularization ε: ridge λ = ε · ‖X_c‖²_F / min(n − 1, p) (ε times the mean of the min(n − 1, p) possibly
    non-zero covariance eigenvalues) added to AᵀA (and BᵀB) in CCA-family measures and R²_LR / DM(struct).
    svcca_variance / svcca_dims: SVCCA keeps the top singular directions explaining this fraction of the
    variance, or exactly this many (dims wins when given).
    pwcca_count: how many canonical pairs PWCCA(A, B) averages over. "rank": min(rank A, rank B), all of them
    computed correlations. "neurons": Morcos et al.'s code, min(rank A, live neurons of B) — A's directions that
    B's span cannot match count with ρ = 0 (live = non-constant columns; needs B's loadings). The two agree unless
    B has fewer dimensions than live neurons: for a low-rank approximation B of A (Ding et al.'s sensitivity
    test) "rank" gives PWCCA = 1 at every rank, "neurons" the weight share of the directions B keeps."""

    regularization: float = 0.0
    svcca_variance: float = 0.99
    svcca_dims: int | None = None
    pwcca_count: Literal["rank", "neurons"] = "rank"


class _Pair:
    """One (A, B) layer pair; caches the products shared by several measures."""

    def __init__(self, a: LayerStats, b: LayerStats, opts: Options):
        if a.n != b.n:
            raise ValueError(f"layers {a.label} and {b.label} have different numbers of rows ({a.n} vs {b.n}): "
                             "same samples (and, for reshape='positions', same spatial size) needed")
        if type(a.U) is not type(b.U) or getattr(a.U, "device", None) != getattr(b.U, "device", None):
            raise ValueError(f"layers {a.label} and {b.label} live on different backends/devices")
        self.a, self.b, self.opts, self.n = a, b, opts, a.n

    @cached_property
    def M(self) -> Array:
        """M = U_aᵀ U_b: cosines between the two orthonormal sample bases."""
        return self.a.U.T @ self.b.U

    @cached_property
    def T(self) -> Array:
        """T = S_a M S_b, which has the singular values of A_cᵀ B_c."""
        return self.a.s[:, None] * self.M * self.b.s[None, :]

    def ridge(self, st: LayerStats) -> float:
        return self.opts.regularization * float((st.s**2).sum()) / min(self.n - 1, st.p)

    def whiten(self, st: LayerStats, k: int) -> Array | None:
        """Ridge CCA shrinkage D = s / sqrt(s² + λ) of the first k directions (None when unregularised)."""
        if not self.opts.regularization:
            return None
        s = st.s[:k]
        return s / (s**2 + self.ridge(st)) ** 0.5

    def cca(self, measure: str, ka: int, kb: int, vectors: bool, full: bool = False) -> tuple[Array, Array | None]:
        """Canonical correlations ρ (and left singular vectors X) of the first ka, kb directions.

        Unregularised: ρ = σ(U_a[:, :ka]ᵀ U_b[:, :kb]) (whitened bases).  Ridge: ρ = σ(D_a M D_b), the singular
        values of (AᵀA + λ_a I)^{-1/2} AᵀB (BᵀB + λ_b I)^{-1/2}.  full: X has all ka columns (the directions
        past min(ka, kb) are A's directions uncorrelated with B).
        """
        if not self.opts.regularization:
            for st, k in ((self.a, ka), (self.b, kb)):
                _require_rank(measure, st, k, self.n)
            if ka + kb > self.n - 1:
                warnings.warn(f"{measure}: ranks {ka} + {kb} of {self.a.label}, {self.b.label} exceed n − 1 = "
                              f"{self.n - 1}: at least {ka + kb - self.n + 1} canonical correlations are 1 by "
                              "construction", stacklevel=4)
        m = self.M[:ka, :kb]
        da, db = self.whiten(self.a, ka), self.whiten(self.b, kb)
        if da is not None:
            m = da[:, None] * m * db[None, :]
        ops = _ops(m)
        if vectors:
            X, rho, _ = ops.svd(m, full)
            return rho.clip(max=1.0), X
        return ops.svdvals(m).clip(max=1.0), None

    def explained(self, measure: str) -> float:
        """‖fitted B_c‖-part of R²: ‖P_A B_c‖²_F = ‖M S_b‖²_F, or with ridge Σ_i (2f_i − f_i²) ‖(M S_b)_i‖²,
        f_i = s_ai² / (s_ai² + λ_a)."""
        G2 = ((self.M * self.b.s[None, :]) ** 2).sum(1)
        if not self.opts.regularization:
            _require_rank(measure, self.a, self.a.rank, self.n)
            return float(G2.sum())
        f = self.a.s**2 / (self.a.s**2 + self.ridge(self.a))
        return float(((2 * f - f**2) * G2).sum())


def _require_rank(measure: str, st: LayerStats, r: int, n: int) -> None:
    if r >= n - 1:
        raise DegenerateInput(
            f"{measure}: layer {st.label} has rank {r} >= n - 1 = {n - 1} (n = {n} rows; centring leaves n - 1 "
            "dimensions), so it spans every sample direction and the measure is identically 1 (0 for dm_struct). "
            "Use more rows (more samples, reshape='positions'), fewer columns (reshape='pool', svcca), "
            "or regularization=eps for the ridge variant.")


def _hsic_unbiased(tr_kl: float, d: Array, e: Array, n: int) -> float:
    """Song et al. (2012) unbiased HSIC for centred Grams K, L (K1 = L1 = 0), diagonals d, e:
    [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)), K̃ = K − diag(d) (so K̃1 = −d),
    = [tr(KL) − n/(n−2)·dᵀe + Σd·Σe/((n−1)(n−2))] / (n(n−3))."""
    return (tr_kl - n / (n - 2) * float(d @ e) + float(d.sum()) * float(e.sum()) / ((n - 1) * (n - 2))) / (n * (n - 3))


def _k_lcka(q: _Pair) -> float:
    """‖A_cᵀB_c‖²_F / (‖A_cᵀA_c‖_F ‖B_cᵀB_c‖_F) = ‖T‖²_F / (‖s_a²‖ ‖s_b²‖)."""
    return float((q.T**2).sum()) / math.sqrt(float((q.a.s**4).sum()) * float((q.b.s**4).sum()))


def _k_lcka_debiased(q: _Pair) -> float:
    """HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L)) with tr(KL) = ‖T‖²_F, tr(K²) = Σ s_a⁴."""
    a, b, n = q.a, q.b, q.n
    if n < 4:
        raise DegenerateInput(f"lcka_debiased needs n >= 4 rows, got {n}")
    kk = _hsic_unbiased(float((a.s**4).sum()), a.gram_diag, a.gram_diag, n)
    ll = _hsic_unbiased(float((b.s**4).sum()), b.gram_diag, b.gram_diag, n)
    if kk <= 0 or ll <= 0:
        raise DegenerateInput(f"lcka_debiased: unbiased HSIC of {a.label if kk <= 0 else b.label} with itself is "
                         f"{min(kk, ll):.3g} <= 0 (too few rows?)")
    return _hsic_unbiased(float((q.T**2).sum()), a.gram_diag, b.gram_diag, n) / math.sqrt(kk * ll)


def _k_opd(q: _Pair) -> float:
    """2 − 2 Σσ(T) / (‖s_a‖ ‖s_b‖), clipped at 0."""
    nuc = float(_ops(q.T).svdvals(q.T).sum())
    return max(0.0, 2.0 - 2.0 * nuc / math.sqrt(float((q.a.s**2).sum()) * float((q.b.s**2).sum())))


def _k_mean_cca(q: _Pair) -> float:
    rho, _ = q.cca("mean_cca", q.a.rank, q.b.rank, vectors=False)
    return float(rho.mean())


def _svcca_dims(st: LayerStats, o: Options) -> int:
    """Smallest k with Σ_{i≤k} s_i² ≥ variance · Σ s_i² (or svcca_dims), at most the rank."""
    if o.svcca_dims is not None:
        return min(o.svcca_dims, st.rank)
    frac = (st.s**2).cumsum(0) / (st.s**2).sum()
    return min(int((frac < o.svcca_variance).sum()) + 1, st.rank)


def _k_svcca(q: _Pair) -> float:
    rho, _ = q.cca("svcca", _svcca_dims(q.a, q.opts), _svcca_dims(q.b, q.opts), vectors=False)
    return float(rho.mean())


def _principal_ties(X: np.ndarray, rho: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Canonical directions (columns of X, in A's principal coordinates) with tied correlations are unique only
    as a subspace, and PWCCA's L1 weights depend on the basis chosen in it. Pick, in each tie group (the
    columns past len(rho) form the ρ = 0 group), the basis that follows A's principal axes in order: Gram–Schmidt
    of the projections of e_1, e_2, … onto the group's span. For a low-rank approximation B of A the groups are
    A's leading and trailing principal directions exactly."""
    rho = np.concatenate([rho, np.zeros(X.shape[1] - len(rho))])
    out, start = X.copy(), 0
    while start < X.shape[1]:
        end = start + 1
        while end < X.shape[1] and abs(rho[end] - rho[start]) < tol:
            end += 1
        if end - start > 1:
            Z = X[:, start:end]
            basis: list[np.ndarray] = []
            for v in (Z @ Z.T).T:  # projections of e_1, e_2, … onto span(Z)
                for b in basis:
                    v = v - (b @ v) * b
                if np.linalg.norm(v) > 1e-6:
                    basis.append(v / np.linalg.norm(v))
                if len(basis) == end - start:
                    break
            out[:, start:end] = np.stack(basis, 1)
        start = end
    return out


def _k_pwcca(q: _Pair) -> float:
    """α_i = ‖L_a h_i‖₁ with h_i the unit-norm i-th canonical variate of A in the U_a basis (X_i, or
    D_a X_i/‖D_a X_i‖ with ridge) and L_a = A_cᵀU_a; PWCCA = Σ α_i ρ_i / Σ α_i."""
    a = q.a
    if a.loadings is None:
        raise ValueError(f"pwcca needs the neuron loadings of layer {a.label}: compute its stats with loadings=True")
    neurons = q.opts.pwcca_count == "neurons"
    rho, X = q.cca("pwcca", a.rank, q.b.rank, vectors=True, full=neurons)
    if neurons:
        if q.b.loadings is None:
            raise ValueError(f"pwcca with pwcca_count='neurons' needs the loadings of layer {q.b.label}")
        host = (lambda t: t.detach().cpu().numpy()) if _is_tensor(X) else np.asarray  # small r × r products
        var_b = host((q.b.loadings**2).sum(1))
        c = min(a.rank, int((var_b > 1e-12 * var_b.max()).sum()))
        rho = np.concatenate([host(rho)[:c], np.zeros(c - min(c, len(rho)))])
        X = _principal_ties(host(X), rho)[:, :c]
        X, rho = (X, rho) if not _is_tensor(a.U) else (a.U.new_tensor(X), a.U.new_tensor(rho))
    da = q.whiten(a, a.rank)
    H = X if da is None else da[:, None] * X
    H = H / (H**2).sum(0) ** 0.5
    alpha = abs(a.loadings @ H).sum(0)
    return float((alpha * rho).sum() / alpha.sum())


def _k_r2_lr(q: _Pair) -> float:
    """‖P_A B_c‖²_F / ‖B_c‖²_F (ridge: see `_Pair.explained`)."""
    return q.explained("r2_lr") / float((q.b.s**2).sum())


def _k_dm_struct(q: _Pair) -> float:
    """(‖B_c‖²_F − explained) / ‖B_c‖²_F = 1 − R²_LR."""
    total = float((q.b.s**2).sum())
    return (total - q.explained("dm_struct")) / total


# The kernel of every structural index of the measure registry (stitchlib.catalog.MEASURES, kind 'index': labels,
# directions, symmetry, default reshapes live there). Adding an index = a catalog entry + its kernel here + a test.
KERNELS: dict[str, Callable[[_Pair], float]] = {
    "lcka": _k_lcka, "lcka_debiased": _k_lcka_debiased, "pwcca": _k_pwcca, "mean_cca": _k_mean_cca,
    "svcca": _k_svcca, "opd": _k_opd, "r2_lr": _k_r2_lr, "dm_struct": _k_dm_struct,
}


def _measures(names: Sequence[str]) -> list[str]:
    unknown = [m for m in names if m not in KERNELS]
    if unknown or isinstance(names, str):
        raise ValueError(f"unknown measure(s) {unknown or names!r}; known: {list(KERNELS)}")
    return list(names)


def pairwise(stats_a: Sequence[Stats], stats_b: Sequence[Stats],
             measures: Sequence[str] = ("lcka", "lcka_debiased", "opd"), *, regularization: float = 0.0,
             svcca_variance: float = 0.99, svcca_dims: int | None = None,
             pwcca_count: Literal["rank", "neurons"] = "rank") -> dict[str, np.ndarray]:
    """Every requested measure for every pair: {measure: len(stats_a) × len(stats_b) float64 matrix}.

    Entry [i, j] compares stats_a[i] (the "A" / source side: PWCCA weights, R²_LR and DM(struct) predict B from A)
    with stats_b[j]; the reverse direction is pairwise(stats_b, stats_a, …).T.  M = U_aᵀU_b and T are computed
    once per pair and shared by all measures.  Paper1Stats pairs resolve to positions/pool per pair.
    """
    opts = Options(regularization, svcca_variance, svcca_dims, pwcca_count)
    ms = _measures(measures)
    out = {m: np.full((len(stats_a), len(stats_b)), np.nan) for m in ms}
    for i, a in enumerate(stats_a):
        for j, b in enumerate(stats_b):
            q = _Pair(*Paper1Stats.resolve(a, b), opts)
            for m in ms:
                out[m][i, j] = KERNELS[m](q)
    return out


def similarity(measure: str, A: Any, B: Any, *, reshape: Reshape = "flatten", **options: Any) -> float:
    """One measure for one pair; A, B are activations (arrays/tensors) or precomputed stats."""
    (m,) = _measures([measure])
    loadings = catalog.MEASURES[m].needs_loadings or None
    a = A if isinstance(A, (LayerStats, Paper1Stats)) else layer_stats(A, name="A", reshape=reshape, loadings=loadings)
    b = B if isinstance(B, (LayerStats, Paper1Stats)) else layer_stats(B, name="B", reshape=reshape)
    return float(pairwise([a], [b], [measure], **options)[measure][0, 0])


def lcka(A: Any, B: Any, *, reshape: Reshape = "flatten") -> float:
    """Linear CKA (Kornblith et al. 2019; paper 1 eq. 4), A_c, B_c column-centred:
    LCKA = ‖B_cᵀA_c‖²_F / (‖A_cᵀA_c‖_F ‖B_cᵀB_c‖_F) = ⟨K, L⟩_F / (‖K‖_F ‖L‖_F), K = A_cA_cᵀ, L = B_cB_cᵀ.
    In [0, 1]; invariant to orthogonal maps and isotropic scaling of either side."""
    return similarity("lcka", A, B, reshape=reshape)


def lcka_debiased(A: Any, B: Any, *, reshape: Reshape = "flatten") -> float:
    """Debiased linear CKA (Nguyen et al. 2021): CKA with the unbiased HSIC estimator of Song et al. (2012),
    HSIC_u(K, L) = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)), K̃ = K with zeroed diagonal,
    dCKA = HSIC_u(K, L)/sqrt(HSIC_u(K, K) HSIC_u(L, L)).  The estimator is invariant to re-centring the features,
    so K = A_cA_cᵀ is used.  ≈ 0 for independent representations even when p ≫ n (biased CKA is not); can be < 0."""
    return similarity("lcka_debiased", A, B, reshape=reshape)


def pwcca(A: Any, B: Any, *, reshape: Reshape = "flatten", regularization: float = 0.0) -> float:
    """Projection-weighted CCA (Morcos et al. 2018; paper 1 eq. 6): Σ α_i ρ_i / Σ α_i over the min(r_a, r_b)
    canonical pairs, α_i = Σ_j |⟨A_c w_A^i, a_j⟩| with A_c w_A^i the unit-norm i-th canonical variate of A and
    a_j the j-th (centred) neuron of A.  Not symmetric: weights come from A.  Ridge variant with
    regularization > 0 (see `Options`); raises when rank(A_c) or rank(B_c) ≥ n − 1 unregularised."""
    return similarity("pwcca", A, B, reshape=reshape, regularization=regularization)


def mean_cca(A: Any, B: Any, *, reshape: Reshape = "flatten", regularization: float = 0.0) -> float:
    """Mean canonical correlation: ρ_i = σ_i(C_aa^{-1/2} C_ab C_bb^{-1/2}), C = centred cross-products,
    averaged over i ≤ min(r_a, r_b).  Invariant to invertible linear maps of A and of B."""
    return similarity("mean_cca", A, B, reshape=reshape, regularization=regularization)


def svcca(A: Any, B: Any, *, reshape: Reshape = "flatten", variance: float = 0.99, dims: int | None = None,
          regularization: float = 0.0) -> float:
    """SVCCA (Raghu et al. 2017): keep the top k_a (k_b) singular directions of A_c (B_c), the smallest k with
    Σ_{i≤k} s_i² ≥ variance · Σ s_i² (or exactly `dims`), then the mean canonical correlation of A_cV_{k_a} and
    B_cV_{k_b} over min(k_a, k_b) pairs."""
    return similarity("svcca", A, B, reshape=reshape, regularization=regularization, svcca_variance=variance,
                      svcca_dims=dims)


def opd(A: Any, B: Any, *, reshape: Reshape = "flatten") -> float:
    """Orthogonal Procrustes distance (paper 1 eq. 8) after centring and Frobenius-normalising both:
    OPD = ‖A‖²_F + ‖B‖²_F − 2‖BᵀA‖_* = 2 − 2‖BᵀA‖_* = min_{RᵀR=I} ‖B − AR‖²_F (zero-padding the narrower side).
    In [0, 2], 0 for identical representations; a distance (lower = more similar)."""
    return similarity("opd", A, B, reshape=reshape)


def r2_lr(A: Any, B: Any, *, reshape: Reshape = "flatten", regularization: float = 0.0) -> float:
    """R²_LR(A → B) (paper 2 Def. 6.1) with centred A, B (least squares with a bias): M_LS = A_c⁺B_c,
    R² = 1 − ‖A_cM_LS − B_c‖²_F / ‖B_c‖²_F = ‖P_A B_c‖²_F / ‖B_c‖²_F.  Fitted in-sample, so it raises when
    rank(A_c) ≥ n − 1 (R² ≡ 1) unless regularization > 0 (ridge: M = (A_cᵀA_c + λI)⁻¹A_cᵀB_c).
    B → A: r2_lr(B, A)."""
    return similarity("r2_lr", A, B, reshape=reshape, regularization=regularization)


def dm_struct(A: Any, B: Any, *, reshape: Reshape = "flatten", regularization: float = 0.0) -> float:
    """DM(struct) as an index: ‖A M_LS + 1bᵀ − B‖²_F / ‖B_c‖²_F of the in-sample affine least-squares stitch
    A → B = 1 − R²_LR(A → B) (normalised by the centred target; paper 1's evaluation on held-out data, normalised
    by the raw target, lives in the stitching module).  A distance: 0 when B is an affine image of A."""
    return similarity("dm_struct", A, B, reshape=reshape, regularization=regularization)
