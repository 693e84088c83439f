"""Dataset registry: the embedded default (scikit-learn's handwritten digits) and real datasets from
a local root (CIFAR-10, SVHN, ImageNet). Nothing is downloaded unless ``download: true`` is asked for.

Every loader returns a :class:`torch.utils.data.Dataset` of ``(image, label)`` with images as float
tensors of shape (3, S, S) in [0, 1] (paper 1 feeds raw pixels; no normalisation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from stitchlib import catalog


LOADERS: dict[str, Callable[..., Dataset]] = {}


def register(name: str):
    """Register a loader ``fn(split, root, image_size, download) -> Dataset`` (facts live in catalog)."""
    def deco(fn):
        catalog.dataset(name)
        LOADERS[name] = fn
        return fn
    return deco


def load(name: str, split: str, *, root: str | None = None, image_size: int | None = None,
         download: bool = False) -> Dataset:
    """Load ``split`` ('train' or 'test') of dataset ``name``, resized to ``image_size`` if given."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    facts = catalog.dataset(name)
    catalog.check_dataset(name, root, download)
    return LOADERS[name](split=split, root=root, image_size=image_size or facts.image_size, download=download)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _tensor_dataset(images: np.ndarray, labels: np.ndarray, size: int, scale: float) -> TensorDataset:
    """uint8/float images (N, C, H, W) → float [0, 1] TensorDataset resized to ``size``."""
    x = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32) / scale
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    out = torch.cat([_resize(x[i:i + 4096], size) for i in range(0, len(x), 4096)]).contiguous()
    return TensorDataset(out, torch.as_tensor(np.asarray(labels), dtype=torch.long))


DIGITS_TEST_SIZE = 397  # 1,797 = 1,400 train + 397 test, stratified, fixed seed


@register("digits")
def _digits(split: str, root, image_size: int, download: bool) -> Dataset:
    """scikit-learn's 1,797 real 8×8 handwritten digits (values 0–16), grey replicated to 3 channels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx_train, idx_test = train_test_split(np.arange(len(d.target)), test_size=DIGITS_TEST_SIZE,
                                           stratify=d.target, random_state=0)
    idx = np.sort(idx_train if split == "train" else idx_test)
    return _tensor_dataset(d.images[idx][:, None], d.target[idx], image_size, 16.0)


@register("cifar10")
def _cifar10(split: str, root, image_size: int, download: bool) -> Dataset:
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(root, train=split == "train", download=download)
    return _tensor_dataset(ds.data.transpose(0, 3, 1, 2), ds.targets, image_size, 255.0)


@register("svhn")
def _svhn(split: str, root, image_size: int, download: bool) -> Dataset:
    from torchvision.datasets import SVHN

    ds = SVHN(root, split=split, download=download)
    return _tensor_dataset(ds.data, ds.labels, image_size, 255.0)


@register("imagenet")
def _imagenet(split: str, root, image_size: int, download: bool) -> Dataset:
    """ImageNet as an image folder: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    tf = transforms.Compose([transforms.Resize(image_size * 8 // 7), transforms.CenterCrop(image_size),
                             transforms.ToTensor()])
    return ImageFolder(str(Path(root) / ("train" if split == "train" else "val")), transform=tf)


# ----------------------------------------------------------------------------- batching

def batches(ds: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
            num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches; in-memory datasets are sliced directly (no DataLoader overhead)."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(ds, TensorDataset):
        x, y = ds.tensors
        order = torch.randperm(len(x), generator=g) if shuffle else torch.arange(len(x))
        for i in range(0, len(x), batch_size):
            j = order[i:i + batch_size]
            yield x[j], y[j]
    else:
        yield from DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=num_workers)


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Seeded batch augmentation: 'none', 'crop' (pad 4 + random crop) or 'flip_crop' (+ horizontal flip)."""
    if kind == "none":
        return x
    n, _, h, w = x.shape
    if kind in ("crop", "flip_crop"):
        pad = F.pad(x, (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2, n), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, x.shape[1], h, w + 8)
        x = pad.gather(2, rows)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, x.shape[1], h, w)
        x = x.gather(3, cols)
    if kind == "flip_crop":
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if kind not in ("crop", "flip_crop"):
        raise ValueError(f"unknown augmentation {kind!r}; use none, crop or flip_crop")
    return x
