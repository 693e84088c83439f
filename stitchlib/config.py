"""Configuration: schema validation with defaults, semantic checks, and the experiment grid it implies.

``validate(cfg)`` fills defaults from ``config.schema.yaml`` and raises :class:`ConfigError` with the
key path (``tlm.epochs``, ``architectures.vit.layers[2]``) for wrong types, unknown keys, unknown
dataset / architecture names, layers that do not exist, or a K larger than the training split. It is
cheap and torch-free, so the Snakefile runs it before any job.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from functools import lru_cache
from itertools import permutations
from pathlib import Path
from typing import Any

import yaml

from stitchlib import catalog

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
DIGITS_TRAIN_SIZE, DIGITS_TEST_SIZE = catalog.dataset("digits").splits  # stitchlib.data's fixed split of 1,797


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


class ConfigWarning(UserWarning):
    """A value that runs but makes results misleading (the rule is in the message); printed before any job."""


def _warn(message: str) -> None:
    warnings.warn(message, ConfigWarning, stacklevel=3)


INT_MAX = 2**31 - 1  # the largest integer a key accepts unless the schema states its own maximum


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """config.schema.yaml with the registries' names filled into its enums (:data:`REGISTRY_ENUMS`)."""
    out = yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: fast
    for name, values in REGISTRY_ENUMS.items():
        out["$defs"][name]["enum"] = list(values)
    return out


@lru_cache(maxsize=1)
def _validator():
    """Draft 2020-12 with defaults filled in and strict types: an integer is an int (not 1.0, not true), a number
    is finite, and an integer is at most INT_MAX where the schema states no maximum (so keys added later get
    the same checks)."""
    import jsonschema

    schema_ = schema()
    base = jsonschema.Draft202012Validator

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    def strict_type(validator, types, instance, schema):
        types = [types] if isinstance(types, str) else types
        if isinstance(instance, float) and not math.isfinite(instance) and {"number", "integer"} & set(types):
            yield jsonschema.ValidationError(f"{instance!r} is not a finite number")
        elif isinstance(instance, float) and instance.is_integer() and "integer" in types and "number" not in types:
            yield jsonschema.ValidationError(f"{instance!r} is not of type 'integer' (a float: write integers "
                                             "without a decimal point or exponent)")
        elif "integer" in types and validator.is_type(instance, "integer") and abs(instance) > INT_MAX and \
                not {"maximum", "exclusiveMaximum"} & set(schema):
            yield jsonschema.ValidationError(f"{instance} is larger than {INT_MAX}, the largest integer a key takes "
                                             "unless the schema states its own maximum")
        else:
            yield from base.VALIDATORS["type"](validator, types, instance, schema)

    checker = base.TYPE_CHECKER.redefine_many({
        "integer": lambda c, x: isinstance(x, int) and not isinstance(x, bool),
        "number": lambda c, x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)})
    cls = jsonschema.validators.extend(base, {"properties": fill_defaults, "type": strict_type},
                                       type_checker=checker)
    return cls(schema_)


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _message(e) -> str:
    """A schema error's message; for oneOf/anyOf, what each alternative said (not only 'not valid under any')."""
    if e.validator in ("oneOf", "anyOf") and e.context:
        reasons: dict[int, list[str]] = {}
        for sub in e.context:
            reasons.setdefault(sub.relative_schema_path[0], []).append(_message(sub))
        return f"{e.message}: " + "; or ".join(", ".join(r) for r in reasons.values())
    return e.message


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Return a validated copy of ``cfg`` with every default filled in and keys in canonical order.

    Values that run but mislead (the rule in each message) are reported as :class:`ConfigWarning` warnings."""
    cfg = copy.deepcopy(cfg) if cfg is not None else {}
    # Defaults must be filled on a first pass before errors are meaningful (unevaluated props etc.).
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        e = errors[0]
        raise ConfigError(f"config key {_path(e.absolute_path)}: {_message(e)}")
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


# ----------------------------------------------------------------------------- config files

YTE_KEY = "__use_yte__"  # Snakemake renders such a file with YTE templates, which run Python code


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML (or JSON) config file, as written: ConfigError with the line and column of a syntax
    error or of a key given twice in one mapping (plain YAML loaders keep the last one silently), and for a file
    that asks for YTE templates when configs are untrusted (README: Trust model)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file ({e})") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # libyaml's when PyYAML has it: the parse is ms
    try:
        node = loader.get_single_node()
        _no_duplicate_keys(node, path, [], set())
        raw = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {e.problem or e.context}"
                          + (f" ({e.context} on line {e.context_mark.line + 1})" if e.context and e.problem
                             and e.context_mark else "")) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(raw).__name__}")
    if raw.get(YTE_KEY) and catalog.factory_allowlist() is not None:
        raise ConfigError(f"{YTE_KEY}: {path} asks Snakemake to render YTE templates, which run Python code; "
                          f"refused because {catalog.UNTRUSTED_ENV} is set (README: Trust model)")
    return raw


def _no_duplicate_keys(node, path: Path, keys: list, seen_nodes: set) -> None:
    if node is None or id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], Any] = {}
        for k, v in node.value:
            if k.tag == "tag:yaml.org,2002:merge":
                continue
            ident = (k.tag, k.value) if isinstance(k, yaml.ScalarNode) else (k.tag, id(k))
            if ident in first:
                m = k.start_mark
                raise ConfigError(f"{path}:{m.line + 1}:{m.column + 1}: config key {_path([*keys, k.value])} is "
                                  f"given twice (first on line {first[ident].line + 1}); YAML would silently keep "
                                  "only the second: remove or merge one")
            first[ident] = k.start_mark
            _no_duplicate_keys(v, path, [*keys, k.value], seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _no_duplicate_keys(v, path, [*keys, i], seen_nodes)


def check_config_files(paths) -> None:
    """Check the raw config files Snakemake reads (``--configfile``, or the default): their YAML, duplicated keys,
    and YTE under untrusted configs. The Snakefile calls it before the config is used."""
    for p in paths:
        read_yaml(p)


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a config file as the workflow would (YTE templates rendered as Snakemake renders them,
    unless configs are untrusted)."""
    raw = read_yaml(path)
    if raw.get(YTE_KEY):
        import yte

        raw = yte.process_yaml(Path(path).read_text(encoding="utf-8"), require_use_yte=True)
    return validate(raw)


