# Config validation (before any job), target lists, wildcard constraints and input functions.
# Nothing here scans the filesystem: every cluster job re-parses this file.

import sys

from snakemake.exceptions import WorkflowError

sys.path.insert(0, workflow.basedir)  # stitchlib from this checkout, also under --software-deployment-method conda

from stitchlib import config as sconf
from stitchlib import footprint
from stitchlib.pipeline import network_spec
from stitchlib.report import INDEX_LABELS, MEASURES

try:
    config.update(sconf.validate(config))
except sconf.ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None

R = config["results"]
THREADS = config["threads"]
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


def ckpt(dataset, net):
    return f"{R}/models/{dataset}/{net}.pt"


def acts(dataset, net, split):
    return f"{R}/activations/{dataset}/{net}/{split}.h5"


def stitch_file(dataset, method, src, tgt, ext):
    return f"{R}/stitching/{dataset}/{method}/{src}__{tgt}.{ext}"


def pairs():
    """Every (source, target) network pair the config asks for, once each."""
    seen = {}
    for setting in config["stitching"]["settings"]:
        for p in sconf.network_pairs(config, setting):
            seen[p] = None
    return list(seen)


def stitching_csvs(dataset):
    return [stitch_file(dataset, m, s, t, "csv") for m in config["stitching"]["methods"] for s, t in pairs()]


def arch_networks(arch):
    return [sconf.network_id(arch, s) for s in config["seeds"]]


def index_csvs(dataset):
    return [f"{R}/similarity/{dataset}/{arch}.csv" for arch in sconf.matrix_architectures(config)] \
        if config["similarity"]["measures"] else []


def table_measures():
    """Every measure of the run, as labelled in tables and figures."""
    methods = config["stitching"]["methods"]
    found = (["TLM"] if "tlm" in methods else []) + (["DM (func.)", "DM (struct.)"] if "dm" in methods else [])
    found += [INDEX_LABELS[m] for m in config["similarity"]["measures"]]
    return [m for m in MEASURES if m in found]


def heatmap_specs():
    """(measure, architecture, setting) of every heatmap, in the order of heatmaps(dataset)."""
    return [(m, arch, setting) for m in table_measures() for arch in sconf.matrix_architectures(config)
            for setting in config["stitching"]["settings"]]


def heatmaps(dataset):
    return [f"{R}/figures/{dataset}/{setting}/{arch}/{MEASURES[m].slug}.png" for m, arch, setting in heatmap_specs()]


def table1(dataset):
    return [f"{R}/tables/{dataset}/table1.csv", f"{R}/tables/{dataset}/table1.md"]


def detectors(dataset, net):
    arch = sconf.parse_network(net)[0]
    return [f"{R}/ood/{dataset}/detectors/{net}/{layer}.pt" for layer in sconf.layers(config, arch)]


def ood_score_files(dataset, ext):
    return [f"{R}/ood/{dataset}/scores/{m}/{s}__{t}.{ext}" for m in config["stitching"]["methods"] for s, t in pairs()]


def energy_plots(dataset):
    """Paper 1 Fig. 1c: the first network of each architecture, intra, first layer as the target."""
    return [(m, sconf.network_id(arch, config["seeds"][0]), sconf.layers(config, arch)[0])
            for m in config["stitching"]["methods"] for arch in sconf.matrix_architectures(config)
            if "intra" in config["stitching"]["settings"]]


# Each study's rule file appends its final outputs here (a list of functions of the dataset name).
STUDY_TARGETS = []


def all_targets():
    ood = [f"{R}/figures/{d}/ood" for d in config["datasets"]] if config["ood"]["enabled"] else []
    studies = [f for d in config["datasets"] for study in STUDY_TARGETS for f in study(d)]
    return [f for d in config["datasets"] for f in table1(d) + heatmaps(d)] + ood + studies


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


def detector_inputs(w):
    """The layer's activations: cached training split, outliers and held-out outliers, or the checkpoint that
    recomputes them (cache.consumers.detector)."""
    files = {"train": acts(w.dataset, w.net, "train"), "test": acts(w.dataset, w.net, "test")}
    if FRONTS["detector"]["policy"] == "cache":
        return {**files, "outliers": acts(w.dataset, w.net, "outliers"), "heldout": acts(w.dataset, w.net, "heldout")}
    return {**files, "ckpt": ckpt(w.dataset, w.net)}


# ----------------------------------------------------------------------------- Ding et al. tests


