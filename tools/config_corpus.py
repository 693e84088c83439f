"""A corpus of malformed configs, generated over every key of the schema and every class of mistake, and how many
the checks reject before any job with the offending key named (issue 18's measure; the tests hold other cases).

    python tools/config_corpus.py [--snakemake N] [--seed 0] [--show-misses]

Each case is one mistake applied to a valid base config (the embedded default; a network of your own with real
state-dict files; paper 1 on CIFAR-10 pointed at files in its data layout, for the outliers .npy):

- generated from the schema, for every key it reaches (``$ref`` followed; one existing entry of each map such as
  ``architectures.<name>``): by the key's type, an integral float, a float beyond any integer, a huge integer, NaN,
  infinity, a numeric string, a boolean, a value below the minimum, an unknown enum value, a scalar for a list, an
  empty or duplicated list, a list for a mapping, an unknown key, an unusable name, a too long name;
- generated from the catalog for every built-in family parameter: zero, a float, NaN, out of range, and for
  attention a head count that does not divide the width;
- written by hand for what no type says: YAML errors and keys given twice (top level and nested), a per-seed
  state-dict pattern without ``{seed}``, two networks sharing one file, a CSV or a zip as a state dict, a typo in a
  factory's module or keyword arguments, a non-module factory, ``results`` on a file, a float or truncated outliers
  .npy, swapped energy margins, too few samples, unusable layer names, layers that do not exist, float seeds.

A case counts as rejected *before any job* when ``stitchlib.config.load`` — what the Snakefile runs on every
``snakemake`` — raises a ConfigError whose message names the mutated key path (a YAML syntax error: file, line
and column); ``stitchlib check-config`` (which also builds networks and detectors with torch) is counted apart.
``--snakemake N`` reruns N random cases through a real ``snakemake -n`` to show the workflow stops the same way.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import re
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_dag  # noqa: E402

from stitchlib import catalog, config  # noqa: E402


@dataclass
class Case:
    kind: str         # the class of mistake
    key: str          # the key path the message must name
    base: str         # which base config
    mutate: object    # dict -> dict, or (text) -> text when text=True
    text: bool = False
    expect: str | None = None  # what the message must contain instead of the key (YAML syntax errors: "line:col")
    results: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- the base configs

def bases(work: Path) -> dict[str, dict]:
    """name -> a valid raw config (files it names created under ``work``)."""
    import torch

    default = yaml.safe_load((ROOT / "config.yaml").read_text())
    (work / "nets").mkdir()
    for seed in (0, 1):
        torch.save({"w": torch.zeros(1)}, work / f"nets/vit-s{seed}.pt")
    byo = {"datasets": {"digits": {"image_size": 16}}, "seeds": [0, 1],
           "architectures": {"vit": {"family": "custom", "params": {
               "factory": "torchvision.models.vision_transformer.VisionTransformer",
               "kwargs": {"image_size": 16, "patch_size": 4, "num_layers": 2, "num_heads": 2, "hidden_dim": 16,
                          "mlp_dim": 32, "num_classes": 10},
               "points": ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"],
               "names": ["block0", "block1"], "state_dict": str(work / "nets/vit-s{seed}.pt")}}},
           "ood": {"detector": {"tokens": {"hidden_dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32}}},
           "dm": {"samples": 100}}
    paper = yaml.safe_load(bench_dag.fake_config(ROOT / "configs" / "paper1-cifar10.yaml", work).read_text())
    out = {"default": default, "byo": byo, "paper1-cifar10": paper}
    for raw in out.values():  # each base must be valid, or the corpus measures nothing
        config.validate(raw)
    return out


# ----------------------------------------------------------------------------- cases from the schema

def _resolve(node: dict, schema: dict) -> dict:
    while "$ref" in node:
        rest = {k: v for k, v in node.items() if k != "$ref"}
        node = {**_resolve(schema["$defs"][node["$ref"].split("/")[-1]], schema), **rest,
                "properties": {**schema["$defs"][node["$ref"].split("/")[-1]].get("properties", {}),
                               **rest.get("properties", {})}}
    return node


def _leaves(node: dict, schema: dict, path: list, raw: dict):
    """(key path, schema of the key) of every key below ``node``; maps descend into one existing entry."""
    node = _resolve(node, schema)
    props = node.get("properties", {})
    for key, sub in props.items():
        sub = _resolve(sub, schema)
        yield [*path, key], sub
        if "properties" in sub or isinstance(sub.get("additionalProperties"), dict):
            yield from _leaves(sub, schema, [*path, key], raw)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and not props:
        here = _get(raw, path)
        if isinstance(here, dict) and here:
            key = sorted(here)[0]
            sub = _resolve(extra, schema)
            yield [*path, key], sub
            if "properties" in sub:
                yield from _leaves(sub, schema, [*path, key], raw)


def _get(raw, path):
    for p in path:
        if not isinstance(raw, dict) or p not in raw:
            return None
        raw = raw[p]
    return raw


def _set(raw: dict, path: list, value) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    for p in path[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            return raw
    node[path[-1]] = value
    return raw


def _types(sub: dict) -> set[str]:
    t = sub.get("type", [])
    types = {t} if isinstance(t, str) else set(t)
    for alt in sub.get("oneOf", []) + sub.get("anyOf", []):
        types |= _types(alt)
    return types


def _bad_values(sub: dict) -> list[tuple[str, object]]:
    """(kind, value) mistakes that no value of this key's schema accepts."""
    types, out = _types(sub), []
    lo = sub.get("minimum", sub.get("exclusiveMinimum"))
    for alt in sub.get("oneOf", []):
        lo = alt.get("minimum", alt.get("exclusiveMinimum", lo))
    if "integer" in types and "number" not in types:
        out += [("integral float", 3.0), ("float beyond any integer", 1.0e308), ("huge integer", 10**30),
                ("NaN", math.nan), ("numeric string", "3"), ("boolean", True)]
        if lo is not None and lo >= 0:
            out.append(("below the minimum", -1))
    elif "number" in types:
        out += [("NaN", math.nan), ("infinity", math.inf), ("word for a number", "fast"), ("boolean", True)]
        if lo is not None and lo >= 0:
            out.append(("below the minimum", -1.0))
    if "boolean" in types and len(types) == 1:
        out += [("string for a boolean", "yes"), ("number for a boolean", 1)]
    enum = sub.get("enum") or [v for alt in sub.get("oneOf", []) for v in alt.get("enum", []) + [alt.get("const")]
                               if alt.get("const") is not None]
    if enum and not types & {"string"}:
        out += [("unknown enum value", "bogus_value"), ("list for an enum", [enum[0]])]
    if types == {"array"} or types == {"array", "null"}:
        out.append(("scalar for a list", 7))
        if sub.get("minItems"):
            out.append(("empty list", []))
    if "object" in types and len(types) == 1:
        out.append(("list for a mapping", [1]))
        if sub.get("additionalProperties") is False:
            out.append(("unknown key", {"bogus_key": 1}))
    if sub.get("pattern") and "string" in types:
        out.append(("string outside its pattern", "a b;c"))
    if sub.get("maxLength"):
        out.append(("too long string", "n" * (sub["maxLength"] + 1)))
    return out


