"""The workflow's footprint before it runs: per rule the number of jobs, each job's peak memory and the bytes it
writes, from the config's shapes alone (``catalog.layer_shapes`` and ``catalog.param_count``, no torch).

The rules' ``resources`` (mem_mb, disk_mb) are these estimates plus a margin (:func:`resources`), and
``stitchlib plan CONFIG`` prints them (:func:`report`). Memory is the job's host memory: the imports (``BASE``,
measured), the model weights, what the job holds of a split (images as uint8 for in-memory datasets, shuffle
buffers of cached layers, evaluation blocks, accumulators) and a CPU batch's activations (on a GPU those live in
device memory; ``device: cuda`` adds ``CUDA`` for the libraries instead). The model is checked against measured
peaks by bench/bench_scale.py (README "Paper scale").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from stitchlib import catalog
from stitchlib import config as sconf

MB = 2 ** 20
BASE = 950 * MB    # python, torch, torchvision, scipy, sklearn, h5py, stitchlib (630 MB measured after the imports)
#                    and torch's CPU runtime once it computes (job peaks of bench/bench_scale.py: ≈ 900–1,000 MB)
CUDA = 2560 * MB   # host memory of the CUDA libraries and context in a job that uses a GPU
LIGHT = 400 * MB   # table and figure jobs
F32, F64 = 4, 8
# On a CPU, glibc's heap keeps part of each training step's freed autograd memory, so a job's peak exceeds the
# step's own: bench/bench_scale.py's ViT-Ti/4 TLM, traced over 16 steps, saturated after ~6 at 1.23x (README, Paper
# scale); 1.3 leaves a margin. On a GPU the autograd memory is the device's.
CPU_HEAP = 1.3
INDEX_STATS_BYTES = 8 * 2 ** 30  # layer statistics an indices job holds (pipeline.similarity_indices)
BOOTSTRAP_BYTES = 2 * 2 ** 30  # what one group of its bootstrap over test images holds beside them (bootstrap_groups)


def channels_positions(shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    """Channels and spatial positions (or tokens) of one image's activations at a stitch point."""
    return (shape[-1], shape[0]) if layout == "tokens" else (shape[0], math.prod(shape[1:]))


@dataclass
class Net:
    """What the estimates need of one network on one dataset."""

    arch: str
    dataset: str
    family: str
    layers: dict[str, tuple[tuple[int, ...], str]]   # configured stitch points: shape, layout
    every: dict[str, tuple[tuple[int, ...], str]]    # every stitch point (the whole network's activations)
    params: int
    classes: int
    size: int
    n_train: int
    n_test: int          # cached test images
    image: int           # bytes an in-memory image takes (0: read from files per batch)
    mlp: int = 0
    heads: int = 0

    def numel(self, layer: str) -> int:
        return math.prod(self.layers[layer][0])

    def channels(self, layer: str) -> int:
        return channels_positions(*self.layers[layer])[0]

    def positions(self, layer: str) -> int:
        return channels_positions(*self.layers[layer])[1]

    @property
    def per_image(self) -> int:
        """Elements of one image's activations at every configured stitch point."""
        return sum(self.numel(layer) for layer in self.layers)

    def activations(self, upto: str | None = None) -> int:
        """Bytes of one image's activations while a CPU trains through the network (up to ``upto``): every block's
        intermediates kept for the backward pass (conv: ≈ 8 maps of the block's output size; ViT: q, k, v, the
        attention matrices, the MLP and norms)."""
        names = list(self.every)
        names = names[:names.index(upto) + 1] if upto else names
        if self.family == "vit":
            (t, d), _ = self.every[names[0]]
            return len(names) * F32 * (10 * t * d + 2 * t * self.mlp + 2 * self.heads * t * t)
        return 8 * F32 * sum(math.prod(self.every[n][0]) for n in names)


def _net(cfg: dict[str, Any], arch: str, dataset: str, splits: tuple[int, int] | None = None) -> Net | None:
    a = cfg["architectures"][arch]
    size = sconf.image_size(cfg, dataset)
    every = catalog.layer_shapes(a["family"], a["params"], size)
    facts = catalog.dataset(dataset)
    if every is None:
        return None
    p = catalog.architecture_params(a["family"], a["params"])
    n_train, n_test = splits or facts.splits
    test = cfg["cache"]["test"]["samples"]
    native = facts.image_size
    image = 0 if not facts.in_memory else 3 * native * native if dataset in ("cifar10", "svhn") \
        else 3 * size * size * F32  # uint8 pixels (data.Images) or float32 (the digits)
    return Net(arch, dataset, a["family"], {n: every[n] for n in sconf.layers(cfg, arch)}, every,
               catalog.param_count(a["family"], a["params"], facts.num_classes, size), facts.num_classes, size,
               n_train, n_test if test == "all" else min(test, n_test), image,
               p.get("mlp_dim", 0), p.get("heads", 0))


