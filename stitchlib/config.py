"""Configuration: schema validation with defaults, semantic checks, and the experiment grid it implies.

``validate(cfg)`` fills defaults from ``config.schema.yaml`` and raises :class:`ConfigError` with the
key path (``tlm.epochs``, ``architectures.vit.layers[2]``) for wrong types, unknown keys, unknown
dataset / architecture names, layers that do not exist, or a K larger than the training split. It is
cheap and torch-free, so the Snakefile runs it before any job.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from itertools import permutations
from pathlib import Path
from typing import Any

import yaml

from stitchlib import catalog

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
DIGITS_TRAIN_SIZE, DIGITS_TEST_SIZE = 1400, 397  # stitchlib.data's fixed split of the 1,797 digits
DIGITS_DATASETS = ("digits", "digits_attributes")  # the same images and split


def _has_digits(cfg: dict[str, Any]) -> bool:
    return any(d in cfg["datasets"] for d in DIGITS_DATASETS)


# Paper 1: CKA on flattened C·H·W; PWCCA/OPD (and the CCA family) as its public code feeds them.
DEFAULT_RESHAPE = {m: catalog.MEASURES[m].default_reshape for m in catalog.INDICES}

# The schema's enums that name registry entries ($defs in config.schema.yaml), filled in when it is loaded.
REGISTRY_ENUMS = {
    "family": list(catalog.FAMILIES), "index": catalog.INDICES,
    "ding_index": [m for m in catalog.INDICES if catalog.MEASURES[m].ding], "reshape": list(catalog.RESHAPES),
    "conv_stitch": list(catalog.CONV_STITCHES),
}


class ConfigError(ValueError):
    """A configuration problem; the message starts with the offending key path."""


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """config.schema.yaml with the registries' names filled into its enums (:data:`REGISTRY_ENUMS`)."""
    out = yaml.safe_load(SCHEMA_PATH.read_text())
    for name, values in REGISTRY_ENUMS.items():
        out["$defs"][name]["enum"] = list(values)
    return out


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema_ = schema()
    base = jsonschema.Draft202012Validator

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    cls = jsonschema.validators.extend(base, {"properties": fill_defaults})
    return cls(schema_)


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Return a validated copy of ``cfg`` with every default filled in and keys in canonical order."""
    cfg = copy.deepcopy(cfg) if cfg is not None else {}
    # Defaults must be filled on a first pass before errors are meaningful (unevaluated props etc.).
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        e = errors[0]
        raise ConfigError(f"config key {_path(e.absolute_path)}: {e.message}")
    _check_semantics(cfg)
    return canonical(cfg)


def canonical(obj: Any) -> Any:
    """Mappings with sorted keys, recursively: the same settings always look the same to Snakemake's
    parameter-change detection, however the YAML orders them."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return validate(raw)


