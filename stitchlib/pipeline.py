"""The workflow's stages as plain functions of paths and settings (no Snakemake here).

train → extract → DM stitches per network pair → TLM stitches per network pair → tables/figures.
Each function writes its outputs atomically; ``workflow_scripts/`` only translates the Snakemake
job into a call of one of these.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from stitchlib import catalog, data, hooked, io, models, ood, tasks
from stitchlib import config as sconf
from stitchlib import similarity as sim
from stitchlib import uncertainty as unc
from stitchlib.footprint import BOOTSTRAP_BYTES, INDEX_STATS_BYTES, bootstrap_groups, bootstrap_layer_bytes
from stitchlib.progress import Progress
from stitchlib.stitching import AffineStitch, Evaluation, LeastSquares, LowRank, dm_rows, make_stitch, pooled, train_tlm
from stitchlib.train import accuracy, pick_device, train_network

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- networks

def build_network(spec: dict[str, Any]) -> models.Stitchable:
    try:
        return models.build(spec["family"], num_classes=spec["num_classes"], image_size=spec["image_size"],
                            **spec["params"])
    except ValueError as e:  # errors start with the key under the architecture (catalog, stitchlib.hooked)
        if str(e).startswith(("params", "family")):
            raise ValueError(f"architectures.{spec['arch']}.{e}") from None
        raise


_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {}


def expected_shapes(spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Per-sample activation shape the network of ``spec`` produces at each configured layer, from one
    forward pass of a blank image through an untrained copy (shapes do not depend on the weights)."""
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _SHAPES:
        net, size = build_network(spec).eval(), spec["image_size"]
        with torch.no_grad():
            _, outs = net.forward_all(torch.zeros(1, 3, size, size))
        _SHAPES[key] = {layer: tuple(outs[net.layer_index(layer)].shape[1:]) for layer in spec["layers"]}
    return _SHAPES[key]


def check_activations(spec: dict[str, Any], *paths: str) -> None:
    """Refuse activation files of ``spec``'s network that are incomplete, foreign, or whose layers do not have
    the shapes the network produces (the error names the file, the layer and both shapes)."""
    for path in paths:
        io.check_layer_shapes(path, expected_shapes(spec))


def check_buildable(cfg: dict[str, Any]) -> None:
    """What the torch-free config check cannot know, found by building (``stitchlib check-config``): every
    network of the config for every dataset, with one forward pass, a network of your own with each of its
    state dicts loaded, and the OOD detector of every layer. Raises ``config.ConfigError`` naming the key."""
    for ds in cfg["datasets"]:
        for arch, a in cfg["architectures"].items():
            where, seeds = f"architectures.{arch}", sconf.network_seeds(cfg, arch)
            if not seeds:
                continue  # no study uses it
            spec = sconf.network_spec(cfg, ds, sconf.network_id(arch, seeds[0]))
            try:
                net, shapes = build_network(spec), expected_shapes(spec)
                for seed in seeds if a["family"] == "custom" else []:
                    hooked.load_weights(net, catalog.state_dict_file(a["params"], seed, ds), f"{where}.params")
            except ValueError as e:
                raise sconf.ConfigError(str(e) if str(e).startswith(where) else f"{where}.{e}") from None
            except Exception as e:  # noqa: BLE001 - a failure the catalog facts do not foresee: name the network
                raise sconf.ConfigError(f"{where}: building it for dataset {ds} (image size {spec['image_size']}) "
                                        f"failed: {type(e).__name__}: {e}") from None
            if not (cfg["ood"]["enabled"] and arch in sconf.matrix_architectures(cfg)):
                continue
            for layer, shape in shapes.items():
                try:
                    ood.build_detector(net.layout, shape, spec["num_classes"], **cfg["ood"]["detector"][net.layout])
                except Exception as e:  # noqa: BLE001
                    raise sconf.ConfigError(f"ood.detector.{net.layout}: the detector of {arch} layer {layer} "
                                            f"{shape} cannot be built: {type(e).__name__}: {e}") from None


def load_network(spec: dict[str, Any], ckpt: str | Path, device: torch.device) -> models.Stitchable:
    net = build_network(spec)
    try:
        net.load_state_dict(io.load_state_dict(ckpt))
    except RuntimeError as e:
        raise ValueError(f"checkpoint {ckpt} does not fit {spec['family']} {spec['params']}: {e}") from None
    return net.to(device).eval()


OUTLIER_SPLITS = ("outliers", "heldout")  # auxiliary outliers for detector training / held-out sanity check


def load_split(spec: dict[str, Any], split: str, outliers: dict[str, Any] | None = None):
    """A dataset split, or (``outliers``/``heldout``) outlier images with label −1 from the OOD settings."""
    if split not in OUTLIER_SPLITS:
        return data.load(spec["dataset"], split, root=spec["root"], image_size=spec["image_size"],
                         download=spec["download"])
    from torch.utils.data import TensorDataset

    o, size = outliers, spec["image_size"]
    if split == "outliers" and o["source"] == "npy":
        x = ood.outlier_images_npy(o["path"], o["n"], size, seed=o["seed"])
    elif split == "outliers":
        x = ood.outlier_images(o["n"], size, "china", seed=o["seed"])
    else:
        x = ood.outlier_images(o["heldout"], size, "flower", seed=o["seed"] + 1)
    return TensorDataset(x, torch.full((len(x),), -1, dtype=torch.long))


