"""What exists, without importing torch: dataset facts and architecture stitch-point names.

The Snakefile validates configs with this module at DAG-build time, which every cluster job repeats,
so it must stay cheap (no torch, no filesystem scans beyond a few ``stat`` calls).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class DatasetFacts:
    num_classes: int
    image_size: int          # native size; the config may resize
    layout: tuple[str, ...]  # paths a local root must contain ("x/": a folder of class folders; "x/*": a
    #                          non-empty folder of files); () = bundled
    task: str = "multiclass"  # how targets are scored (stitchlib.tasks): multiclass | multilabel (num_classes
    #                           = number of attributes, targets {0, 1} vectors)
    splits: tuple[int, int] = (0, 0)  # images in the (train, test) splits stitchlib loads
    in_memory: bool = True  # the loader holds the split in memory (uint8 pixels), not files read per batch


CELEBA_FILES = ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt", "list_bbox_celeba.txt",
                "list_landmarks_align_celeba.txt")  # torchvision 0.29's CelebA reads all five
DIGITS_ATTRIBUTES = ("even", "at_least_5", "prime", "closed_loop")  # stitchlib.data.digit_attributes

DATASETS: dict[str, DatasetFacts] = {
    "digits": DatasetFacts(10, 8, (), splits=(1400, 397)),  # scikit-learn's bundled handwritten digits
    # the same images, scored on 4 binary attributes of the digit (a multi-label task)
    "digits_attributes": DatasetFacts(len(DIGITS_ATTRIBUTES), 8, (), "multilabel", (1400, 397)),
    # 40 binary face attributes (paper 2's Inception V1 task); aligned 178×218 images, centre square 178
    "celeba": DatasetFacts(40, 178, ("celeba/img_align_celeba/*", *(f"celeba/{f}" for f in CELEBA_FILES)),
                           "multilabel", (162770, 19962), in_memory=False),
    "cifar10": DatasetFacts(10, 32, ("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"),
                            splits=(50000, 10000)),
    "svhn": DatasetFacts(10, 32, ("train_32x32.mat", "test_32x32.mat"), splits=(73257, 26032)),
    # ILSVRC-2012 train, val
    "imagenet": DatasetFacts(1000, 224, ("train/", "val/"), splits=(1281167, 50000), in_memory=False),
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
        files = p.endswith("/*")  # a folder of files (the first entry is enough: no scan of a huge folder)
        path, folder = Path(root) / p.removesuffix("*"), p.endswith("/") or files
        if files and path.is_dir() and next(path.iterdir(), None) is None:
            problem = "is empty"
        elif folder and not files and path.is_dir() and not any(c.is_dir() for c in path.iterdir()):
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


# ----------------------------------------------------------------------------- measures

RESHAPES: dict[str, str] = {  # how a conv map (C×H×W) or token sequence (T×D) becomes a matrix (stitchlib.similarity)
    "flatten": "one row per sample, C·H·W (conv) or T·D (tokens) columns — paper 1's CKA input",
    "positions": "one row per sample and spatial position (n·H·W rows, C columns) or token (n·T rows, D columns)",
    "pool": "global average over spatial positions (conv) or tokens → n × C or n × D",
    "paper1": "pair-dependent (paper 1's PWCCA/OPD code): 'positions' when both conv layers' shapes match or both "
              "token layers have as many tokens, else 'pool'",
}


@dataclass(frozen=True)
class Measure:
    """One way of scoring how similar a source layer is to a target layer.

    ``kind`` 'index': a structural index of two activation matrices, computed by the kernel of the same name in
    ``stitchlib.similarity`` (configurable in ``similarity.measures``); 'stitching': a score of the stitched
    network (from the DM / TLM jobs). ``label`` is the name in tables and figures (paper 1's), ``slug`` the
    file-name form, ``higher_is_similar`` False for distances. Indices also state their ``default_reshape``
    (paper 1's: CKA flattened, the CCA family and OPD as paper 1's code feeds them), whether they are
    ``symmetric`` in (A, B), whether they need the neurons' loadings (PWCCA's weights), and whether the Ding et
    al. tests offer them (``ding``; the in-sample R²_LR and DM (struct.) would repeat the stitched DM there).
    Stitching measures name the ``method`` whose jobs score them and the ``column`` of its result CSVs."""

    name: str
    label: str
    slug: str
    higher_is_similar: bool
    kind: str = "index"
    symmetric: bool = False
    default_reshape: str | None = None
    needs_loadings: bool = False
    ding: bool = False
    method: str | None = None
    column: str | None = None

    @property
    def quantity(self) -> str:
        if self.kind == "stitching" and self.higher_is_similar:
            return "relative accuracy"
        return "similarity" if self.higher_is_similar else "distance"


# Paper 1's Table 1 order first; every table and figure lists measures in this order.
MEASURES: dict[str, Measure] = {m.name: m for m in (
    Measure("pwcca", "PWCCA", "pwcca", True, default_reshape="paper1", needs_loadings=True, ding=True),
    Measure("opd", "OPD", "opd", False, symmetric=True, default_reshape="paper1", ding=True),
    Measure("lcka", "LCKA", "lcka", True, symmetric=True, default_reshape="flatten", ding=True),
    Measure("tlm", "TLM", "tlm", True, kind="stitching", method="tlm", column="relative_accuracy"),
    Measure("dm_struct_stitched", "DM (struct.)", "dm_struct", False, kind="stitching", method="dm", column="struct"),
    Measure("dm_func", "DM (func.)", "dm_func", True, kind="stitching", method="dm", column="relative_accuracy"),
    Measure("lcka_debiased", "LCKA (debiased)", "lcka_debiased", True, symmetric=True, default_reshape="flatten",
            ding=True),
    Measure("mean_cca", "mean CCA", "mean_cca", True, symmetric=True, default_reshape="paper1", ding=True),
    Measure("svcca", "SVCCA", "svcca", True, symmetric=True, default_reshape="paper1", ding=True),
    Measure("r2_lr", "R²_LR", "r2_lr", True, default_reshape="paper1"),
    Measure("dm_struct", "DM (struct., in-sample)", "dm_struct_in_sample", False, default_reshape="paper1"),
)}
INDICES = [m for m, x in MEASURES.items() if x.kind == "index"]  # the structural indices, in table order
LABELS = {x.label: x for x in MEASURES.values()}  # table label → measure


def stitching_measures(methods: list[str] | tuple[str, ...] = ("dm", "tlm")) -> list[str]:
    """The stitching measures the given methods score, in table order."""
    return [m for m, x in MEASURES.items() if x.kind == "stitching" and x.method in methods]


def functional(method: str) -> Measure:
    """The relative-accuracy measure of a stitching method (TLM, DM (func.))."""
    return next(x for x in MEASURES.values() if x.method == method and x.column == "relative_accuracy")


def measure(name: str) -> Measure:
    """A measure by name or by table label."""
    try:
        return MEASURES[name] if name in MEASURES else LABELS[name]
    except KeyError:
        raise ValueError(f"unknown measure {name!r}; known: {list(MEASURES)}") from None


# How a stitch joins two conv maps of different sizes (stitchlib.stitching.make_stitch; config key cross.stitch).
CONV_STITCHES: dict[str, str] = {
    "bilinear": "bilinear resize of the source to the target's size, then a 1×1 conv (paper 1)",
    "paper3": "k×k conv with stride k when the source map is k× larger, nearest ×k upsampling then a 1×1 conv when "
              "k× smaller (paper 3)",
}


# ----------------------------------------------------------------------------- architectures

STEM = "stem"  # the stem's output, a cut point of the ``resnet`` family (the input of its first block)


def resnet_layer_names(stage_blocks: tuple[int, ...]) -> list[str]:
    return [f"layer{s + 1}.{b}" for s, n in enumerate(stage_blocks) for b in range(n)]


def vit_layer_names(depth: int) -> list[str]:
    return [f"block{i}" for i in range(depth)]


GOOGLENET_LAYERS = ["inception3a", "inception3b", "inception4a", "inception4b", "inception4c", "inception4d",
                    "inception4e", "inception5a", "inception5b"]  # torchvision GoogLeNet's inception blocks


def tiny10_layer_names() -> list[str]:
    return [f"conv{i}" for i in range(1, 9)]


@dataclass(frozen=True)
class Family:
    """An architecture family: its parameters with their defaults (paper 1's sizes), the names of its stitch points
    in network order as a function of the (defaulted) parameters, and the smallest input it accepts. The builder
    lives in ``stitchlib.models`` under the same name (a test checks the two registries agree)."""

    params: dict[str, object]
    layer_names: Callable[[dict], list[str]]
    min_image_size: int = 4
    description: str = ""


def _resnet_family_layers(p: dict) -> list[str]:
    blocks = p["stage_blocks"]
    if not (isinstance(blocks, list) and blocks and all(isinstance(b, int) and b >= 1 for b in blocks)):
        raise ValueError(f"params.stage_blocks: a non-empty list of block counts ≥ 1 per stage, not {blocks!r}")
    return [STEM, *resnet_layer_names(tuple(blocks))]


FAMILIES: dict[str, Family] = {
    "resnet18": Family({"width": 64}, lambda p: resnet_layer_names((2, 2, 2, 2)),
                       description="paper 1's CIFAR-stem ResNet-18; stitch points: the 8 residual-block outputs"),
    # the stem output is a stitch point too, so that every block input is one (paper 3 stitches into block inputs)
    "resnet": Family({"width": 64, "stage_blocks": [2, 2, 2, 2]}, _resnet_family_layers,
                     description="paper 3's small ResNets R_abcd (stage_blocks [a, b, c, d]; R1111 ≈ ResNet-10, "
                                 "R2222 = ResNet-18) and paper 2's ResNet-20 ([3, 3, 3])"),
    "tiny10": Family({"width": 16}, lambda p: tiny10_layer_names(), min_image_size=12,
                     description="paper 2's Tiny-10 (Kornblith et al. 2019): eight convs of widths w, w, 2w, 2w, 2w, "
                                 "4w, 4w, 4w (its valid 3×3 conv follows two stride-2 convs)"),
    "vit": Family({"patch_size": 4, "depth": 12, "heads": 3, "hidden_dim": 192, "mlp_dim": 768, "dropout": 0.0},
                  lambda p: vit_layer_names(int(p["depth"])),
                  description="torchvision VisionTransformer (paper 1's ViT-Ti/4); stitch points: the encoder blocks"),
    "googlenet": Family({"dropout": 0.2, "transform_input": False}, lambda p: list(GOOGLENET_LAYERS),
                        min_image_size=15,  # smaller inputs shrink a feature map to nothing before inception5b
                        description="paper 2's Inception V1: torchvision's GoogLeNet without auxiliary heads"),
    # a network of your own (stitchlib.hooked): factory(**kwargs) cut at the module paths `points` (called `names`,
    # default the paths), weights imported from `state_dict` ({seed} and {dataset} filled in per network)
    "custom": Family({"factory": "", "kwargs": {}, "points": [], "names": [], "state_dict": ""},
                     lambda p: list(p["names"] or p["points"]),
                     description="a network of your own: an importable factory cut at module paths by hooks"),
}

# Inclusive bounds of the built-in families' numeric parameters (stage_blocks: of each entry): beyond them a value
# is a typo, not an experiment (a width of 0 builds nothing; 10⁵ blocks do not fit any GPU).
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "width": (1, 4096), "stage_blocks": (1, 64), "patch_size": (1, 512), "depth": (1, 256), "heads": (1, 512),
    "hidden_dim": (1, 16384), "mlp_dim": (1, 65536), "dropout": (0.0, 1.0)}


# The OOD detectors (stitchlib.ood): sizes per layout, paper 1's (ResNet-18 at 32×32, ViT-Ti; configs pass smaller
# ones for the digits), and training defaults: stage 1 (pretrain, cross-entropy) and stage 2 (finetune, outlier
# exposure with Liu et al.'s energy margins: in-distribution energies pushed below m_in, outliers above m_out).
DETECTOR_SIZE: dict[str, dict[str, object]] = {
    "conv": {"width": 64, "input_size": 32, "stage_blocks": [2, 2, 2, 2]},
    "tokens": {"hidden_dim": 192, "depth": 12, "heads": 3, "mlp_dim": 768, "dropout": 0.0, "positional": True},
}
DETECTOR_TRAINING: dict[str, dict[str, object]] = {
    "pretrain": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-5, "epochs": 10, "batch_size": 128,
                 "schedule": "constant", "lr_step": "epoch"},
    "finetune": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-5, "epochs": 10, "batch_size": 256,
                 "schedule": "cosine", "lr_step": "epoch", "m_in": -25.0, "m_out": -7.0, "energy_weight": 0.1},
}


def heads_problem(hidden_dim: int, heads: int) -> str | None:
    """Why multi-head attention of ``heads`` heads cannot split ``hidden_dim`` channels, or None."""
    if hidden_dim % heads:
        fits = max(h for h in range(1, heads + 1) if hidden_dim % h == 0)
        return (f"{heads} attention heads do not divide hidden_dim {hidden_dim} (each head takes hidden_dim / heads "
                f"channels); use a divisor of {hidden_dim}, e.g. {fits}")
    return None


def architecture_params(family: str, params: dict, where: str | None = None) -> dict:
    """Defaults merged with ``params``; unknown families or parameter names, types, ranges and divisibility are
    errors naming the key (under ``where``, e.g. ``architectures.vit``; else starting ``params.``/``family:``)."""
    at = f"{where}." if where else ""
    if family not in FAMILIES:
        raise ValueError(f"{at}family: unknown architecture {family!r}; known: {sorted(FAMILIES)}")
    known = FAMILIES[family].params
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{at}params: unknown parameter(s) {unknown} for {family!r}; known: {sorted(known)}")
    for k, v in params.items():  # the default's type: an int where an int is expected (bool is not one)
        t = type(known[k])
        if not (isinstance(v, t) and (t is bool or not isinstance(v, bool)) or t is float and type(v) is int):
            raise ValueError(f"{at}params.{k}: expected {t.__name__}, got {v!r}")
        if k in PARAM_RANGES:
            lo, hi = PARAM_RANGES[k]
            for i, x in enumerate(v if isinstance(v, list) else [v]):
                kind = (int, float) if t is float else int
                if not (isinstance(x, kind) and not isinstance(x, bool) and lo <= x <= hi):  # NaN fails lo <= x
                    key = f"{k}[{i}]" if isinstance(v, list) else k
                    raise ValueError(f"{at}params.{key}: {x!r} is not {'an integer' if kind is int else 'a number'}"
                                     f" in [{lo}, {hi}]")
    if family == "custom":
        _check_custom(params, f"{at}params")
    p = {**known, **params}
    if family == "vit" and (problem := heads_problem(p["hidden_dim"], p["heads"])):
        raise ValueError(f"{at}params.heads: {problem}")
    return p


_DOTTED = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
# A layer name becomes a file name ({layer}.pt) and an HDF5 dataset name (/layers/<name>): no '/', not '.' or '..'.
LAYER_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.]{0,127}"


def _check_custom(p: dict, where: str) -> None:
    """The form of a ``custom`` network's params (that the factory imports is checked when it is built)."""
    import re

    if not re.fullmatch(rf"{_DOTTED}(:{_DOTTED}|\.[A-Za-z_]\w*)", p.get("factory", "")):
        raise ValueError(f"{where}.factory: name the model's factory as 'package.module.function' or "
                         f"'package.module:function' (e.g. torchvision.models.resnet18), not {p.get('factory')!r}")
    if (problem := factory_refusal(p["factory"])) is not None:
        raise ValueError(f"{where}.factory: {problem}")
    kwargs = p.get("kwargs", {})
    if not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise ValueError(f"{where}.kwargs: keyword argument names must be Python identifiers, not "
                         f"{[k for k in kwargs if not (isinstance(k, str) and k.isidentifier())]}")
    points = p.get("points", [])
    if not points or not all(isinstance(x, str) and re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", x)
                             for x in points) or len(set(points)) != len(points):
        raise ValueError(f"{where}.points: the module paths of the stitch points, once each in network order "
                         f"(e.g. [layer1, layer2, layer3, layer4]), not {points!r}")
    names = p.get("names", [])
    layer_names = names or points
    if names and (len(names) != len(points) or len(set(names)) != len(names)) or \
            not all(isinstance(x, str) and re.fullmatch(LAYER_NAME, x) for x in layer_names):
        raise ValueError(f"{where}.{'names' if names else 'points'}: layer names are file and HDF5 names: one "
                         "distinct name per stitch point of at most 128 letters, digits, _ and ., not starting with "
                         f"'.'; {len(points)} in all (or no names, to use the module paths); not {layer_names!r}")
    try:  # the file itself is required by the workflow only (stitchlib.config)
        p.get("state_dict") and state_dict_file(p, 0, "digits")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"{where}.state_dict: a path, optionally with {{seed}} and {{dataset}}, not "
                         f"{p.get('state_dict')!r} ({type(e).__name__}: {e})") from None