def _check_semantics(cfg: dict[str, Any]) -> None:
    for name, d in cfg["datasets"].items():
        try:
            catalog.dataset(name)
            catalog.check_dataset(name, d["root"], d["download"], where=f"datasets.{name}")
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(str(e) if str(e).startswith("datasets.") else f"datasets.{name}: {e}") from None
    for arch, a in cfg["architectures"].items():
        where = f"architectures.{arch}"
        try:
            catalog.architecture_params(a["family"], a["params"], where)
            names = catalog.layer_names(a["family"], a["params"])
        except ValueError as e:
            raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
        for i, layer in enumerate(a["layers"] or []):
            if layer not in names:
                raise ConfigError(f"{where}.layers[{i}]: {a['family']} has no layer {layer!r}; layers: {names}")
        if a["layers"] and [n for n in names if n in a["layers"]] != a["layers"]:
            raise ConfigError(f"{where}.layers: list the layers once each, in network order {names}")
        if a["family"] == "vit":
            for ds, d in cfg["datasets"].items():
                size = d["image_size"] or catalog.dataset(ds).image_size
                patch = catalog.architecture_params("vit", a["params"])["patch_size"]
                if size % patch:
                    raise ConfigError(f"{where}.params.patch_size: {patch} does not divide the image size {size} "
                                      f"of dataset {ds!r}")
        least = catalog.FAMILIES[a["family"]].min_image_size
        for ds, d in cfg["datasets"].items():
            size = d["image_size"] or catalog.dataset(ds).image_size
            if size < least:
                raise ConfigError(f"datasets.{ds}.image_size: {a['family']} ({where}) needs images of at least "
                                  f"{least} px, and dataset {ds!r} has {size}; set datasets.{ds}.image_size")
        if a["family"] == "custom":
            _check_custom(cfg, arch)
    _check_cache(cfg)
    k = cfg["dm"]["samples"]
    if k != "all" and _has_digits(cfg) and k > DIGITS_TRAIN_SIZE:
        raise ConfigError(f"dm.samples: K = {k} is larger than the digits training split ({DIGITS_TRAIN_SIZE})")
    n = cfg["similarity"]["samples"]
    if n != "all" and _has_digits(cfg) and n > DIGITS_TEST_SIZE:
        raise ConfigError(f"similarity.samples: {n} is larger than the digits test split ({DIGITS_TEST_SIZE})")
    cfg["similarity"]["reshape"] = {**DEFAULT_RESHAPE, **cfg["similarity"]["reshape"]}
    o = cfg["ood"]
    if o["enabled"] and o["outliers"]["source"] == "npy":
        if not o["outliers"]["path"] or not Path(o["outliers"]["path"]).is_file():
            raise ConfigError(f"ood.outliers.path: {o['outliers']['path']!r} is not a file; source npy needs the "
                              "300K Random Images .npy (N, 32, 32, 3) uint8")
    for i, arch in enumerate(cfg["stitching"]["architectures"] or []):
        if arch not in cfg["architectures"]:
            raise ConfigError(f"stitching.architectures[{i}]: {arch!r} is not under architectures; "
                              f"known: {sorted(cfg['architectures'])}")
    for arch, names in cfg["ding"]["sensitivity"]["layers"].items():
        where = f"ding.sensitivity.layers.{arch}"
        if arch not in matrix_architectures(cfg):
            raise ConfigError(f"{where}: {arch!r} is not one of paper 1's architectures {matrix_architectures(cfg)}")
        for i, layer in enumerate(names):
            if layer not in layers(cfg, arch):
                raise ConfigError(f"{where}[{i}]: {arch} has no stitch point {layer!r}; stitch points: "
                                  f"{layers(cfg, arch)}")
    if "inter" in cfg["stitching"]["settings"] and len(cfg["seeds"]) < 2:
        raise ConfigError("stitching.settings: 'inter' needs at least two seeds")
    _check_tasks(cfg)
    _check_cross(cfg)
    _check_frankenstein(cfg)


def _check_custom(cfg: dict[str, Any], arch: str) -> None:
    """A network of your own: its factory's top-level package is findable and every state-dict file its networks
    import exists (a stat each; importing the factory needs torch and happens in the jobs)."""
    import importlib.util

    p, where = cfg["architectures"][arch]["params"], f"architectures.{arch}.params"
    top = p["factory"].partition(":")[0].partition(".")[0]
    if importlib.util.find_spec(top) is None:
        raise ConfigError(f"{where}.factory: no module named {top!r} (factory {p['factory']}); install it, or put "
                          "the folder holding it on PYTHONPATH")
    if not p["state_dict"]:
        raise ConfigError(f"{where}.state_dict: required: the file each network's weights are imported from, "
                          "with {seed} (and {dataset}) filled in per network, e.g. nets/mine-s{seed}.pt")
    seeds = cfg["seeds"] if arch in matrix_architectures(cfg) else []
    seeds = sorted({*seeds, *([cfg["cross"]["seed"]] if arch in (cfg["cross"]["conv_vit"] or []) else [])})
    for ds in cfg["datasets"]:
        for seed in seeds:
            path = Path(catalog.state_dict_file(p, seed, ds))
            if not path.is_file():
                problem = "is not a file" if path.exists() else "does not exist"
                raise ConfigError(f"{where}.state_dict: {path} {problem} (seed {seed}, dataset {ds}); save each "
                                  "network's weights with torch.save(model.state_dict(), path)")


