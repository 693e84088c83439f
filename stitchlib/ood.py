"""Energy-based OOD detectors on layer activations (paper 1, Section 4; Liu et al. 2020).

One detector per (network, layer) classifies that layer's activations g≤i(x) with the label of x. Its energy

    E(h) = −logsumexp_k f_k(h)

is low on in-distribution (ID) activations once the detector has been fine-tuned with outlier exposure, so the
score −E separates the receiver's own activations from stitched ones T(f≤i(x)) that leave its distribution.

Detectors: conv maps (N, C, H, W) → a CIFAR ResNet whose stem takes C channels, the map resized bilinearly to
``input_size`` (paper 1: ResNet-18, 32×32); tokens (N, T, D) → a ViT encoder fed the tokens directly (linear
projection D → hidden when they differ, a learned positional embedding unless ``positional=False``,
classification on token 0; paper 1: ViT-Ti "without the initial embedding sections", i.e. no positional embedding).
Outliers: crops of scikit-learn's two sample photographs (embedded default) or 300K Random Images (paper).

Paper 1's code (szegedai/stitching-ood: exec_train_representation_classifier.py, nn_stitching/utils/ood/) differs
from the defaults here in three choices, all available (``stitchlib.config.OOD_PRESETS['paper1']``, config
``ood.preset: paper1``): its stage-2 learning rate is a MultiStepLR at half the epochs stepped once per *iteration*
(``lr_step='iteration'``), its token detector has no positional embedding (``positional=False``), and its FPR@95
takes the threshold whose TPR is *closest* to 95 % (``fpr_rule='closest'``, which may sit below 95 %).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from stitchlib import catalog
from stitchlib.io import epoch_order
from stitchlib.models import CifarResNet
from stitchlib.progress import Progress
from stitchlib.train import make_optimizer, set_epoch_lr

log = logging.getLogger(__name__)

Array = torch.Tensor | np.ndarray

#: Detector sizes per layout and training defaults (stage 1 pretrain, stage 2 finetune): facts of stitchlib.catalog,
#: where the torch-free config check reads them too.
DEFAULT_SIZE: dict[str, dict[str, Any]] = catalog.DETECTOR_SIZE
DEFAULT_CFG: dict[str, dict[str, Any]] = catalog.DETECTOR_TRAINING


# ----------------------------------------------------------------------------- detectors

class ConvDetector(nn.Module):
    """CIFAR ResNet on a conv map resized (bilinear, align_corners=False) to ``input_size``²."""

    def __init__(self, channels: int, num_classes: int, width: int, input_size: int, stage_blocks: list[int]):
        super().__init__()
        self.input_size = input_size
        self.net = CifarResNet(num_classes, width=width, stage_blocks=tuple(stage_blocks), in_channels=channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if tuple(h.shape[-2:]) != (self.input_size, self.input_size):
            h = F.interpolate(h, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.net(h)


class TokenDetector(nn.Module):
    """ViT encoder on a token sequence (N, T, D): D → hidden projection, torchvision ``Encoder`` (pre-norm blocks,
    final LayerNorm; its own learned positional embedding, or with ``positional=False`` none, as paper 1's
    detector, whose input tokens already carry the network's positional information), linear head on token 0
    (the CLS slot)."""

    def __init__(self, tokens: int, dim: int, num_classes: int, hidden_dim: int, depth: int, heads: int,
                 mlp_dim: int, dropout: float, positional: bool = True):
        super().__init__()
        from torchvision.models.vision_transformer import Encoder

        self.proj = nn.Linear(dim, hidden_dim) if dim != hidden_dim else nn.Identity()
        self.encoder = Encoder(seq_length=tokens, num_layers=depth, num_heads=heads, hidden_dim=hidden_dim,
                               mlp_dim=mlp_dim, dropout=dropout, attention_dropout=dropout,
                               norm_layer=partial(nn.LayerNorm, eps=1e-6))
        if not positional:  # the encoder adds a constant zero (a buffer outside the state dict)
            del self.encoder.pos_embedding
            self.encoder.register_buffer("pos_embedding", torch.zeros(1, tokens, hidden_dim), persistent=False)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.proj(h))[:, 0])


def build_detector(layout: str, sample_shape: tuple[int, ...] | list[int], num_classes: int,
                   **size: Any) -> nn.Module:
    """A detector for per-sample activations of ``sample_shape`` ((C, H, W) for 'conv', (T, D) for 'tokens').

    ``size`` overrides :data:`DEFAULT_SIZE` [layout] (conv: width, input_size, stage_blocks; tokens: hidden_dim,
    depth, heads, mlp_dim, dropout, positional). The result carries ``.spec``, a JSON-serialisable dict that rebuilds it
    (see :func:`load_detector`).
    """
    if layout not in DEFAULT_SIZE:
        raise ValueError(f"unknown layout {layout!r}; use conv or tokens")
    unknown = sorted(set(size) - set(DEFAULT_SIZE[layout]))
    if unknown:
        raise ValueError(f"unknown {layout} detector size option(s) {unknown}; known: {sorted(DEFAULT_SIZE[layout])}")
    size = {**DEFAULT_SIZE[layout], **size}
    shape = [int(s) for s in sample_shape]
    if layout == "conv":
        if len(shape) != 3:
            raise ValueError(f"conv activations need a per-sample shape (C, H, W), got {tuple(shape)}")
        size["stage_blocks"] = [int(b) for b in size["stage_blocks"]]
        det: nn.Module = ConvDetector(shape[0], num_classes, **size)
    else:
        if len(shape) != 2:
            raise ValueError(f"token activations need a per-sample shape (T, D), got {tuple(shape)}")
        det = TokenDetector(shape[0], shape[1], num_classes, **size)
    det.spec = {"layout": layout, "sample_shape": shape, "num_classes": int(num_classes), "size": size}
    return det


def detector_spec(detector: nn.Module) -> dict[str, Any]:
    """The JSON-serialisable spec that rebuilds ``detector`` (layout, sample_shape, num_classes, size)."""
    return json.loads(json.dumps(detector.spec))


def detector_state(detector: nn.Module) -> dict[str, torch.Tensor]:
    """Weights and buffers as CPU tensors: safe to ``torch.save`` and to read back with ``weights_only=True``."""
    return {k: v.detach().cpu().clone() for k, v in detector.state_dict().items()}


def load_detector(spec: dict[str, Any], state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Rebuild a detector from :func:`detector_spec` (and load :func:`detector_state`); returned in eval mode."""
    det = build_detector(spec["layout"], spec["sample_shape"], spec["num_classes"], **spec["size"])
    if state is not None:
        det.load_state_dict(state)
    return det.eval()


# ----------------------------------------------------------------------------- energies and losses

def energy_of(logits: torch.Tensor) -> torch.Tensor:
    """E = −logsumexp_k logits_k (temperature 1)."""
    return -torch.logsumexp(logits, dim=1)


def oe_loss(logits_in: torch.Tensor, labels: torch.Tensor, logits_out: torch.Tensor, m_in: float = -25.0,
            m_out: float = -7.0, weight: float = 0.1) -> torch.Tensor:
    """Liu et al.'s energy fine-tuning loss:

        CE(logits_in, y) + w · [ mean ReLU(E_in − m_in)² + mean ReLU(m_out − E_out)² ]

    pushing ID energies below m_in and outlier energies above m_out.
    """
    e_in, e_out = energy_of(logits_in), energy_of(logits_out)
    hinge = F.relu(e_in - m_in).pow(2).mean() + F.relu(m_out - e_out).pow(2).mean()
    return F.cross_entropy(logits_in, labels) + weight * hinge


def _rows(acts, idx) -> torch.Tensor:
    """Rows ``idx`` of activations held in memory or read on demand (any array-like with ``len`` and ``[idx]``:
    ``io.ChunkedLayer``, ``pipeline.FrontRows``), as float32."""
    return torch.as_tensor(acts[idx], dtype=torch.float32)


@torch.no_grad()
def energy(detector: nn.Module, acts: Array, batch_size: int = 256) -> np.ndarray:
    """Energies E(h) (float64, one per sample) of ``acts`` under ``detector`` in eval mode, on its device; ``acts``
    may be read on demand, a batch at a time (``_rows``)."""
    detector.eval()
    dev = next(detector.parameters()).device
    acts = acts if hasattr(acts, "__getitem__") and not isinstance(acts, (list, tuple)) else np.asarray(acts)
    out = [energy_of(detector(_rows(acts, slice(i, i + batch_size)).to(dev))).double().cpu()
           for i in range(0, len(acts), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0)


# ----------------------------------------------------------------------------- metrics

FPR_RULES = ("at_least", "closest")


def ood_metrics(energy_in: np.ndarray, energy_other: np.ndarray, tpr_level: float = 0.95,
                fpr_rule: str = "at_least") -> dict[str, float]:
    """Separability of ``energy_other`` from the in-distribution ``energy_in``.

    Convention (Liu et al.; paper 1): score s = −E, positive class = in-distribution (label 1 for ``energy_in``,
    0 for ``energy_other``).

    - auroc = P(s_in > s_other) + ½ P(tie) (``roc_auc_score``): 0.5 = indistinguishable, near 1 = the other set
      is clearly OOD (it has higher energy), near 0 = the other set looks *more* in-distribution than the ID set.
    - aupr = average precision with ID as positive (AUPR-In, ``average_precision_score``).
    - fpr95 = fraction of the other set with s ≥ τ: with ``fpr_rule='at_least'`` τ is the highest threshold
      reaching TPR ≥ ``tpr_level`` on the ID set (from ``roc_curve``; the usual definition, Liu et al.'s paper):
      0 = perfect separation, about 0.95 = indistinguishable. ``'closest'`` is paper 1's code (Hendrycks et al.'s
      ``fpr_and_fdr_at_recall``): among the thresholds at the distinct scores down to the first reaching TPR = 1,
      the one whose TPR is closest to ``tpr_level`` (the lowest of equally close ones), so its TPR may be below it.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    if fpr_rule not in FPR_RULES:
        raise ValueError(f"fpr_rule must be one of {FPR_RULES}, got {fpr_rule!r}")
    e_in, e_other = np.asarray(energy_in, np.float64).ravel(), np.asarray(energy_other, np.float64).ravel()
    if not (np.isfinite(e_in).all() and np.isfinite(e_other).all()):
        raise ValueError("non-finite energies: the detector or the activations diverged")
    y = np.r_[np.ones(len(e_in)), np.zeros(len(e_other))]
    s = -np.r_[e_in, e_other]
    if fpr_rule == "at_least":
        fpr, tpr, _ = roc_curve(y, s)
        fpr95 = fpr[np.searchsorted(tpr, tpr_level - 1e-12)]
    else:
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)  # one point per distinct score, TPR ascending
        cand = np.arange(1, int(np.argmax(tpr >= 1)) + 1)
        gap = np.abs(tpr[cand] - tpr_level)
        fpr95 = fpr[cand[np.flatnonzero(gap == gap.min())[-1]]]
    return {"auroc": float(roc_auc_score(y, s)), "aupr": float(average_precision_score(y, s)),
            "fpr95": float(fpr95),
            "energy_in_mean": float(e_in.mean()), "energy_other_mean": float(e_other.mean())}


def ood_scores(detector: nn.Module, in_acts: Array, other_acts: Array, batch_size: int = 256,
               fpr_rule: str = "at_least") -> dict[str, float]:
    """:func:`ood_metrics` of ``other_acts`` (e.g. stitched activations of the test images) against ``in_acts``
    (the receiving network's own activations at that layer, the positive class). AUROC near 1 = clearly OOD."""
    return ood_metrics(energy(detector, in_acts, batch_size), energy(detector, other_acts, batch_size),
                       fpr_rule=fpr_rule)


# ----------------------------------------------------------------------------- training

def _merge_cfg(cfg: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    cfg = cfg or {}
    unknown = sorted(set(cfg) - set(DEFAULT_CFG))
    if unknown:
        raise ValueError(f"unknown OOD training section(s) {unknown}; use pretrain and finetune")
    return {k: {**v, **cfg.get(k, {})} for k, v in DEFAULT_CFG.items()}


def _cycled(n: int, count: int, g: torch.Generator, chunk: int, buffer: int) -> torch.Tensor:
    """``count`` indices into range(n): concatenated epoch orders (each outlier once before repeats)."""
    reps = math.ceil(count / n)
    return torch.cat([epoch_order(n, chunk, buffer, g) for _ in range(reps)])[:count]


def _lr_stepper(opt: torch.optim.Optimizer, stage: dict[str, Any]) -> Callable[..., None]:
    """Sets the stage's learning rate: called with epoch= at the start of each epoch and with no argument before
    each batch; acts on the one its ``lr_step`` ('epoch' or 'iteration') names."""
    if stage.get("lr_step", "epoch") not in ("epoch", "iteration"):
        raise ValueError(f"lr_step must be 'epoch' or 'iteration', got {stage['lr_step']!r}")
    per_iteration, iteration = stage.get("lr_step", "epoch") == "iteration", [0]

    def step(epoch: int | None = None) -> None:
        if epoch is not None and not per_iteration:
            set_epoch_lr(opt, stage, epoch)
        elif epoch is None and per_iteration:
            set_epoch_lr(opt, stage, iteration[0])
            iteration[0] += 1

    return step


def train_detector(detector: nn.Module, in_acts: Array, labels: Array, outlier_acts: Array,
                   cfg: dict[str, Any] | None = None, *, seed: int, device: torch.device | str = "cpu",
                   progress: Callable[[str], None] = log.info, chunk: int = 256,
                   buffer: int | None = None) -> dict[str, Any]:
    """Train ``detector`` in two stages; returns the loss and lr per epoch and the final ID accuracy.

    Stage 1 (``cfg['pretrain']``): cross-entropy on the network's own activations ``in_acts`` with the input
    ``labels``. Stage 2 (``cfg['finetune']``): outlier exposure; every batch holds b = batch_size // 2 ID samples
    and b ``outlier_acts`` (cycled through random permutations), passed through the detector together (shared
    BatchNorm statistics, as in Liu et al.), loss :func:`oe_loss` with m_in, m_out, energy_weight.

    ``in_acts`` and ``outlier_acts`` may be arrays or read on demand (``_rows``: a cache read in shuffled chunks,
    or fronts recomputed from images); each epoch's order is ``io.epoch_order(n, chunk, buffer)`` (a plain
    permutation when ``buffer`` is None or ≥ n).

    Both stages use :func:`stitchlib.train.make_optimizer` and set the learning rate once per epoch
    (``set_epoch_lr``: lr · lr_factor(cfg, epoch), e.g. cosine over the fine-tuning epochs), or with a stage's
    ``lr_step='iteration'`` once per iteration, the schedule then counting iterations where it names epochs.
    That is paper 1's code (stitching-ood): its stage 2 builds ``MultiStepLR(milestones=[epochs // 2], 0.1)`` and
    steps it after every batch, so the rate falls tenfold after epochs // 2 *iterations* (10 of ≈ 1,600 per epoch
    on CIFAR-10) and stage 2 runs at a tenth of the rate it names; its stage 1 steps per epoch. (Liu et al.'s
    energy_ood also steps per iteration, correctly: its cosine runs over epochs × iterations steps.) The default
    steps per epoch, the schedule as written.
    """
    cfg = _merge_cfg(cfg)
    device = torch.device(device)
    x, xo = in_acts, outlier_acts
    y = torch.as_tensor(labels, dtype=torch.long)
    buf = lambda n: buffer or n  # noqa: E731
    if len(x) != len(y):
        raise ValueError(f"{len(x)} activations but {len(y)} labels")
    if len(xo) == 0:
        raise ValueError("outlier exposure needs at least one outlier activation")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    detector.to(device)
    metrics: dict[str, Any] = {"pretrain_loss": [], "finetune_loss": [], "pretrain_lr": [], "finetune_lr": []}

    pre = cfg["pretrain"]
    meter = Progress(pre["epochs"] + cfg["finetune"]["epochs"], "detector epoch")
    opt = make_optimizer(detector.parameters(), pre)
    lr_at = _lr_stepper(opt, pre)
    for epoch in range(pre["epochs"]):
        lr_at(epoch=epoch)
        detector.train()
        order, total = epoch_order(len(x), chunk, buf(len(x)), g), 0.0
        for i in range(0, len(x), pre["batch_size"]):
            lr_at()
            idx = order[i:i + pre["batch_size"]]
            loss = F.cross_entropy(detector(_rows(x, idx).to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        metrics["pretrain_loss"].append(total / len(x))
        metrics["pretrain_lr"].append(opt.param_groups[0]["lr"])
        progress(meter.line(f"stage 1 (cross-entropy) {metrics['pretrain_loss'][-1]:.4f}"))

    fin = cfg["finetune"]
    b = max(1, fin["batch_size"] // 2)
    opt = make_optimizer(detector.parameters(), fin)
    lr_at = _lr_stepper(opt, fin)
    for epoch in range(fin["epochs"]):
        lr_at(epoch=epoch)
        detector.train()
        order = epoch_order(len(x), chunk, buf(len(x)), g)
        out_order, total = _cycled(len(xo), len(x), g, chunk, buf(len(xo))), 0.0
        for i in range(0, len(x), b):
            lr_at()
            idx, odx = order[i:i + b], out_order[i:i + b]
            logits = detector(torch.cat([_rows(x, idx), _rows(xo, odx)]).to(device))
            loss = oe_loss(logits[:len(idx)], y[idx].to(device), logits[len(idx):], fin["m_in"], fin["m_out"],
                           fin["energy_weight"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        metrics["finetune_loss"].append(total / len(x))
        metrics["finetune_lr"].append(opt.param_groups[0]["lr"])
        progress(meter.line(f"stage 2 (energy fine-tuning) loss {metrics['finetune_loss'][-1]:.4f}"))

    detector.eval()
    with torch.no_grad():
        dev_x = [detector(_rows(x, slice(i, i + 256)).to(device)).argmax(1).cpu() for i in range(0, len(x), 256)]
    metrics["train_accuracy"] = float((torch.cat(dev_x) == y).float().mean()) if dev_x else float("nan")
    return metrics


# ----------------------------------------------------------------------------- auxiliary outliers

SAMPLE_IMAGES = ("china", "flower")  # scikit-learn's sample photographs: training / held-out outlier sources


def _resize_square(img: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def outlier_images(n: int, image_size: int, source: str = "china", seed: int = 0, min_crop: int = 16,
                   max_crop: int = 128) -> torch.Tensor:
    """``n`` outlier images (n, 3, S, S) in [0, 1]: square crops of random side in [min_crop, max_crop] at random
    positions of a real photograph shipped with scikit-learn (``load_sample_images``), randomly mirrored and
    resized (bilinear, antialiased) to S. ``source``: 'china' (training outliers) or 'flower' (held out)."""
    from sklearn.datasets import load_sample_images

    if source not in SAMPLE_IMAGES:
        raise ValueError(f"unknown outlier source {source!r}; use one of {SAMPLE_IMAGES}")
    ds = load_sample_images()
    photo = next(img for img, f in zip(ds.images, ds.filenames) if Path(f).stem == source)
    photo = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float().div(255)[None]  # (1, 3, H, W)
    h, w = photo.shape[-2:]
    rng = np.random.default_rng(seed)
    sides = rng.integers(min_crop, min(max_crop, h, w) + 1, size=n)
    out = torch.empty(n, 3, image_size, image_size)
    for k, s in enumerate(sides):
        top, left = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        crop = photo[..., top:top + s, left:left + s]
        out[k] = _resize_square(crop.flip(-1) if rng.random() < 0.5 else crop, image_size)[0]
    return out.clamp_(0, 1)


def outlier_images_npy(path: str | Path, n: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """``n`` images drawn without replacement from 300K Random Images (Hendrycks et al. 2019), a local ``.npy``
    of shape (N, 32, 32, 3) uint8, as (n, 3, S, S) floats in [0, 1] (resized when S ≠ 32)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"outlier images {path} do not exist: paper 1's auxiliary outliers are 300K Random "
                                "Images (300K_random_images.npy, (N, 32, 32, 3) uint8); put the file there")
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{path}: expected (N, H, W, 3) images, got shape {arr.shape}")
    idx = np.sort(np.random.default_rng(seed).choice(len(arr), size=min(n, len(arr)), replace=False))
    x = torch.as_tensor(np.ascontiguousarray(arr[idx])).permute(0, 3, 1, 2).float().div(255)
    return x if x.shape[-1] == image_size else _resize_square(x, image_size).clamp_(0, 1)