def schema_cases(name: str, raw: dict) -> list[Case]:
    schema = config.schema()
    cases = []
    for path, sub in _leaves(schema, schema, [], raw):
        if path[-1] in ("kwargs", "params", "root", "download"):
            continue  # free-form values (a factory's kwargs), family params (below), paths ignored by bundled data
        for kind, value in _bad_values(sub):
            cases.append(Case(kind, _key(path), name, lambda r, p=path, v=value: _set(r, p, v)))
    return cases


def _key(path) -> str:
    return config._path(path)


# ----------------------------------------------------------------------------- cases from the catalog

def family_cases(name: str, raw: dict) -> list[Case]:
    cases = []
    for arch, a in raw["architectures"].items():
        defaults = catalog.FAMILIES[a["family"]].params
        for param, default in defaults.items():
            if a["family"] == "custom" or isinstance(default, (bool, str, dict)):
                continue
            where = ["architectures", arch, "params", param]
            values = [("NaN parameter", math.nan),
                      ("out of range parameter", [10**6] if isinstance(default, list) else 10**6)]
            if isinstance(default, (int, list)):
                values.append(("zero width, depth or blocks", [0] if isinstance(default, list) else 0))
            if isinstance(default, int):
                values.append(("float parameter", float(default)))
            for kind, value in values:
                cases.append(Case(kind, _key(where), name, lambda r, p=where, v=value: _set(r, p, v)))
        if a["family"] == "vit":
            p = catalog.architecture_params("vit", a["params"])
            heads = next(h for h in range(2, 64) if p["hidden_dim"] % h)
            where = ["architectures", arch, "params", "heads"]
            cases.append(Case("heads not dividing the width", _key(where), name,
                              lambda r, p=where, v=heads: _set(r, p, v)))
    return cases