def _check_tasks(cfg: dict[str, Any]) -> None:
    """Studies that assume one class label per image refuse a multi-label dataset (stitchlib.tasks): the OOD
    detectors (stage 1 is cross-entropy on the input's class, the energy is over classes) and the Ding et al.
    tests (multinomial linear probes; DM (func.) from top-1 accuracy)."""
    multilabel = [ds for ds in cfg["datasets"] if catalog.dataset(ds).task == "multilabel"]
    if not multilabel:
        return
    for key, why in (("ood", "its detectors are trained with cross-entropy on class labels"),
                     ("ding", "its linear probes are multinomial (one class label per image)")):
        if cfg[key]["enabled"]:
            raise ConfigError(f"{key}.enabled: dataset {multilabel[0]!r} is multi-label (one {{0, 1}} vector of "
                              f"attributes per image) and {why}; set {key}.enabled: false")


def _check_cross(cfg: dict[str, Any]) -> None:
    """The cross-architecture study's networks exist and fit it (paper 3's grid needs the resnet family)."""
    c, archs = cfg["cross"], cfg["architectures"]
    for key in ("architectures", "conv_vit"):
        for i, arch in enumerate(c[key] or []):
            if arch not in archs:
                raise ConfigError(f"cross.{key}[{i}]: {arch!r} is not under architectures; known: {sorted(archs)}")
    for i, arch in enumerate(c["architectures"]):
        if archs[arch]["family"] != "resnet":
            raise ConfigError(f"cross.architectures[{i}]: {arch!r} has family {archs[arch]['family']!r}; the "
                              "block-input grid needs family resnet (its stem output is a stitch point)")
    if c["conv_vit"] and sorted(archs[a]["family"] == "vit" for a in c["conv_vit"]) != [False, True]:
        raise ConfigError(f"cross.conv_vit: name one conv network and one vit, not {c['conv_vit']}")
    k = cross_dm_settings(cfg)["samples"]
    if k != "all" and _has_digits(cfg) and k > DIGITS_TRAIN_SIZE:
        raise ConfigError(f"cross.dm.samples: K = {k} is larger than the digits training split ({DIGITS_TRAIN_SIZE})")


# ----------------------------------------------------------------------------- the cache policy

CONSUMERS = ("dm", "tlm", "detector", "frankenstein", "cross")  # jobs that read the training split's fronts


def consumer_architectures(cfg: dict[str, Any], consumer: str) -> list[str]:
    """The architectures whose training-split fronts ``consumer`` reads (empty when its study is off)."""
    if consumer in ("dm", "tlm"):
        on = consumer in cfg["stitching"]["methods"] or (consumer == "dm" and cfg["ding"]["enabled"])
        return matrix_architectures(cfg) if on else []
    if consumer == "detector":
        return matrix_architectures(cfg) if cfg["ood"]["enabled"] else []
    if consumer == "cross":
        return list(dict.fromkeys([*cfg["cross"]["architectures"], *(cfg["cross"]["conv_vit"] or [])]))
    f = cfg["frankenstein"]
    if not f["enabled"]:
        return []
    r = frankenstein_settings(cfg)
    return list(dict.fromkeys([*f["architectures"], *f["widths"], r["network"], r["cka_penalty"]["architecture"]]))


def train_cache_bytes(cfg: dict[str, Any], arch: str, dataset: str) -> int | None:
    """Bytes of one network's cached training split (every configured stitch point, ``extract.dtype``); None when
    the shapes are unknown before the network runs (a network of your own)."""
    a = cfg["architectures"][arch]
    shapes = catalog.layer_shapes(a["family"], a["params"], image_size(cfg, dataset))
    if shapes is None:
        return None
    per_image = sum(math.prod(shapes[name][0]) for name in layers(cfg, arch))
    return catalog.dataset(dataset).train_size * per_image * (2 if cfg["extract"]["dtype"] == "float16" else 4)