def split_factory(factory: str) -> tuple[str, str]:
    """(module, attribute) of a factory written ``package.module.attr`` or ``package.module:attr``."""
    module, sep, attr = factory.partition(":")
    return (module, attr) if sep else factory.rpartition(".")[::2]


# Untrusted configs (README: Trust model): a network of your own may only name a factory under these modules.
UNTRUSTED_ENV, ALLOWED_ENV = "STITCHLIB_UNTRUSTED", "STITCHLIB_ALLOWED_FACTORIES"
DEFAULT_ALLOWED = ("torchvision.models",)


def factory_allowlist() -> tuple[str, ...] | None:
    """The modules factories are restricted to when configs are untrusted (``STITCHLIB_UNTRUSTED=1``; the list
    from ``STITCHLIB_ALLOWED_FACTORIES``, comma-separated, default torchvision.models), else None."""
    import os

    if os.environ.get(UNTRUSTED_ENV, "") in ("", "0"):
        return None
    listed = [m.strip() for m in os.environ.get(ALLOWED_ENV, "").split(",") if m.strip()]
    return tuple(listed) or DEFAULT_ALLOWED


def factory_refusal(factory: str) -> str | None:
    """Why ``factory`` may not run under the allow-list of untrusted configs, or why it cannot be imported (judged
    from the files on ``sys.path``, importing nothing); None when it may be built."""
    module, attr = split_factory(factory)
    allowed = factory_allowlist()
    if allowed is not None and not (any(module == m or module.startswith(m + ".") for m in allowed)
                                    and not any(a.startswith("_") for a in f"{module}.{attr}".split("."))):
        return (f"{factory} is not allowed: {UNTRUSTED_ENV} is set, so a factory must be a public callable under "
                f"{', '.join(allowed)} (extend the list with {ALLOWED_ENV}=module,module)")
    return module_problem(module)