def train(spec: dict[str, Any], settings: dict[str, Any], ckpt: str, metrics: str, device: str = "auto") -> None:
    """Train one network from its seed — or, for a network of your own (family ``custom``), import its state dict
    (``weights_only=True``), check its stitch points on real images and train nothing —; write the checkpoint the
    rest of the workflow reads and a metrics JSON (train/test accuracy) with provenance."""
    dev = pick_device(device)
    torch.manual_seed(spec["seed"])
    net = build_network(spec)
    train_ds, test_ds = load_split(spec, "train"), load_split(spec, "test")
    start = time.time()
    if spec["family"] == "custom":
        where = f"architectures.{spec['arch']}.params"
        path = catalog.state_dict_file(spec["params"], spec["seed"], spec["dataset"])
        hooked.load_weights(net, path, where)
        net.to(dev).eval()
        try:
            net.verify(next(data.batches(test_ds, 8))[0])
        except ValueError as e:
            raise ValueError(f"architectures.{spec['arch']}.{e} (with the weights of {path})") from None
        result = {f"{split}_accuracy": accuracy(net, data.batches(ds, 256), dev, tasks.of(ds))
                  for split, ds in (("train", train_ds), ("test", test_ds))}
        result.update(train_loss=[], imported_from=str(path), imported_sha256=io.sha256(path))
    else:
        result = train_network(net, train_ds, test_ds, settings, seed=spec["seed"], device=dev)
    io.save_state_dict(ckpt, {k: v.cpu() for k, v in net.state_dict().items()})
    io.write_json(metrics, {**result, "network": spec, "train": settings, "device": str(dev),
                            "seconds": round(time.time() - start, 2), "provenance": io.provenance()})
    log.info("%s: train %.4f test %.4f", spec["net"], result["train_accuracy"], result["test_accuracy"])


def _test_subset(n: int, test: dict[str, Any] | None) -> np.ndarray | None:
    """``cache.test``: the test images cached, a seeded random subset in that random order (None: all, in order)."""
    if not test or test["samples"] == "all" or test["samples"] >= n:
        return None
    return np.random.default_rng(test["seed"]).permutation(n)[:test["samples"]]


@torch.no_grad()
def extract(spec: dict[str, Any], ckpt: str, outputs: dict[str, str], batch_size: int = 256, chunk: int = 256,
            dtype: str = "float32", device: str = "auto", outliers: dict[str, Any] | None = None,
            fronts: bool = True, test: dict[str, Any] | None = None) -> None:
    """Write every stitch point's activations for each split in ``outputs`` (split → .h5 path); the splits
    ``outliers``/``heldout`` push the OOD settings' outlier images through the network.

    The training split always gets its summary, what probes and the sensitivity test read: each layer's pooled
    features and principal directions (io's layout). ``fronts=False`` writes only that summary of it: every
    consumer recomputes its fronts. ``test`` (``cache.test``) caches a seeded subset of the test split."""
    dev = pick_device(device)
    net = load_network(spec, ckpt, dev)
    keep = [net.layer_index(name) for name in spec["layers"]]
    for split, path in outputs.items():
        ds = load_split(spec, split, outliers)
        subset = _test_subset(len(ds), test) if split == "test" else None
        n, summary = len(ds) if subset is None else len(subset), split == "train"
        attrs = {"network": spec["net"], "dataset": spec["dataset"], "split": split, "spec": spec,
                 "layer_order": spec["layers"], "checkpoint_sha256": io.sha256(ckpt),
                 "fronts": "summary" if summary and not fronts else "cached", **io.provenance()}
        batches = data.batches(ds, batch_size) if subset is None else \
            (data.take(ds, subset[s:s + batch_size]) for s in range(0, n, batch_size))
        lowrank: dict[str, Any] = {}
        with io.ActivationWriter(path, n, attrs, chunk=chunk, dtype=dtype) as w:
            for b, (x, y) in enumerate(batches):
                logits, outs = net.forward_all(x.to(dev))
                for i in keep:
                    if not torch.isfinite(outs[i]).all():
                        raise ValueError(f"{spec['net']} (checkpoint {ckpt}) produces NaN or infinite activations "
                                         f"at layer {net.layer_names[i]!r} on split {split!r}: the network diverged; "
                                         "retrain it (lower the learning rate) before extracting")
                acts = {net.layer_names[i]: outs[i].float().cpu().numpy() for i in keep}
                extra = {} if subset is None else {"index": subset[b * batch_size:b * batch_size + len(y)]}
                for name, a in acts.items() if summary else ():
                    stored = a.astype(dtype).astype(np.float32)  # the values a reader of the cache gets
                    extra[f"pooled/{name}"] = pooled(stored, net.layout)
                    lowrank[name] = LowRank.add(lowrank.get(name), stored, net.layout)
                w.append(y.numpy(), logits.float().cpu().numpy(), acts if fronts or not summary else {},
                         {name: net.layout for name in acts}, **extra)
            for name, acc in lowrank.items():
                lr = LowRank.of(acc)
                for key in ("mean", "basis", "variances"):
                    w.put(f"lowrank/{name}/{key}", getattr(lr, key))
        log.info("%s: wrote %s (%d samples, %d layers%s)", spec["net"], path, n, len(keep),
                 "" if fronts or not summary else ", summary only")


# ----------------------------------------------------------------------------- fronts: cached or recomputed

