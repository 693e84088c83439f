"""The code's structure: a torch-free workflow parse, one registry per axis that everything derives from, and
modules that import downward only (CONTRIBUTING.md says which files an addition touches)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stitchlib import catalog, config, data, models, similarity, stitching

ROOT = Path(__file__).resolve().parents[1]

# Each module imports stitchlib modules of strictly lower layers only (function-level imports included).
LAYERS = [
    {"catalog", "progress", "stitchable"},  # facts and interfaces: no stitchlib imports
    {"config", "io"},  # the validated config and the artifact store
    {"tasks", "data", "hooked", "footprint"},  # datasets and scoring; networks of your own; memory and disk estimates
    {"models", "train"},  # the architectures; network training
    {"stitching", "similarity", "ood", "plotting"},  # the computations, figures
    {"uncertainty"},  # the intervals of what they compute
    {"report", "html_report"},  # tables
    {"pipeline", "api"},  # paper 1's stages; the notebook API
    {"ding", "frankenstein", "crossarch"},  # the studies built on the stages
    {"cli"},
]
LAZY = {"__init__", "cli"}  # entry points that import on demand, so `import stitchlib` and the CLI start fast


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(stitchlib module, imported inside a function?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "stitchlib":
            names = [a.name for a in node.names] if node.module == "stitchlib" else [node.module.split(".")[1]]
            out += [(n, id(node) in nested) for n in names if n != "__version__"]
        elif isinstance(node, ast.Import):
            out += [(a.name.split(".")[1], id(node) in nested) for a in node.names if a.name.startswith("stitchlib.")]
    return out


def test_modules_import_downward_only():
    layer = {m: i for i, ms in enumerate(LAYERS) for m in ms}
    modules = {p.stem for p in (ROOT / "stitchlib").glob("*.py")} - {"__init__"}
    assert modules == set(layer), f"place every module in a layer: {sorted(modules ^ set(layer))}"
    for path in sorted((ROOT / "stitchlib").glob("*.py")):
        for dep, nested in _imports(path):
            if path.stem == "__init__":
                continue
            assert layer[dep] < layer[path.stem], f"{path.stem} (layer {layer[path.stem]}) imports {dep} " \
                                                  f"(layer {layer[dep]}): import downward only"
            assert not nested or path.stem in LAZY, f"{path.stem} imports {dep} inside a function: at the top"


def test_no_module_uses_another_modules_private_names():
    pattern = re.compile(r"from stitchlib\.\w+ import[^\n]*\b_[a-z]\w*|\b(?:pipeline|report|similarity|sim|io|models|"
                         r"stitching|ood|catalog|config|sconf|data|tasks|train|hooked|plotting)\._[a-z]\w*")
    files = [*(ROOT / "stitchlib").glob("*.py"), *(ROOT / "workflow_scripts").glob("*.py"),
             *(ROOT / "rules").glob("*.smk")]
    hits = [f"{p.name}: {m.group(0)}" for p in files for m in pattern.finditer(p.read_text())]
    assert not hits


def test_rules_use_named_input_functions():
    """Snakemake's best practice: input functions live in rules/common.smk by name, rules hold no lambdas."""
    hits = [f"{p.name}:{i}" for p in (ROOT / "rules").glob("*.smk")
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\blambda\b", line)]
    assert not hits


def test_registries_agree():
    schema = config.schema()
    assert schema["$defs"]["index"]["enum"] == catalog.INDICES
    assert set(similarity.KERNELS) == set(catalog.INDICES)  # a kernel for every index and no other
    assert schema["$defs"]["family"]["enum"] == list(catalog.FAMILIES)
    assert set(models.ARCHITECTURES) == set(catalog.FAMILIES)  # a builder for every family and no other
    assert set(data.LOADERS) == set(catalog.DATASETS)  # a loader for every dataset and no other
    assert schema["$defs"]["reshape"]["enum"] == list(catalog.RESHAPES) == list(similarity.RESHAPES)
    assert schema["$defs"]["conv_stitch"]["enum"] == list(catalog.CONV_STITCHES) == list(stitching.CONV_STITCHES)
    assert set(schema["$defs"]["ding_index"]["enum"]) <= set(catalog.INDICES)
    assert set(config.DEFAULT_RESHAPE) == set(catalog.INDICES)
    assert set(config.DEFAULT_RESHAPE.values()) <= set(catalog.RESHAPES)
    # the YAML file names no registry entry itself: every enum of a registry axis is filled in from the registry
    raw = (ROOT / "stitchlib" / "config.schema.yaml").read_text()
    for name in ("lcka_debiased", "mean_cca", "resnet18", "googlenet", "positions", "bilinear"):
        assert not re.search(rf"enum: \[[^\]]*\b{name}\b", raw), name
    labels = [m.label for m in catalog.MEASURES.values()]
    assert len(set(labels)) == len(labels) and len({m.slug for m in catalog.MEASURES.values()}) == len(labels)


def test_a_new_index_is_one_registry_entry_and_its_kernel(monkeypatch):
    """What CONTRIBUTING.md promises: register a measure and its kernel, and the schema, the default reshape and
    the tables' labels and directions follow."""
    toy = catalog.Measure("toy", "Toy", "toy", False, symmetric=True, default_reshape="pool")
    monkeypatch.setitem(catalog.MEASURES, "toy", toy)
    monkeypatch.setattr(catalog, "INDICES", [*catalog.INDICES, "toy"])
    monkeypatch.setitem(catalog.LABELS, "Toy", toy)
    monkeypatch.setitem(similarity.KERNELS, "toy", lambda q: 0.5)
    monkeypatch.setitem(config.REGISTRY_ENUMS, "index", catalog.INDICES)
    monkeypatch.setitem(config.DEFAULT_RESHAPE, "toy", "pool")
    config.schema.cache_clear()
    config._validator.cache_clear()
    try:
        cfg = config.load(ROOT / "tests" / "configs" / "tiny.yaml")
        cfg["similarity"]["measures"] = ["lcka", "toy"]
        cfg = config.validate(cfg)
        assert cfg["similarity"]["reshape"]["toy"] == "pool"
        assert catalog.measure("Toy").quantity == "distance"
    finally:
        config.schema.cache_clear()
        config._validator.cache_clear()


PROBE = """
import sys
from snakemake.cli import main
try:
    main(["-n", "--quiet", "rules", "--snakefile", {snakefile!r}, *{args!r}])
except SystemExit as e:
    code = e.code
print("RESULT", {{"exit": code, "loaded": [m for m in {heavy!r} if m in sys.modules]}})
"""


@pytest.mark.workflow
@pytest.mark.parametrize("configfile", [None, "tests/configs/tiny.yaml"])
def test_workflow_parse_imports_no_torch(configfile):
    """Every SLURM job and every `snakemake -n` parses the workflow: it must not pay for torch (≈ 2.3 s), nor for
    scipy, h5py, matplotlib or scikit-learn (numpy and pandas: Snakemake itself imports them)."""
    heavy = ["torch", "torchvision", "scipy", "h5py", "matplotlib", "sklearn"]
    args = ["--configfile", str(ROOT / configfile)] if configfile else []  # a dry run: nothing is written
    code = PROBE.format(snakefile=str(ROOT / "Snakefile"), args=args, heavy=heavy)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, out.stdout[-2000:] + out.stderr[-2000:]
    result = eval(line[len("RESULT "):])
    assert result == {"exit": 0, "loaded": []}, out.stderr[-2000:]
