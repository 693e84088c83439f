# Config validation (before any job), target lists, wildcard constraints and every input function of the rules.
# Every cluster job and every `snakemake -n` re-parses this file: nothing here imports torch (or anything heavier
# than the config check needs), scans the filesystem, or recomputes what it computed once (specs are memoised).

import sys
import warnings
from functools import cache

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

sys.path.insert(0, workflow.basedir)  # stitchlib from this checkout, also under --software-deployment-method conda

from stitchlib import catalog
from stitchlib import config as sconf
from stitchlib import footprint

try:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", sconf.ConfigWarning)
        config.update(sconf.validate(config))
except sconf.ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None
for w in caught:  # loud, before any job: values that run but mislead
    logger.warning(f"config warning: {w.message}")

R = config["results"]
THREADS = config["threads"]
DEVICE = config["device"]
# Each rule's memory and disk request, from the config's shapes (stitchlib.footprint; `stitchlib plan` prints them).
RESOURCES = footprint.resources(config)


def requested(rule, key):
    return RESOURCES.get(rule, {}).get(key, footprint.DEFAULT_MEM_MB if key == "mem_mb" else 1000)


# Where each consumer of the training split takes its frozen fronts from (cache | recompute), decided here: the
# jobs' inputs depend on it (stitchlib.config.front_policy).
FRONTS = {
    c: {
        "policy": sconf.front_policy(config, c),
        "chunk": config["extract"]["chunk"],
        "buffer": config["cache"]["buffer"],
        "block_mb": config["cache"]["block_mb"],
    }
    for c in sconf.CONSUMERS
}


wildcard_constraints:
    dataset="[A-Za-z][A-Za-z0-9_]*",
    net="[A-Za-z][A-Za-z0-9_]*-s[0-9]+",
    src="[A-Za-z][A-Za-z0-9_]*-s[0-9]+",
    tgt="[A-Za-z][A-Za-z0-9_]*-s[0-9]+",
    split="train|test",
    arch="[A-Za-z][A-Za-z0-9_]*",
    setting="intra|inter",
    slug="[a-z0-9_]+",
    layer="[A-Za-z0-9_.]+",
    method="dm|tlm",


# ----------------------------------------------------------------------------- paths


def ckpt(dataset, net):
    return f"{R}/models/{dataset}/{net}.pt"


def acts(dataset, net, split):
    return f"{R}/activations/{dataset}/{net}/{split}.h5"


def stitch_file(dataset, method, src, tgt, ext):
    return f"{R}/stitching/{dataset}/{method}/{src}__{tgt}.{ext}"


# ----------------------------------------------------------------------------- the grid


@cache
def pairs():
    """Every (source, target) network pair the config asks for, once each."""
    seen = {}
    for setting in config["stitching"]["settings"]:
        for p in sconf.network_pairs(config, setting):
            seen[p] = None
    return list(seen)


def arch_networks(arch):
    return [sconf.network_id(arch, s) for s in config["seeds"]]


@cache
def spec(dataset, net):
    """Everything a job needs to rebuild network ``net`` (config.network_spec), computed once per parse."""
    return sconf.network_spec(config, dataset, net)


def stitching_csvs(dataset):
    return [stitch_file(dataset, m, s, t, "csv") for m in config["stitching"]["methods"] for s, t in pairs()]


def index_csvs(dataset):
    if not config["similarity"]["measures"]:
        return []
    return [f"{R}/similarity/{dataset}/{arch}.csv" for arch in sconf.matrix_architectures(config)]


def table_measures():
    """Every measure of the run, as labelled in tables and figures, in the registry's order."""
    found = catalog.stitching_measures(config["stitching"]["methods"]) + config["similarity"]["measures"]
    return [m.label for name, m in catalog.MEASURES.items() if name in found]


def heatmap_specs():
    """(measure, architecture, setting) of every heatmap, in the order of heatmaps(dataset)."""
    return [
        (m, arch, setting)
        for m in table_measures()
        for arch in sconf.matrix_architectures(config)
        for setting in config["stitching"]["settings"]
    ]


def heatmaps(dataset):
    return [
        f"{R}/figures/{dataset}/{setting}/{arch}/{catalog.measure(m).slug}.png" for m, arch, setting in heatmap_specs()
    ]


def table1(dataset):
    return [f"{R}/tables/{dataset}/table1.{ext}" for ext in ("csv", "md")] + [f"{R}/tables/{dataset}/table1_layers.csv"]