class CachedFronts:
    """The training split's front halves f≤i(x) from a network's activation cache. Training batches
    (:meth:`batch`) go through one :class:`io.ChunkedLayer` per layer read, each holding at most two shuffle
    buffers of its layer."""

    def __init__(self, path: str, chunk: int = 256, buffer: int = 2048):
        self.path, self.chunk, self.buffer = path, chunk, buffer
        self.n = len(io.read_array(path, "labels"))
        self._readers: dict[str, io.ChunkedLayer] = {}

    def rows(self, layers: list[str], ids: np.ndarray) -> dict[str, np.ndarray]:
        """Activations of the images ``ids`` (sorted) at each layer, as stored (DM's fits)."""
        ids = np.asarray(ids)
        index = slice(int(ids[0]), int(ids[-1]) + 1) if len(ids) and (np.diff(ids) == 1).all() else ids
        return {layer: io.read_layer(self.path, layer, index) for layer in layers}

    def batch(self, layers: list[str], idx: torch.Tensor, epoch: int = 0, step: int = 0) -> dict[str, torch.Tensor]:
        """A training batch at each layer (the cache holds no augmentation: ``epoch`` and ``step`` are unused)."""
        for layer in layers:
            if layer not in self._readers:
                self._readers[layer] = io.ChunkedLayer(self.path, layer, self.chunk, 2 * -(-self.buffer // self.chunk))
        return {layer: torch.from_numpy(self._readers[layer][idx.numpy()]) for layer in layers}

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()


class RecomputedFronts:
    """The front halves f≤i(x) of training images recomputed by the frozen network ``net`` on its device, a batch
    at a time. With ``augment`` (``data.augment``: paper 1's flip + crop) each training batch is augmented with a
    generator seeded by (seed, epoch, step), so every stitch that trains on the same batch sees the same images."""

    def __init__(self, net: models.Stitchable, images, augment: str = "none", seed: int = 0, batch_size: int = 256):
        self.net, self.images, self.augment, self.seed, self.batch_size = net, images, augment, seed, batch_size
        self.dev = next(net.parameters()).device
        self.n = len(images)

    @torch.no_grad()
    def rows(self, layers: list[str], ids: np.ndarray) -> dict[str, np.ndarray]:
        out = {layer: [] for layer in layers}
        for s in range(0, len(ids), self.batch_size):
            h = self.net.fronts(data.take(self.images, ids[s:s + self.batch_size])[0].to(self.dev), layers)
            for layer in layers:
                out[layer].append(h[layer].float().cpu().numpy())
        return {layer: np.concatenate(v) for layer, v in out.items()}

    def inputs(self, idx: torch.Tensor, epoch: int = 0, step: int = 0) -> torch.Tensor:
        """The images of a training batch on the device, augmented when asked."""
        x = data.take(self.images, idx)[0]
        if self.augment != "none":
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + step)
            x = data.augment(x, self.augment, g)
        return x.to(self.dev)

    @torch.no_grad()
    def batch(self, layers: list[str], idx: torch.Tensor, epoch: int = 0, step: int = 0) -> dict[str, torch.Tensor]:
        return self.net.fronts(self.inputs(idx, epoch, step), layers)

    def close(self) -> None:
        pass


class FrontRows:
    """One layer of a fronts source as an array-like of rows (``len``, ``[idx]``): the OOD detectors' input."""

    def __init__(self, fronts, layer: str):
        self.fronts, self.layer = fronts, layer

    def __len__(self) -> int:
        return self.fronts.n

    def __getitem__(self, idx) -> torch.Tensor:
        idx = torch.arange(self.fronts.n)[idx] if isinstance(idx, slice) else torch.as_tensor(idx)
        return self.fronts.batch([self.layer], idx)[self.layer]


def train_fronts(spec: dict[str, Any], policy: str, inputs: dict[str, str], device: torch.device, *,
                 split: str = "train", outliers: dict[str, Any] | None = None, augment: str = "none",
                 seed: int = 0, chunk: int = 256, buffer: int = 2048):
    """Where a training consumer takes ``spec``'s network's fronts on ``split`` from: the activation file
    ``inputs[split]`` (policy 'cache') or the network of checkpoint ``inputs['ckpt']`` run on the images
    ('recompute', BatchNorm folded: frozen)."""
    if policy == "cache":
        if augment != "none":
            raise ValueError(f"augment {augment!r} needs recomputed fronts: the cache holds fixed activations")
        return CachedFronts(inputs[split], chunk, buffer)
    net = models.fold_batchnorm(load_network(spec, inputs["ckpt"], device))
    return RecomputedFronts(net, load_split(spec, split, outliers), augment, seed)


# ----------------------------------------------------------------------------- stitching

def _stitch_key(src_layer: str, tgt_layer: str) -> str:
    return f"{src_layer}->{tgt_layer}"


def layer_shapes(h5: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per-sample shape and layout of every layer of an activation file, read once."""
    with io.open_activations(h5) as f:
        return {name: (d.shape[1:], str(d.attrs["layout"])) for name, d in f["layers"].items()}


def new_stitch(src: dict, tgt: dict, src_layer: str, tgt_layer: str, conv_stitch: str = "bilinear") -> AffineStitch:
    """A stitch sized from two files' :func:`layer_shapes` (``conv_stitch``: see ``stitching.make_stitch``)."""
    (s_shape, s_layout), (t_shape, t_layout) = src[src_layer], tgt[tgt_layer]
    return make_stitch(s_shape, t_shape, s_layout, t_layout, conv_stitch)


def dm_sample_index(n: int, samples: int | str, seed: int) -> np.ndarray:
    """The K training images DM is fitted on (sorted), drawn once per config, shared by every pair."""
    if samples == "all":
        return np.arange(n)
    if samples > n:
        raise ValueError(f"dm.samples: K = {samples} is larger than the training split ({n} images)")
    return np.sort(np.random.default_rng(seed).permutation(n)[:samples])


FRONTS_DEFAULT = {"policy": "cache", "chunk": 256, "buffer": 2048, "block_mb": 256}  # the config's cache defaults


def fit_dm_pair(src_spec: dict, tgt_spec: dict, src, tgt, shapes: tuple[dict, dict], settings: dict[str, Any],
                chunk: int = 256, conv_stitch: str = "bilinear") -> dict[str, AffineStitch]:
    """DM stitches from every source layer to every target layer, fitted on the same K images (or all of them).

    ``src``/``tgt``: fronts sources (:class:`CachedFronts` or :class:`RecomputedFronts`) of the two networks'
    training splits; ``shapes``: their :func:`layer_shapes`. The images are read (or recomputed) ``chunk`` at a
    time, once for every layer pair: each pair's normal equations are accumulated chunk by chunk, in float64, and
    solved by ``settings['solver']`` (see :class:`LeastSquares`)."""
    idx = dm_sample_index(src.n, settings["samples"], settings["seed"])
    solver = settings.get("solver", "exact")
    if solver not in LeastSquares.SOLVERS:
        raise ValueError(f"dm.solver: unknown least-squares solver {solver!r}; use one of {LeastSquares.SOLVERS}")
    pairs = [(sl, tl) for sl in src_spec["layers"] for tl in tgt_spec["layers"]]
    stitches = {_stitch_key(sl, tl): new_stitch(*shapes, sl, tl, conv_stitch) for sl, tl in pairs}
    acc = {k: LeastSquares(st.weight.shape[1], st.weight.shape[0]) for k, st in stitches.items()}
    for s in range(0, len(idx), chunk):
        h = src.rows(src_spec["layers"], idx[s:s + chunk])
        t = tgt.rows(tgt_spec["layers"], idx[s:s + chunk])
        for sl, tl in pairs:
            key = _stitch_key(sl, tl)
            acc[key].update(*dm_rows(stitches[key], h[sl], t[tl]))
    return {k: st.set_affine(*acc[k].solve(settings["rcond"], solver)) for k, st in stitches.items()}


def _pair_row(src: dict, tgt: dict, si: int, sl: str, ti: int, tl: str) -> dict[str, Any]:
    """The columns that identify one layer pair of one network pair (report.KEYS)."""
    return {"setting": "intra" if src["net"] == tgt["net"] else "inter", "source": src["net"],
            "target": tgt["net"], "source_arch": src["arch"], "target_arch": tgt["arch"],
            "source_layer": sl, "target_layer": tl, "source_index": si, "target_index": ti}


# Per-image arrays next to each stitching CSV (<pair>.npz): what stitchlib.uncertainty resamples.
PER_IMAGE = ("correct", "err", "norm", "receiver")


def _block(paths_layers: list[tuple[str, list[str]]], block_mb: int) -> int:
    """Images per block of streamed test-split reading: every listed layer of one block within ``block_mb``."""
    per_image = 0
    for path, layers in paths_layers:
        with io.open_activations(path) as f:
            per_image += sum(4 * int(np.prod(f["layers"][layer].shape[1:])) for layer in layers)
    return io.block_size(per_image, block_mb)


def evaluate_pair(stitches: dict[str, AffineStitch], src_spec: dict, tgt_spec: dict, receiver, src_test: str,
                  tgt_test: str, method: str, block_mb: int = 256,
                  struct: str = "whole") -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One row per layer pair: stitched test accuracy, relative accuracy, DM(struct) distance (``struct``: see
    ``stitching.evaluate``); and the per-image terms of those numbers for the bootstrap over test images
    (:data:`PER_IMAGE`): 'correct', 'err', 'norm' (rows × images, in the rows' order) and 'receiver' (the
    receiver's own correctness per image). The test split is read in blocks of at most ``block_mb`` MB (every
    layer of both networks), each stitch's terms carried across blocks in the order of one pass
    (:class:`stitching.Evaluation`): the same numbers at any block size."""
    labels = torch.as_tensor(io.read_array(tgt_test, "labels"))
    task = tasks.for_dataset(tgt_spec["dataset"])
    logits = torch.as_tensor(io.read_array(tgt_test, "logits"))
    own = task.correct_each(logits, labels).double().numpy()
    receiver_acc = float(own.sum()) / len(own)
    dev = next(receiver.parameters()).device
    sl_names, tl_names = src_spec["layers"], tgt_spec["layers"]
    block = _block([(src_test, sl_names), (tgt_test, tl_names)], block_mb)
    sums = {_stitch_key(sl, tl): Evaluation(task, struct=struct) for sl in sl_names for tl in tl_names}
    for (_, src), (_, tgt) in zip(io.blocks(src_test, [f"layers/{sl}" for sl in sl_names], block),
                                  io.blocks(tgt_test, ["labels", *(f"layers/{tl}" for tl in tl_names)], block)):
        y = torch.as_tensor(tgt["labels"])
        for sl in sl_names:
            h = torch.as_tensor(src[f"layers/{sl}"])
            for tl in tl_names:
                key = _stitch_key(sl, tl)
                sums[key].update(stitches[key].to(dev), receiver, receiver.layer_index(tl), h,
                                 torch.as_tensor(tgt[f"layers/{tl}"]), y)
    out, each = [], {k: [] for k in PER_IMAGE[:3]}
    for si, sl in enumerate(sl_names):
        for ti, tl in enumerate(tl_names):
            r = sums[_stitch_key(sl, tl)].result(per_image=True)
            out.append({"method": method, **_pair_row(src_spec, tgt_spec, si, sl, ti, tl),
                        "accuracy": r["accuracy"], "receiver_accuracy": receiver_acc,
                        "relative_accuracy": r["accuracy"] / receiver_acc, "struct": r["struct"]})
            for k in each:
                each[k].append(r["per_image"][k])
    return pd.DataFrame(out), {**{k: np.stack(v).astype(np.float32) for k, v in each.items()},
                               "receiver": own.astype(np.float32)}


def _save_stitches(path: str, stitches: dict[str, AffineStitch]) -> None:
    io.save_state_dict(path, {k: {"weight": s.weight.detach().cpu(), "bias": s.bias.detach().cpu()}
                              for k, s in stitches.items()})


def _load_stitches(path: str, src_spec, tgt_spec, src_h5: str, tgt_h5: str,
                   conv_stitch: str = "bilinear") -> dict[str, AffineStitch]:
    saved = io.load_state_dict(path)
    out, src_shapes, tgt_shapes = {}, layer_shapes(src_h5), layer_shapes(tgt_h5)
    for sl in src_spec["layers"]:
        for tl in tgt_spec["layers"]:
            key = _stitch_key(sl, tl)
            if key not in saved:
                raise ValueError(f"{path}: no stitch {key!r}; rerun the DM job")
            out[key] = new_stitch(src_shapes, tgt_shapes, sl, tl, conv_stitch).set_affine(saved[key]["weight"],
                                                                                         saved[key]["bias"])
    return out


def pair_fronts(src_spec: dict, tgt_spec: dict, inputs: dict[str, str], fronts: dict[str, Any], dev,
                 augment: str = "none", seed: int = 0):
    """The two networks' training-split fronts for a pair job, from the cache or recomputed (``fronts['policy']``)."""
    return tuple(train_fronts(spec, fronts["policy"], {"train": inputs[f"{side}_train"],
                                                        "ckpt": inputs.get(f"{side}_ckpt")}, dev, augment=augment,
                              seed=seed, chunk=fronts["chunk"], buffer=fronts["buffer"])
                 for side, spec in (("src", src_spec), ("tgt", tgt_spec)))


def dm_pair(src_spec: dict, tgt_spec: dict, inputs: dict[str, str], settings: dict[str, Any], out_pt: str,
            out_csv: str, device: str = "auto", conv_stitch: str = "bilinear", out_npz: str | None = None,
            fronts: dict | None = None) -> None:
    """Fit and evaluate DM stitches for every layer pair of one (source, target) network pair; the K training
    images' fronts come from the cache or are recomputed (``fronts``: the policy, chunk, buffer, block_mb); the
    per-image terms go to ``out_npz`` (default: the CSV's path with .npz)."""
    fronts, dev = fronts or FRONTS_DEFAULT, pick_device(device)
    check_activations(src_spec, inputs["src_train"], inputs["src_test"])
    check_activations(tgt_spec, inputs["tgt_train"], inputs["tgt_test"])
    start = time.time()
    src, tgt = pair_fronts(src_spec, tgt_spec, inputs, fronts, dev)
    stitches = fit_dm_pair(src_spec, tgt_spec, src, tgt, (layer_shapes(inputs["src_test"]),
                                                          layer_shapes(inputs["tgt_test"])), settings,
                           chunk=fronts["chunk"], conv_stitch=conv_stitch)
    log.info("fitted %d DM stitches in %.1f s (fronts: %s)", len(stitches), time.time() - start, fronts["policy"])
    receiver = models.fold_batchnorm(load_network(tgt_spec, inputs["tgt_ckpt"], dev))  # frozen: BN folded
    df, images = evaluate_pair(stitches, src_spec, tgt_spec, receiver, inputs["src_test"], inputs["tgt_test"], "dm",
                               fronts["block_mb"], struct=settings.get("struct", "whole"))
    _save_stitches(out_pt, stitches)
    io.write_npz(out_npz or Path(out_csv).with_suffix(".npz"), images)
    io.write_csv(df, out_csv)


class _GroupFeed:
    """What a group of TLM stitches into one layer reads per batch: each source layer's fronts, computed once for the
    whole group (``prepare``), and with recomputed, augmented images the receiver's own outputs on those images as
    soft labels (``receiver`` given); otherwise the cached soft labels ``soft``."""

    def __init__(self, fronts, layers: list[str], receiver, soft: torch.Tensor | None):
        self.fronts, self.layers, self.receiver, self.cached_soft, self.held = fronts, layers, receiver, soft, {}

    def prepare(self, epoch: int, step: int, idx: torch.Tensor) -> None:
        self.held = self.fronts.batch(self.layers, idx, epoch, step)
        if self.receiver is not None and self.cached_soft is not None:
            with torch.no_grad():
                self.held["soft"] = self.receiver(self.fronts.inputs(idx, epoch, step))

    def source(self, key: str, idx: torch.Tensor) -> torch.Tensor:
        return self.held[key.split("->")[0]]

    @property
    def soft(self):
        if self.cached_soft is None or self.receiver is None:
            return self.cached_soft
        return lambda idx: self.held["soft"]


def tlm_pair(src_spec: dict, tgt_spec: dict, inputs: dict[str, str], settings: dict[str, Any], out_pt: str,
             out_csv: str, device: str = "auto", conv_stitch: str = "bilinear", out_npz: str | None = None,
             fronts: dict | None = None) -> None:
    """Train TLM stitches (initialised from DM) on the training split, then evaluate them (per-image terms to
    ``out_npz``, as in :func:`dm_pair`).

    The source's front halves f≤i(x) come from the activation cache, read in shuffled chunks (``fronts``:
    policy 'cache', chunk, buffer), or are recomputed from the images on the job's device (policy 'recompute',
    with ``settings['augment']``, paper 1's flip + crop): the same batches either way (``io.epoch_order``).
    Stitches that share a receiving layer train together in groups of ``settings['group_size']`` ('auto': all
    of them on CUDA, one at a time on the CPU, where batching was measured not to pay; see bench/bench_tlm.py).
    """
    fronts, dev = fronts or FRONTS_DEFAULT, pick_device(device)
    check_activations(src_spec, inputs["src_train"], inputs["src_test"])
    check_activations(tgt_spec, inputs["tgt_train"], inputs["tgt_test"])
    stitches = _load_stitches(inputs["dm"], src_spec, tgt_spec, inputs["src_test"], inputs["tgt_test"], conv_stitch)
    # The receiver stays frozen in eval mode: its BatchNorms folded into the convolutions before them, the same
    # function with less work in each forward and backward pass (1.3× faster TLM, bench/bench_tlm.py).
    receiver = models.fold_batchnorm(load_network(tgt_spec, inputs["tgt_ckpt"], dev))
    augment = settings.get("augment", "none")
    src = train_fronts(src_spec, fronts["policy"], {"train": inputs["src_train"], "ckpt": inputs.get("src_ckpt")},
                       dev, augment=augment, seed=settings["seed"], chunk=fronts["chunk"], buffer=fronts["buffer"])
    labels = torch.as_tensor(io.read_array(inputs["tgt_train"], "labels"))
    soft = torch.as_tensor(io.read_array(inputs["tgt_train"], "logits")) if settings["labels"] == "soft" else None
    group = settings["group_size"]
    group = (len(src_spec["layers"]) if dev.type == "cuda" else 1) if group == "auto" else group
    start, meter = time.time(), Progress(len(stitches), "TLM stitches")
    for tl in tgt_spec["layers"]:
        keys = [_stitch_key(sl, tl) for sl in src_spec["layers"]]
        for g in range(0, len(keys), group):
            batch = {k: stitches[k].to(dev) for k in keys[g:g + group]}
            feed = _GroupFeed(src, [k.split("->")[0] for k in batch], receiver if augment != "none" else None, soft)
            train_tlm(batch, receiver, receiver.layer_index(tl), feed.source, labels, settings, seed=settings["seed"],
                      soft_targets=feed.soft, task=tasks.for_dataset(tgt_spec["dataset"]), chunk=fronts["chunk"],
                      buffer=fronts["buffer"], prepare=feed.prepare)
            log.info(meter.line(", ".join(batch), n=len(batch)))
    src.close()
    log.info("trained %d TLM stitches in %.1f s (fronts: %s%s)", len(stitches), time.time() - start,
             fronts["policy"], f", {augment}" if augment != "none" else "")
    df, images = evaluate_pair(stitches, src_spec, tgt_spec, receiver, inputs["src_test"], inputs["tgt_test"], "tlm",
                               fronts["block_mb"])
    _save_stitches(out_pt, stitches)
    io.write_npz(out_npz or Path(out_csv).with_suffix(".npz"), images)
    io.write_csv(df, out_csv)


# ----------------------------------------------------------------------------- structural indices

def _nbytes(x: Any) -> int:
    """Bytes of the arrays a layer statistic holds (``similarity.LayerStats`` / ``Paper1Stats``)."""
    if hasattr(x, "nbytes"):
        return int(x.nbytes)
    if hasattr(x, "__dataclass_fields__"):
        return sum(_nbytes(getattr(x, f)) for f in x.__dataclass_fields__)
    return 0


def similarity_indices(specs: dict[str, dict], test_h5: dict[str, str], pairs: list[tuple[str, str]],
                       settings: dict[str, Any], out_csv: str, uncertainty: dict[str, Any] | None = None,
                       out_npz: str | None = None, budget: int = INDEX_STATS_BYTES,
                       bootstrap_budget: int = BOOTSTRAP_BYTES) -> None:
    """Every configured structural index for every layer pair of every network pair, from per-layer statistics
    per (network, layer, reshape) computed from the test-split cache, held up to ``budget`` bytes (least recently
    used dropped and recomputed when needed again: at paper scale a layer's statistics can take 0.5 GB).

    A pair in a degenerate regime (:class:`stitchlib.similarity.DegenerateInput`: rank ≥ n − 1 for CCA-family
    measures, a constant layer) is recorded as NaN with the reason logged — never a silent 1. Any other
    problem (an incomplete file, a layer of the wrong shape, non-finite activations) fails the job.

    ``uncertainty`` (the config section): the indices it names are also bootstrapped over the test images
    (:func:`stitchlib.uncertainty.index_bootstrap`, from the same statistics); ``out_npz`` gets 'replicates'
    (rows of the CSV × replicates, float32; NaN for the other indices and undefined replicates), bootstrapped in
    groups of layer pairs that hold at most ``bootstrap_budget`` bytes (:func:`_index_replicates`).
    """
    for net, path in test_h5.items():
        check_activations(specs[net], path)
    n = None if settings["samples"] == "all" else settings["samples"]
    measures = settings["measures"]
    opts = {"regularization": settings["regularization"], "svcca_variance": settings["svcca_variance"],
            "pwcca_count": settings.get("pwcca_count", "rank")}
    with_loadings = {settings["reshape"][m] for m in measures if catalog.MEASURES[m].needs_loadings}
    rank_scale = {r: sim.rank_scale_for([m for m in measures if settings["reshape"][m] == r])
                  for r in set(settings["reshape"].values())}  # scale-invariant ranks where a CCA-family index reads
    stats: dict[tuple[str, str, str], Any] = {}  # insertion order = recency
    computed = 0

    def get(net: str, layer: str, reshape: str):
        nonlocal computed
        key = (net, layer, reshape)
        if key in stats:
            stats[key] = stats.pop(key)
        else:
            try:
                stats[key] = sim.layer_stats_h5(test_h5[net], layer, reshape=reshape, n=n,
                                                loadings=True if reshape in with_loadings else None,
                                                rtol=settings.get("rtol"), rank_scale=rank_scale[reshape])
            except sim.DegenerateInput as e:  # e.g. a constant layer: every pair with it is undefined
                stats[key] = e
            computed += 1
            while len(stats) > 2 and sum(_nbytes(v) for v in stats.values()) > budget:
                stats.pop(next(iter(stats)))
        if isinstance(stats[key], Exception):
            raise stats[key]
        return stats[key]

    rows, blocks, start = [], [], time.time()
    for src, tgt in pairs:
        s, t = specs[src], specs[tgt]
        values = {}
        for reshape in dict.fromkeys(settings["reshape"][m] for m in measures):  # a layer's statistics reused
            for sl in s["layers"]:
                for tl in t["layers"]:
                    for m in [m for m in measures if settings["reshape"][m] == reshape]:
                        try:
                            values[m, sl, tl] = sim.pairwise([get(src, sl, reshape)], [get(tgt, tl, reshape)], [m],
                                                             **opts)[m][0, 0]
                        except sim.DegenerateInput as e:
                            log.warning("%s %s:%s vs %s:%s: %s", m, src, sl, tgt, tl, e)
                            values[m, sl, tl] = float("nan")
        per_measure = len(s["layers"]) * len(t["layers"])
        blocks += [(len(rows) + k * per_measure, src, tgt, m) for k, m in enumerate(measures)]
        rows += [{"measure": catalog.MEASURES[m].label, **_pair_row(s, t, si, sl, ti, tl),
                  "value": float(values[m, sl, tl])}
                 for m in measures for si, sl in enumerate(s["layers"]) for ti, tl in enumerate(t["layers"])]
    log.info("%d index values from %d layer statistics computed in %.1f s", len(rows), computed, time.time() - start)
    if out_npz is not None:
        io.write_npz(out_npz, {"replicates": _index_replicates(specs, test_h5, pairs, settings, uncertainty, blocks,
                                                               len(rows), get, bootstrap_budget)})
    io.write_csv(pd.DataFrame(rows), out_csv)


def _index_replicates(specs: dict[str, dict], test_h5: dict[str, str], pairs: list[tuple[str, str]],
                      settings: dict[str, Any], uncertainty: dict[str, Any] | None, blocks: list[tuple], n_rows: int,
                      get, budget: int = BOOTSTRAP_BYTES) -> np.ndarray:
    """Replicates (rows × B, float32) of the indices named in ``uncertainty.indices``, by
    `stitchlib.uncertainty.index_bootstrap` per reshape over the groups of layer pairs of
    `stitchlib.footprint.bootstrap_groups`: on the default every layer pair of every network pair at once (each
    layer's per-replicate moments computed once), at paper scale per network pair or per layer pair, so that what
    a group holds stays within ``budget`` bytes. NaN elsewhere (and for layers without statistics)."""
    u = uncertainty or {"enabled": False}
    B = u["replicates"] if u["enabled"] else 0
    reps, start = np.full((n_rows, B), np.nan, np.float32), time.time()
    boot = catalog.bootstrapped_indices(settings["measures"], u)
    if not boot:
        return reps
    opts = {"regularization": settings["regularization"], "svcca_variance": settings["svcca_variance"]}
    row = {(src, sl, tgt, tl, m): first + si * len(specs[tgt]["layers"]) + ti for first, src, tgt, m in blocks
           for si, sl in enumerate(specs[src]["layers"]) for ti, tl in enumerate(specs[tgt]["layers"])}
    loadings = {settings["reshape"][m] for m in settings["measures"] if catalog.MEASURES[m].needs_loadings}
    nets = list(dict.fromkeys(x for p in pairs for x in p))
    with_n = {}
    for net in nets:
        with io.open_activations(test_h5[net]) as f:
            total = len(f["labels"])
        with_n[net] = (layer_shapes(test_h5[net]), total if settings["samples"] == "all" else settings["samples"])
    sizes = []
    for reshape in dict.fromkeys(settings["reshape"][m] for m in boot):
        ms = [m for m in boot if settings["reshape"][m] == reshape]
        nbytes = {(net, layer): bootstrap_layer_bytes(*with_n[net][0][layer], with_n[net][1], reshape,
                                                      reshape in loadings)
                  for net in nets for layer in specs[net]["layers"]}
        groups = bootstrap_groups(pairs, {net: specs[net]["layers"] for net in nets}, nbytes, budget)
        sizes.append(len(groups))
        for group in groups:
            held = list(dict.fromkeys(x for s, sl, t, tl in group for x in ((s, sl), (t, tl))))
            layers = {k: _try(get, *k, reshape) for k in held}
            pos = {k: i for i, k in enumerate(k for k in held if not isinstance(layers[k], Exception))}
            done = [x for x in group if (x[0], x[1]) in pos and (x[2], x[3]) in pos]
            if not done:
                continue
            stats = [layers[k] for k in pos]
            b = unc.index_bootstrap(stats, stats, ms, replicates=B, seed=u["seed"], jackknife=False,
                                    pairs=[(pos[s, sl], pos[t, tl]) for s, sl, t, tl in done], **opts)
            for s, sl, t, tl in done:
                for m in ms:
                    reps[row[s, sl, t, tl, m]] = b[m].replicates[:, pos[s, sl], pos[t, tl]]
    log.info("%d bootstrap replicates of %s over the test images in %.1f s (%s group(s) of layer pairs)", B, boot,
             time.time() - start, "/".join(map(str, sizes)))
    return reps


def _try(fn, *args):
    try:
        return fn(*args)
    except sim.DegenerateInput as e:
        return e


# ----------------------------------------------------------------------------- OOD detectors

def _detector_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (("pretrain", settings["pretrain"]), ("finetune", settings["finetune"])) if v}


def train_detector(spec: dict, layer: str, inputs: dict[str, str], settings: dict[str, Any], out_pt: str,
                   out_json: str, device: str = "auto", out_npz: str | None = None,
                   fronts: dict[str, Any] | None = None, outliers: dict[str, Any] | None = None) -> None:
    """Train the energy OOD detector of one (network, layer) and check it on held-out outliers.

    The layer's activations of the training split and of the training outliers come from the cache, read in
    shuffled chunks (``fronts['policy']`` 'cache': inputs train, outliers, heldout), or are recomputed from the
    images by the network of ``inputs['ckpt']`` ('recompute', with the ``outliers`` settings). ``out_npz``
    keeps the energies of the network's own test activations and of the held-out outliers under the frozen
    (BatchNorm-folded) detector, what OOD scoring compares stitched activations with."""
    fronts, dev = fronts or FRONTS_DEFAULT, pick_device(device)
    check_activations({**spec, "layers": [layer]}, *(inputs[k] for k in ("train", "test", "outliers", "heldout")
                                                     if k in inputs))
    reader = dict(chunk=fronts["chunk"], buffer=fronts["buffer"])
    train, out, held = (train_fronts(spec, fronts["policy"], inputs, dev, split=split, outliers=outliers, **reader)
                        for split in ("train", "outliers", "heldout"))
    rows = {name: FrontRows(f, layer) for name, f in (("train", train), ("outliers", out), ("heldout", held))}
    layout = io.layer_layout(inputs["test"], layer)
    with io.open_activations(inputs["test"]) as f:
        sample_shape = tuple(f["layers"][layer].shape[1:])
    torch.manual_seed(settings["seed"])  # the initial weights: torch's default generator is seeded randomly
    det = ood.build_detector(layout, sample_shape, spec["num_classes"], **settings["detector"][layout])
    start = time.time()
    metrics = ood.train_detector(det, rows["train"], io.read_array(inputs["train"], "labels"), rows["outliers"],
                                 _detector_settings(settings), seed=settings["seed"], device=dev, **reader)
    frozen = models.fold_batchnorm(det)  # as OOD scoring loads it
    with io.ChunkedLayer(inputs["test"], layer, fronts["chunk"], 1) as test:
        e_test = ood.energy(frozen, test)
    e_heldout = ood.energy(frozen, rows["heldout"])
    sanity = ood.ood_metrics(e_test, e_heldout)
    log.info("%s %s detector: held-out outliers AUROC %.3f (%.1f s, fronts: %s)", spec["net"], layer,
             sanity["auroc"], time.time() - start, fronts["policy"])
    for f in (train, out, held):
        f.close()
    io.save_state_dict(out_pt, ood.detector_state(det))
    io.write_json(out_json, {"network": spec["net"], "layer": layer, "detector": ood.detector_spec(det),
                             "training": metrics, "heldout_sanity": sanity, "settings": settings,
                             "seconds": round(time.time() - start, 2), "provenance": io.provenance()})
    if out_npz:
        with io.atomic_path(out_npz) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, test=e_test, heldout=e_heldout)