def front_policy(cfg: dict[str, Any], consumer: str) -> str:
    """'cache' or 'recompute': where ``consumer`` takes training-split fronts from (``cache.train``, overridden per
    consumer; ``auto`` = recompute when ``device`` is cuda or one of its networks' cached training split exceeds
    ``cache.auto_limit_gb``; networks of your own, whose shapes are unknown before they run, count as small).
    Decided when the workflow is parsed: the jobs' inputs depend on it."""
    c = cfg["cache"]
    policy = c["consumers"].get(consumer) or c["train"]
    if policy != "auto":
        return policy
    if cfg["device"] == "cuda":
        return "recompute"
    sizes = [train_cache_bytes(cfg, arch, ds) for arch in consumer_architectures(cfg, consumer)
             for ds in cfg["datasets"]]
    return "recompute" if max([s or 0 for s in sizes], default=0) > c["auto_limit_gb"] * 1e9 else "cache"


def caches_train_fronts(cfg: dict[str, Any], arch: str) -> bool:
    """Whether extraction writes the training split's activations of ``arch``'s networks: some consumer of them
    takes its fronts from the cache."""
    return any(arch in consumer_architectures(cfg, c) and front_policy(cfg, c) == "cache" for c in CONSUMERS)


def _check_cache(cfg: dict[str, Any]) -> None:
    """Augmentation needs recomputed fronts (a cache holds fixed activations); a test subset must hold the indices'
    samples."""
    for where, settings, consumer in (("tlm", cfg["tlm"], "tlm"), ("cross.tlm", cross_tlm_settings(cfg), "cross"),
                                      ("frankenstein.tlm", frankenstein_settings(cfg)["tlm"], "frankenstein")):
        kind = settings.get("augment", "none")
        if kind != "none" and consumer_architectures(cfg, consumer) and front_policy(cfg, consumer) != "recompute":
            raise ConfigError(f"{where}.augment: {kind} augments the images, so the frozen fronts must be recomputed "
                              f"from them; set cache.consumers.{consumer}: recompute (or cache.train: recompute); "
                              "the activation cache holds fixed activations")
    test, n = cfg["cache"]["test"]["samples"], cfg["similarity"]["samples"]
    if test != "all" and n != "all" and n > test:
        raise ConfigError(f"similarity.samples: {n} test images, but cache.test.samples caches only {test}")
    if test != "all" and _has_digits(cfg) and test > DIGITS_TEST_SIZE:
        raise ConfigError(f"cache.test.samples: {test} is larger than the digits test split ({DIGITS_TEST_SIZE})")


# ----------------------------------------------------------------------------- the grid

def network_id(arch: str, seed: int) -> str:
    return f"{arch}-s{seed}"


def parse_network(net: str) -> tuple[str, int]:
    arch, _, seed = net.rpartition("-s")
    return arch, int(seed)


def matrix_architectures(cfg: dict[str, Any]) -> list[str]:
    """Architectures of paper 1's studies (``stitching.architectures``, default all)."""
    return list(cfg["stitching"]["architectures"] or cfg["architectures"])


def networks(cfg: dict[str, Any]) -> list[str]:
    return [network_id(a, s) for a in matrix_architectures(cfg) for s in cfg["seeds"]]


def network_pairs(cfg: dict[str, Any], setting: str) -> list[tuple[str, str]]:
    """(source, target) network pairs: intra = (n, n); inter = ordered pairs of different seeds."""
    out = []
    for arch in matrix_architectures(cfg):
        if setting == "intra":
            out += [(network_id(arch, s), network_id(arch, s)) for s in cfg["seeds"]]
        else:
            out += [(network_id(arch, s), network_id(arch, t)) for s, t in permutations(cfg["seeds"], 2)]
    return out


def network_spec(cfg: dict[str, Any], dataset: str, net: str) -> dict[str, Any]:
    """Everything needed to rebuild network ``net`` (``arch-sSEED``) trained on ``dataset`` (a job's params)."""
    arch, seed = parse_network(net)
    a, d = cfg["architectures"][arch], cfg["datasets"][dataset]
    return {
        "net": net, "arch": arch, "seed": seed, "family": a["family"], "params": dict(a["params"]),
        "layers": layers(cfg, arch), "dataset": dataset, "root": d["root"], "download": d["download"],
        "image_size": image_size(cfg, dataset), "num_classes": catalog.dataset(dataset).num_classes,
    }