@dataclass
class Rule:
    """One rule's estimate: jobs, the largest job's peak memory and bytes written, and all its jobs' bytes."""

    jobs: int = 0
    mem: int = 0
    disk_job: int = 0
    disk: int = 0
    unknown: int = 0     # jobs on networks whose shapes are unknown before they run (family custom)
    notes: set = field(default_factory=set)

    def add(self, mem: float, disk: float) -> None:
        self.jobs += 1
        self.mem, self.disk_job = max(self.mem, int(mem)), max(self.disk_job, int(disk))
        self.disk += int(disk)


# ----------------------------------------------------------------------------- per job


def _cuda(cfg) -> int:
    return CUDA if cfg["device"] == "cuda" else 0


def _cpu(cfg) -> bool:
    return cfg["device"] != "cuda"


def _training(cfg, net: Net, images: int) -> int:
    """Host memory of training through ``net`` on ``images`` per step: its autograd memory on a CPU (with what the
    heap retains between steps, :data:`CPU_HEAP`), nothing on a GPU."""
    return int(CPU_HEAP * images * net.activations()) if _cpu(cfg) else 0


def _extract(cfg, net: Net, splits: dict[str, int], train: bool, fronts: bool, image: int | None = None
             ) -> tuple[int, int]:
    """Push ``splits`` (name → images, each ``image`` bytes in memory) through the network: what extraction (and the
    outliers job) holds and writes."""
    d = 2 if cfg["extract"]["dtype"] == "float16" else F32
    b = cfg["extract"]["batch_size"]
    big = max(net.numel(layer) for layer in net.layers)
    image = net.image if image is None else image
    mem = BASE + _cuda(cfg) + net.params * F32 + max(splits.values()) * image
    mem += b * (F32 * sum(math.prod(s) for s, _ in net.every.values()) + 2 * F32 * net.per_image + 20 * big)
    disk = 0
    for split, n in splits.items():
        disk += n * (net.classes * F32 + 16)
        if split != "train" or fronts:
            disk += n * net.per_image * d
        if split == "train" and train:
            c = [net.channels(layer) for layer in net.layers]
            disk += n * sum(c) * F64 + sum(x * x + 2 * x for x in c) * F64
            mem += sum(x * x for x in c) * 2 * F64
    return mem, disk


def _images(net: Net, recompute: bool) -> int:
    return net.n_train * net.image if recompute else 0