def _check_uncertainty(cfg: dict[str, Any]) -> None:
    u = cfg["uncertainty"]
    for i, m in enumerate(u["indices"] or []):
        if m not in cfg["similarity"]["measures"]:
            raise ConfigError(f"uncertainty.indices[{i}]: {m!r} is not computed (similarity.measures: "
                              f"{cfg['similarity']['measures']})")
    if cfg["tables"]["tie_rule"] == "bootstrap" and not u["enabled"]:
        raise ConfigError("tables.tie_rule: 'bootstrap' needs the resamples of uncertainty.enabled: true")


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
    _check_samples(cfg, "dm.samples", cfg["dm"]["samples"], "train")
    _check_samples(cfg, "similarity.samples", cfg["similarity"]["samples"], "test")
    n = cfg["similarity"]["samples"]
    if n != "all" and n < 100 and cfg["similarity"]["measures"]:
        _warn(f"similarity.samples: {n} test images make the indices biased towards 1 (rule: at least 100; linear "
              "CKA of two unrelated 256-wide random representations is 0.72 at 100 images, 0.97 at 10); paper 1 "
              "uses 1,000")
    cfg["similarity"]["reshape"] = {**DEFAULT_RESHAPE, **cfg["similarity"]["reshape"]}
    _check_results(cfg["results"])
    _check_training(cfg)
    if cfg["ood"]["enabled"]:
        _check_ood(cfg["ood"])
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
    _check_uncertainty(cfg)
    _check_tasks(cfg)
    _check_cross(cfg)
    _check_frankenstein(cfg)
    _check_cache(cfg)
    for arch, a in cfg["architectures"].items():
        if a["family"] == "custom":
            _check_custom(cfg, arch)


def _check_samples(cfg: dict[str, Any], key: str, k: int | str, split: str) -> None:
    """A sample count is no larger than the split it is drawn from, in every dataset of the run."""
    for ds in cfg["datasets"]:
        size = catalog.dataset(ds).splits[split == "test"]
        if k != "all" and size and k > size:
            name = {"train": "training", "test": "test"}[split]
            raise ConfigError(f"{key}: {'K = ' if key.endswith('dm.samples') else ''}{k} is larger than the {ds} "
                              f"{name} split ({size})")


def _check_results(results: str) -> None:
    """``results`` is a folder (or can become one) and, for untrusted configs, stays below the working directory."""
    path = Path(results)
    for p in [path, *path.parents]:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"results: {results!r} must be a folder, but {p} is a file")
    if catalog.factory_allowlist() is not None and (path.is_absolute() or ".." in path.parts):
        raise ConfigError(f"results: {results!r} leaves the working directory; refused because "
                          f"{catalog.UNTRUSTED_ENV} is set (README: Trust model)")