def detectors(dataset, net, ext="pt"):
    """Every layer's detector weights (ext pt), spec (ext json) or energies (ext npz)."""
    arch = sconf.parse_network(net)[0]
    return [f"{R}/ood/{dataset}/detectors/{net}/{layer}.{ext}" for layer in sconf.layers(config, arch)]


def ood_score_files(dataset, ext):
    methods = config["stitching"]["methods"]
    return [f"{R}/ood/{dataset}/scores/{m}/{s}__{t}.{ext}" for m in methods for s, t in pairs()]


def energy_plots(dataset):
    """Paper 1 Fig. 1c: the first network of each architecture, intra, first layer as the target."""
    if "intra" not in config["stitching"]["settings"]:
        return []
    return [
        (m, sconf.network_id(arch, config["seeds"][0]), sconf.layers(config, arch)[0])
        for m in config["stitching"]["methods"]
        for arch in sconf.matrix_architectures(config)
    ]


# Each study's rule file appends its final outputs here (a list of functions of the dataset name).
STUDY_TARGETS = []


@cache
def all_targets():
    ood = [f"{R}/figures/{d}/ood" for d in config["datasets"]] if config["ood"]["enabled"] else []
    studies = [f for d in config["datasets"] for study in STUDY_TARGETS for f in study(d)]
    return [f for d in config["datasets"] for f in table1(d) + heatmaps(d)] + ood + studies


# ----------------------------------------------------------------------------- scheduling

TABLE1_ARCHS = set(sconf.matrix_architectures(config))


def table1_first(wildcards):
    """Priority of a job: Table 1's chain (paper 1's networks, their stitches and indices) runs before the other
    studies, so a new user sees Table 1 and its heatmaps first (Snakemake prefers higher priorities)."""
    nets = [wildcards[k] for k in ("net", "src", "tgt") if k in wildcards.keys()]
    archs = [sconf.parse_network(n)[0] for n in nets] or [wildcards.get("arch")]
    return 10 if all(a in TABLE1_ARCHS for a in archs) else 0


# ----------------------------------------------------------------------------- input functions and params


def net_spec(w):
    return spec(w.dataset, w.net)


def src_spec(w):
    return spec(w.dataset, w.src)


def tgt_spec(w):
    return spec(w.dataset, w.tgt)


def arch_specs(w):
    return {net: spec(w.dataset, net) for net in arch_networks(w.arch)}


def net_ckpt(w):
    return ckpt(w.dataset, w.net)


def state_dict_input(w):
    """The state-dict file a network of your own (family custom) is imported from; none for a trained one."""
    return sconf.state_dict_files(config, w.dataset, w.net)


def train_settings(w):
    return sconf.train_settings(config, sconf.parse_network(w.net)[0])


def net_acts(w):
    """Both cached splits of network ``net``."""
    return {split: acts(w.dataset, w.net, split) for split in ("train", "test")}


def net_acts_and_ckpt(w):
    return {**net_acts(w), "ckpt": net_ckpt(w)}


def pair_inputs(w):
    return {
        "src_train": acts(w.dataset, w.src, "train"),
        "tgt_train": acts(w.dataset, w.tgt, "train"),
        "src_test": acts(w.dataset, w.src, "test"),
        "tgt_test": acts(w.dataset, w.tgt, "test"),
        "src_ckpt": ckpt(w.dataset, w.src),
        "tgt_ckpt": ckpt(w.dataset, w.tgt),
    }


def extract_settings(w):
    """extract's settings for network w.net: whether its training split's fronts are cached, the test subset."""
    arch = sconf.parse_network(w.net)[0]
    return {**config["extract"], "fronts": sconf.caches_train_fronts(config, arch), "test": config["cache"]["test"]}


def dm_stitches(w):
    return stitch_file(w.dataset, "dm", w.src, w.tgt, "pt")


def index_inputs(w):
    return {net: acts(w.dataset, net, "test") for net in arch_networks(w.arch)}


def index_pairs(w):
    return [p for p in pairs() if sconf.parse_network(p[0])[0] == w.arch]


def similarity_inputs(w):
    """The stitching and index CSVs, and beside each its NPZ (per-image terms / bootstrap replicates)."""
    csvs = {"stitching": stitching_csvs(w.dataset), "indices": index_csvs(w.dataset)}
    return {**csvs, **{f"{k}_npz": [p[: -len("csv")] + "npz" for p in v] for k, v in csvs.items()}}