DETECTOR_FILES = ("weights", "spec", "energies")  # train_detector's out_pt, out_json, out_npz


def detector_index(spec: dict, files: dict[str, list[str]], out_json: str) -> None:
    """One network's detectors in one file (what OOD scoring depends on: one input per network instead of three
    per layer, which at paper scale was most of the DAG's edges): per layer, in ``spec``'s order, its
    :data:`DETECTOR_FILES` (``files``: each a list over the layers) and its check on held-out outliers."""
    layers = []
    for i, layer in enumerate(spec["layers"]):
        paths = {k: str(files[k][i]) for k in DETECTOR_FILES}
        meta = io.read_json(paths["spec"])
        if meta.get("layer") != layer or meta.get("network") != spec["net"]:
            raise ValueError(f"{paths['spec']} is the detector of {meta.get('network')}:{meta.get('layer')}, not of "
                             f"{spec['net']}:{layer}; delete it and rerun its detector job")
        layers.append({"layer": layer, **paths, "heldout_sanity": meta["heldout_sanity"]})
    io.write_json(out_json, {"network": spec["net"], "layers": layers})


def read_detector_index(path: str, spec: dict) -> dict[str, dict[str, str]]:
    """{layer: its detector files} of :func:`detector_index`'s file, for every layer of ``spec``."""
    index = {x["layer"]: x for x in io.read_json(path)["layers"]}
    missing = [x for x in spec["layers"] if x not in index]
    if missing:
        raise ValueError(f"{path} has no detector for {spec['net']} layer(s) {missing}; rerun its detectors job")
    return {x: index[x] for x in spec["layers"]}