def _check_training(cfg: dict[str, Any]) -> None:
    """Schedules that cannot do what they say: warned, with the rule."""
    runs = [(f"architectures.{a}.train", train_settings(cfg, a)) for a in cfg["architectures"]]
    runs += [("tlm", cfg["tlm"])]
    for where, t in runs:
        if not t:
            continue  # a network of your own is imported, not trained
        if t["epochs"] == 0:
            _warn(f"{where}.epochs: 0 epochs train nothing (" + ("TLM results equal DM's)" if where == "tlm" else
                                                                 "the networks stay at their random initialisation)"))
        elif t["warmup_epochs"] >= t["epochs"]:
            _warn(f"{where}.warmup_epochs: {t['warmup_epochs']} warm-up epochs of {t['epochs']}: the learning rate "
                  "never reaches its configured value (rule: warmup_epochs < epochs)")
        late = [m for m in t.get("milestones", []) if m >= t["epochs"]]
        if t["schedule"] == "multistep" and late:
            _warn(f"{where}.milestones: {late} are not below epochs = {t['epochs']}; the lr never drops there")


def _check_ood(o: dict[str, Any]) -> None:
    """The detectors' energy margins and attention heads, and the outlier .npy (its header only)."""
    fin = {**catalog.DETECTOR_TRAINING["finetune"], **o["finetune"]}
    if not fin["m_in"] < fin["m_out"]:
        raise ConfigError(f"ood.finetune.m_in: m_in = {fin['m_in']} must be below m_out = {fin['m_out']}: fine-tuning "
                          "pushes in-distribution energies below m_in and outlier energies above m_out (paper 1, Liu "
                          "et al.: −25 and −7)")
    tokens = {**catalog.DETECTOR_SIZE["tokens"], **o["detector"]["tokens"]}
    if problem := catalog.heads_problem(tokens["hidden_dim"], tokens["heads"]):
        raise ConfigError(f"ood.detector.tokens.heads: {problem}")
    if o["outliers"]["source"] == "npy":
        _check_outliers_npy(o["outliers"])


def _check_outliers_npy(out: dict[str, Any]) -> None:
    """300K Random Images: a .npy of (N, H, W, 3) uint8 images, read from its header only."""
    path, where = out["path"], "ood.outliers.path"
    if not path or not Path(path).is_file():
        raise ConfigError(f"{where}: {path!r} is not a file; source npy needs the 300K Random Images .npy "
                          "(N, 32, 32, 3) uint8")
    import numpy as np

    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            data = f.tell()
    except (ValueError, OSError, SyntaxError) as e:
        raise ConfigError(f"{where}: {path} is not a .npy array file ({e})") from None
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2]:
        raise ConfigError(f"{where}: {path} holds a {dtype} array of shape {shape}; outlier images must be uint8 "
                          "of shape (N, H, W, 3), H = W (300K Random Images: (300000, 32, 32, 3))")
    if (size := Path(path).stat().st_size) != data + math.prod(shape):
        raise ConfigError(f"{where}: {path} is {size} bytes, but its header promises {data + math.prod(shape)} "
                          f"(shape {shape}): truncated (an interrupted download?)")
    if shape[0] < out["n"]:
        _warn(f"ood.outliers.n: {out['n']} outlier images asked for, but {path} holds {shape[0]}; all of them are "
              "used")


def network_seeds(cfg: dict[str, Any], arch: str) -> list[int]:
    """Every seed the workflow builds a network of ``arch`` with: paper 1's, paper 3's and paper 2's studies."""
    seeds = set(cfg["seeds"]) if arch in matrix_architectures(cfg) else set()
    c, f = cfg["cross"], cfg["frankenstein"]
    if arch in [*c["architectures"], *(c["conv_vit"] or [])]:
        seeds.add(c["seed"])
    if f["enabled"] and arch in [*f["architectures"], *f["widths"], f["network"], f["cka_penalty"]["architecture"]]:
        seeds.update(f["seeds"])
    return sorted(seeds)


