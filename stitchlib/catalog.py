"""What exists, without importing torch: dataset facts and architecture stitch-point names.

The Snakefile validates configs with this module at DAG-build time, which every cluster job repeats,
so it must stay cheap (no torch, no filesystem scans beyond a few ``stat`` calls).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetFacts:
    num_classes: int
    image_size: int          # native size; the config may resize
    layout: tuple[str, ...]  # paths a local root must contain; empty = bundled, no root needed


DATASETS: dict[str, DatasetFacts] = {
    "digits": DatasetFacts(10, 8, ()),  # scikit-learn's bundled handwritten digits
    "cifar10": DatasetFacts(10, 32, ("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch")),
    "svhn": DatasetFacts(10, 32, ("train_32x32.mat", "test_32x32.mat")),
    "imagenet": DatasetFacts(1000, 224, ("train", "val")),
}


def dataset(name: str) -> DatasetFacts:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None


def check_dataset(name: str, root: str | None, download: bool = False, where: str | None = None) -> None:
    """Raise FileNotFoundError naming the path and the expected layout when a local dataset is missing."""
    facts, where = dataset(name), where or f"datasets.{name}"
    if not facts.layout or download:
        return
    expected = ", ".join(facts.layout)
    if not root:
        raise FileNotFoundError(f"{where}.root: dataset {name!r} needs a local root holding: {expected}")
    for p in facts.layout:
        if not (Path(root) / p).exists():
            raise FileNotFoundError(f"{where}.root: {Path(root) / p} does not exist; dataset {name!r} expects "
                                    f"under {root}: {expected} (or set {where}.download: true where the "
                                    "network allows)")


def resnet_layer_names(stage_blocks: tuple[int, ...]) -> list[str]:
    return [f"layer{s + 1}.{b}" for s, n in enumerate(stage_blocks) for b in range(n)]


def vit_layer_names(depth: int) -> list[str]:
    return [f"block{i}" for i in range(depth)]


ARCHITECTURE_PARAMS: dict[str, dict[str, object]] = {
    # family -> its parameters and their defaults (paper 1's sizes)
    "resnet18": {"width": 64},
    "vit": {"patch_size": 4, "depth": 12, "heads": 3, "hidden_dim": 192, "mlp_dim": 768, "dropout": 0.0},
}


def architecture_params(family: str, params: dict, where: str = "architecture") -> dict:
    """Defaults merged with ``params``; unknown families or parameter names are errors naming ``where``."""
    if family not in ARCHITECTURE_PARAMS:
        raise ValueError(f"{where}.family: unknown architecture {family!r}; known: {sorted(ARCHITECTURE_PARAMS)}")
    known = ARCHITECTURE_PARAMS[family]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{where}.params: unknown parameter(s) {unknown} for {family!r}; known: {sorted(known)}")
    return {**known, **params}


def layer_names(family: str, params: dict) -> list[str]:
    """Stitch-point names of an architecture, in network order."""
    p = architecture_params(family, params)
    if family == "resnet18":
        return resnet_layer_names((2, 2, 2, 2))
    return vit_layer_names(int(p["depth"]))
