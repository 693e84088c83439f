"""Stitching layers, direct matching (DM) and task loss matching (TLM).

A stitch T maps the source representation f≤i(x) to the receiver's layer j: the stitched network is
g>j ∘ T ∘ f≤i. Every stitch type is T(h) = W·P(h) + b: a fixed linear rearrangement or resampling P of
the source into the target's layout (``prepare``), then one affine map over channels applied at every
position or token. :func:`make_stitch` picks the type from the two shapes and layouts:

=================  ==========================================================================================
conv → conv        :class:`AffineStitch`: bilinear resize to the target size (align_corners=False) + 1×1 conv
                   (paper 1); or with ``conv_stitch='paper3'`` :class:`StrideStitch` (k×k conv, stride k) when
                   the source map is k× larger, :class:`UpsampleStitch` (nearest ×k, 1×1 conv) when k× smaller
tokens → tokens    :class:`AffineStitch`: one affine map for every token, CLS included (paper 1)
conv → tokens      :class:`ConvToTokens`: map resized to the patch grid, positions become patch tokens, CLS =
                   the mean of the patch tokens (paper 1's code with ``cls_token='pool'``)
tokens → conv      :class:`TokensToConv`: CLS dropped, patch tokens laid out on their grid, resized to the
                   target size, 1×1 conv (paper 1's code with ``cls_token='drop'``)
=================  ==========================================================================================

DM fits T by least squares on "rows": every (sample, position) or (sample, token) of P(source) is one
equation y = W x + b, so DM is exact for every type. The normal equations are accumulated in float64 over chunks,
so the solution on the whole split is exact (not an average of chunk solutions); :class:`LeastSquares` also
offers paper 1's code's pseudo-inverse solve.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.linalg import blas  # at import: BLAS thread limits (threadpoolctl, the job's) then cover it too
from torch.nn.utils import parametrize

from stitchlib import catalog, tasks
from stitchlib.io import epoch_order
from stitchlib.train import make_optimizer, set_epoch_lr

log = logging.getLogger(__name__)


def rows(h: torch.Tensor | np.ndarray, layout: str):
    """(N, C, H, W) → (N·H·W, C) for conv maps; (N, T, D) → (N·T, D) for tokens."""
    if layout == "conv":
        return h.transpose(0, 2, 3, 1).reshape(-1, h.shape[1]) if isinstance(h, np.ndarray) \
            else h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
    if layout == "tokens":
        return h.reshape(-1, h.shape[-1])
    raise ValueError(f"unknown layout {layout!r}")


def resize(h: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Bilinear resize of a conv map to ``size`` (identity when already that size or size is None)."""
    if size is None or tuple(h.shape[-2:]) == tuple(size):
        return h
    return F.interpolate(h, size=size, mode="bilinear", align_corners=False)