def _check_custom(cfg: dict[str, Any], arch: str) -> None:
    """A network of your own: one state-dict file per network, each a file torch.save wrote (a stat and a look at
    its first bytes each; importing the factory needs torch and happens in check-config and the jobs)."""
    p, where = cfg["architectures"][arch]["params"], f"architectures.{arch}.params"
    if not p["state_dict"]:
        raise ConfigError(f"{where}.state_dict: required: the file each network's weights are imported from, "
                          "with {seed} (and {dataset}) filled in per network, e.g. nets/mine-s{seed}.pt")
    nets = [(seed, ds) for ds in cfg["datasets"] for seed in network_seeds(cfg, arch)]
    for field, values in (("seed", {s for s, _ in nets}), ("dataset", {d for _, d in nets})):
        if len(values) > 1 and f"{{{field}}}" not in p["state_dict"]:
            raise ConfigError(f"{where}.state_dict: {p['state_dict']!r} has no {{{field}}}, so the networks of "
                              f"{field}s {sorted(values)} would all import the same weights (an 'inter' comparison "
                              f"would compare a network with itself); write e.g. nets/{arch}-s{{seed}}.pt")
    files: dict[tuple, tuple[int, str]] = {}
    for seed, ds in nets:
        path = Path(catalog.state_dict_file(p, seed, ds))
        if not path.is_file():
            problem = "is not a file" if path.exists() else "does not exist"
            raise ConfigError(f"{where}.state_dict: {path} {problem} (seed {seed}, dataset {ds}); save each "
                              "network's weights with torch.save(model.state_dict(), path)")
        st = path.stat()
        if (st.st_dev, st.st_ino) in files:
            other = files[(st.st_dev, st.st_ino)]
            raise ConfigError(f"{where}.state_dict: {path} (seed {seed}, dataset {ds}) is the same file as that of "
                              f"seed {other[0]}, dataset {other[1]}: each network needs its own weights")
        files[(st.st_dev, st.st_ino)] = (seed, ds)
        if problem := _torch_file_problem(path):
            raise ConfigError(f"{where}.state_dict: {path} {problem}; save each network's weights with "
                              "torch.save(model.state_dict(), path)")


TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickle of torch's pre-1.6 magic number


def _torch_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a file torch.save wrote (a zip archive holding <name>/data.pkl, or the legacy
    format), judged from its first bytes and its zip directory; None when it is one."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(len(TORCH_LEGACY_MAGIC))
    if head == TORCH_LEGACY_MAGIC:
        return None
    if not zipfile.is_zipfile(path):
        return f"is not a PyTorch file (it starts with {head[:8]!r}, not a zip archive)"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        return f"is not a readable PyTorch file ({e})"
    if not any(n.endswith("/data.pkl") and n.count("/") == 1 for n in names):
        return f"is a zip archive without the data.pkl of torch.save (it holds {names[:3]})"
    return None


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
    _check_samples(cfg, "cross.dm.samples", cross_dm_settings(cfg)["samples"], "train")


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
    return catalog.dataset(dataset).splits[0] * per_image * (2 if cfg["extract"]["dtype"] == "float16" else 4)


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
    _check_samples(cfg, "cache.test.samples", test, "test")


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

# Paper 1's code's OOD detector choices (szegedai/stitching-ood: exec_train_representation_classifier.py defaults
# -b 64, -e 100, -fe 20, stage 2 MultiStepLR([epochs // 2]) stepped per iteration; repr_cls_vit.py, no positional
# embedding; energy_score.py's fpr_and_fdr_at_recall). The default preset keeps stitchlib.ood's choices.
OOD_PRESETS: dict[str, dict[str, Any]] = {
    "stitchlib": {},
    "paper1": {"pretrain": {"batch_size": 64, "epochs": 100, "schedule": "constant", "lr_step": "epoch"},
               "finetune": {"batch_size": 64, "epochs": 20, "schedule": "multistep", "gamma": 0.1,
                            "lr_step": "iteration"},
               "detector": {"tokens": {"positional": False}}, "fpr95": "closest"},
}


def ood_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The detector and scoring settings of ``ood``: the preset's values under the config's own keys; for paper1
    stage 2's milestone is half its epochs (in iterations) unless ``ood.finetune.milestones`` is set."""
    o, preset = cfg["ood"], OOD_PRESETS[cfg["ood"]["preset"]]
    out = {"seed": o["seed"], "detector": {k: {**preset.get("detector", {}).get(k, {}), **o["detector"][k]}
                                           for k in ("conv", "tokens")},
           **{k: {**preset.get(k, {}), **o[k]} for k in ("pretrain", "finetune")},
           "fpr95": o["fpr95"] or preset.get("fpr95", "at_least")}
    if o["preset"] == "paper1" and "milestones" not in o["finetune"]:
        out["finetune"]["milestones"] = [out["finetune"]["epochs"] // 2]
    return canonical(out)


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
    pair of `network`, Fig. 6 on its first pair, Figs. 7–8 on its first or every pair (`curves`), Fig. 5 on the
    first network of its architecture stitched into itself."""
    if not cfg["frankenstein"]["enabled"]:
        return []
    f = frankenstein_settings(cfg)
    archs = dict.fromkeys([*f["architectures"], *f["widths"]])
    runs = [("layers", s, t) for a in archs for s, t in frankenstein_pairs(cfg, a)]
    pairs = frankenstein_pairs(cfg, f["network"])
    curves = pairs if f["curves"] == "every_pair" else pairs[:1]
    runs += [("track", s, t) for s, t in pairs] + [("inits", *pairs[0])]
    runs += [(e, s, t) for e in ("lowrank", "sparsity") for s, t in curves]
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
    _check_samples(cfg, "frankenstein.dm.samples", r["dm"]["samples"], "train")
