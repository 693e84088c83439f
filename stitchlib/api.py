"""The notebook API: the handful of calls a researcher makes directly, re-exported as ``stitchlib.<name>``.

Every example below runs as written (``tests/test_api.py`` runs them as doctests), on the embedded digits:

>>> import torch, stitchlib
>>> from stitchlib import data
>>> train, test = data.load("digits", "train", image_size=16), data.load("digits", "test", image_size=16)
>>> f = stitchlib.network("resnet18", num_classes=10, image_size=16, width=4, seed=0)
>>> f.layer_names[:3]
['layer1.0', 'layer1.1', 'layer2.0']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stitchlib import catalog, config, io, models, similarity, stitching, tasks
from stitchlib.train import train_network

__all__ = ["network", "activations", "fit_dm", "train_tlm", "evaluate", "compare"]


def network(family: str, *, num_classes: int, image_size: int, checkpoint: str | Path | None = None,
            seed: int | None = None, train: Any = None, epochs: int = 0, **params: Any) -> models.Stitchable:
    """A stitchable network of a registered family (``resnet18``, ``vit``, …; see ``stitchlib.catalog``), with
    its layer registry (``net.layer_names``, ``net.front(x, layer)``, ``net.back(h, layer)``).

    ``checkpoint``: a state dict saved by the workflow (``results/models/…/<net>.pt``, loaded with
    ``weights_only=True``). ``seed``: initialise reproducibly. ``train`` + ``epochs``: train it here on a
    dataset (Adam 1e-3, batch 64) — for quick experiments; the workflow's ``train`` rule is the real thing.
    Returns the network in eval mode.

    >>> import stitchlib
    >>> from stitchlib import data
    >>> tr = data.load("digits", "train", image_size=16)
    >>> net = stitchlib.network("resnet18", num_classes=10, image_size=16, width=4, seed=0, train=tr, epochs=1)
    >>> net.back(net.front(tr.tensors[0][:2], "layer2.1"), "layer2.1").shape
    torch.Size([2, 10])
    """
    if seed is not None:
        torch.manual_seed(seed)
    net = models.build(family, num_classes=num_classes, image_size=image_size, **params)
    if checkpoint is not None:
        net.load_state_dict(io.load_state_dict(checkpoint))
    if train is not None and epochs:
        train_network(net, train, train, dict(optimizer="adam", lr=1e-3, weight_decay=1e-5, epochs=epochs,
                                              batch_size=64), seed=seed or 0, device=torch.device("cpu"),
                      progress=lambda s: None)
    return net.eval()


@torch.no_grad()
def activations(net: models.Stitchable, x: torch.Tensor, layers: Sequence[str] | None = None,
                batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Every requested stitch point's activations on inputs ``x`` (one forward pass per batch), on the CPU.

    >>> import stitchlib
    >>> net = stitchlib.network("resnet18", num_classes=10, image_size=16, width=4, seed=0)
    >>> acts = stitchlib.activations(net, torch.zeros(3, 3, 16, 16), ["layer1.0", "layer4.1"])
    >>> {k: tuple(v.shape) for k, v in acts.items()}
    {'layer1.0': (3, 4, 16, 16), 'layer4.1': (3, 32, 2, 2)}
    """
    keep = [net.layer_index(name) for name in (layers or net.layer_names)]
    dev = next(net.parameters()).device
    out: dict[str, list[torch.Tensor]] = {net.layer_names[i]: [] for i in keep}
    for s in range(0, len(x), batch_size):
        _, outs = net.forward_all(x[s:s + batch_size].to(dev))
        for i in keep:
            out[net.layer_names[i]].append(outs[i].cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def fit_dm(source: torch.Tensor, target: torch.Tensor, layout: str | None = None,
           rcond: float = 1e-6) -> stitching.AffineStitch:
    """Direct matching: the least-squares affine stitch from ``source`` to ``target`` activations of the same
    inputs (a 1×1 conv, after a bilinear resize to the target's size, for conv maps; one affine map for every
    token). Solved exactly in float64 (minimum-norm, singular values below ``rcond`` × the largest cut).

    >>> import stitchlib
    >>> h = torch.randn(50, 4, 8, 8)
    >>> T = stitchlib.fit_dm(h, 2 * h + 1)                       # a planted affine map is recovered
    >>> torch.allclose(T.weight, 2 * torch.eye(4), atol=1e-4), torch.allclose(T.bias, torch.ones(4), atol=1e-4)
    (True, True)
    """
    layout = layout or ("conv" if source.dim() == 4 else "tokens")
    stitch = stitching.AffineStitch.between(tuple(source.shape[1:]), tuple(target.shape[1:]), layout)
    return stitching.fit_dm(stitch, [source], [target], rcond=rcond)


def train_tlm(stitch: stitching.AffineStitch, receiver: models.Stitchable, layer: str, source: torch.Tensor,
              labels: torch.Tensor, *, epochs: int = 30, lr: float = 1e-3, batch_size: int = 256, seed: int = 0,
              **optim: Any) -> stitching.AffineStitch:
    """Task loss matching: train ``stitch`` (e.g. from :func:`fit_dm`) so that ``receiver.back(stitch(source),
    layer)`` classifies ``labels``; only the stitch trains, the receiver stays frozen in eval mode. Defaults are
    paper 1's (Adam, weight decay 1e-5, constant lr); ``optim`` takes any key of the config's ``tlm`` section.

    >>> import stitchlib
    >>> from stitchlib import data
    >>> tr = data.load("digits", "train", image_size=16)
    >>> x, y = tr.tensors[0][:256], tr.tensors[1][:256]
    >>> f = stitchlib.network("resnet18", num_classes=10, image_size=16, width=4, seed=0, train=tr, epochs=1)
    >>> g = stitchlib.network("resnet18", num_classes=10, image_size=16, width=4, seed=1, train=tr, epochs=1)
    >>> src = stitchlib.activations(f, x, ["layer3.0"])["layer3.0"]
    >>> tgt = stitchlib.activations(g, x, ["layer3.0"])["layer3.0"]
    >>> T = stitchlib.train_tlm(stitchlib.fit_dm(src, tgt), g, "layer3.0", src, y, epochs=2)
    >>> 0 <= stitchlib.evaluate(T, g, "layer3.0", src, tgt, y)["accuracy"] <= 1
    True
    """
    cfg = {"optimizer": "adam", "lr": lr, "weight_decay": 1e-5, "batch_size": batch_size, "epochs": epochs,
           "schedule": "constant", **optim}
    stitching.train_tlm({"stitch": stitch}, receiver, receiver.layer_index(layer), lambda _, idx: source[idx],
                        torch.as_tensor(labels), cfg, seed=seed, progress=lambda s: None)
    return stitch


def evaluate(stitch: stitching.AffineStitch, receiver: models.Stitchable, layer: str, source: torch.Tensor,
             target: torch.Tensor, labels: torch.Tensor, task: str = "multiclass") -> dict[str, float]:
    """Accuracy of the stitched network g>layer ∘ stitch on ``source``, its accuracy relative to the receiver's
    own (``target`` through g>layer), and DM(struct) = ‖stitch(source) − target‖²_F / ‖target‖²_F.
    ``task``: 'multiclass' (top-1) or 'multilabel' (``labels`` are {0, 1} attribute vectors; mean attribute
    accuracy).

    >>> import stitchlib
    >>> g = stitchlib.network("resnet18", num_classes=10, image_size=16, width=4, seed=0)
    >>> h = stitchlib.activations(g, torch.rand(20, 3, 16, 16), ["layer2.0"])["layer2.0"]
    >>> y = g.back(h, "layer2.0").argmax(1)                      # labels the receiver gets right
    >>> r = stitchlib.evaluate(stitchlib.fit_dm(h, h), g, "layer2.0", h, h, y)
    >>> r["relative_accuracy"], r["struct"] < 1e-8                # the DM self-stitch is the identity
    (1.0, True)
    """
    labels = torch.as_tensor(labels)
    r = stitching.evaluate(stitch, receiver, receiver.layer_index(layer), source, target, labels, task=task)
    with torch.no_grad():
        own = tasks.get(task).accuracy(receiver.back(target, layer), labels)
    return {**r, "receiver_accuracy": own, "relative_accuracy": r["accuracy"] / own if own else float("nan")}


def compare(a: Any, b: Any, measures: Sequence[str] = ("lcka", "lcka_debiased", "pwcca", "opd"),
            reshape: str | dict[str, str] | None = None, **options: Any) -> dict[str, float]:
    """Structural similarity indices of two activation arrays of the same inputs (numpy or torch; (n, p),
    (n, C, H, W) or (n, T, D)), computed in float64 from one factorisation per side. ``reshape``: one mode or
    one per measure (``flatten``, ``positions``, ``pool``, ``paper1``; see ``stitchlib.similarity``); default
    the workflow's (paper 1's): CKA on flattened C·H·W, the CCA family and OPD in ``paper1`` mode.

    >>> import numpy as np, stitchlib
    >>> a = np.random.default_rng(0).normal(size=(500, 20))
    >>> q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(20, 20)))
    >>> r = stitchlib.compare(a, 3 * a @ q, ["lcka", "pwcca", "opd"])   # rotated and scaled: the same
    >>> {k: round(v, 6) for k, v in r.items()}
    {'lcka': 1.0, 'pwcca': 1.0, 'opd': 0.0}
    """
    if isinstance(reshape, str):
        modes = {m: reshape for m in measures}
    else:
        modes = {**config.DEFAULT_RESHAPE, **(reshape or {})}
    out = {}
    for m in measures:
        loadings = catalog.MEASURES[m].needs_loadings or None
        sa = similarity.layer_stats(a, name="a", reshape=modes[m], loadings=loadings)
        sb = similarity.layer_stats(b, name="b", reshape=modes[m], loadings=loadings)
        out[m] = float(similarity.pairwise([sa], [sb], [m], **options)[m][0, 0])
    return out