@cache  # the DAG build asks for every network's layers, each time checking its params
def module_problem(module: str) -> str | None:
    """Why ``module`` cannot be imported, found from the files on ``sys.path`` without importing anything;
    None when it is there or only an import could tell (a module made at run time, inside an extension)."""
    import difflib
    import importlib.machinery
    import importlib.util

    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: found without importing it
    if spec is None:
        return (f"no module named {top!r} (factory module {module}); install it, or put the folder holding it on "
                "PYTHONPATH")
    dirs, found = spec.submodule_search_locations, top
    for part in rest:
        if not dirs:
            return None  # a plain module: its attributes are only known by importing it
        folders, suffixes = [Path(d) for d in dirs], importlib.machinery.all_suffixes()
        package = [d / part for d in folders if any((d / part / f"__init__{x}").is_file() for x in suffixes)]
        if package:  # the order the import system tries: a package, a module file, a namespace folder
            dirs = [str(package[0])]
        elif any((d / f"{part}{x}").is_file() for d in folders for x in suffixes):
            dirs = None
        elif any((d / part).is_dir() for d in folders):
            dirs = [str(d / part) for d in folders if (d / part).is_dir()]
        else:
            names = {c.name.partition(".")[0] for d in folders if d.is_dir() for c in d.iterdir()}
            similar = difflib.get_close_matches(part, sorted(n for n in names if not n.startswith("_")), 3)
            return f"{found} has no module {part!r} (factory module {module}); similar: {similar}"
        found += f".{part}"
    return None