class AffineStitch(nn.Module):
    """Affine stitch over channels: ``layout`` 'conv' (1×1 conv, optional resize) or 'tokens'."""

    def __init__(self, c_in: int, c_out: int, layout: str, size: tuple[int, int] | None = None):
        super().__init__()
        self.layout, self.size = layout, tuple(size) if size else None
        self.weight = nn.Parameter(torch.zeros(c_out, c_in))
        self.bias = nn.Parameter(torch.zeros(c_out))

    @classmethod
    def between(cls, src_shape: tuple, tgt_shape: tuple, layout: str) -> AffineStitch:
        """A stitch sized from per-sample shapes (C, H, W) / (T, D) of source and target."""
        if layout == "conv":
            return cls(src_shape[0], tgt_shape[0], layout, tgt_shape[1:])
        if src_shape[0] != tgt_shape[0]:
            raise ValueError(f"token stitch needs equal token counts, got {src_shape[0]} and {tgt_shape[0]}")
        return cls(src_shape[-1], tgt_shape[-1], layout)

    def prepare(self, h: torch.Tensor) -> torch.Tensor:
        """The source as the affine map sees it (resized for conv maps)."""
        return resize(h, self.size) if self.layout == "conv" else h

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.layout == "tokens":
            return F.linear(h, self.weight, self.bias)
        w = self.weight[:, :, None, None]
        if self.size is not None and h.shape[-2] * h.shape[-1] < self.size[0] * self.size[1]:
            # Upsampling: the 1×1 map commutes with bilinear resizing (its weights sum to 1 at every output
            # position), so map first at the small resolution — the same function, far fewer operations.
            return resize(F.conv2d(h, w, self.bias), self.size)
        return F.conv2d(resize(h, self.size), w, self.bias)

    def set_affine(self, w: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> AffineStitch:
        with torch.no_grad():
            w = torch.as_tensor(w, dtype=self.bias.dtype, device=self.bias.device)
            if parametrize.is_parametrized(self, "weight"):
                self.weight = w  # through the parametrisation's right_inverse (e.g. a bottleneck's factors)
            else:
                self.weight.copy_(w)
            self.bias.copy_(torch.as_tensor(b, dtype=self.bias.dtype))
        return self


class StrideStitch(AffineStitch):
    """Paper 3's downsampling stitch: a k×k convolution with stride k (source map k× the target's size).

    Affine in each k×k patch of the source: P = space-to-depth (``pixel_unshuffle``, channel order
    c·k² + row·k + col, the order of the conv kernel's entries), so ``weight`` is (C_out, C_in·k²).
    """

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__(c_in * k * k, c_out, "conv")
        self.k = k

    def prepare(self, h: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(h, self.k)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        kernel = self.weight.view(len(self.weight), -1, self.k, self.k)
        return F.conv2d(h, kernel, self.bias, stride=self.k)


class UpsampleStitch(AffineStitch):
    """Paper 3's upsampling stitch: nearest ×k upsampling, then a 1×1 conv (source map k× smaller).

    Nearest upsampling copies pixels, so it commutes with the 1×1 map: ``forward`` maps first, at the
    small resolution. DM fits on the upsampled rows (each source pixel counted k² times), the same least
    squares as the stitched map's.
    """

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__(c_in, c_out, "conv")
        self.k = k

    def prepare(self, h: torch.Tensor) -> torch.Tensor:
        return F.interpolate(h, scale_factor=self.k, mode="nearest")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.prepare(F.conv2d(h, self.weight[:, :, None, None], self.bias))


def _patch_grid(tokens: int) -> int:
    """Side g of the square patch grid of a ViT sequence of 1 + g² tokens (CLS first)."""
    g = math.isqrt(tokens - 1)
    if g * g != tokens - 1:
        raise ValueError(f"{tokens} tokens are not CLS + a square grid of patch tokens")
    return g


class ConvToTokens(AffineStitch):
    """Conv map → ViT tokens (paper 1's conv-to-transformer stitch, CLS pooled).

    P: bilinear resize of the map to the g×g patch grid, positions in row-major order as patch tokens
    (torchvision's patch order), and in front of them the mean over positions as the CLS token; then one
    affine map per token. So CLS = W·mean + b = the mean of the stitched patch tokens.
    """

    def __init__(self, c_in: int, c_out: int, grid: int):
        super().__init__(c_in, c_out, "tokens")
        self.grid = grid

    def prepare(self, h: torch.Tensor) -> torch.Tensor:
        patches = resize(h, (self.grid, self.grid)).flatten(2).transpose(1, 2)
        return torch.cat([patches.mean(1, keepdim=True), patches], 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return super().forward(self.prepare(h))


class TokensToConv(AffineStitch):
    """ViT tokens → conv map (paper 1's transformer-to-conv stitch, CLS dropped).

    The patch tokens are laid out on their g×g grid (row-major) as a D-channel map; then the conv
    :class:`AffineStitch`: bilinear resize to the target size and a 1×1 conv (map first when upsampling).
    """

    def __init__(self, c_in: int, c_out: int, size: tuple[int, int]):
        super().__init__(c_in, c_out, "conv", size)

    @staticmethod
    def grid_map(h: torch.Tensor) -> torch.Tensor:
        g = _patch_grid(h.shape[1])
        return h[:, 1:].transpose(1, 2).reshape(len(h), -1, g, g)

    def prepare(self, h: torch.Tensor) -> torch.Tensor:
        return super().prepare(self.grid_map(h))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return super().forward(self.grid_map(h))


CONV_STITCHES = tuple(catalog.CONV_STITCHES)  # their descriptions: stitchlib.catalog


def make_stitch(src_shape: tuple, tgt_shape: tuple, src_layout: str, tgt_layout: str,
                conv_stitch: str = "bilinear") -> AffineStitch:
    """The stitch between per-sample shapes (C, H, W) / (T, D) of source and target (table above).

    ``conv_stitch`` chooses between conv maps of different sizes: 'bilinear' (paper 1) or 'paper3'.
    """
    if conv_stitch not in CONV_STITCHES:
        raise ValueError(f"conv_stitch must be one of {CONV_STITCHES}, not {conv_stitch!r}")
    layouts = (src_layout, tgt_layout)
    if layouts == ("conv", "tokens"):
        return ConvToTokens(src_shape[0], tgt_shape[-1], _patch_grid(tgt_shape[0]))
    if layouts == ("tokens", "conv"):
        return TokensToConv(src_shape[-1], tgt_shape[0], tgt_shape[1:])
    if src_layout != tgt_layout:
        raise ValueError(f"no stitch from layout {src_layout!r} to {tgt_layout!r}")
    s_hw, t_hw = tuple(src_shape[1:]), tuple(tgt_shape[1:])
    if src_layout == "tokens" or conv_stitch == "bilinear" or s_hw == t_hw:
        return AffineStitch.between(src_shape, tgt_shape, src_layout)
    big, small = (s_hw, t_hw) if s_hw[0] > t_hw[0] else (t_hw, s_hw)
    k = big[0] // small[0]
    if big != tuple(k * x for x in small):
        raise ValueError(f"maps {s_hw} and {t_hw} are not k× each other; use conv_stitch='bilinear'")
    return (StrideStitch if big == s_hw else UpsampleStitch)(src_shape[0], tgt_shape[0], k)


# ----------------------------------------------------------------------------- direct matching

class LeastSquares:
    """Affine least squares  min_{W,b} Σ_rows ‖W x + b − y‖²  from streamed rows, in float64.

    ``update`` accumulates the Gram matrix of the augmented rows [x 1] (its upper triangle, by a symmetric
    rank-k update, BLAS dsyrk) and [x 1]ᵀy (dgemm), converting float32 rows to float64 a block at a time, so
    n, Σx, Σy, XᵀX and XᵀY all come from two BLAS calls per block (``bench/bench_dm.py``: 0.9–1.0× the time of
    the bare float64 products XᵀX and XᵀY of the same rows). Two solvers:

    * ``solve(rcond, solver="exact")`` (default): centres the moments (C_xx = XᵀX − n x̄x̄ᵀ, C_xy likewise) and
      returns the minimum-norm least-squares solution W = (C_xx⁺ C_xy)ᵀ, b = ȳ − W x̄, counting singular values of
      the centred X below ``rcond`` × the largest as zero (so underdetermined fits stay finite). Exact: the
      solution on the whole split, not an average of chunk solutions.
    * ``solver="pinv"``: paper 1's code (``torch.linalg.pinv([X 1]) @ Y`` on float32 activations, Csiszárik et
      al.'s ``ps_inv``): the pseudo-inverse of the uncentred augmented rows at torch's default cutoff, singular
      values of [X 1] at or below max(rows, c_in + 1) · eps(float32) × the largest count as zero. At K = 100
      images nothing is cut; on a whole split of hundreds of thousands of rows the cutoff reaches a few per cent
      of the largest singular value (dominated by the mean) and drops real directions, so the fit is no longer
      the least-squares one. Computed in float64 from the same moments (the cutoff rule is float32's).
    """

    SOLVERS = ("exact", "pinv")

    def __init__(self, c_in: int, c_out: int):
        self.c_in, self.c_out, self.n = c_in, c_out, 0
        self._g = np.zeros((c_in + 1, c_in + 1), order="F")  # upper triangle of [X 1]ᵀ[X 1]
        self._h = np.zeros((c_in + 1, c_out), order="F")  # [X 1]ᵀ Y
        self._block = max(64, 2**21 // (8 * (c_in + 1 + c_out)))  # rows per float64 block: ≈ 2 MB, cache-sized
        self._bx = self._by = None

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or y.ndim != 2 or x.shape[1] != self.c_in or y.shape[1] != self.c_out or len(x) != len(y):
            raise ValueError(f"least squares {self.c_in} → {self.c_out} got rows of shapes {x.shape} and {y.shape}")
        if self._bx is None:
            self._bx = np.empty((self._block, self.c_in + 1))
            self._bx[:, self.c_in] = 1.0
            self._by = np.empty((self._block, self.c_out))
        for lo in range(0, len(x), self._block):
            k = min(self._block, len(x) - lo)
            bx, by = self._bx[:k], self._by[:k]
            bx[:, :self.c_in] = x[lo:lo + k]  # float32 → float64 in a cache-sized block
            by[:] = y[lo:lo + k]
            # bx.T is Fortran-ordered: BLAS reads the rows in place; dsyrk writes only the upper triangle
            self._g = blas.dsyrk(1.0, bx.T, beta=1.0, c=self._g, lower=0, overwrite_c=1)
            if self.c_out:
                self._h = blas.dgemm(1.0, bx.T, by.T, beta=1.0, c=self._h, trans_b=1, overwrite_c=1)
        self.n += len(x)

    def gram(self) -> np.ndarray:
        """[X 1]ᵀ[X 1] ((c_in + 1)², symmetric): XᵀX, Σx in the last column and row, n in the corner."""
        return np.triu(self._g) + np.triu(self._g, 1).T

    def centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Means and centred cross-products: x̄, ȳ, C_xx = XᵀX − n x̄x̄ᵀ, C_xy = XᵀY − n x̄ȳᵀ."""
        if self.n == 0:
            raise ValueError("least squares with no rows")
        g, c = self.gram(), self.c_in
        mx, my = g[:c, c] / self.n, self._h[c] / self.n
        return mx, my, g[:c, :c] - self.n * np.outer(mx, mx), self._h[:c] - self.n * np.outer(mx, my)

    def solve(self, rcond: float = 1e-6, solver: str = "exact") -> tuple[np.ndarray, np.ndarray]:
        if solver == "pinv":
            return self._pinv()
        if solver != "exact":
            raise ValueError(f"unknown least-squares solver {solver!r}; use one of {self.SOLVERS}")
        mx, my, cxx, cxy = self.centred()
        evals, evecs = np.linalg.eigh(cxx)  # singular values of centred X are sqrt(evals)
        keep = evals > (rcond ** 2) * max(evals.max(), 0.0)
        inv = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T
        w = (inv @ cxy).T
        return w, my - w @ mx

    def _pinv(self) -> tuple[np.ndarray, np.ndarray]:
        """pinv([X 1]) Y at torch.linalg.pinv's default cutoff for float32 input (see the class docstring)."""
        if self.n == 0:
            raise ValueError("least squares with no rows")
        rtol = max(self.n, self.c_in + 1) * float(np.finfo(np.float32).eps)
        evals, evecs = np.linalg.eigh(self.gram())  # σ² of [X 1]
        keep = evals > rtol**2 * max(evals.max(), 0.0)
        sol = ((evecs[:, keep] / evals[keep]) @ evecs[:, keep].T) @ self._h  # (c_in + 1) × c_out
        return sol[:self.c_in].T, sol[self.c_in]

    def procrustes(self) -> tuple[np.ndarray, np.ndarray]:
        """Orthogonal Procrustes (paper 2): M = UVᵀ from the SVD C_xy = U S Vᵀ of the centred AᵀB, so W = Mᵀ
        has orthonormal rows or columns (semi-orthogonal when the widths differ); b = ȳ − W x̄."""
        mx, my, _, cxy = self.centred()
        u, _, vt = np.linalg.svd(cxy, full_matrices=False)
        w = (u @ vt).T
        return w, my - w @ mx

    def reduced_rank(self, k: int, rcond: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """Reduced-rank regression (Izenman 1975; paper 2): M_k = M_LS V_k V_kᵀ, V_k the top-k right singular
        vectors of the fitted A·M_LS — eigenvectors of M_LSᵀ C_xx M_LS. At full rank this is M_LS."""
        if k < 1:
            raise ValueError(f"reduced rank k must be ≥ 1, not {k}")
        mx, my, cxx, _ = self.centred()
        w, _ = self.solve(rcond)
        m = w.T
        _, v = np.linalg.eigh(m.T @ cxx @ m)  # ascending
        vk = v[:, ::-1][:, :k]
        w = (m @ vk @ vk.T).T
        return w, my - w @ mx


DM_METHODS = ("ls", "procrustes", "reduced_rank", "lasso")


def lasso(x: np.ndarray, y: np.ndarray, alpha: float, max_iter: int = 5000, tol: float = 1e-6
          ) -> tuple[np.ndarray, np.ndarray]:
    """L1-regularised least squares (paper 2, eq. 3; Li et al. 2016) by scikit-learn's coordinate descent:
    min_{W,b} (1/2n)‖XWᵀ + b − Y‖²_F + α Σ|w_ij|, each output channel independently, intercept not penalised.
    ``alpha = 0`` is plain least squares (solved by the same coordinate descent)."""
    import warnings

    from sklearn.linear_model import Lasso

    if alpha < 0:
        raise ValueError(f"lasso alpha must be ≥ 0, not {alpha}")
    model = Lasso(alpha=alpha, max_iter=max_iter, tol=tol, precompute=True)
    with warnings.catch_warnings():  # α = 0: scikit-learn advises LinearRegression; the CD solve still converges
        warnings.filterwarnings("ignore", "With alpha=0", UserWarning)
        model.fit(np.asarray(x, np.float64), np.asarray(y, np.float64))
    w = np.atleast_2d(model.coef_)
    return w, np.atleast_1d(model.intercept_)


def dm_rows(stitch: AffineStitch, hs, ht) -> tuple[np.ndarray, np.ndarray]:
    """One chunk's least-squares rows: P(source) and the target, (samples × positions or tokens) × channels."""
    hs = stitch.prepare(torch.as_tensor(hs, dtype=torch.float32))
    return rows(hs, stitch.layout).numpy(), rows(np.asarray(ht), stitch.layout)


def fit_dm(stitch: AffineStitch, source: Iterable[torch.Tensor], target: Iterable[torch.Tensor],
           rcond: float = 1e-6, method: str = "ls", rank: int | None = None, alpha: float = 0.0,
           solver: str = "exact") -> AffineStitch:
    """Fit ``stitch`` by direct matching on paired chunks of source and target activations.

    ``method``: 'ls' (least squares, paper 1), or paper 2's classes 'procrustes', 'reduced_rank' (with
    ``rank``) and 'lasso' (with ``alpha``; holds every row in memory, the others stream). ``solver`` (for 'ls'):
    'exact' least squares or paper 1's code's 'pinv' (see :class:`LeastSquares`)."""
    if solver not in LeastSquares.SOLVERS:
        raise ValueError(f"unknown least-squares solver {solver!r}; use one of {LeastSquares.SOLVERS}")
    if method not in DM_METHODS:
        raise ValueError(f"unknown direct matching method {method!r}; use one of {DM_METHODS}")
    if method == "reduced_rank" and not rank:
        raise ValueError("reduced_rank direct matching needs a rank")
    ls = LeastSquares(stitch.weight.shape[1], stitch.weight.shape[0])
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    for hs, ht in zip(source, target):
        x, y = dm_rows(stitch, hs, ht)
        if method == "lasso":
            kept.append((x, y))
        else:
            ls.update(x, y)
    if method == "lasso":
        return stitch.set_affine(*lasso(np.concatenate([k[0] for k in kept]), np.concatenate([k[1] for k in kept]),
                                        alpha))
    solution = ls.solve(rcond, solver) if method == "ls" else ls.procrustes() if method == "procrustes" \
        else ls.reduced_rank(rank, rcond)
    return stitch.set_affine(*solution)


# ----------------------------------------------------------------------------- low-rank approximations and pooling
# (the Ding et al. tests' representations, stitchlib.ding; extraction writes a training split's summary of both)

def _channels_last(h: np.ndarray, layout: str) -> np.ndarray:
    return np.moveaxis(h, 1, -1) if layout == "conv" else h


def pooled(h: np.ndarray, layout: str) -> np.ndarray:
    """Probe features: the global average over positions (conv, (N, C, H, W) → (N, C)) or the CLS token
    (tokens, (N, T, D) → (N, D)), in float64."""
    h = np.asarray(h, np.float64)
    if layout == "conv":
        return h.mean(axis=(2, 3))
    if layout == "tokens":
        return h[:, 0]
    raise ValueError(f"unknown layout {layout!r}")


class LowRank:
    """Principal directions of a layer's rows (samples × positions or tokens, C columns), for low-rank
    approximations ĥ = μ + (h − μ) V_r V_rᵀ that keep the layer's shape.

    ``fit`` streams chunks and accumulates n, Σx and XᵀX in float64 (the covariance's eigenvectors are the
    right singular vectors of the centred rows, sorted by decreasing variance).
    """

    def __init__(self, mean: np.ndarray, basis: np.ndarray, variances: np.ndarray):
        self.mean, self.basis, self.variances = mean, basis, variances

    @property
    def channels(self) -> int:
        return len(self.mean)

    @staticmethod
    def add(acc: LeastSquares | None, h: np.ndarray, layout: str) -> LeastSquares:
        """Accumulate a chunk of activations' rows (the least-squares accumulator with no targets: n, Σx, XᵀX)."""
        r = rows(np.asarray(h), layout)
        acc = acc or LeastSquares(r.shape[1], 0)
        acc.update(r, np.zeros((len(r), 0)))
        return acc

    @classmethod
    def fit(cls, chunks: Iterable[np.ndarray], layout: str) -> LowRank:
        acc = None
        for h in chunks:
            acc = cls.add(acc, h, layout)
        return cls.of(acc)

    @classmethod
    def of(cls, acc: LeastSquares | None) -> LowRank:
        """The principal directions of the rows accumulated by :meth:`add`."""
        if acc is None or acc.n < 2:
            raise ValueError("low-rank approximation needs at least two rows")
        mean, _, cov, _ = acc.centred()
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1]
        return cls(mean, evecs[:, order], np.clip(evals[order], 0, None) / (acc.n - 1))

    def apply(self, h: np.ndarray, rank: int, layout: str) -> np.ndarray:
        """The rank-``rank`` approximation of ``h`` (same shape, float64); features last for 'pool'ed input."""
        if not 1 <= rank <= self.channels:
            raise ValueError(f"rank {rank} is outside 1..{self.channels} (the layer's channels)")
        h = np.asarray(h, np.float64)
        x = h if layout == "pool" else _channels_last(h, layout)
        v = self.basis[:, :rank]
        out = self.mean + ((x - self.mean) @ v) @ v.T
        return out if layout == "pool" else np.ascontiguousarray(np.moveaxis(out, -1, 1) if layout == "conv" else out)


# ----------------------------------------------------------------------------- evaluation

STRUCT_RULES = ("whole", "batch_mean")


class Evaluation:
    """Running terms of :func:`evaluate` over blocks of a split, in batches of ``batch_size``: blocks that are
    multiples of it give the same batches as one call on the whole split, so streaming changes no digit. Holds
    three float64 numbers per image (the per-image terms the bootstrap resamples), never the activations."""

    def __init__(self, task: str | tasks.Task = tasks.MULTICLASS, batch_size: int = 256, struct: str = "whole"):
        if struct not in STRUCT_RULES:
            raise ValueError(f"struct must be one of {STRUCT_RULES}, got {struct!r}")
        self.task, self.batch_size, self.struct = tasks.get(task), batch_size, struct
        self.parts: dict[str, list[torch.Tensor]] = {"correct": [], "err": [], "norm": []}
        self.n, self.xent, self.ratios = 0, 0.0, []

    @torch.no_grad()
    def update(self, stitch: AffineStitch, receiver, layer: int, source: torch.Tensor, target: torch.Tensor,
               labels: torch.Tensor, reference_logits: torch.Tensor | None = None) -> None:
        dev, task, bs, parts = stitch.bias.device, self.task, self.batch_size, self.parts
        for i in range(0, len(labels), bs):
            s = stitch(source[i:i + bs].to(dev))
            t = target[i:i + bs].to(dev)
            logits = receiver.back(s, layer)
            parts["correct"].append(task.correct_each(logits, labels[i:i + bs].to(dev)).double().cpu())
            parts["err"].append((s.double() - t.double()).pow(2).flatten(1).sum(1).cpu())
            parts["norm"].append(t.double().pow(2).flatten(1).sum(1).cpu())
            e, m = float(parts["err"][-1].sum()), float(parts["norm"][-1].sum())
            self.ratios.append(e / m if m > 0 else float("nan"))
            if reference_logits is not None:
                self.xent += task.soft_cross_entropy(logits.double(), reference_logits[i:i + bs].to(dev).double(),
                                                     reduction="sum").item()
        self.n += len(labels)

    def result(self, cross_entropy: bool = False, per_image: bool = False) -> dict[str, Any]:
        each = {k: torch.cat(v).numpy() for k, v in self.parts.items()}
        err, norm = float(each["err"].sum()), float(each["norm"].sum())
        whole = err / norm if norm > 0 else float("nan")
        out: dict[str, Any] = {"accuracy": float(each["correct"].sum()) / self.n,
                               "struct": whole if self.struct == "whole" else float(np.mean(self.ratios))}
        if cross_entropy:
            out["cross_entropy"] = self.xent / self.n
        if per_image:
            out["per_image"] = each
        return out


@torch.no_grad()
def evaluate(stitch: AffineStitch, receiver, layer: int, source: torch.Tensor, target: torch.Tensor,
             labels: torch.Tensor, batch_size: int = 256, reference_logits: torch.Tensor | None = None,
             task: str | tasks.Task = tasks.MULTICLASS, struct: str = "whole",
             per_image: bool = False) -> dict[str, Any]:
    """Stitched accuracy of g>j ∘ T on ``source`` activations (``task``'s: top-1, or the mean attribute
    accuracy of a multi-label task), and DM(struct) = ‖T(src) − tgt‖²/‖tgt‖² (float64 sums): with ``struct=
    'whole'`` one ratio over the whole set; with 'batch_mean' the mean of the per-batch ratios over batches of
    ``batch_size`` (paper 1's code, ``stitched_repr_diff``: every batch, the last smaller one too, weighs the
    same). With ``reference_logits`` (the receiver's own outputs) also the cross-entropy of the stitched
    outputs to the receiver's (−Σ softmax(reference)·log softmax(stitched) for classes), averaged over samples
    (paper 2, Fig. 2). ``per_image``: also the per-image terms of those sums under 'per_image' — 'correct'
    (each image's accuracy), 'err' (‖T(a_i) − b_i‖²), 'norm' (‖b_i‖²), float64 numpy (n,) — from which
    ``stitchlib.uncertainty`` resamples test images (its intervals resample the whole-set ratio).
    :class:`Evaluation` computes the same over streamed blocks."""
    ev = Evaluation(task, batch_size, struct)
    ev.update(stitch, receiver, layer, source, target, labels, reference_logits)
    return ev.result(reference_logits is not None, per_image)


# ----------------------------------------------------------------------------- task loss matching

INITS = ("random", "identity", "permutation", "ls")


def init_stitch(stitch: AffineStitch, kind: str, seed: int = 0) -> AffineStitch:
    """Paper 2's TLM initialisations of ``stitch`` (in place): 'random' (``nn.Linear``'s default uniform
    ±1/√fan_in for weight and bias, from ``seed``), 'identity' (W = I, rectangular when the widths differ,
    b = 0), 'permutation' (W a random 0/1 matrix with one 1 per output channel, each input used once
    while they last, b = 0). 'ls' is DM: call :func:`fit_dm` instead."""
    c_out, c_in = stitch.weight.shape
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        bound = 1 / math.sqrt(c_in)
        return stitch.set_affine((torch.rand(c_out, c_in, generator=g) * 2 - 1) * bound,
                                 (torch.rand(c_out, generator=g) * 2 - 1) * bound)
    if kind == "identity":
        return stitch.set_affine(torch.eye(c_out, c_in), torch.zeros(c_out))
    if kind == "permutation":
        cols = torch.cat([torch.randperm(c_in, generator=g) for _ in range(-(-c_out // c_in))])[:c_out]
        return stitch.set_affine(F.one_hot(cols, c_in).float(), torch.zeros(c_out))
    raise ValueError(f"unknown TLM initialisation {kind!r}; use one of {INITS} ('ls' = fit_dm)")


class _Factors(nn.Module):
    """W = U·V with U (c_out × k), V (k × c_in); assigning W sets the balanced rank-k truncated SVD factors."""

    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return u @ v

    def right_inverse(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        root = s[: self.rank].sqrt()
        return u[:, : self.rank] * root, root[:, None] * vh[: self.rank]


def bottleneck(stitch: AffineStitch, rank: int) -> AffineStitch:
    """Make ``stitch`` a low-rank bottleneck W = W1·W2 (paper 2, §7) with a torch parametrisation: TLM trains
    the factors, ``stitch.weight`` is their product, and ``set_affine`` (or the current weight, here) sets
    them to the best rank-``rank`` approximation of the given W."""
    c_out, c_in = stitch.weight.shape
    if not 1 <= rank <= min(c_out, c_in):
        raise ValueError(f"bottleneck rank must be in 1..{min(c_out, c_in)} for a {c_in}→{c_out} stitch, not {rank}")
    parametrize.register_parametrization(stitch, "weight", _Factors(rank))
    return stitch


def batch_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA of two batches, each sample flattened: ⟨K_x, K_y⟩ / (‖K_x‖‖K_y‖) with K = XXᵀ of the
    column-centred X (= ‖YᵀX‖²_F / (‖XᵀX‖_F‖YᵀY‖_F)). Differentiable: paper 2's CKA penalty."""
    x, y = x.flatten(1), y.flatten(1)
    x, y = x - x.mean(0), y - y.mean(0)
    kx, ky = x @ x.T, y @ y.T
    return (kx * ky).sum() / (kx.norm() * ky.norm())


def train_tlm(stitches: dict[Any, AffineStitch], receiver, layer: int,
              source: Callable[[Any, torch.Tensor], torch.Tensor], labels: torch.Tensor, cfg: dict[str, Any],
              *, seed: int, soft_targets: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
              target: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
              on_step: Callable[[int, int], None] | None = None, task: str | tasks.Task = tasks.MULTICLASS,
              progress: Callable[[str], None] = log.info, chunk: int = 256, buffer: int | None = None,
              prepare: Callable[[int, int, torch.Tensor], None] | None = None) -> list[float]:
    """Train stitches that share the receiving layer ``layer`` of ``receiver``, together.

    ``source(key, idx)`` returns the source activations of training samples ``idx`` for the stitch
    ``stitches[key]`` (cached activations, or a frozen front half run on the fly). Only the stitches
    train; the receiver stays frozen in eval mode. All stitches see the same batches; their outputs
    are concatenated along the batch and pushed through g>j once, and the loss is the sum of the
    per-stitch mean losses, so each stitch gets exactly the gradient it would get if trained alone.

    Batches: each epoch's order is ``io.epoch_order(n, chunk, buffer)`` from a generator seeded with ``seed``
    (a plain permutation when ``buffer`` is None or ≥ n), cut into batches of ``cfg['batch_size']``, each sorted;
    ``prepare(epoch, step, idx)`` runs before a batch's sources are asked for (e.g. to recompute and augment the
    fronts once for every stitch of the group). ``soft_targets`` may be a function of ``idx``.

    Loss per stitch: ``task``'s loss on hard ``labels`` (cross-entropy; binary cross-entropy per attribute
    for a multi-label task), or with ``cfg['labels'] == 'soft'`` the distillation loss to the receiver's own
    outputs ``soft_targets`` at temperature T (KL divergence scaled by T²); plus paper 2's penalties
    ``cfg['l1']`` · Σ|W| and ``cfg['cka_penalty']`` · CKA(target, stitched) on the batch (:func:`batch_cka`;
    ``target(key, idx)`` gives the receiver's own activations). ``on_step(epoch, step)`` runs after every
    optimiser step (step counts from 1), e.g. to track indices while the stitch trains.
    Returns the mean loss per epoch (summed over stitches, penalties included).
    """
    receiver.eval()
    for p in receiver.parameters():
        p.requires_grad_(False)
    task, keys = tasks.get(task), list(stitches)
    dev = stitches[keys[0]].bias.device
    opt = make_optimizer([p for k in keys for p in stitches[k].parameters()], cfg)
    soft, temp = cfg.get("labels", "hard") == "soft", cfg.get("temperature", 1.0)
    l1, cka = cfg.get("l1", 0.0), cfg.get("cka_penalty", 0.0)
    if soft and soft_targets is None:
        raise ValueError("tlm.labels = soft needs the receiver's outputs on the training split")
    if cka and target is None:
        raise ValueError("tlm.cka_penalty needs the receiver's own activations at the stitch (target)")
    g = torch.Generator().manual_seed(seed)
    n, bs, curve, step = len(labels), cfg["batch_size"], [], 0
    for epoch in range(cfg["epochs"]):
        set_epoch_lr(opt, cfg, epoch)
        order, total = epoch_order(n, chunk, buffer or n, g), 0.0
        for b, start in enumerate(range(0, n, bs)):
            idx = order[start:start + bs].sort().values  # sorted: HDF5-friendly, order-free loss
            if prepare is not None:
                prepare(epoch, b, idx)
            outs = [stitches[k](source(k, idx).to(dev)) for k in keys]
            logits = receiver.back(torch.cat(outs), layer).view(len(keys), len(idx), -1)
            if soft:
                st = soft_targets(idx) if callable(soft_targets) else soft_targets[idx]
                losses = task.soft_loss(logits, st.to(dev), temp, reduction="none").mean(1)
            else:
                y = labels[idx].to(dev)
                losses = task.loss(logits, y.expand(len(keys), *y.shape), reduction="none").mean(1)
            loss = losses.sum()
            if l1:
                loss = loss + l1 * sum(stitches[k].weight.abs().sum() for k in keys)
            if cka:
                loss = loss + cka * sum(batch_cka(o, target(k, idx).to(dev)) for k, o in zip(keys, outs))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            step += 1
            if on_step is not None:
                on_step(epoch, step)
        curve.append(total / n)
        progress(f"layer {layer}: epoch {epoch + 1}/{cfg['epochs']} loss {curve[-1]:.4f} ({len(keys)} stitches)")
    return curve
