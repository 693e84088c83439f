"""Stitching layers, direct matching (DM) and task loss matching (TLM).

A stitch T maps the source representation f≤i(x) to the receiver's layer j: the stitched network is
g>j ∘ T ∘ f≤i. T is affine over channels: a 1×1 convolution for conv maps (after a bilinear resize of
the source to the target's spatial size when they differ, align_corners=False as in paper 1) and one
affine map applied to every token, CLS included, for ViT tokens.

DM fits T by least squares on "rows": every (sample, position) or (sample, token) is one equation
y = W x + b. The normal equations are accumulated in float64 over chunks, centred, so the solution on
the whole split is exact (not an average of chunk solutions).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

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
    def between(cls, src_shape: tuple, tgt_shape: tuple, layout: str) -> "AffineStitch":
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
        return F.conv2d(self.prepare(h), w, self.bias)

    def set_affine(self, w: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> "AffineStitch":
        with torch.no_grad():
            self.weight.copy_(torch.as_tensor(w, dtype=self.weight.dtype))
            self.bias.copy_(torch.as_tensor(b, dtype=self.bias.dtype))
        return self


# ----------------------------------------------------------------------------- direct matching

class LeastSquares:
    """Exact affine least squares  min_{W,b} Σ_rows ‖W x + b − y‖²  from streamed rows, in float64.

    Accumulates n, Σx, Σy, XᵀX, XᵀY; ``solve`` centres them (C_xx = XᵀX − n x̄x̄ᵀ, C_xy likewise) and
    returns the minimum-norm solution W = (C_xx⁺ C_xy)ᵀ, b = ȳ − W x̄, i.e. the Moore–Penrose
    pseudo-inverse solution of paper 1, with singular values of the centred X below ``rcond`` × the
    largest one treated as zero (a principled cutoff for underdetermined fits).
    """

    def __init__(self, c_in: int, c_out: int):
        self.n = 0
        self.sx, self.sy = np.zeros(c_in), np.zeros(c_out)
        self.xx, self.xy = np.zeros((c_in, c_in)), np.zeros((c_in, c_out))

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        self.n += len(x)
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xx += x.T @ x
        self.xy += x.T @ y

    def solve(self, rcond: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        if self.n == 0:
            raise ValueError("least squares with no rows")
        mx, my = self.sx / self.n, self.sy / self.n
        cxx = self.xx - self.n * np.outer(mx, mx)
        cxy = self.xy - self.n * np.outer(mx, my)
        evals, evecs = np.linalg.eigh(cxx)  # singular values of centred X are sqrt(evals)
        keep = evals > (rcond ** 2) * max(evals.max(), 0.0)
        inv = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T
        w = (inv @ cxy).T
        return w, my - w @ mx


def fit_dm(stitch: AffineStitch, source: Iterable[torch.Tensor], target: Iterable[torch.Tensor],
           rcond: float = 1e-6) -> AffineStitch:
    """Fit ``stitch`` by direct matching on paired chunks of source and target activations."""
    ls = LeastSquares(stitch.weight.shape[1], stitch.weight.shape[0])
    for hs, ht in zip(source, target):
        hs = stitch.prepare(torch.as_tensor(hs, dtype=torch.float32))
        ls.update(rows(hs, stitch.layout).numpy(), rows(np.asarray(ht), stitch.layout))
    return stitch.set_affine(*ls.solve(rcond))


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(stitch: AffineStitch, receiver, layer: int, source: torch.Tensor, target: torch.Tensor,
             labels: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Stitched accuracy of g>j ∘ T on ``source`` activations, and DM(struct) = ‖T(src) − tgt‖²/‖tgt‖²
    over the whole set (float64 sums)."""
    dev = stitch.weight.device
    correct, err, norm = 0, 0.0, 0.0
    for i in range(0, len(labels), batch_size):
        s = stitch(source[i:i + batch_size].to(dev))
        t = target[i:i + batch_size].to(dev)
        correct += (receiver.back(s, layer).argmax(1).cpu() == labels[i:i + batch_size]).sum().item()
        err += (s.double() - t.double()).pow(2).sum().item()
        norm += t.double().pow(2).sum().item()
    return {"accuracy": correct / len(labels), "struct": err / norm if norm > 0 else float("nan")}


# ----------------------------------------------------------------------------- task loss matching

def train_tlm(stitches: dict[Any, AffineStitch], receiver, layer: int,
              source: Callable[[Any, torch.Tensor], torch.Tensor], labels: torch.Tensor, cfg: dict[str, Any],
              *, seed: int, soft_targets: torch.Tensor | None = None,
              progress: Callable[[str], None] = log.info) -> list[float]:
    """Train stitches that share the receiving layer ``layer`` of ``receiver``, together.

    ``source(key, idx)`` returns the source activations of training samples ``idx`` for the stitch
    ``stitches[key]`` (cached activations, or a frozen front half run on the fly). Only the stitches
    train; the receiver stays frozen in eval mode. All stitches see the same batches; their outputs
    are concatenated along the batch and pushed through g>j once, and the loss is the sum of the
    per-stitch mean losses, so each stitch gets exactly the gradient it would get if trained alone.

    Loss: cross-entropy on hard ``labels``, or with ``cfg['labels'] == 'soft'`` the KL divergence to
    ``softmax(soft_targets / T)`` (the receiver's own outputs) scaled by T².
    Returns the mean loss per epoch (summed over stitches).
    """
    receiver.eval()
    for p in receiver.parameters():
        p.requires_grad_(False)
    keys = list(stitches)
    dev = stitches[keys[0]].weight.device
    opt = make_optimizer([p for k in keys for p in stitches[k].parameters()], cfg)
    soft, temp = cfg.get("labels", "hard") == "soft", cfg.get("temperature", 1.0)
    if soft and soft_targets is None:
        raise ValueError("tlm.labels = soft needs the receiver's outputs on the training split")
    g = torch.Generator().manual_seed(seed)
    n, bs, curve = len(labels), cfg["batch_size"], []
    for epoch in range(cfg["epochs"]):
        set_epoch_lr(opt, cfg, epoch)
        order, total = torch.randperm(n, generator=g), 0.0
        for start in range(0, n, bs):
            idx = order[start:start + bs].sort().values  # sorted: HDF5-friendly, order-free loss
            out = torch.cat([stitches[k](source(k, idx).to(dev)) for k in keys])
            logits = receiver.back(out, layer).view(len(keys), len(idx), -1)
            if soft:
                t = F.log_softmax(soft_targets[idx].to(dev) / temp, -1).expand_as(logits)
                loss = F.kl_div(F.log_softmax(logits / temp, -1), t, log_target=True,
                                reduction="none").sum(-1).mean(1).sum() * temp ** 2
            else:
                y = labels[idx].to(dev)
                loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(len(keys)), reduction="none") \
                    .view(len(keys), -1).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        curve.append(total / n)
        progress(f"layer {layer}: epoch {epoch + 1}/{cfg['epochs']} loss {curve[-1]:.4f} ({len(keys)} stitches)")
    return curve