def state_dict_file(params: dict, seed: int, dataset: str) -> str:
    """The state-dict file of a ``custom`` network for ``seed`` and ``dataset``."""
    return params["state_dict"].format(seed=seed, dataset=dataset)


def layer_names(family: str, params: dict) -> list[str]:
    """Stitch-point names of an architecture, in network order (``FAMILIES[family].layer_names``).

    ``resnet18`` and ``vit``: the block outputs. ``resnet``: the stem output (:data:`STEM`) and then the
    block outputs, so that every block's input is a stitch point too (paper 3 stitches into block inputs).
    """
    return FAMILIES[family].layer_names(architecture_params(family, params))


def blocks_before(family: str, params: dict) -> tuple[dict[str, int], int]:
    """How many of the network's blocks run before each stitch point, and how many blocks it has.

    A stitch point's *proportional depth* is ``blocks_before / blocks`` (cross-architecture study):
    0 for the stem output, (i + 1)/n for the output of block i (0-based) of n.
    """
    names = layer_names(family, params)
    first = 0 if names[0] == STEM else 1
    return {name: i + first for i, name in enumerate(names)}, len(names) - 1 + first


# ----------------------------------------------------------------------------- shapes and sizes without torch

def _conv(size: int, kernel: int, stride: int = 1, pad: int = 0, ceil: bool = False) -> int:
    """Output side of a convolution or pooling window (torch's formula; ``ceil``: ceil_mode pooling, whose last
    window must start inside the input)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    return out - 1 if ceil and (out - 1) * stride >= size + pad else out


GOOGLENET_CHANNELS = (256, 480, 512, 512, 512, 528, 832, 832, 1024)  # inception3a … inception5b outputs


def layer_shapes(family: str, params: dict, image_size: int) -> dict[str, tuple[tuple[int, ...], str]] | None:
    """Per-sample shape and layout ('conv' (C, H, W) or 'tokens' (T, D)) of every stitch point, in network order,
    from the architecture's own formulas (checked against ``models.build`` + ``forward_all`` in
    tests/test_models.py); None for a network of your own, whose shapes are known only once it runs."""
    p, s = architecture_params(family, params), image_size
    if family == "custom":
        return None
    if family == "vit":
        tokens = 1 + (s // p["patch_size"]) ** 2
        return {name: ((tokens, p["hidden_dim"]), "tokens") for name in vit_layer_names(p["depth"])}
    if family == "tiny10":
        s1 = _conv(s, 3, 2, 1)
        s2 = _conv(s1, 3, 2, 1)
        w = p["width"]
        sides = [(w, s), (w, s), (2 * w, s1), (2 * w, s1), (2 * w, s1), (4 * w, s2), (4 * w, s2 - 2), (4 * w, s2 - 2)]
        return {name: ((c, h, h), "conv") for name, (c, h) in zip(tiny10_layer_names(), sides)}
    if family == "googlenet":
        s = _conv(_conv(s, 7, 2, 3), 3, 2, ceil=True)   # conv1, maxpool1
        s3 = _conv(s, 3, 2, ceil=True)                   # conv2, conv3 keep the size; maxpool2
        s4 = _conv(s3, 3, 2, ceil=True)                  # maxpool3 before inception4a
        s5 = _conv(s4, 2, 2, ceil=True)                  # maxpool4 before inception5a
        sides = [s3, s3, s4, s4, s4, s4, s4, s5, s5]
        return {name: ((c, h, h), "conv") for name, c, h in zip(GOOGLENET_LAYERS, GOOGLENET_CHANNELS, sides)}
    blocks = (2, 2, 2, 2) if family == "resnet18" else tuple(p["stage_blocks"])
    out = {STEM: ((p["width"], s, s), "conv")} if family == "resnet" else {}
    for stage, n in enumerate(blocks):
        s = s if stage == 0 else _conv(s, 3, 2, 1)
        for b in range(n):
            out[f"layer{stage + 1}.{b}"] = ((p["width"] * 2 ** stage, s, s), "conv")
    return out


def resnet_param_count(width: int, stage_blocks, num_classes: int, in_channels: int = 3) -> int:
    """Parameters of a CIFAR ResNet (``models.CifarResNet``): 3×3 convs, BatchNorm scale and shift, 1×1 shortcuts."""
    n, c_in = 9 * in_channels * width + 2 * width, width
    for stage, blocks in enumerate(stage_blocks):
        c = width * 2 ** stage
        for b in range(blocks):
            n += 9 * c_in * c + 9 * c * c + 4 * c + ((c_in * c + 2 * c) if c_in != c or (b == 0 and stage) else 0)
            c_in = c
    return n + c_in * num_classes + num_classes


def vit_encoder_param_count(tokens: int, hidden: int, depth: int, mlp: int) -> int:
    """Parameters of torchvision's ViT ``Encoder``: positional embedding, pre-norm blocks, final LayerNorm."""
    attention = (3 * hidden * hidden + 3 * hidden) + (hidden * hidden + hidden)  # in-projection q, k, v; out
    block = 4 * hidden + attention + 2 * hidden * mlp + mlp + hidden  # two LayerNorms, attention, the MLP
    return tokens * hidden + depth * block + 2 * hidden