def matrix(w):
    return f"{R}/matrices/{w.dataset}/similarity.csv"


def matrix_replicates(w):
    return f"{R}/matrices/{w.dataset}/similarity.npz"


def heatmap_inputs(w):
    """Every dataset's long table and its replicates (one job draws every heatmap)."""
    return {
        f"{d}{suffix}": f"{R}/matrices/{d}/similarity.{ext}"
        for d in config["datasets"]
        for suffix, ext in (("", "csv"), ("_replicates", "npz"))
    }


# OOD detectors


def detector_inputs(w):
    """The layer's activations: cached training split, outliers and held-out outliers, or the checkpoint that
    recomputes them (cache.consumers.detector)."""
    files = {"train": acts(w.dataset, w.net, "train"), "test": acts(w.dataset, w.net, "test")}
    if FRONTS["detector"]["policy"] == "cache":
        return {**files, "outliers": acts(w.dataset, w.net, "outliers"), "heldout": acts(w.dataset, w.net, "heldout")}
    return {**files, "ckpt": ckpt(w.dataset, w.net)}


DETECTOR_SETTINGS = {k: v for k, v in sconf.ood_settings(config).items() if k != "fpr95"}
FPR95 = sconf.ood_settings(config)["fpr95"]
METHODS = config["stitching"]["methods"]


def detector_files(w):
    """Every layer's detector weights, spec and energies (pipeline.DETECTOR_FILES), for the network's index."""
    return {
        k: detectors(w.dataset, w.net, ext) for k, ext in (("weights", "pt"), ("spec", "json"), ("energies", "npz"))
    }


def ood_score_inputs(w):
    return {
        "stitches": [stitch_file(w.dataset, m, w.src, w.tgt, "pt") for m in METHODS],
        "src_test": acts(w.dataset, w.src, "test"),
        "tgt_test": acts(w.dataset, w.tgt, "test"),
        "detectors": f"{R}/ood/{w.dataset}/detectors/{w.tgt}.json",
    }


def ood_figure_inputs(w):
    return {
        "similarity": matrix(w),
        "scores": ood_score_files(w.dataset, "csv"),
        "energies": ood_score_files(w.dataset, "npz"),
    }


def energy_plots_of(w):
    return energy_plots(w.dataset)


# ----------------------------------------------------------------------------- Ding et al. tests


def ding_tables(dataset):
    return [f"{R}/tables/{dataset}/table{t}.{ext}" for t in (2, 3) for ext in ("csv", "md")]


def sensitivity_layers(w):
    return sconf.sensitivity_layers(config, sconf.parse_network(w.net)[0])


def specificity_inputs(w):
    """Per network of the architecture: its probes, both cached splits and its checkpoint."""
    out = {}
    for net in arch_networks(w.arch):
        out[f"{net}/probes"] = f"{R}/ding/{w.dataset}/probes/{net}.csv"
        out.update({f"{net}/{split}": acts(w.dataset, net, split) for split in ("train", "test")})
        out[f"{net}/ckpt"] = ckpt(w.dataset, net)
    return out


def ding_table_inputs(w):
    return {
        "sensitivity": [f"{R}/ding/{w.dataset}/sensitivity/{net}.csv" for net in sconf.networks(config)],
        "specificity": [f"{R}/ding/{w.dataset}/specificity/{arch}.csv" for arch in sconf.matrix_architectures(config)],
    }


# ----------------------------------------------------------------------------- cross-architecture study

CROSS_JOBS = sconf.cross_pairs(config)


def cross_state_files(dataset, net, state):
    """Checkpoint and activation files of a network, trained or at its seeded initialisation ('random')."""
    if state == "trained":
        return ckpt(dataset, net), {s: acts(dataset, net, s) for s in ("train", "test")}
    splits = {s: f"{R}/activations/{dataset}/init/{net}/{s}.h5" for s in ("train", "test")}
    return f"{R}/models/{dataset}/init/{net}.pt", splits


def cross_pair_inputs(w):
    src_state, tgt_state = sconf.CONTROLS[w.condition]
    src_ckpt, src = cross_state_files(w.dataset, w.src, src_state)
    tgt_ckpt, tgt = cross_state_files(w.dataset, w.tgt, tgt_state)
    return {
        "src_train": src["train"],
        "src_test": src["test"],
        "tgt_train": tgt["train"],
        "tgt_test": tgt["test"],
        "src_ckpt": src_ckpt,
        "tgt_ckpt": tgt_ckpt,
    }