def _eval_block(cfg, src: Net, tgt: Net, s_layers, t_layers) -> int:
    """Evaluation of every layer pair on streamed test blocks: the block, and a batch through the receiver."""
    per = F32 * (sum(src.numel(x) for x in s_layers) + sum(tgt.numel(x) for x in t_layers))
    block = min(max(256, cfg["cache"]["block_mb"] * MB // max(per, 1)), max(src.n_test, 1))
    return block * per + 256 * 2 * tgt.activations() // 8


def _per_image(src: Net, s_layers, t_layers) -> tuple[int, int]:
    """The evaluation's per-image terms (pipeline.PER_IMAGE): three float64 per image and layer pair while they are
    gathered (twice: the batches and their concatenation), written as float32 beside the CSV."""
    pairs = len(s_layers) * len(t_layers)
    return 2 * 3 * pairs * src.n_test * F64, (3 * pairs + 1) * src.n_test * F32


def _dm(cfg, src: Net, tgt: Net, s_layers, t_layers, settings, policy, conv_stitch="bilinear") -> tuple[int, int]:
    k = src.n_train if settings["samples"] == "all" else settings["samples"]
    chunk = min(cfg["extract"]["chunk"], k)
    rec = policy == "recompute"
    mem = BASE + _cuda(cfg) + 2 * tgt.params * F32 + (src.params + tgt.params) * F32 * rec + _images(src, rec)
    mem += chunk * F32 * (sum(src.numel(x) for x in s_layers) + sum(tgt.numel(x) for x in t_layers))
    rows, acc, disk = 0, 0, 0
    for sl in s_layers:
        for tl in t_layers:
            c_in = _stitch_inputs(src, sl, tgt, tl, conv_stitch)
            c_out = tgt.channels(tl)
            rows = max(rows, chunk * tgt.positions(tl) * (c_in * (F32 + F64) + c_out * (F32 + F64)))
            acc += (c_in + 1) * (c_in + 1 + c_out) * F64
            disk += (c_in * c_out + c_out) * F32 + 300
    terms, written = _per_image(src, s_layers, t_layers)
    return mem + rows + acc + _eval_block(cfg, src, tgt, s_layers, t_layers) + terms, disk + written


def _stitch_inputs(src: Net, sl: str, tgt: Net, tl: str, conv_stitch: str) -> int:
    """Input channels of the affine map of a stitch (paper 3's stride-k stitch reads k² positions per output)."""
    (s_shape, s_lay), (t_shape, t_lay) = src.layers[sl], tgt.layers[tl]
    c = src.channels(sl)
    if conv_stitch == "paper3" and s_lay == t_lay == "conv" and s_shape[1] > t_shape[1]:
        return c * (s_shape[1] // t_shape[1]) ** 2
    return c


def _tlm(cfg, src: Net, tgt: Net, s_layers, t_layers, settings, policy, conv_stitch="bilinear") -> tuple[int, int]:
    rec, buffer = policy == "recompute", cfg["cache"]["buffer"]
    soft = settings.get("labels") == "soft"
    mem = BASE + _cuda(cfg) + 2 * tgt.params * F32 + _images(src, rec) + src.n_train * (8 + soft * tgt.classes * F32)
    if rec:
        mem += src.params * F32 * 2 + 256 * src.activations(s_layers[-1]) // 8
    else:  # one reader per source layer, at most two shuffle buffers each
        mem += sum(2 * min(buffer, src.n_train) * src.numel(x) * F32 for x in s_layers)
    mem += _training(cfg, tgt, settings["batch_size"])  # one stitch at a time on a CPU
    disk = sum((_stitch_inputs(src, x, tgt, y, conv_stitch) * tgt.channels(y) + tgt.channels(y)) * F32 + 300
               for x in s_layers for y in t_layers)
    terms, written = _per_image(src, s_layers, t_layers)
    return mem + _eval_block(cfg, src, tgt, s_layers, t_layers) + terms, disk + written


def _detector_net(cfg, net: Net, layer: str) -> tuple[int, int]:
    """Parameters of the layer's detector and one image's training activations in it."""
    shape, layout = net.layers[layer]
    size = {**catalog.DETECTOR_SIZE[layout], **cfg["ood"]["detector"][layout]}
    if layout == "conv":
        w, s, blocks = size["width"], size["input_size"], size["stage_blocks"]
        params = catalog.resnet_param_count(w, blocks, net.classes, shape[0])
        act, side = 0, s
        for stage, n in enumerate(blocks):
            side = side if stage == 0 else -(-side // 2)
            act += n * w * 2 ** stage * side * side
        return params, 8 * F32 * (w * s * s + act)
    t, dim = shape
    h = size["hidden_dim"]
    params = (dim * h + h if dim != h else 0) + catalog.vit_encoder_param_count(t, h, size["depth"], size["mlp_dim"])
    act = size["depth"] * F32 * (10 * t * h + 2 * t * size["mlp_dim"] + 2 * size["heads"] * t * t)
    return params + h * net.classes, act


def _detector(cfg, net: Net, layer: str, policy: str) -> tuple[int, int]:
    o, buffer = cfg["ood"]["outliers"], cfg["cache"]["buffer"]
    params, act = _detector_net(cfg, net, layer)
    row = net.numel(layer) * F32
    mem = BASE + _cuda(cfg) + params * F32 * 5 + net.n_train * 16
    if policy == "recompute":
        mem += net.params * F32 * 2 + _images(net, True) + (o["n"] + o["heldout"]) * 3 * net.size ** 2 * F32
        mem += 256 * net.activations(layer) // 8
    else:
        mem += 2 * row * (min(buffer, net.n_train) + min(buffer, o["n"]) + min(buffer, o["heldout"]))
    batch = max(cfg["ood"]["pretrain"].get("batch_size", 128), cfg["ood"]["finetune"].get("batch_size", 256))
    if _cpu(cfg):
        mem += batch * act
    return mem, params * F32 + 30_000 + (net.n_test + o["heldout"]) * F64


def _ood_scores(cfg, src: Net, tgt: Net, methods: int) -> tuple[int, int]:
    pairs = len(src.layers) * len(tgt.layers)
    dets = [_detector_net(cfg, tgt, x) for x in tgt.layers]
    block = cfg["cache"]["block_mb"] * MB
    energies = src.n_test * pairs * methods * F64
    mem = BASE + _cuda(cfg) + sum(p for p, _ in dets) * F32 * 2 + 2 * min(block, src.n_test * src.per_image * F32)
    mem += methods * sum(src.channels(x) * tgt.channels(y) * F32 for x in src.layers for y in tgt.layers)
    mem += 2 * energies + 256 * max(a for _, a in dets) // 4
    o = cfg["ood"]["outliers"]
    disk = methods * ((src.n_test * (pairs + len(tgt.layers)) + o["heldout"] * len(tgt.layers)) * F64 + pairs * 300)
    return mem, disk


def _stats(n: int, p: int) -> int:
    """One layer's factorisation for the indices (similarity.layer_stats): n rows of p columns in float64, the n×n
    Gram (p ≥ n) or the p×p covariance, the left singular vectors U (n × min(n, p)) and an SVD's workspace."""
    m = min(n, p)
    return 3 * n * m * F64 + 3 * m * m * F64 + p * m * F64


def _layer_stats(net: Net, layer: str, n: int, reshapes: set[str]) -> int:
    """A layer's statistics for every reshape of the measures: n images, ``positions`` (and ``paper1``, which also
    keeps the pooled one) with each position a row."""
    out = 0
    for r in reshapes:
        if r == "flatten":
            out += _stats(n, net.numel(layer))
        if r in ("positions", "paper1"):
            out += _stats(n * net.positions(layer), net.channels(layer))
        if r in ("pool", "paper1"):
            out += _stats(n, net.channels(layer))
    return out


def _index_n(cfg, net: Net) -> int:
    return net.n_test if cfg["similarity"]["samples"] == "all" else min(cfg["similarity"]["samples"], net.n_test)


def _index_rows(cfg, nets: int, layers: int) -> int:
    """Rows of one indices job's CSV: every ordered network pair, layer pair and measure."""
    return nets ** 2 * layers ** 2 * len(cfg["similarity"]["measures"])


def bootstrap_layer_bytes(shape: tuple[int, ...], layout: str, n: int, reshape: str, loadings: bool) -> int:
    """Host bytes of one layer in the indices job's bootstrap over test images (uncertainty.index_bootstrap), per
    matrix its statistics factorise under ``reshape`` (rows × p; 'paper1' keeps the pooled and the per-position
    one): what the statistics keep (similarity.LayerStats: the mean, U, the Gram's diagonal, PWCCA's loadings), the
    coordinates Z = U diag(s) and per-image sums, and the n × n Gram where one row is one image."""
    c, positions = channels_positions(shape, layout)
    views = ([(n, math.prod(shape))] if reshape == "flatten" else []) + \
        ([(n, c)] if reshape in ("pool", "paper1") else []) + \
        ([(n * positions, c)] if reshape in ("positions", "paper1") else [])
    out = 0
    for rows, p in views:
        rank = min(rows, p)
        gram, kept = (n * n if rows == n else 0), (p * rank if loadings else 0)
        out += F64 * (p + 2 * rows * rank + rows + n * rank + gram + kept)
    return out


def bootstrap_groups(pairs: list[tuple[str, str]], layers: dict[str, list[str]], nbytes: dict[tuple[str, str], int],
                     budget: int = BOOTSTRAP_BYTES) -> list[list[tuple[str, str, str, str]]]:
    """How the indices job bootstraps its (source, source layer, target, target layer) pairs: all in one group when
    every layer of every network fits in ``budget`` (``nbytes``: per (network, layer), e.g.
    :func:`bootstrap_layer_bytes`), each layer's per-replicate moments then computed once, the fastest; else one
    group per network pair; else one per layer pair — the memory then of two layers at any number of networks.
    The replicates are the same in every grouping (the same count vectors)."""
    per_pair = [[(s, sl, t, tl) for sl in layers[s] for tl in layers[t]] for s, t in pairs]
    nets = dict.fromkeys(x for p in pairs for x in p)
    if sum(nbytes[x, layer] for x in nets for layer in layers[x]) <= budget:
        return [[x for group in per_pair for x in group]]
    if max(sum(nbytes[x, layer] for x in dict.fromkeys(p) for layer in layers[x]) for p in pairs) <= budget:
        return per_pair
    return [[x] for group in per_pair for x in group]


def _bootstrap(cfg, nets: tuple[Net, ...]) -> int:
    """Peak bytes of the indices job's bootstrap over test images beside its LRU statistics: the largest group of
    :func:`bootstrap_groups`, its (replicates × layers² × indices) results and the per-replicate moments' working
    budget (uncertainty._BUDGET, 128 MB, a few times)."""
    s = cfg["similarity"]
    boot = catalog.bootstrapped_indices(s["measures"], cfg["uncertainty"])
    if not boot:
        return 0
    names = [f"{i}" for i in range(len(nets))]
    pairs = [(a, b) for a in names for b in names]
    layers = {x: list(net.layers) for x, net in zip(names, nets)}
    loadings = {s["reshape"][m] for m in s["measures"] if catalog.MEASURES[m].needs_loadings}
    nbytes = {(x, layer): sum(bootstrap_layer_bytes(*net.layers[layer], _index_n(cfg, net), r, r in loadings)
                              for r in {s["reshape"][m] for m in boot})
              for x, net in zip(names, nets) for layer in net.layers}
    peak = 0
    for group in bootstrap_groups(pairs, layers, nbytes):
        held = dict.fromkeys(x for a, sl, b, tl in group for x in ((a, sl), (b, tl)))
        peak = max(peak, sum(nbytes[k] for k in held) + 2 * cfg["uncertainty"]["replicates"] * len(held) ** 2
                   * len(boot) * F64)
    return 3 * 128 * MB + peak


def _indices(cfg, *nets: Net) -> tuple[int, int]:
    s, u = cfg["similarity"], cfg["uncertainty"]
    reshapes = {s["reshape"][m] for m in s["measures"]}
    held = sum(_layer_stats(net, layer, _index_n(cfg, net), reshapes) for net in nets for layer in net.layers)
    largest = max(_layer_stats(net, x, _index_n(cfg, net), reshapes) for net in nets for x in net.layers)
    rows = _index_rows(cfg, len(nets), len(nets[0].layers))
    replicates = rows * u["replicates"] * F32 if u["enabled"] else 0  # rows × B float32, NaN where not resampled
    return BASE + min(held, INDEX_STATS_BYTES) + largest + _bootstrap(cfg, nets) + replicates, rows * 250 + replicates


def _probes(cfg, net: Net) -> tuple[int, int]:
    c = max(net.channels(x) for x in net.layers)
    block = cfg["cache"]["block_mb"] * MB
    mem = BASE + 3 * net.n_train * c * F64 + net.n_test * c * F64 + 3 * block
    return mem, len(net.layers) * 200


def _ding_compare(cfg, net: Net, layer: str, bytes_per_value: int) -> int:
    """The Ding et al. tests' comparison of one representation with the reference (ding._Comparer): both layers'
    index statistics and the test split at the layer (``bytes_per_value``: the copies held, e.g. the reference's
    and the compared one's in float32)."""
    reshapes = {cfg["similarity"]["reshape"][m] for m in cfg["ding"]["measures"]}
    return 2 * _layer_stats(net, layer, _index_n(cfg, net), reshapes) + net.n_test * net.numel(layer) * bytes_per_value


def _sensitivity(cfg, net: Net, layers: list[str]) -> tuple[int, int]:
    k = cfg["dm"]["samples"] if cfg["dm"]["samples"] != "all" else net.n_train
    c = max(net.channels(x) for x in layers)
    mem = BASE + 2 * net.params * F32 + k * sum(net.numel(x) for x in layers) * F32 + 3 * net.n_train * c * F64
    mem += max(_ding_compare(cfg, net, x, F32 + 2 * F64) for x in layers)  # the layer; two low-rank float64 copies
    ranks = cfg["ding"]["sensitivity"]["ranks"]
    return mem, len(layers) * (ranks if isinstance(ranks, int) else len(ranks)) * 400


def _specificity(cfg, *nets: Net) -> tuple[int, int]:
    net = nets[0]
    k = cfg["dm"]["samples"] if cfg["dm"]["samples"] != "all" else net.n_train
    mem = BASE + 3 * net.params * F32 + 2 * k * net.per_image * F32
    return mem + max(_ding_compare(cfg, net, x, 2 * F32) for x in net.layers), len(nets) * len(net.layers) * 400


def _frankenstein(cfg, src: Net, tgt: Net, experiment: str, settings, policy) -> tuple[int, int]:
    layers = list(tgt.layers) if experiment == "layers" else settings["lowrank"]["layers"] \
        if experiment == "lowrank" else [settings[experiment]["layer"]]
    big = max(layers, key=tgt.numel)
    row, buffer, rec = tgt.numel(big) * F32, cfg["cache"]["buffer"], policy == "recompute"
    mem = BASE + _cuda(cfg) + tgt.params * F32 * (1 + 2 * rec) + _images(src, rec)
    mem += src.n_train * (8 + tgt.classes * F32)
    mem += 2 * src.n_test * row * 3  # one layer's test activations of both networks, and a stitched float64 copy
    mem += 0 if rec else 2 * 2 * min(buffer, src.n_train) * row
    dm = settings["dm"]
    k = src.n_train if dm["samples"] == "all" else dm["samples"]
    chunk = min(cfg["extract"]["chunk"], k)
    c = tgt.channels(big)
    mem += chunk * tgt.positions(big) * c * 2 * (F32 + F64) + (c + 1) * (2 * c + 1) * F64
    if experiment == "sparsity":  # scikit-learn's lasso holds every row of the fit
        mem += 2 * k * tgt.positions(big) * c * F64
    mem += _training(cfg, tgt, settings["tlm"]["batch_size"])
    disk = 20_000 + (len(settings["sparsity"]["dm_alphas"]) + len(settings["sparsity"]["tlm_l1"])) * c * c * F32 \
        if experiment == "sparsity" else 50_000
    return mem, disk


# ----------------------------------------------------------------------------- every rule


def _train(cfg, n: Net) -> tuple[int, int]:
    mem = BASE + _cuda(cfg) + n.params * F32 * 4 + (n.n_train + n.n_test) * n.image
    return mem + _training(cfg, n, cfg["train"]["batch_size"]), n.params * F32 + 5000


def _extract_net(cfg, n: Net, fronts: bool) -> tuple[int, int]:
    return _extract(cfg, n, {"train": n.n_train, "test": n.n_test}, True, fronts)


def _outliers(cfg, n: Net) -> tuple[int, int]:
    o = cfg["ood"]["outliers"]
    return _extract(cfg, n, {"outliers": o["n"], "heldout": o["heldout"]}, False, True, 3 * n.size ** 2 * F32)


def _stitch_job(cfg, a: Net, b: Net, method: str, policy: str) -> tuple[int, int]:
    return (_dm if method == "dm" else _tlm)(cfg, a, b, list(a.layers), list(b.layers), cfg[method], policy)


def _cross_pair(cfg, a: Net, b: Net, policy: str) -> tuple[int, int]:
    senders, receivers = _cross_layers(cfg)
    stitch = cfg["cross"]["stitch"]
    return _max(_dm(cfg, a, b, senders(a), receivers(b), sconf.cross_dm_settings(cfg), policy, stitch),
                _tlm(cfg, a, b, senders(a), receivers(b), sconf.cross_tlm_settings(cfg), policy, stitch))


def _add(rules: dict[str, Rule], cfg, dataset: str, splits, nets: dict, name: str, names: list[str], fn,
         *args) -> None:
    """One job of rule ``name`` on networks ``names``, estimated by ``fn(cfg, *nets, *args)`` (once per architectures
    and arguments: the jobs of other seeds are the same size; a paper config scaled to 20,000 jobs has 20 kinds)."""
    archs = tuple(sconf.parse_network(x)[0] for x in names)
    for arch in archs:
        if arch not in nets:
            nets[arch] = _net(cfg, arch, dataset, splits)
    found = [nets[a] for a in archs]
    r = rules.setdefault(name, Rule())
    if any(x is None for x in found):
        r.jobs, r.unknown = r.jobs + 1, r.unknown + 1
        return
    key = (name, fn, archs, len(names), *map(repr, args))
    if key not in nets:
        nets[key] = fn(cfg, *found, *args)
    r.add(*nets[key])


def estimate(cfg: dict[str, Any], splits: tuple[int, int] | None = None) -> dict[str, Rule]:
    """Per rule of the workflow that ``cfg`` (validated) runs: jobs, peak memory, bytes written; ``splits`` (train,
    test images) instead of the datasets' own sizes, e.g. for a rehearsal on fewer images."""
    rules: dict[str, Rule] = {}
    policy = {c: sconf.front_policy(cfg, c) for c in sconf.CONSUMERS}
    methods, o = cfg["stitching"]["methods"], cfg["ood"]
    pairs = list(dict.fromkeys(p for s in cfg["stitching"]["settings"] for p in sconf.network_pairs(cfg, s)))
    cross, frank = sconf.cross_pairs(cfg), sconf.frankenstein_runs(cfg)
    f = sconf.frankenstein_settings(cfg) if frank else None
    every = list(dict.fromkeys([*sconf.networks(cfg), *(x for _, _, s, t in cross for x in (s, t)),
                                *(x for _, s, t in frank for x in (s, t))]))
    randoms = sorted({x for _, cond, s, t in cross for x, state in zip((s, t), sconf.CONTROLS[cond])
                      if state == "random"})
    every_reps = []
    for ds in cfg["datasets"]:
        add = partial(_add, rules, cfg, ds, splits, {})
        for name in every:
            add("train", [name], _train)
            add("extract", [name], _extract_net, sconf.caches_train_fronts(cfg, sconf.parse_network(name)[0]))
        for name in randoms:
            add("cross_init", [name], _extract_net, True)
        for name in sconf.networks(cfg):
            arch = sconf.parse_network(name)[0]
            if o["enabled"]:
                if policy["detector"] == "cache":
                    add("outliers", [name], _outliers)
                for layer in sconf.layers(cfg, arch):
                    add("detector", [name], _detector, layer, policy["detector"])
                rules.setdefault("detectors", Rule()).add(BASE, 20_000)  # the network's detector index
            if cfg["ding"]["enabled"]:
                add("probes", [name], _probes)
                add("sensitivity", [name], _sensitivity, sconf.sensitivity_layers(cfg, arch))
        for s, t in pairs:
            for m in methods:
                add(m, [s, t], _stitch_job, m, policy[m])
            if o["enabled"]:
                add("ood_scores", [s, t], _ood_scores, len(methods))
        for arch in sconf.matrix_architectures(cfg):
            names = [sconf.network_id(arch, seed) for seed in cfg["seeds"]]
            if cfg["similarity"]["measures"]:
                add("indices", names, _indices)
            if cfg["ding"]["enabled"]:
                add("specificity", names, _specificity)
        for _, _, s, t in cross:
            add("cross_pair", [s, t], _cross_pair, policy["cross"])
        for experiment, s, t in frank:
            name = {"inits": "frankenstein_inits", "sparsity": "frankenstein_sparsity"}.get(experiment,
                                                                                          "frankenstein_run")
            add(name, [s, t], _frankenstein, experiment, f, policy["frankenstein"])
        reps = _long_rows(cfg, pairs) * cfg["uncertainty"]["replicates"] * F32 if cfg["uncertainty"]["enabled"] else 0
        every_reps.append(reps)
        for name, mem, disk, on in (("similarity_table", 3 * reps, reps, True), ("table1", 2 * reps, 0, True),
                                    ("ood_figures", 0, 0, o["enabled"]), ("ding_tables", 0, 0, cfg["ding"]["enabled"]),
                                    ("cross_report", 0, 0, bool(cross)), ("frankenstein_figures", 0, 0, bool(frank))):
            if on:
                rules.setdefault(name, Rule()).add(LIGHT + 200 * MB + mem, 5 * MB + disk)
    if cfg["datasets"]:  # one heatmaps job draws every dataset's figures, holding each dataset's replicates
        rules.setdefault("heatmaps", Rule()).add(LIGHT + 200 * MB + sum(every_reps) + max(every_reps), 20 * MB)
        rules.setdefault("report", Rule()).add(LIGHT + 200 * MB, 50 * MB)
    return rules


def _long_rows(cfg, pairs: list[tuple[str, str]]) -> int:
    """Rows of one dataset's long table (results/matrices/<dataset>/similarity.csv): per stitched layer pair one
    for TLM and two for DM (functional, structural), and the indices jobs' rows. Its replicates are rows × B
    float32 (similarity.npz), which the table and heatmap jobs hold (the similarity table twice while it joins
    them)."""
    layers = {a: len(sconf.layers(cfg, a)) for a in sconf.matrix_architectures(cfg)}
    per_pair = {"tlm": 1, "dm": 2}
    rows = sum(per_pair[m] * layers[sconf.parse_network(s)[0]] * layers[sconf.parse_network(t)[0]]
               for s, t in pairs for m in cfg["stitching"]["methods"] if sconf.parse_network(s)[0] in layers)
    if cfg["similarity"]["measures"]:
        rows += sum(_index_rows(cfg, len(cfg["seeds"]), n) for n in layers.values())
    return rows


def _max(*estimates: tuple[int, int]) -> tuple[int, int]:
    return max(m for m, _ in estimates), sum(d for _, d in estimates)


def _cross_layers(cfg):
    """Paper 3's sender (block outputs) and receiver (block inputs) stitch points of a network."""
    def before(net: Net):
        a = cfg["architectures"][net.arch]
        return catalog.blocks_before(a["family"], a["params"])

    def senders(net: Net) -> list[str]:
        b, _ = before(net)
        return [x for x in net.layers if b[x] >= 1]

    def receivers(net: Net) -> list[str]:
        b, n = before(net)
        return [x for x in net.layers if b[x] < n]

    return senders, receivers


# ----------------------------------------------------------------------------- requests and the report

DEFAULT_MEM_MB = 4000   # requested where no estimate exists (networks of your own)


def request_mb(estimate_bytes: int) -> int:
    """What a rule asks for: the estimate plus 20 % and 512 MB, rounded up to 256 MB."""
    return int(math.ceil((estimate_bytes * 1.2 + 512 * MB) / (256 * MB)) * 256)


def resources(cfg: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Each rule's ``mem_mb`` and ``disk_mb`` request (the largest of its jobs), from :func:`estimate`."""
    out = {}
    for name, r in estimate(cfg).items():
        mem = request_mb(r.mem) if r.jobs > r.unknown else DEFAULT_MEM_MB
        out[name] = {"mem_mb": max(mem, DEFAULT_MEM_MB) if r.unknown else mem,
                     "disk_mb": max(1000, int(math.ceil(r.disk_job * 1.1 / MB)))}
    return out


def _size(b: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.0f} B"


def report(cfg: dict[str, Any], requested: dict[str, int] | None = None,
           limit_gb: float | None = None) -> tuple[str, list[str]]:
    """The plan as text, and the rules whose estimate exceeds what is requested for them (``requested``: rule →
    mem_mb, e.g. a SLURM profile's set-resources; default the rules' own requests) or ``limit_gb``."""
    rules, own = estimate(cfg), resources(cfg)
    requested = {**{k: v["mem_mb"] for k, v in own.items()}, **(requested or {})}
    policy = {c: sconf.front_policy(cfg, c) for c in sconf.CONSUMERS if sconf.consumer_architectures(cfg, c)}
    lines = ["fronts: " + ", ".join(f"{c} {p}" for c, p in policy.items()) +
             f" (cache.train {cfg['cache']['train']}, auto limit {cfg['cache']['auto_limit_gb']:g} GB per network, "
             f"device {cfg['device']})",
             f"{'rule':<22}{'jobs':>6}{'peak memory/job':>17}{'requests':>11}{'writes/job':>13}{'writes':>11}  note"]
    flagged = []
    for name, r in sorted(rules.items(), key=lambda kv: -kv[1].disk):
        note = []
        if r.unknown:
            note.append(f"{r.unknown} job(s) on networks of your own: not estimated")
        if r.jobs > r.unknown and r.mem > requested[name] * MB:
            note.append(f"EXCEEDS the {requested[name]} MB requested")
        if limit_gb and r.mem > limit_gb * 1e9:
            note.append(f"EXCEEDS {limit_gb:g} GB")
        if any("EXCEEDS" in x for x in note):
            flagged.append(name)
        lines.append(f"{name:<22}{r.jobs:>6}{_size(r.mem):>17}{requested[name]:>8} MB{_size(r.disk_job):>13}"
                     f"{_size(r.disk):>11}  {'; '.join(note)}")
    total = sum(r.disk for r in rules.values())
    peak = max(rules.items(), key=lambda kv: kv[1].mem)
    lines.append(f"total: {sum(r.jobs for r in rules.values())} jobs, {_size(total)} written; largest job: "
                 f"{peak[0]} {_size(peak[1].mem)}")
    return "\n".join(lines), flagged