def param_count(family: str, params: dict, num_classes: int, image_size: int) -> int | None:
    """Parameters of an architecture (checked against ``models.build`` in tests/test_models.py); None for a network
    of your own."""
    p = architecture_params(family, params)
    if family in ("resnet18", "resnet"):
        return resnet_param_count(p["width"], (2, 2, 2, 2) if family == "resnet18" else p["stage_blocks"], num_classes)
    if family == "vit":
        d, patch = p["hidden_dim"], p["patch_size"]
        tokens = 1 + (image_size // patch) ** 2
        return 3 * patch * patch * d + 2 * d + vit_encoder_param_count(tokens, d, p["depth"], p["mlp_dim"]) \
            + d * num_classes + num_classes
    if family == "tiny10":
        from_, n = 3, 0
        for mult, k in ((1, 3), (1, 3), (2, 3), (2, 3), (2, 3), (4, 3), (4, 3), (4, 1)):
            n += from_ * mult * p["width"] * k * k + 2 * mult * p["width"]
            from_ = mult * p["width"]
        return n + from_ * num_classes + num_classes
    if family == "googlenet":
        return 5_599_904 + 1024 * num_classes + num_classes  # torchvision's GoogLeNet without auxiliary heads
    return None


# Indices resampled over test images when ``uncertainty.indices`` is null: the Gram route makes the two CKAs cheap
# (README "How sure is each number"); the others need a factorisation per replicate.
BOOTSTRAP_INDICES = ("lcka", "lcka_debiased")


def bootstrapped_indices(measures: list[str], uncertainty: dict) -> list[str]:
    """The computed indices whose replicates over test images the indices job writes (config ``uncertainty``)."""
    if not uncertainty["enabled"]:
        return []
    named = BOOTSTRAP_INDICES if uncertainty["indices"] is None else uncertainty["indices"]  # []: none
    return [m for m in measures if m in named]