# ----------------------------------------------------------------------------- cases written by hand

def manual_cases(work: Path) -> list[Case]:
    csv, zipped, floats, short = (work / n for n in ("weights.csv", "weights.zip", "float.npy", "short.npy"))
    csv.write_text("layer,weight\n1,2\n")
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("weights/0.npy", b"")
    np.save(floats, np.zeros((20, 32, 32, 3), np.float32))
    np.save(short, np.zeros((20, 32, 32, 3), np.uint8))
    short.write_bytes(short.read_bytes()[:-100])
    (work / "afile").write_text("")
    sd = ["architectures", "vit", "params"]

    def yaml_text(edit):
        return lambda text: edit(text)

    c = [
        Case("key given twice (top level)", "seeds", "default", yaml_text(lambda t: t + "\nseeds: [0, 5]\n"), True),
        Case("key given twice (nested)", "tlm.epochs", "default",
             yaml_text(lambda t: t.replace("tlm:                  #", "tlm:\n  epochs: 9\n  #", 1)), True),
        Case("key given twice (in a flow mapping)", "architectures.vit.train.epochs", "default",
             yaml_text(lambda t: t.replace("train: {epochs: 30, schedule: cosine}",
                                           "train: {epochs: 30, schedule: cosine, epochs: 3}", 1)), True),
        Case("YAML syntax error", "", "default", yaml_text(lambda t: t.replace("seeds: [0, 1, 2]", "seeds: [0, 1, 2")),
             True, expect=r"config\.yaml:\d+:\d+: not valid YAML"),
        Case("YAML tab indentation", "", "default",
             yaml_text(lambda t: t.replace("  digits:\n", "\tdigits:\n", 1)), True,
             expect=r"config\.yaml:\d+:\d+: not valid YAML"),
        Case("state_dict without {seed}", "architectures.vit.params.state_dict", "byo",
             lambda r: _set(r, [*sd, "state_dict"], str(work / "nets/vit-s0.pt"))),
        Case("CSV as a state dict", "architectures.vit.params.state_dict", "byo",
             lambda r: _link_seeds(work, csv, r, sd)),
        Case("zip without torch's data.pkl as a state dict", "architectures.vit.params.state_dict", "byo",
             lambda r: _link_seeds(work, zipped, r, sd)),
        Case("factory module typo", "architectures.vit.params.factory", "byo",
             lambda r: _set(r, [*sd, "factory"], "torchvision.modles.vision_transformer.VisionTransformer")),
        Case("factory attribute typo", "architectures.vit.params.factory", "byo",
             lambda r: _set(r, [*sd, "factory"], "torchvision.models.vision_transformer.VisionTransfomer")),
        Case("factory kwargs typo", "architectures.vit.params.kwargs", "byo",
             lambda r: _set(r, [*sd, "kwargs", "num_layer"], 2)),
        Case("heads not dividing the width (own network)", "architectures.vit.params.kwargs", "byo",
             lambda r: _set(r, [*sd, "kwargs", "num_heads"], 3)),
        Case("a factory that is no nn.Module", "architectures.vit.params.factory", "byo",
             lambda r: _set(r, [*sd, "factory"], "collections.OrderedDict")),
        Case("a built-in as factory", "architectures.vit.params.factory", "byo",
             lambda r: _set(r, [*sd, "factory"], "os.getcwd")),
        Case("layer name '..'", "architectures.vit.params.names", "byo",
             lambda r: _set(r, [*sd, "names"], ["..", "b"])),
        Case("layer name with a slash", "architectures.vit.params.names", "byo",
             lambda r: _set(r, [*sd, "names"], ["a/b", "c"])),
        Case("results on a file", "results", "default", lambda r: _set(r, ["results"], str(work / "afile"))),
        Case("results below a file", "results", "default", lambda r: _set(r, ["results"], str(work / "afile/out"))),
        Case("float outliers .npy", "ood.outliers.path", "paper1-cifar10",
             lambda r: _set(r, ["ood", "outliers", "path"], str(floats))),
        Case("truncated outliers .npy", "ood.outliers.path", "paper1-cifar10",
             lambda r: _set(r, ["ood", "outliers", "path"], str(short))),
        Case("CSV as outliers .npy", "ood.outliers.path", "paper1-cifar10",
             lambda r: _set(r, ["ood", "outliers", "path"], str(csv))),
        Case("energy margins swapped", "ood.finetune.m_in", "default",
             lambda r: _set(r, ["ood", "finetune"], {"m_in": -7.0, "m_out": -25.0})),
        Case("m_in above the default m_out", "ood.finetune.m_in", "default",
             lambda r: _set(r, ["ood", "finetune"], {"m_in": 0.0})),
        Case("detector heads not dividing its width", "ood.detector.tokens.heads", "default",
             lambda r: _set(r, ["ood", "detector", "tokens"], {"hidden_dim": 32, "depth": 2, "heads": 3,
                                                              "mlp_dim": 64})),
        Case("2 samples per index", "similarity.samples", "default", lambda r: _set(r, ["similarity", "samples"], 2)),
        Case("K beyond the training split", "dm.samples", "paper1-cifar10",
             lambda r: _set(r, ["dm", "samples"], 60000)),
        Case("float seeds", "seeds[0]", "default", lambda r: _set(r, ["seeds"], [0.0, 1.0, 2.0])),
        Case("seed as a string", "seeds[1]", "default", lambda r: _set(r, ["seeds"], [0, "1"])),
        Case("layer that does not exist", "architectures.resnet18.layers[0]", "default",
             lambda r: _set(r, ["architectures", "resnet18", "layers"], ["layer5.0"])),
        Case("layers out of order", "architectures.resnet18.layers", "default",
             lambda r: _set(r, ["architectures", "resnet18", "layers"], ["layer2.0", "layer1.0"])),
        Case("patch size not dividing the image", "architectures.vit.params.patch_size", "default",
             lambda r: _set(r, ["architectures", "vit", "params", "patch_size"], 3)),
        Case("unknown dataset", "datasets.mnist", "default", lambda r: _set(r, ["datasets"], {"mnist": {}})),
        Case("architecture name too long", "architectures", "default",
             lambda r: _set(r, ["architectures", "a" * 100], {"family": "vit"})),
        Case("stitching names an unknown architecture", "stitching.architectures[0]", "default",
             lambda r: _set(r, ["stitching", "architectures"], ["resnet19"])),
        Case("inter with one seed", "stitching.settings", "default", lambda r: _set(r, ["seeds"], [0])),
        Case("cross names a non-resnet", "cross.architectures[0]", "default",
             lambda r: _set(r, ["cross", "architectures"], ["vit"])),
    ]
    return c