def train_settings(cfg: dict[str, Any], arch: str) -> dict[str, Any]:
    """The top-level train settings with the architecture's overrides applied; none for a network of your own
    (family custom: imported, not trained, so a change to them must not re-import it)."""
    if cfg["architectures"][arch]["family"] == "custom":
        return {}
    return {**cfg["train"], **(cfg["architectures"][arch].get("train") or {})}


def state_dict_files(cfg: dict[str, Any], dataset: str, net: str) -> list[str]:
    """The state-dict file a network of your own (family custom) is imported from; none for a trained one."""
    arch, seed = parse_network(net)
    a = cfg["architectures"][arch]
    return [catalog.state_dict_file(a["params"], seed, dataset)] if a["family"] == "custom" else []


def layers(cfg: dict[str, Any], arch: str) -> list[str]:
    a = cfg["architectures"][arch]
    return a["layers"] or catalog.layer_names(a["family"], a["params"])


def sensitivity_layers(cfg: dict[str, Any], arch: str) -> list[str]:
    """Layers of the Ding et al. sensitivity test: as configured, else the last half of the stitch points."""
    names = layers(cfg, arch)
    return cfg["ding"]["sensitivity"]["layers"].get(arch) or names[len(names) // 2:]


def image_size(cfg: dict[str, Any], dataset: str) -> int:
    return cfg["datasets"][dataset]["image_size"] or catalog.dataset(dataset).image_size


# ----------------------------------------------------------------------------- cross-architecture study

# Paper 3's stitch training (Hernandez et al. 2022): 4 epochs of SGD; a 2-epoch warm-up that completes.
TLM_PRESETS: dict[str, dict[str, Any]] = {
    "paper3": {"optimizer": "sgd", "momentum": 0.9, "nesterov": False, "lr": 0.01, "weight_decay": 0.01,
               "batch_size": 256, "epochs": 4, "schedule": "cosine", "warmup_epochs": 2},
    # Paper 2's (Csiszárik et al. 2021): Adam 1e-3, batch 128, 30 epochs, lr × 0.1 at 10 and 20, soft labels.
    "paper2": {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0, "batch_size": 128, "epochs": 30,
               "schedule": "multistep", "milestones": [10, 20], "gamma": 0.1, "warmup_epochs": 0,
               "labels": "soft", "temperature": 1.0},
    "none": {},
}

CONTROLS = {  # condition -> (sender state, receiver state)
    "trained": ("trained", "trained"), "random_sender": ("random", "trained"),
    "random_receiver": ("trained", "random"), "random_both": ("random", "random"),
}


def cross_tlm_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The top-level tlm settings, then ``cross.tlm.preset``'s values, then the other ``cross.tlm`` keys."""
    own = dict(cfg["cross"]["tlm"])
    return canonical({**cfg["tlm"], **TLM_PRESETS[own.pop("preset")], **own})


def cross_dm_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    return canonical({**cfg["dm"], **cfg["cross"]["dm"]})


def cross_pairs(cfg: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(grid, condition, sender network, receiver network) of every stitching job of the study.

    grid 'resnets': every ordered pair of ``cross.architectures`` (a network with itself included), trained
    and under each control; grid 'conv_vit': the conv network and the ViT both ways, trained.
    """
    c = cfg["cross"]
    nets = [network_id(a, c["seed"]) for a in c["architectures"]]
    out = [("resnets", cond, s, t) for cond in ["trained", *c["controls"]] for s in nets for t in nets]
    if c["conv_vit"]:
        a, b = (network_id(x, c["seed"]) for x in c["conv_vit"])
        out += [("conv_vit", "trained", a, b), ("conv_vit", "trained", b, a)]
    return out


# ----------------------------------------------------------------------------- paper 2's matching studies

def frankenstein_pairs(cfg: dict[str, Any], arch: str) -> list[tuple[str, str]]:
    """(Model 1, Model 2) networks of ``arch``: every ordered pair of two different ``frankenstein.seeds``."""
    return [(network_id(arch, s), network_id(arch, t)) for s, t in permutations(cfg["frankenstein"]["seeds"], 2)]


def frankenstein_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The study's settings with every default resolved (the layers each experiment uses, the TLM preset)."""
    f = copy.deepcopy(cfg["frankenstein"])
    net = f["network"] or (f["architectures"] or [None])[0]
    if net is None:
        return f
    tlm = dict(f["tlm"])
    f["tlm"] = canonical({**cfg["tlm"], **TLM_PRESETS[tlm.pop("preset")], **tlm})
    names = layers(cfg, net)
    f["network"] = net
    f["track"]["layer"] = f["track"]["layer"] or names[min(2, len(names) - 1)]
    f["inits"]["layer"] = f["inits"]["layer"] or names[len(names) // 2]
    f["sparsity"]["layer"] = f["sparsity"]["layer"] or names[len(names) // 2]
    f["lowrank"]["layers"] = f["lowrank"]["layers"] or names[-2:]
    c = f["cka_penalty"]
    c["architecture"] = c["architecture"] or (max(f["widths"], key=f["widths"].get) if f["widths"] else net)
    c["layer"] = c["layer"] or layers(cfg, c["architecture"])[len(layers(cfg, c["architecture"])) // 2]
    return f


def frankenstein_runs(cfg: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(experiment, Model 1, Model 2) of every job: Figs. 2–3 on every pair of every architecture, Fig. 4 on every
    pair of `network`, Figs. 6–8 on its first pair, Fig. 5 on the first network of its architecture stitched
    into itself."""
    if not cfg["frankenstein"]["enabled"]:
        return []
    f = frankenstein_settings(cfg)
    archs = dict.fromkeys([*f["architectures"], *f["widths"]])
    runs = [("layers", s, t) for a in archs for s, t in frankenstein_pairs(cfg, a)]
    pairs = frankenstein_pairs(cfg, f["network"])
    runs += [("track", s, t) for s, t in pairs] + [(e, *pairs[0]) for e in ("inits", "lowrank", "sparsity")]
    me = network_id(f["cka_penalty"]["architecture"], f["seeds"][0])
    return runs + [("cka_penalty", me, me)]


def _check_frankenstein(cfg: dict[str, Any]) -> None:
    """Paper 2's study names existing architectures and, for each experiment, stitch points they have."""
    f = cfg["frankenstein"]
    if not f["enabled"]:
        return
    archs = cfg["architectures"]
    named = [(f"frankenstein.architectures[{i}]", a) for i, a in enumerate(f["architectures"])]
    named += [(f"frankenstein.widths.{a}", a) for a in f["widths"]]
    named += [(f"frankenstein.{k}", v) for k, v in (("network", f["network"]), ("cka_penalty.architecture",
                                                                                f["cka_penalty"]["architecture"])) if v]
    for where, arch in named:
        if arch not in archs:
            raise ConfigError(f"{where}: {arch!r} is not under architectures; known: {sorted(archs)}")
    if not (f["network"] or f["architectures"]):
        raise ConfigError("frankenstein.network: name the network of Figs. 4 and 6–8 (or list "
                          "frankenstein.architectures)")
    r = frankenstein_settings(cfg)
    checks = [("track.layer", r["network"], [r["track"]["layer"]]),
              ("inits.layer", r["network"], [r["inits"]["layer"]]),
              ("sparsity.layer", r["network"], [r["sparsity"]["layer"]]),
              ("lowrank.layers", r["network"], r["lowrank"]["layers"]),
              ("cka_penalty.layer", r["cka_penalty"]["architecture"], [r["cka_penalty"]["layer"]])]
    for key, arch, names in checks:
        for layer in names:
            if layer not in layers(cfg, arch):
                raise ConfigError(f"frankenstein.{key}: {arch} has no stitch point {layer!r}; stitch points: "
                                  f"{layers(cfg, arch)}")
    k = r["dm"]["samples"]
    if k != "all" and _has_digits(cfg) and k > DIGITS_TRAIN_SIZE:
        raise ConfigError(f"frankenstein.dm.samples: K = {k} is larger than the digits training split "
                          f"({DIGITS_TRAIN_SIZE})")