def load_detector(pt: str, spec_json: str, device: torch.device):
    """A trained detector from its weights ``pt`` and its spec ``spec_json`` (both written by train_detector)."""
    spec = io.read_json(spec_json)
    if not isinstance(spec, dict) or "detector" not in spec:
        raise ValueError(f"{spec_json} is not a detector spec (no 'detector' key); delete it and rerun the job that "
                         "wrote it")
    return models.fold_batchnorm(ood.load_detector(spec["detector"], io.load_state_dict(pt)).to(device))  # BN folded


@torch.no_grad()
def stitched(stitch: AffineStitch, acts: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    dev = stitch.weight.device
    x = torch.as_tensor(acts)
    return torch.cat([stitch(x[i:i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)])


def ood_pair(src_spec: dict, tgt_spec: dict, inputs: dict[str, Any], outputs: dict[str, tuple[str, str]],
             device: str = "auto", fpr_rule: str = "at_least", block_mb: int = 256) -> None:
    """AUROC (and AUPR, FPR@95) of the target layer's detector: the receiver's own test activations
    (positive class) vs. the stitched activations of the same test images, for every layer pair and every
    stitching method. ``inputs['stitches']`` maps each method to its stitch file, ``outputs`` to its (CSV, NPZ);
    ``inputs['detectors']`` is the target network's :func:`detector_index`: per layer the detector, its JSON and
    the receiver's own and the held-out outliers' energies under it (written by :func:`train_detector`). The
    source's test split is read in blocks of at most ``block_mb`` MB."""
    dev = pick_device(device)
    check_activations(src_spec, inputs["src_test"])
    stitches = {m: _load_stitches(pt, src_spec, tgt_spec, inputs["src_test"], inputs["tgt_test"])
                for m, pt in inputs["stitches"].items()}
    layers = tgt_spec["layers"]
    index = read_detector_index(inputs["detectors"], tgt_spec)
    dets = {tl: load_detector(index[tl]["weights"], index[tl]["spec"], dev) for tl in layers}
    own = {tl: np.load(index[tl]["energies"]) for tl in layers}
    scores: dict[tuple[str, str, str], list[np.ndarray]] = {}
    sl_names = src_spec["layers"]
    for _, block in io.blocks(inputs["src_test"], [f"layers/{sl}" for sl in sl_names],
                              _block([(inputs["src_test"], sl_names)], block_mb)):
        for sl in sl_names:
            for tl, det in dets.items():
                for method, st in stitches.items():
                    e = ood.energy(det, stitched(st[_stitch_key(sl, tl)].to(dev), block[f"layers/{sl}"]))
                    scores.setdefault((method, sl, tl), []).append(e)
    rows, energies = {m: [] for m in stitches}, {m: {} for m in stitches}
    for ti, tl in enumerate(tgt_spec["layers"]):
        e_in, e_heldout = own[tl]["test"], own[tl]["heldout"]
        for method in stitches:
            energies[method].update({f"in/{tl}": e_in, f"heldout/{tl}": e_heldout})
            for si, sl in enumerate(sl_names):
                e = np.concatenate(scores[method, sl, tl])
                energies[method][f"stitched/{sl}/{tl}"] = e
                rows[method].append({"method": method, **_pair_row(src_spec, tgt_spec, si, sl, ti, tl),
                                     **ood.ood_metrics(e_in, e, fpr_rule=fpr_rule)})
    for method, (out_csv, out_npz) in outputs.items():
        io.write_csv(pd.DataFrame(rows[method]), out_csv)
        io.write_npz(out_npz, energies[method])