def _link_seeds(work: Path, target: Path, raw: dict, sd: list) -> dict:
    """Point every seed's state dict at a copy of ``target``."""
    for seed in (0, 1):
        (work / f"bad-s{seed}.pt").write_bytes(target.read_bytes())
    return _set(raw, [*sd, "state_dict"], str(work / "bad-s{seed}.pt"))


# ----------------------------------------------------------------------------- measuring

def run_case(case: Case, base: dict, work: Path, deep: bool) -> None:
    path = work / "config.yaml"
    if case.text:  # a mistake in the file as written: applied to the default config's own text
        text = (ROOT / "config.yaml").read_text()
        assert case.mutate(text) != text, case.kind
        path.write_text(case.mutate(text))
    else:
        path.write_text(yaml.safe_dump(case.mutate(copy.deepcopy(base)), sort_keys=False))
    named = re.compile(case.expect or rf"(^|\s|config key ){re.escape(case.key)}(?!\w)")
    for stage in ("parse", "check-config"):
        if stage == "check-config" and not deep:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cfg = config.load(path)
                if stage == "check-config":
                    from stitchlib import pipeline

                    pipeline.check_buildable(cfg)
            case.results[stage] = "accepted"
        except config.ConfigError as e:
            case.results[stage] = "named" if named.search(str(e)) else f"other key: {str(e)[:160]}"
            case.results["message"] = str(e)
        except Exception as e:  # noqa: BLE001 - a crash is a miss too
            case.results[stage] = f"crash: {type(e).__name__}: {str(e)[:120]}"
        if case.results[stage] == "named":
            case.results.setdefault("first", stage)
            break


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snakemake", type=int, default=0, help="also run N random cases through snakemake -n")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show-misses", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stitchlib-corpus-") as tmp:
        work = Path(tmp)
        base = bases(work)
        origin = {"from the schema": [c for name, raw in base.items() if name != "paper1-cifar10"
                                      for c in schema_cases(name, raw)],
                  "from the catalog": family_cases("default", base["default"]), "by hand": manual_cases(work)}
        cases = [c for cs in origin.values() for c in cs]
        for case in cases:
            run_case(case, base[case.base], work, deep=True)
        by_kind: dict[str, list[Case]] = {}
        for case in cases:
            by_kind.setdefault(case.kind, []).append(case)
        print(f"{'class of mistake':<44} {'cases':>5} {'before any job':>15} {'check-config':>13}")
        for kind, cs in sorted(by_kind.items()):
            parse = sum(c.results.get("first") == "parse" for c in cs)
            deep = sum(c.results.get("first") is not None for c in cs)
            print(f"{kind:<44} {len(cs):>5} {parse:>15} {deep:>13}")
        parse = sum(c.results.get("first") == "parse" for c in cases)
        deep = sum(c.results.get("first") is not None for c in cases)
        print(f"{'all':<44} {len(cases):>5} {parse:>9} ({100 * parse / len(cases):.1f} %) {deep:>6} "
              f"({100 * deep / len(cases):.1f} %)")
        for name, cs in origin.items():
            parse, deep = sum(c.results.get("first") == "parse" for c in cs), sum("first" in c.results for c in cs)
            print(f"  {name:<42} {len(cs):>5} {parse:>9} ({100 * parse / len(cs):.1f} %) {deep:>6} "
                  f"({100 * deep / len(cs):.1f} %)")
        misses = [c for c in cases if c.results.get("first") != "parse"]
        if args.show_misses or len(misses) <= 20:
            for c in misses:
                print(f"  not before any job: [{c.base}] {c.kind} at {c.key}: {c.results}")
        if args.snakemake:
            rng = random.Random(args.seed)
            sample = rng.sample([c for c in cases if c.results.get("first") == "parse"], args.snakemake)
            agree = 0
            for c in sample:
                run_case(c, base[c.base], work, deep=False)
                out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n",
                                      "--configfile", str(work / "config.yaml")], cwd=work, capture_output=True,
                                     text=True, timeout=300)
                text = out.stdout + out.stderr
                ok = out.returncode != 0 and "invalid configuration" in text and c.results["message"] in \
                    text.replace("\n", " ")
                agree += ok
                if not ok:
                    print(f"  snakemake differs on [{c.base}] {c.kind} at {c.key}: rc {out.returncode}")
            print(f"snakemake -n stopped {agree} of {len(sample)} sampled cases with the same message, before any job")
    return 0


if __name__ == "__main__":
    sys.exit(main())
