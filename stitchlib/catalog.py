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
    layout: tuple[str, ...]  # paths a local root must contain ("x/": a folder of class folders); () = bundled


DATASETS: dict[str, DatasetFacts] = {
    "digits": DatasetFacts(10, 8, ()),  # scikit-learn's bundled handwritten digits
    "cifar10": DatasetFacts(10, 32, ("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch")),
    "svhn": DatasetFacts(10, 32, ("train_32x32.mat", "test_32x32.mat")),
    "imagenet": DatasetFacts(1000, 224, ("train/", "val/")),
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
        path, folder = Path(root) / p, p.endswith("/")
        if folder and path.is_dir() and not any(c.is_dir() for c in path.iterdir()):
            problem = "holds no class folders"
        elif not (path.is_dir() if folder else path.is_file()):
            problem = "is not a folder" if folder and path.exists() else \
                "is not a file" if path.exists() else "does not exist"
        else:
            continue
        top = Path(p).parts[0]
        hint = f" (root points inside the dataset: use its parent {Path(root).parent})" \
            if Path(root).name == top and len(Path(p).parts) > 1 else ""
        raise FileNotFoundError(f"{where}.root: {path} {problem}; dataset {name!r} expects under {root}: "
                                f"{expected}{hint} (or set {where}.download: true where the network allows)")


STEM = "stem"  # the stem's output, a cut point of the ``resnet`` family (the input of its first block)


def resnet_layer_names(stage_blocks: tuple[int, ...]) -> list[str]:
    return [f"layer{s + 1}.{b}" for s, n in enumerate(stage_blocks) for b in range(n)]


def vit_layer_names(depth: int) -> list[str]:
    return [f"block{i}" for i in range(depth)]


ARCHITECTURE_PARAMS: dict[str, dict[str, object]] = {
    # family -> its parameters and their defaults (paper 1's sizes)
    "resnet18": {"width": 64},
    # paper 3's small ResNets R_abcd: stage_blocks [a, b, c, d] (R1111 ≈ ResNet-10, R2222 = ResNet-18)
    "resnet": {"width": 64, "stage_blocks": [2, 2, 2, 2]},
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
    for k, v in params.items():  # the default's type: an int where an int is expected (bool is not one)
        t = type(known[k])
        if not (isinstance(v, t) and not isinstance(v, bool) or t is float and type(v) is int):
            raise ValueError(f"{where}.params.{k}: expected {t.__name__}, got {v!r}")
    return {**known, **params}


def layer_names(family: str, params: dict) -> list[str]:
    """Stitch-point names of an architecture, in network order.

    ``resnet18`` and ``vit``: the block outputs. ``resnet``: the stem output (:data:`STEM`) and then the
    block outputs, so that every block's input is a stitch point too (paper 3 stitches into block inputs).
    """
    p = architecture_params(family, params)
    if family == "resnet18":
        return resnet_layer_names((2, 2, 2, 2))
    if family == "resnet":
        blocks = p["stage_blocks"]
        if not (isinstance(blocks, list) and blocks and all(isinstance(b, int) and b >= 1 for b in blocks)):
            raise ValueError(f"params.stage_blocks: a non-empty list of block counts ≥ 1 per stage, not {blocks!r}")
        return [STEM, *resnet_layer_names(tuple(blocks))]
    return vit_layer_names(int(p["depth"]))


def blocks_before(family: str, params: dict) -> tuple[dict[str, int], int]:
    """How many of the network's blocks run before each stitch point, and how many blocks it has.

    A stitch point's *proportional depth* is ``blocks_before / blocks`` (cross-architecture study):
    0 for the stem output, (i + 1)/n for the output of block i (0-based) of n.
    """
    names = layer_names(family, params)
    first = 0 if names[0] == STEM else 1
    return {name: i + first for i, name in enumerate(names)}, len(names) - 1 + first
