"""Seeded training of networks, and the optimiser/schedule settings shared with TLM stitch training."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from stitchlib import data, tasks
from stitchlib.progress import Progress

log = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> torch.device:
    """Choose the device at run time (never at import): CUDA when the job has a GPU, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """``cfg``: optimizer (adam | sgd), lr, weight_decay, momentum, nesterov (see the config schema)."""
    name = cfg.get("optimizer", "adam")
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0),
                               momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", False))
    raise ValueError(f"unknown optimizer {name!r}; use adam or sgd")


def lr_factor(cfg: dict[str, Any], epoch: int) -> float:
    """Learning-rate multiplier for ``epoch`` (0-based), stepped once per epoch.

    schedule: constant | multistep (×gamma at each of ``milestones``) | cosine (to 0 over the epochs
    after ``warmup_epochs`` of linear warm-up, which completes: epoch warmup_epochs-1 runs at the full lr).
    """
    schedule, epochs, warm = cfg.get("schedule", "constant"), cfg["epochs"], cfg.get("warmup_epochs", 0)
    if epoch < warm:
        return (epoch + 1) / warm
    if schedule == "constant":
        return 1.0
    if schedule == "multistep":
        return cfg.get("gamma", 0.1) ** sum(epoch >= m for m in cfg.get("milestones", []))
    if schedule == "cosine":
        t = (epoch - warm) / max(1, epochs - warm)
        return 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r}; use constant, multistep or cosine")


def set_epoch_lr(opt: torch.optim.Optimizer, cfg: dict[str, Any], epoch: int) -> None:
    for g in opt.param_groups:
        g["lr"] = cfg["lr"] * lr_factor(cfg, epoch)


@torch.no_grad()
def accuracy(fn: Callable[[torch.Tensor], torch.Tensor], batches: Iterable, device: torch.device,
             task: str | tasks.Task = tasks.MULTICLASS) -> float:
    """Accuracy of ``fn`` over (input, target) batches: top-1 (multiclass) or mean attribute accuracy
    (multilabel), see stitchlib.tasks."""
    task, correct, total = tasks.get(task), 0.0, 0
    for x, y in batches:
        correct += task.correct(fn(x.to(device)), y.to(device))
        total += len(y)
    return correct / total


def train_network(net: nn.Module, train_ds: Dataset, test_ds: Dataset, cfg: dict[str, Any], *, seed: int,
                  device: torch.device, progress: Callable[[str], None] = log.info,
                  task: str | tasks.Task | None = None) -> dict[str, Any]:
    """Train ``net`` on the task's loss (default: the task ``data.load`` marked ``train_ds`` with, else
    multiclass: cross-entropy; multilabel: BCE with logits); returns train/test accuracy and the loss curve."""
    task = tasks.get(task) if task is not None else tasks.of(train_ds)
    net.to(device)
    opt = make_optimizer(net.parameters(), cfg)
    meter = Progress(cfg["epochs"], "epoch")
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(cfg["epochs"]):
        set_epoch_lr(opt, cfg, epoch)
        net.train()
        total, count = 0.0, 0
        for x, y in data.batches(train_ds, cfg["batch_size"], shuffle=True, seed=seed * 1000 + epoch):
            x = data.augment(x, cfg.get("augment", "none"), gen).to(device)
            loss = task.loss(net(x), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(y), count + len(y)
        losses.append(total / count)
        progress(meter.line(f"loss {losses[-1]:.4f}"))
    net.eval()
    bs = cfg["batch_size"]
    return {
        "train_accuracy": accuracy(net, data.batches(train_ds, bs), device, task),
        "test_accuracy": accuracy(net, data.batches(test_ds, bs), device, task),
        "train_loss": losses,
    }