def cross_pair_file(dataset, condition, method, src, tgt, ext):
    return f"{R}/stitching/{dataset}/cross/{condition}/{method}/{src}__{tgt}.{ext}"


def cross_figures(dataset):
    """(grid, condition, method) → per-pair matrices figure; method → triangle figure."""
    grids = dict.fromkeys((g, c) for g, c, _, _ in CROSS_JOBS)
    pairs = {(g, c, m): f"{R}/figures/{dataset}/cross/pairs_{g}_{c}_{m}.png" for g, c in grids for m in ("dm", "tlm")}
    triangle = {}
    if config["cross"]["architectures"]:
        triangle = {m: f"{R}/figures/{dataset}/cross/triangle_{m}.png" for m in ("dm", "tlm")}
    return pairs, triangle


def cross_figures_of(w):
    return cross_figures(w.dataset)


def cross_targets(dataset):
    if not CROSS_JOBS:
        return []
    pairs, triangle = cross_figures(dataset)
    summary = [f"{R}/tables/{dataset}/cross/summary.{e}" for e in ("csv", "md")]
    return summary + list(triangle.values()) + list(pairs.values())


def cross_report_inputs(w):
    return {
        f"{m}{suffix}": [cross_pair_file(w.dataset, c, m, s, t, ext) for _, c, s, t in CROSS_JOBS]
        for m in ("dm", "tlm")
        for suffix, ext in (("", "csv"), ("_npz", "npz"))
    }


def cross_specs(w):
    return {net: spec(w.dataset, net) for _, _, s, t in CROSS_JOBS for net in (s, t)}


# ----------------------------------------------------------------------------- paper 2's matching studies

FRANK = sconf.frankenstein_settings(config)
FRANK_CSV = {"layers", "track", "cka_penalty", "lowrank"}  # experiments that write one CSV per network pair
# the settings each experiment reads beyond dm and tlm: a job's params are only these, so a change to one
# experiment's settings reruns only its jobs (and the figures)
FRANK_KEYS = {
    "layers": [],
    "track": ["track"],
    "cka_penalty": ["cka_penalty"],
    "lowrank": ["lowrank"],
    "inits": ["inits", "mode_connectivity"],
    "sparsity": ["sparsity"],
}


def frank_settings(experiment):
    return {k: FRANK[k] for k in ("dm", "tlm", *FRANK_KEYS[experiment])}


def frank_experiment_settings(w):
    return frank_settings(w.experiment)


def frank_file(dataset, experiment, src, tgt, ext="csv"):
    return f"{R}/frankenstein/{dataset}/{experiment}/{src}__{tgt}.{ext}"


@cache
def frank_runs():
    return sconf.frankenstein_runs(config)


def frank_results(w):
    """Every experiment's output files, by experiment (the figures job's inputs)."""
    out = {}
    for e, s, t in frank_runs():
        out.setdefault(e, []).append(frank_file(w.dataset, e, s, t))
        if e == "inits":
            out.setdefault("mode", []).append(frank_file(w.dataset, "mode", s, t))
        if e == "sparsity":
            out.setdefault("matrices", []).append(frank_file(w.dataset, "sparsity", s, t, "npz"))
    return out


def frank_figure_names():
    """Paper 2's figures (Fig. 3 only when the study has width variants)."""
    names = [
        "fig2_layers",
        "fig3_width",
        "fig4_tracking",
        "fig5_cka_penalty",
        "fig6_inits",
        "fig7_low_rank",
        "fig8_sparsity",
        "exp6_mode_connectivity",
    ]
    return [n for n in names if n != "fig3_width" or FRANK["widths"]]


def frank_targets(dataset):
    if not frank_runs():
        return []
    figures = [f"{R}/figures/{dataset}/frankenstein/{name}.png" for name in frank_figure_names()]
    return figures + [f"{R}/tables/{dataset}/frankenstein/summary.{ext}" for ext in ("csv", "md")]


# ----------------------------------------------------------------------------- the report

REPORT = f"{R}/report.html"


def report_inputs(w):
    return [t for t in all_targets() if t != REPORT]


def report_target(dataset):
    return [REPORT]