def ding_specs(dataset, arch):
    return {net: network_spec(config, dataset, net) for net in arch_networks(arch)}


def ding_tables(dataset):
    return [f"{R}/tables/{dataset}/table{t}.{ext}" for t in (2, 3) for ext in ("csv", "md")]


# ----------------------------------------------------------------------------- cross-architecture study


def cross_state_files(dataset, net, state):
    """Checkpoint and activation files of a network, trained or at its seeded initialisation ('random')."""
    if state == "trained":
        return ckpt(dataset, net), {s: acts(dataset, net, s) for s in ("train", "test")}
    return f"{R}/models/{dataset}/init/{net}.pt", {s: f"{R}/activations/{dataset}/init/{net}/{s}.h5"
                                                    for s in ("train", "test")}


def cross_pair_inputs(w):
    src_state, tgt_state = sconf.CONTROLS[w.condition]
    src_ckpt, src = cross_state_files(w.dataset, w.src, src_state)
    tgt_ckpt, tgt = cross_state_files(w.dataset, w.tgt, tgt_state)
    return {"src_train": src["train"], "src_test": src["test"], "tgt_train": tgt["train"], "tgt_test": tgt["test"],
            "src_ckpt": src_ckpt, "tgt_ckpt": tgt_ckpt}


def cross_pair_file(dataset, condition, method, src, tgt, ext):
    return f"{R}/stitching/{dataset}/cross/{condition}/{method}/{src}__{tgt}.{ext}"


def cross_figures(dataset):
    """(grid, condition, method) → per-pair matrices figure; method → triangle figure."""
    jobs = sconf.cross_pairs(config)
    pairs = {(g, c, m): f"{R}/figures/{dataset}/cross/pairs_{g}_{c}_{m}.png"
             for g, c in dict.fromkeys((g, c) for g, c, _, _ in jobs) for m in ("dm", "tlm")}
    triangle = {m: f"{R}/figures/{dataset}/cross/triangle_{m}.png" for m in ("dm", "tlm")} \
        if config["cross"]["architectures"] else {}
    return pairs, triangle


def cross_targets(dataset):
    if not sconf.cross_pairs(config):
        return []
    pairs, triangle = cross_figures(dataset)
    return [f"{R}/tables/{dataset}/cross/summary.{e}" for e in ("csv", "md")] + list(triangle.values()) \
        + list(pairs.values())


# ----------------------------------------------------------------------------- paper 2's matching studies

FRANK = sconf.frankenstein_settings(config)
FRANK_CSV = {"layers", "track", "cka_penalty", "lowrank"}  # experiments that write one CSV per network pair
# the settings each experiment reads beyond dm and tlm: a job's params are only these, so a change to one
# experiment's settings reruns only its jobs (and the figures)
FRANK_KEYS = {"layers": [], "track": ["track"], "cka_penalty": ["cka_penalty"], "lowrank": ["lowrank"],
              "inits": ["inits", "mode_connectivity"], "sparsity": ["sparsity"]}


def frank_settings(experiment):
    return {k: FRANK[k] for k in ("dm", "tlm", *FRANK_KEYS[experiment])}


def frank_file(dataset, experiment, src, tgt, ext="csv"):
    return f"{R}/frankenstein/{dataset}/{experiment}/{src}__{tgt}.{ext}"


def frank_runs():
    return sconf.frankenstein_runs(config)


def frank_results(dataset):
    """Every experiment's output files, by experiment (the figures job's inputs)."""
    out = {}
    for e, s, t in frank_runs():
        out.setdefault(e, []).append(frank_file(dataset, e, s, t))
        if e == "inits":
            out.setdefault("mode", []).append(frank_file(dataset, "mode", s, t))
        if e == "sparsity":
            out.setdefault("matrices", []).append(frank_file(dataset, "sparsity", s, t, "npz"))
    return out


def frank_figure_names():
    """Paper 2's figures (Fig. 3 only when the study has width variants)."""
    names = ["fig2_layers", "fig3_width", "fig4_tracking", "fig5_cka_penalty", "fig6_inits", "fig7_low_rank",
             "fig8_sparsity", "exp6_mode_connectivity"]
    return [n for n in names if n != "fig3_width" or FRANK["widths"]]


def frank_targets(dataset):
    if not frank_runs():
        return []
    return [f"{R}/figures/{dataset}/frankenstein/{name}.png" for name in frank_figure_names()] + \
        [f"{R}/tables/{dataset}/frankenstein/summary.{ext}" for ext in ("csv", "md")]
