"""How a dataset's targets are scored: the task of its networks (and of the stitched networks).

=============  ==================================  ==========================================================
task           targets                             loss / accuracy of one sample
=============  ==================================  ==========================================================
multiclass     class index, int (N,)               cross-entropy / 1 if argmax(logits) == label else 0
multilabel     {0, 1} attribute vector (N, A)      binary cross-entropy with logits, averaged over the A
               (float or int)                      attributes / mean attribute accuracy, attribute on ⇔ logit > 0
=============  ==================================  ==========================================================

Every function takes logits of shape (..., C) and the matching targets (``(...)`` class indices, or
``(..., A)`` attribute vectors with A = C; teacher / reference logits of the same shape or broadcastable),
so a stack of stitches' outputs (K, N, C) against targets expanded to (K, N[, A]) works as well as a plain
batch. ``loss(..., reduction='none')`` returns one loss per sample (shape ``(...)``); ``correct`` returns the
*sum* over the samples of their accuracy, so that accuracy = Σ correct / number of samples over any
batching. ``soft_loss`` is the distillation loss to a teacher's outputs at temperature T (KL · T²; 0 when
the logits equal the teacher's), ``soft_cross_entropy`` the cross-entropy to a reference network's output
distribution (paper 2's Fig. 2). ``accuracy`` takes numpy arrays too (cached logits and labels). A
dataset's task is ``catalog.DatasetFacts.task``: :func:`for_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stitchlib import catalog

MULTICLASS, MULTILABEL = "multiclass", "multilabel"


def _flat(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    lead = logits.shape[:-1]
    want = logits.shape if multilabel else lead
    if tuple(targets.shape) != tuple(want):
        kind = "attribute vectors" if multilabel else "class indices"
        raise ValueError(f"{'multilabel' if multilabel else 'multiclass'} targets ({kind}) must have shape "
                         f"{tuple(want)} for logits {tuple(logits.shape)}, not {tuple(targets.shape)}")
    return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1, *targets.shape[len(lead):])


def _reduce(per_sample: torch.Tensor, lead: torch.Size, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_sample.view(lead)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    raise ValueError(f"reduction must be none, mean or sum, not {reduction!r}")


# ----------------------------------------------------------------------------- multiclass

def _mc_loss(logits, targets, reduction="mean"):
    x, y = _flat(logits, targets, False)
    return _reduce(F.cross_entropy(x, y.long(), reduction="none"), logits.shape[:-1], reduction)


def _mc_soft_loss(logits, teacher, temperature=1.0, reduction="mean"):
    """KL(softmax(teacher/T) ‖ softmax(logits/T)) · T² per sample (knowledge distillation)."""
    t = F.log_softmax(teacher / temperature, -1)
    kl = F.kl_div(F.log_softmax(logits / temperature, -1), t.expand_as(logits), log_target=True,
                  reduction="none").sum(-1)
    return _reduce(kl.reshape(-1) * temperature ** 2, logits.shape[:-1], reduction)


def _mc_soft_xent(logits, reference, reduction="mean"):
    """Cross-entropy −Σ softmax(reference)·log softmax(logits) per sample (paper 2's Fig. 2 measure)."""
    xe = -(F.softmax(reference, -1).expand_as(logits) * F.log_softmax(logits, -1)).sum(-1)
    return _reduce(xe.reshape(-1), logits.shape[:-1], reduction)


def _mc_correct(logits, targets):
    x, y = _flat(logits, targets, False)
    return float((x.argmax(-1) == y.to(x.device).long()).sum().item())


# ----------------------------------------------------------------------------- multilabel

def _ml_loss(logits, targets, reduction="mean"):
    x, y = _flat(logits, targets, True)
    bce = F.binary_cross_entropy_with_logits(x, y.to(x.device, x.dtype), reduction="none").mean(-1)
    return _reduce(bce, logits.shape[:-1], reduction)


def _ml_soft_loss(logits, teacher, temperature=1.0, reduction="mean"):
    """Per attribute KL(Bernoulli(σ(teacher/T)) ‖ Bernoulli(σ(logits/T))), averaged over attributes, · T²."""
    s, t = logits / temperature, (teacher / temperature).expand_as(logits)
    p = torch.sigmoid(t)
    # KL = p·(log p − log q) + (1 − p)·(log(1 − p) − log(1 − q)) with log q = logsigmoid(s), log(1 − q) = logsigmoid(−s)
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return _reduce(kl.mean(-1).reshape(-1) * temperature ** 2, logits.shape[:-1], reduction)


def _ml_soft_xent(logits, reference, reduction="mean"):
    """Binary cross-entropy of σ(logits) against σ(reference) per attribute, averaged over attributes."""
    p = torch.sigmoid(reference).expand_as(logits)
    xe = -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).mean(-1)
    return _reduce(xe.reshape(-1), logits.shape[:-1], reduction)


def _ml_correct(logits, targets):
    x, y = _flat(logits, targets, True)
    return float(((x > 0) == (y.to(x.device) > 0.5)).float().mean(-1).sum().item())


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Task:
    """Scoring of one kind of target; see the module docstring for shapes."""

    name: str
    loss: Callable[..., torch.Tensor]       # (logits, targets, reduction='mean') -> loss
    soft_loss: Callable[..., torch.Tensor]  # (logits, teacher_logits, temperature=1.0, reduction='mean'): KD loss
    soft_cross_entropy: Callable[..., torch.Tensor]  # (logits, reference_logits, reduction='mean')
    correct: Callable[..., float]           # (logits, targets) -> Σ over samples of per-sample accuracy
    target_dtype: torch.dtype               # what the loaders produce (long class indices / float attributes)

    @property
    def multilabel(self) -> bool:
        return self.name == MULTILABEL

    def accuracy(self, logits: Any, targets: Any) -> float:
        """Mean per-sample accuracy of whole arrays (tensors or numpy, e.g. cached logits and labels)."""
        logits, targets = torch.as_tensor(logits), torch.as_tensor(targets)
        n = int(np.prod(logits.shape[:-1]))
        return self.correct(logits, targets) / n if n else float("nan")


TASKS: dict[str, Task] = {
    MULTICLASS: Task(MULTICLASS, _mc_loss, _mc_soft_loss, _mc_soft_xent, _mc_correct, torch.long),
    MULTILABEL: Task(MULTILABEL, _ml_loss, _ml_soft_loss, _ml_soft_xent, _ml_correct, torch.float32),
}


def get(task: str | Task) -> Task:
    """A task by name (a :class:`Task` is returned as is)."""
    if isinstance(task, Task):
        return task
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}") from None


def for_dataset(name: str) -> Task:
    """The task of dataset ``name`` (``catalog.DATASETS[name].task``)."""
    return get(catalog.dataset(name).task)


def of(ds: Any, default: str = MULTICLASS) -> Task:
    """The task of a loaded dataset: ``stitchlib.data.load`` marks what it returns with ``task``; a dataset
    built by hand (a TensorDataset of images and class indices) is ``default``."""
    return get(getattr(ds, "task", default))
