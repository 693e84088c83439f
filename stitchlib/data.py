"""Dataset registry: the embedded default (scikit-learn's handwritten digits, also as a multi-label task)
and real datasets from a local root (CIFAR-10, SVHN, ImageNet, CelebA). Nothing is downloaded unless
``download: true`` is asked for.

Every loader returns a :class:`torch.utils.data.Dataset` of ``(image, target)`` with images as float
tensors of shape (3, S, S) in [0, 1] (paper 1 feeds raw pixels; no normalisation). The target is a class
index (int64) for a multiclass dataset and a float {0, 1} attribute vector for a multilabel one
(``catalog.DatasetFacts.task``); :func:`load` marks the dataset it returns with that ``task`` name
(``stitchlib.tasks.of``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from stitchlib import catalog

log = logging.getLogger(__name__)

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
    ds = LOADERS[name](split=split, root=root, image_size=image_size or facts.image_size, download=download)
    ds.task = facts.task  # how its targets are scored (stitchlib.tasks.of)
    return ds


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class Images(Dataset):
    """Images kept as their uint8 pixels (N, C, H, W), a quarter of float32's memory, and turned into float [0, 1]
    (grey copied to 3 channels, resized to ``size``) per batch by :func:`take`: the same values as converting the
    whole split at once."""

    def __init__(self, pixels: np.ndarray, labels, size: int):
        self.pixels = torch.as_tensor(np.ascontiguousarray(pixels))
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.size = size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.take(torch.tensor([i]))
        return x[0], y[0]

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pixels[idx].float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return _resize(x, self.size).contiguous(), self.labels[idx]


def take(ds: Dataset, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and targets of samples ``idx`` as one batch (in-memory datasets sliced, others read one by one)."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    if isinstance(ds, TensorDataset):
        x, y = ds.tensors
        return x[idx], y[idx]
    if isinstance(ds, Images):
        return ds.take(idx)
    items = [ds[int(i)] for i in idx]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


def _tensor_dataset(images: np.ndarray, labels: np.ndarray, size: int, scale: float) -> TensorDataset:
    """Float images (N, C, H, W) in [0, scale] → float [0, 1] TensorDataset resized to ``size``."""
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


# The attributes of ``digits_attributes``, in catalog.DIGITS_ATTRIBUTES order: which digits have each.
# closed_loop: the digit as usually handwritten encloses an area (0, 6, 8, 9; an open-topped 4 does not).
DIGIT_ATTRIBUTES = {"even": {0, 2, 4, 6, 8}, "at_least_5": {5, 6, 7, 8, 9}, "prime": {2, 3, 5, 7},
                    "closed_loop": {0, 6, 8, 9}}
assert tuple(DIGIT_ATTRIBUTES) == catalog.DIGITS_ATTRIBUTES


def digit_attributes(labels: np.ndarray) -> np.ndarray:
    """(N,) digit labels → (N, 4) float32 {0, 1} attribute vectors (even, ≥ 5, prime, closed loop)."""
    labels = np.asarray(labels)
    return np.stack([np.isin(labels, sorted(d)) for d in DIGIT_ATTRIBUTES.values()], 1).astype(np.float32)


@register("digits_attributes")
def _digits_attributes(split: str, root, image_size: int, download: bool) -> Dataset:
    """The digits images and split, each scored on 4 binary attributes of its digit (multi-label): a real
    embedded multi-label task. Majority-class baseline: 0.5 (even), 0.5 (≥ 5), 0.6 (prime), 0.6 (loop)."""
    x, y = _digits(split, root, image_size, download).tensors
    return TensorDataset(x, torch.as_tensor(digit_attributes(y.numpy())))


@register("cifar10")
def _cifar10(split: str, root, image_size: int, download: bool) -> Dataset:
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):
        """torchvision refuses files whose MD5 is not the official release's; here such a file (e.g. the
        synthetic data of bench/bench_scale.py) is a logged warning, as for CelebA."""

        def _check_integrity(self) -> bool:
            base = Path(self.root) / self.base_folder
            files = [(base / name, md5) for name, md5 in self.train_list + self.test_list]
            if not all(f.is_file() for f, _ in files):
                return False
            for f, md5 in files:
                if _md5(f) != md5:
                    log.warning("cifar10: %s is not the official release (MD5 differs); results may not compare", f)
            return True

        def _load_meta(self) -> None:
            import pickle

            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    ds = LocalCIFAR10(root, train=split == "train", download=download)
    return Images(ds.data.transpose(0, 3, 1, 2), ds.targets, image_size)


@register("svhn")
def _svhn(split: str, root, image_size: int, download: bool) -> Dataset:
    from torchvision.datasets import SVHN

    ds = SVHN(root, split=split, download=download)
    return Images(ds.data, ds.labels, image_size)


@register("imagenet")
def _imagenet(split: str, root, image_size: int, download: bool) -> Dataset:
    """ImageNet as an image folder: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    tf = transforms.Compose([transforms.Resize(image_size * 8 // 7), transforms.CenterCrop(image_size),
                             transforms.ToTensor()])
    return ImageFolder(str(Path(root) / ("train" if split == "train" else "val")), transform=tf)


def _float_targets(t: torch.Tensor) -> torch.Tensor:
    return t.float()


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@register("celeba")
def _celeba(split: str, root, image_size: int, download: bool) -> Dataset:
    """CelebA's aligned faces (178×218) and their 40 binary attributes, from ``root/celeba/`` in torchvision's
    layout (``img_align_celeba/`` and the five ``list_*.txt`` / ``identity_CelebA.txt`` files; see
    catalog.CELEBA_FILES). Split train = the official training partition (162,770 images), test = the official
    test partition (19,962; the validation partition is unused). Each image is resized (shorter side) to
    ``image_size`` and centre-cropped to a square; targets are the attributes as float {0, 1} (40,).

    torchvision checks the MD5 of every text file and refuses anything else with "Dataset not found or
    corrupted"; here the layout is checked by catalog.check_dataset (errors name the missing path) and an
    attribute or partition file that differs from the official release is a logged warning.
    """
    from torchvision import transforms
    from torchvision.datasets import CelebA

    class LocalCelebA(CelebA):
        def _check_integrity(self) -> bool:
            base = Path(self.root) / self.base_folder
            return (base / "img_align_celeba").is_dir() and all((base / f).is_file() for f in catalog.CELEBA_FILES)

    tf = transforms.Compose([transforms.Resize(image_size, antialias=True), transforms.CenterCrop(image_size),
                             transforms.ToTensor()])
    ds = LocalCelebA(root, split=split, target_type="attr", transform=tf, target_transform=_float_targets,
                     download=download)
    attr_file, n_attr = Path(root) / "celeba" / "list_attr_celeba.txt", catalog.dataset("celeba").num_classes
    if ds.attr.ndim != 2 or ds.attr.shape[1] != n_attr:
        raise ValueError(f"{attr_file}: expected {n_attr} attributes per image, got {tuple(ds.attr.shape)[1:]}")
    official = {name: md5 for _, md5, name in CelebA.file_list}
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        if _md5(Path(root) / "celeba" / name) != official[name]:
            log.warning("celeba: %s is not the official release (MD5 differs); results may not compare",
                        Path(root) / "celeba" / name)
    return ds


# ----------------------------------------------------------------------------- batching

def batches(ds: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
            num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches; in-memory datasets are sliced directly (no DataLoader overhead)."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(ds, (TensorDataset, Images)):
        order = torch.randperm(len(ds), generator=g) if shuffle else torch.arange(len(ds))
        for i in range(0, len(ds), batch_size):
            yield take(ds, order[i:i + batch_size])
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
