"""Paper 2's matching-method studies (Csiszárik et al. 2021, "Similarity and matching of neural network
representations", the Frankenstein learning task), on cached or recomputed activations.

Every experiment stitches layer L of Model 1 into the same layer L of Model 2 (same architecture, two
seeds; the CKA-penalty study stitches a network into itself) and scores the stitched network on the test
split relative to Model 2 (relative accuracy = stitched / Model 2 accuracy). Model 1's frozen front half comes
from its activation cache or is recomputed from the images (``cache.consumers.frankenstein``). One function per
experiment, each writing a long CSV that ``figures`` turns into the paper's figure:

====================  =====================================================================================
``layer_matching``    Fig. 2 / Fig. 3: per layer, least squares (LS), Procrustes and TLM from the LS init
``tracking``          Fig. 4: CKA, R²_LR, cross-entropy and accuracy while TLM trains from the LS init
``cka_penalty``       Fig. 5: a self-stitch from the identity trained with loss + λ·CKA(target, stitched)
``initialisations``   Fig. 6: relative accuracy of TLM from random vs LS (and identity/permutation) inits;
                      Exp. 6: linear mode connectivity of the random-init stitches above a threshold
``low_rank``          Fig. 7: reduced-rank LS (SVD in activation space) vs a bottleneck W1·W2 trained by TLM
``sparsity``          Fig. 8: L1 DM (lasso) vs L1-penalised TLM: sparsity after thresholding vs accuracy
====================  =====================================================================================
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
import torch

from stitchlib import io, plotting, tasks
from stitchlib import similarity as sim
from stitchlib import uncertainty as unc
from stitchlib.pipeline import (
    FRONTS_DEFAULT,
    check_activations,
    dm_sample_index,
    layer_shapes,
    load_network,
    new_stitch,
    pair_fronts,
    stitched,
)
from stitchlib.progress import Progress
from stitchlib.stitching import AffineStitch, bottleneck, evaluate, fit_dm, init_stitch, rows, train_tlm
from stitchlib.train import pick_device

log = logging.getLogger(__name__)


class Pair:
    """Model 1 → Model 2 at ``layers``: Model 2 as the frozen receiver, both networks' training-split fronts (from
    their caches, read in shuffled chunks, or recomputed from the images: ``fronts``), the test split's cached
    activations of one layer at a time, the labels and Model 2's logits; the receiving layer is always the source
    layer's namesake."""

    def __init__(self, src_spec: dict, tgt_spec: dict, inputs: dict[str, str], layers: list[str],
                 device: str = "auto", fronts: dict[str, Any] | None = None, augment: str = "none", seed: int = 0):
        self.dev = pick_device(device)
        self.fronts = fronts or FRONTS_DEFAULT
        check_activations(src_spec, inputs["src_train"], inputs["src_test"])
        check_activations(tgt_spec, inputs["tgt_train"], inputs["tgt_test"])
        self.src_spec, self.tgt_spec, self.layers, self.inputs = src_spec, tgt_spec, list(layers), inputs
        self.receiver = load_network(tgt_spec, inputs["tgt_ckpt"], self.dev)
        self.src_shapes, self.tgt_shapes = layer_shapes(inputs["src_test"]), layer_shapes(inputs["tgt_test"])
        self.src_fronts, self.tgt_fronts = pair_fronts(src_spec, tgt_spec, inputs, self.fronts, self.dev,
                                                        augment, seed)
        self.augment, self.labels, self.logits, self._test = augment, {}, {}, {}
        for split in ("train", "test"):
            self.labels[split] = torch.as_tensor(io.read_array(inputs[f"tgt_{split}"], "labels"))
            self.logits[split] = torch.as_tensor(io.read_array(inputs[f"tgt_{split}"], "logits"))
        self.task = tasks.for_dataset(tgt_spec["dataset"])
        self.receiver_accuracy = self.task.accuracy(self.logits["test"], self.labels["test"])

    def test(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Model 1's and Model 2's test activations at ``layer`` (one layer held at a time)."""
        if layer not in self._test:
            self._test = {layer: tuple(torch.as_tensor(io.read_layer(self.inputs[f"{side}_test"], layer))
                                       for side in ("src", "tgt"))}
        return self._test[layer]

    def new_stitch(self, layer: str) -> AffineStitch:
        return new_stitch(self.src_shapes, self.tgt_shapes, layer, layer).to(self.dev)

    def dm(self, layer: str, method: str = "ls", samples: int | str = "all", seed: int = 0, rcond: float = 1e-6,
           **kw: Any) -> AffineStitch:
        """A direct-matching stitch fitted on the training split (all of it, or ``samples`` drawn images), its
        fronts streamed ``chunk`` images at a time."""
        idx = dm_sample_index(len(self.labels["train"]), samples, seed)
        chunks = [idx[i:i + self.fronts["chunk"]] for i in range(0, len(idx), self.fronts["chunk"])]
        st = fit_dm(self.new_stitch(layer).cpu(), (self.src_fronts.rows([layer], c)[layer] for c in chunks),
                    (self.tgt_fronts.rows([layer], c)[layer] for c in chunks), rcond=rcond, method=method, **kw)
        return st.to(self.dev)

    def tlm(self, stitches: dict[Any, AffineStitch], layer: str, cfg: dict[str, Any], seed: int,
            on_step: Callable[[int, int], None] | None = None) -> list[float]:
        """Train ``stitches`` (all into ``layer``) together on the training split; ``cfg`` as ``train_tlm``."""
        held: dict[str, torch.Tensor] = {}
        cka, soft = bool(cfg.get("cka_penalty")), cfg.get("labels", "hard") == "soft"

        def prepare(epoch: int, step: int, idx: torch.Tensor) -> None:
            held["src"] = self.src_fronts.batch([layer], idx, epoch, step)[layer]
            if cka:
                held["tgt"] = self.tgt_fronts.batch([layer], idx, epoch, step)[layer]
            if soft and self.augment != "none":  # Model 2's outputs on the same augmented images
                with torch.no_grad():
                    held["soft"] = self.receiver(self.tgt_fronts.inputs(idx, epoch, step))

        soft_targets = (lambda idx: held["soft"]) if soft and self.augment != "none" else self.logits["train"]
        return train_tlm(stitches, self.receiver, self.receiver.layer_index(layer), lambda k, idx: held["src"],
                         self.labels["train"], cfg, seed=seed, soft_targets=soft_targets,
                         target=lambda k, idx: held["tgt"], on_step=on_step, task=self.task,
                         progress=lambda s: log.debug(s), chunk=self.fronts["chunk"], buffer=self.fronts["buffer"],
                         prepare=prepare)

    def score(self, stitch: AffineStitch, layer: str) -> dict[str, float]:
        """Test accuracy, relative accuracy, cross-entropy to Model 2's outputs and DM(struct)."""
        src, tgt = self.test(layer)
        r = evaluate(stitch, self.receiver, self.receiver.layer_index(layer), src, tgt, self.labels["test"],
                     reference_logits=self.logits["test"], task=self.task)
        return {"accuracy": r["accuracy"], "relative_accuracy": r["accuracy"] / self.receiver_accuracy,
                "cross_entropy": r["cross_entropy"], "struct": r["struct"]}

    def indices(self, stitch: AffineStitch, layer: str) -> dict[str, float]:
        """CKA (flattened, as Kornblith et al.) between the stitched and Model 2's test activations, and R²_LR
        (paper 2, Def. 6.1) of the regression from Model 2's activations onto the stitched ones (each position
        a sample, so the regression is determined), in float64. The other direction, stitched → Model 2, is
        the same for every invertible stitch of one source (an affine map of the regressors changes no fit),
        so it could not move while a stitch trains."""
        src, tgt = self.test(layer)
        s, t = stitched(stitch, src).double(), tgt.double()
        layout = self.tgt_shapes[layer][1]
        return {"cka": sim.lcka(s, t), "r2_lr": sim.r2_lr(rows(t, layout), rows(s, layout))}


def _tlm_settings(cfg: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {**cfg, **over}


def _row(pair: Pair, layer: str, **cols: Any) -> dict[str, Any]:
    return {"architecture": pair.tgt_spec["arch"], "source": pair.src_spec["net"], "target": pair.tgt_spec["net"],
            "layer": layer, "layer_index": pair.layers.index(layer), **cols}


# ----------------------------------------------------------------------------- experiments

def layer_matching(pair: Pair, settings: dict[str, Any]) -> pd.DataFrame:
    """Fig. 2 / Fig. 3: every layer stitched to itself by LS, Procrustes, and TLM initialised from LS."""
    out, dm, tlm, meter = [], settings["dm"], settings["tlm"], Progress(len(pair.layers), "layers")
    for layer in pair.layers:
        ls = pair.dm(layer, "ls", **dm)
        out.append(_row(pair, layer, method="ls", **pair.score(ls, layer), **pair.indices(ls, layer)))
        pr = pair.dm(layer, "procrustes", **dm)
        out.append(_row(pair, layer, method="procrustes", **pair.score(pr, layer), **pair.indices(pr, layer)))
        pair.tlm({0: ls}, layer, tlm, seed=tlm["seed"])
        out.append(_row(pair, layer, method="tlm", **pair.score(ls, layer), **pair.indices(ls, layer)))
        log.info(meter.line(f"{layer}: LS {out[-3]['relative_accuracy']:.3f}, Procrustes "
                            f"{out[-2]['relative_accuracy']:.3f}, TLM {out[-1]['relative_accuracy']:.3f} "
                            "relative accuracy"))
    return pd.DataFrame(out)


def _tracked(pair: Pair, stitch: AffineStitch, layer: str, cfg: dict[str, Any], every: int, seed: int,
             **cols: Any) -> list[dict[str, Any]]:
    """Train one stitch by TLM, recording indices and scores before the first step and every ``every`` steps."""
    out = []

    def record(epoch: int, step: int) -> None:
        if step % every == 0:
            out.append(_row(pair, layer, epoch=epoch, step=step, **cols, **pair.score(stitch, layer),
                            **pair.indices(stitch, layer)))

    record(0, 0)
    pair.tlm({0: stitch}, layer, cfg, seed=seed, on_step=record)
    return out


def tracking(pair: Pair, settings: dict[str, Any]) -> pd.DataFrame:
    """Fig. 4: CKA, R²_LR and cross-entropy over the TLM iterations started from the LS matching."""
    t, layer = settings["track"], settings["track"]["layer"]
    return pd.DataFrame(_tracked(pair, pair.dm(layer, "ls", **settings["dm"]), layer, settings["tlm"],
                                 t["every"], settings["tlm"]["seed"], init="ls"))


def cka_penalty(pair: Pair, settings: dict[str, Any]) -> pd.DataFrame:
    """Fig. 5: a network stitched into itself from the identity, trained with cross-entropy on the labels +
    λ·CKA(target, stitched): CKA falls while accuracy holds. λ = 0 is recorded beside it as the control."""
    c, layer = settings["cka_penalty"], settings["cka_penalty"]["layer"]
    out = []
    for weight in (0.0, c["weight"]):
        st = init_stitch(pair.new_stitch(layer).cpu(), "identity").to(pair.dev)
        # Hard labels ("the usual cross-entropy term"): at the identity both the soft-label loss (the receiver's
        # own outputs) and CKA (at its maximum, 1) have zero gradient, so nothing would move.
        cfg = _tlm_settings(settings["tlm"], cka_penalty=weight, labels="hard",
                            epochs=c["epochs"] or settings["tlm"]["epochs"])
        out += _tracked(pair, st, layer, cfg, c["every"], settings["tlm"]["seed"], penalty=weight)
    return pd.DataFrame(out)


def initialisations(pair: Pair, settings: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 6: TLM from ``n`` initialisations of each kind (random, identity and permutation inits from
    seeds 0…n−1; LS inits trained with batch orders 0…n−1). Exp. 6: for every two random-init stitches that
    both reach ``min_relative_accuracy``, the relative accuracy of λ·M1 + (1−λ)·M2 (weights and biases)."""
    c, layer, tlm = settings["inits"], settings["inits"]["layer"], settings["tlm"]
    rows_, stitches, meter = [], {}, Progress(len(c["kinds"]) * c["n"], "TLM runs")
    for kind in c["kinds"]:
        for run in range(c["n"]):
            st = pair.dm(layer, "ls", **settings["dm"]) if kind == "ls" else \
                init_stitch(pair.new_stitch(layer).cpu(), kind, seed=run).to(pair.dev)
            start = pair.score(st, layer)["relative_accuracy"]
            pair.tlm({0: st}, layer, tlm, seed=tlm["seed"] + run)
            rows_.append(_row(pair, layer, init=kind, run=run, initial_relative_accuracy=start,
                              **pair.score(st, layer)))
            stitches[kind, run] = st
            log.info(meter.line(f"{kind} init {run}: relative accuracy {rows_[-1]['relative_accuracy']:.3f}"))
    inits = pd.DataFrame(rows_)
    m = settings["mode_connectivity"]
    good = [r.run for r in inits.itertuples()
            if r.init == "random" and r.relative_accuracy >= m["min_relative_accuracy"]]
    mode = []
    for a, b in combinations(good, 2):
        s1, s2 = stitches["random", a], stitches["random", b]
        mix = copy.deepcopy(s1)
        for lam in np.linspace(0, 1, m["lambdas"]):
            mix.set_affine(lam * s1.weight.detach() + (1 - lam) * s2.weight.detach(),
                           lam * s1.bias.detach() + (1 - lam) * s2.bias.detach())
            mode.append(_row(pair, layer, run_1=a, run_2=b, lam=float(lam), **pair.score(mix, layer)))
    log.info("mode connectivity: %d of %d random-init stitches reach %.0f %%, %d pairs", len(good), c["n"],
             100 * m["min_relative_accuracy"], len(good) * (len(good) - 1) // 2)
    return inits, pd.DataFrame(mode, columns=[*_row(pair, layer), "run_1", "run_2", "lam", "accuracy",
                                              "relative_accuracy", "cross_entropy", "struct"])


def low_rank(pair: Pair, settings: dict[str, Any]) -> pd.DataFrame:
    """Fig. 7: at each rank k, reduced-rank LS (M_LS·V_k·V_kᵀ, SVD of A·M_LS in activation space) vs a
    bottleneck stitch W1·W2 of rank k trained by TLM (initialised from ``init``: the reduced-rank LS, or
    random). Ranks above a layer's width are skipped; the full-rank LS is recorded as the reference."""
    c, out = settings["lowrank"], []
    for layer in c["layers"]:
        full = pair.dm(layer, "ls", **settings["dm"])
        out.append(_row(pair, layer, method="ls", rank=int(min(full.weight.shape)), **pair.score(full, layer)))
        for k in c["ranks"]:
            if k > min(full.weight.shape):
                continue
            rr = pair.dm(layer, "reduced_rank", rank=k, **settings["dm"])
            out.append(_row(pair, layer, method="reduced_rank_ls", rank=k, **pair.score(rr, layer)))
            st = rr if c["init"] == "ls" else init_stitch(pair.new_stitch(layer).cpu(), "random").to(pair.dev)
            st = bottleneck(copy.deepcopy(st), k)
            pair.tlm({0: st}, layer, settings["tlm"], seed=settings["tlm"]["seed"])
            out.append(_row(pair, layer, method="bottleneck_tlm", rank=k, **pair.score(st, layer)))
    return pd.DataFrame(out)


def _sparsify(stitch: AffineStitch, threshold: float) -> float:
    """Zero the weights with |w| < threshold (paper 2: 1e-4); returns the sparsity (share of zeros)."""
    w = stitch.weight.detach().clone()
    w[w.abs() < threshold] = 0
    stitch.set_affine(w, stitch.bias.detach())
    return float((w == 0).double().mean())


def sparsity(pair: Pair, settings: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Fig. 8: L1-regularised DM (lasso, one α per run) and L1-penalised TLM from the LS init (one λ per run);
    each stitch's small weights are zeroed at ``threshold`` before scoring. Returns the rows and every
    thresholded weight matrix (for the figure's examples)."""
    c, layer = settings["sparsity"], settings["sparsity"]["layer"]
    out, mats = [], {}
    for method, strengths in (("lasso_dm", c["dm_alphas"]), ("l1_tlm", c["tlm_l1"])):
        for strength in strengths:
            if method == "lasso_dm":
                st = pair.dm(layer, "lasso", alpha=strength, **settings["dm"])
            else:
                st = pair.dm(layer, "ls", **settings["dm"])
                pair.tlm({0: st}, layer, _tlm_settings(settings["tlm"], l1=strength), seed=settings["tlm"]["seed"])
            share = _sparsify(st, c["threshold"])
            out.append(_row(pair, layer, method=method, strength=strength, sparsity=share, **pair.score(st, layer)))
            mats[f"{method}/{strength:g}"] = st.weight.detach().cpu().numpy()
            log.info("%s strength %g: sparsity %.3f, relative accuracy %.3f", method, strength, share,
                     out[-1]["relative_accuracy"])
    return pd.DataFrame(out), mats


# ----------------------------------------------------------------------------- workflow stages

EXPERIMENTS = ("layers", "track", "cka_penalty", "inits", "lowrank", "sparsity")


def run(experiment: str, src_spec: dict, tgt_spec: dict, inputs: dict[str, str], settings: dict[str, Any],
        outputs: dict[str, str], device: str = "auto", fronts: dict[str, Any] | None = None) -> None:
    """One workflow job: ``experiment`` on one (Model 1, Model 2) pair; ``outputs`` name its files; ``fronts``
    the frankenstein consumer's cache policy, chunk and buffer."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; use one of {EXPERIMENTS}")
    # ``settings``: dm, tlm and the experiment's own section (a job sees only what it reads)
    layers = tgt_spec["layers"] if experiment == "layers" else settings["lowrank"]["layers"] \
        if experiment == "lowrank" else [settings[experiment]["layer"]]
    torch.manual_seed(0)
    start = time.time()
    pair = Pair(src_spec, tgt_spec, inputs, layers, device, fronts, settings["tlm"].get("augment", "none"),
                settings["tlm"]["seed"])
    if experiment == "layers":
        io.write_csv(layer_matching(pair, settings), outputs["csv"])
    elif experiment == "track":
        io.write_csv(tracking(pair, settings), outputs["csv"])
    elif experiment == "cka_penalty":
        io.write_csv(cka_penalty(pair, settings), outputs["csv"])
    elif experiment == "inits":
        inits, mode = initialisations(pair, settings)
        io.write_csv(inits, outputs["csv"])
        io.write_csv(mode, outputs["mode"])
    elif experiment == "lowrank":
        io.write_csv(low_rank(pair, settings), outputs["csv"])
    elif experiment == "sparsity":
        df, mats = sparsity(pair, settings)
        io.write_csv(df, outputs["csv"])
        io.write_npz(outputs["matrices"], mats)
    log.info("%s %s → %s in %.1f s", experiment, src_spec["net"], tgt_spec["net"], time.time() - start)


# ----------------------------------------------------------------------------- figures and summary

def _read(paths: list[str]) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _fig_layers(df: pd.DataFrame, archs: list[str], path: str, plt) -> None:
    fig, axes = plt.subplots(1, len(archs), figsize=(5.2 * len(archs), 3.8), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        g = df[df.architecture == arch]
        names = g.drop_duplicates("layer_index").sort_values("layer_index").layer.tolist()
        for method, label, style in (("ls", "least squares", "-o"), ("procrustes", "Procrustes", ":s"),
                                     ("tlm", "task loss", "-^")):
            plotting.band(ax, "layer_index", g[g.method == method], "relative_accuracy", label, marker=style[-1],
                  linestyle=style[:-1], markersize=4)
        ax2 = ax.twinx()
        for method, style in (("ls", "--"), ("tlm", "-.")):
            ce = g[g.method == method].groupby("layer_index").cross_entropy.mean()
            ax2.plot(ce.index, ce.values, style, color="grey", linewidth=1, label=f"cross-entropy ({method})")
        ax2.set_ylabel("cross-entropy to Model 2 (grey)")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("relative accuracy")
        pairs = g[["source", "target"]].drop_duplicates()
        ax.set_title(f"{arch}: mean ± std over {len(pairs)} network pairs", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Fig. 2: least squares vs task loss matching, layer L → layer L", fontsize=10)
    plotting.save(fig, path, tight=True)


def _fig_width(df: pd.DataFrame, widths: dict[str, float], path: str, plt) -> None:
    df = df[df.architecture.isin(list(widths))].assign(width=lambda d: d.architecture.map(widths))
    names = df.drop_duplicates("layer_index").sort_values("layer_index").layer.tolist()
    cols = min(5, len(names))
    rows_ = -(-len(names) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(2.6 * cols, 2.3 * rows_), squeeze=False, sharey=True)
    for ax, name in zip(axes.flat, names):
        g = df[df.layer == name]
        plotting.band(ax, "width", g[g.method == "tlm"], "relative_accuracy", "task loss", marker="^")
        plotting.band(ax, "width", g[g.method == "ls"], "relative_accuracy", "least squares", marker="o",
                      linestyle="--")
        ax.set_title(name, fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(widths.values()), [f"×{w:g}" for w in sorted(widths.values())], fontsize=7)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("Fig. 3: relative accuracy against the width multiplier (TLM from the LS init)", fontsize=10)
    plotting.save(fig, path, tight=True)


def _fig_tracking(df: pd.DataFrame, path: str, plt, title: str, hue: str | None = None) -> None:
    panels = [("cka", "CKA(Model 2, stitched)"), ("r2_lr", "R²_LR(Model 2 → stitched)"),
              ("cross_entropy", "cross-entropy to Model 2"), ("relative_accuracy", "relative accuracy")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.0))
    groups = [(f"{hue} = {k:g}", g) for k, g in df.groupby(hue)] if hue else [("mean ± std", df)]
    for ax, (col, label) in zip(axes, panels):
        for name, g in groups:
            plotting.band(ax, "step", g, col, name)
        if not hue:  # two single runs, as the paper's dotted and dashed lines
            for (_, run), style in zip(df.groupby(["source", "target"]), (":", "--")):
                ax.plot(run.step, run[col], style, color="black", linewidth=0.8)
        ax.set_xlabel("TLM step")
        ax.set_title(label, fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    plotting.save(fig, path, tight=True)


def _fig_inits(df: pd.DataFrame, path: str, plt) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    lo, hi = df.relative_accuracy.min(), df.relative_accuracy.max()
    pad = max(0.005, 0.05 * (hi - lo))  # the runs' own range: runs that all converge still show their spread
    bins = np.linspace(lo - pad, hi + pad, 30)
    for kind, g in df.groupby("init", sort=False):
        ax.hist(g.relative_accuracy, bins=bins, histtype="stepfilled", alpha=0.45, edgecolor="black",
                label=f"{kind} ({len(g)} runs)")
    ax.set_xlabel("relative accuracy after TLM")
    ax.set_ylabel("runs")
    ax.legend(fontsize=8)
    ax.set_title(f"Fig. 6: initialisations, {df.architecture.iloc[0]} {df.layer.iloc[0]}", fontsize=9)
    plotting.save(fig, path, tight=True)


def _pairs_note(df: pd.DataFrame) -> str:
    k = df[["source", "target"]].drop_duplicates().shape[0]
    return f"mean and ±1 sd over {k} network pairs" if k > 1 else "one network pair (frankenstein.curves)"


def _fig_low_rank(df: pd.DataFrame, path: str, plt) -> None:
    layers = list(dict.fromkeys(df.layer))
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.2), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        g = df[df.layer == layer]
        for method, label, m in (("reduced_rank_ls", "least squares, SVD-truncated", "o"),
                                 ("bottleneck_tlm", "task loss, bottleneck W1·W2", "^")):
            plotting.band(ax, "rank", g[g.method == method], "relative_accuracy", label, marker=m)
        full = g[g.method == "ls"]
        if len(full):
            ax.axhline(full.relative_accuracy.mean(), color="grey", linestyle=":",
                       label=f"full-rank LS (rank {int(full['rank'].iloc[0])})")
        ax.set_xscale("log", base=2)
        ranks = sorted(g.loc[g.method != "ls", "rank"].unique())
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.set_xlabel("rank")
        ax.set_ylabel("relative accuracy")
        ax.set_title(f"{g.architecture.iloc[0]} {layer}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Fig. 7: low-rank matching ({_pairs_note(df)})", fontsize=10)
    plotting.save(fig, path, tight=True)


def _fig_sparsity(df: pd.DataFrame, mats: dict[str, np.ndarray], path: str, plt) -> None:
    examples = []
    for method in ("lasso_dm", "l1_tlm"):
        g = df[df.method == method].sort_values("sparsity")
        if len(g):
            examples += [(method, r) for r in (g.iloc[0], g.iloc[-1])]
    fig = plt.figure(figsize=(3.0 * len(examples) + 4.5, 3.4))
    grid = fig.add_gridspec(1, len(examples) + 2)
    for i, (method, r) in enumerate(examples):
        ax = fig.add_subplot(grid[0, i])
        w = mats[f"{method}/{r.strength:g}"]
        ax.imshow(np.abs(w), cmap="Greys", vmin=0, interpolation="nearest")  # zero weights white
        ax.set_title(f"{method} {r.strength:g}\nsparsity {r.sparsity:.2f}, rel. acc. {r.relative_accuracy:.2f}",
                     fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(grid[0, len(examples):])
    for method, label, m in (("lasso_dm", "L1 direct matching (lasso)", "o"), ("l1_tlm", "L1 task loss matching", "^")):
        g = df[df.method == method]  # at each strength: mean sparsity, relative accuracy ± sd over network pairs
        plotting.band(ax, "sparsity", g.assign(sparsity=g.groupby("strength").sparsity.transform("mean")),
                      "relative_accuracy", label, marker=m)
    ax.set_xlabel("sparsity (share of zero weights)")
    ax.set_ylabel("relative accuracy")
    ax.legend(fontsize=7)
    fig.suptitle(f"Fig. 8: sparse matchings, {df.architecture.iloc[0]} {df.layer.iloc[0]} "
                 f"(left: |W|, output × input, zeros white; {_pairs_note(df)})", fontsize=10)
    plotting.save(fig, path, tight=True)


def _fig_mode(df: pd.DataFrame, n_good: int, threshold: float, path: str, plt) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    if len(df):
        for _, g in df.groupby(["run_1", "run_2"]):
            ax.plot(g.lam, g.relative_accuracy, color="C0", alpha=0.5, linewidth=1)
        mean = df.groupby("lam").relative_accuracy.mean()
        ax.plot(mean.index, mean.values, color="black", linewidth=2, label="mean over pairs")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, f"fewer than two random-init stitches reached {threshold:.0%}", ha="center",
                transform=ax.transAxes)
    ax.set_xlabel("λ  (λ·M1 + (1 − λ)·M2)")
    ax.set_ylabel("relative accuracy")
    ax.set_title(f"Exp. 6: linear mode connectivity ({n_good} stitches ≥ {threshold:.0%})", fontsize=9)
    plotting.save(fig, path, tight=True)


def summary(results: dict[str, pd.DataFrame], settings: dict[str, Any],
            uncertainty: dict | None = None) -> pd.DataFrame:
    """The numbers the README sets beside the paper's findings, one row per (study, quantity). A mean over
    network pairs or runs gets, with ``uncertainty`` enabled, its interval over those units (``low``, ``high``,
    ``over``: each unit resampled with its rows, `stitchlib.uncertainty.cluster_bootstrap`; with 2 network pairs
    this is about the range of the two pairs' means, no more)."""
    out = []

    def add(study: str, quantity: str, value: float, paper: str = "", over: tuple | None = None) -> None:
        row = {"study": study, "quantity": quantity, "value": float(value), "paper": paper, "low": np.nan,
               "high": np.nan, "over": ""}
        if over is not None and uncertainty is not None and uncertainty["enabled"] and len(over[1]):
            name, g, col = over
            units = list(zip(g.source, g.target)) if name == "network pairs" else list(g[name])
            b = unc.cluster_bootstrap(g[col], units, replicates=uncertainty["replicates"], seed=uncertainty["seed"])
            lo, hi = b.interval(uncertainty["level"], uncertainty["method"])
            row.update(low=float(lo), high=float(hi), over=f"{name} ({len(set(units))})")
        out.append(row)

    layers = results.get("layers", pd.DataFrame())
    for arch in settings["architectures"]:
        g = layers[layers.architecture == arch]
        for method in ("ls", "procrustes", "tlm"):
            add("Fig. 2", f"{arch}: mean relative accuracy, {method}", g[g.method == method].relative_accuracy.mean(),
                "TLM near 1 on ResNet-20; LS collapses on some layers" if method == "tlm" else "",
                ("network pairs", g[g.method == method], "relative_accuracy"))
        per_layer = g[g.method == "tlm"].groupby("layer").relative_accuracy.mean()
        add("Fig. 2", f"{arch}: weakest TLM layer ({per_layer.idxmin()})", per_layer.min(),
            "ResNet-20: after the first conv, ≈ 0.80")
        cka = g[g.method == "tlm"].cka
        add("Fig. 2", f"{arch}: CKA(transformed, Model 2) after TLM, mean", cka.mean(),
            "ResNet 0.922 ± 0.098, Tiny-10 0.883 ± 0.050", ("network pairs", g[g.method == "tlm"], "cka"))
        add("Fig. 2", f"{arch}: CKA(transformed, Model 2) after TLM, std", cka.std(ddof=0))
    for arch, mult in settings["widths"].items():
        g = layers[(layers.architecture == arch) & (layers.method == "tlm")]
        add("Fig. 3", f"width ×{mult:g} ({arch}): mean TLM relative accuracy", g.relative_accuracy.mean(),
            "increases with width", ("network pairs", g, "relative_accuracy"))
    track = results.get("track", pd.DataFrame())
    if len(track):
        first, last = track[track.step == 0], track[track.step == track.step.max()]
        for col in ("cka", "r2_lr", "relative_accuracy"):
            add("Fig. 4", f"{col} at the LS init → after TLM", last[col].mean() - first[col].mean(),
                "CKA decreases while accuracy increases" if col == "cka" else "")
            add("Fig. 4", f"{col} after TLM", last[col].mean(), over=("network pairs", last, col))
    pen = results.get("cka_penalty", pd.DataFrame())
    if len(pen):
        on = pen[pen.penalty > 0]
        end = on[on.step == on.step.max()].iloc[0]
        add("Fig. 5", "CKA after training with the penalty", end.cka, "below 0.7")
        add("Fig. 5", "relative accuracy after training with the penalty", end.relative_accuracy,
            "essentially unchanged")
    inits = results.get("inits", pd.DataFrame())
    for kind, g in inits.groupby("init", sort=False) if len(inits) else []:
        add("Fig. 6", f"{kind} init: mean relative accuracy", g.relative_accuracy.mean(),
            "LS init consistently good; random mostly similar, sometimes stuck", ("run", g, "relative_accuracy"))
        add("Fig. 6", f"{kind} init: min relative accuracy", g.relative_accuracy.min())
    mode = results.get("mode", pd.DataFrame())
    if len(mode):
        curve = mode.groupby("lam").relative_accuracy.mean()
        add("Exp. 6", "min over λ of the mean relative accuracy", curve.min(),
            "connected on most layers, not on the first three")
        add("Exp. 6", "mean relative accuracy at the endpoints", curve.iloc[[0, -1]].mean())
    low = results.get("lowrank", pd.DataFrame())
    for (layer, k), g in low[low.method != "ls"].groupby(["layer", "rank"]) if len(low) else []:
        by = g.groupby("method").relative_accuracy.mean()  # over network pairs
        add("Fig. 7", f"{layer} rank {k}: TLM bottleneck − SVD-truncated LS",
            by.get("bottleneck_tlm", np.nan) - by.get("reduced_rank_ls", np.nan), "TLM above LS at every rank")
    sp = results.get("sparsity", pd.DataFrame())
    for method, g in sp.groupby("method") if len(sp) else []:
        g = g.groupby("strength")[["sparsity", "relative_accuracy"]].mean().reset_index()  # over network pairs
        below = g[g.sparsity <= 0.9].sort_values("sparsity")  # the paper's range of interest: up to 90 % zeros
        if len(below):
            top = below.iloc[-1]
            add("Fig. 8", f"{method}: relative accuracy at its highest sparsity up to 90 % ({top.sparsity:.2f})",
                top.relative_accuracy, "DM drops sharply near 80–90 % sparsity; TLM degrades far less")
    return pd.DataFrame(out)


def figures(inputs: dict[str, list[str]], settings: dict[str, Any], figure_paths: dict[str, str], out_csv: str,
            out_md: str, uncertainty: dict | None = None) -> None:
    """Every figure of the study and its summary table, from the experiments' CSVs."""
    plt = plotting.pyplot()
    results = {k: _read(v) for k, v in inputs.items() if k != "matrices"}
    layers = results["layers"]
    _fig_layers(layers, settings["architectures"], figure_paths["fig2_layers"], plt)
    if "fig3_width" in figure_paths:
        _fig_width(layers, settings["widths"], figure_paths["fig3_width"], plt)
    _fig_tracking(results["track"], figure_paths["fig4_tracking"], plt,
                  f"Fig. 4: TLM from the LS init, {settings['network']} {settings['track']['layer']}")
    c = settings["cka_penalty"]
    _fig_tracking(results["cka_penalty"], figure_paths["fig5_cka_penalty"], plt,
                  f"Fig. 5: self-stitch {c['architecture']} {c['layer']} from the identity, loss + λ·CKA",
                  hue="penalty")
    _fig_inits(results["inits"], figure_paths["fig6_inits"], plt)
    _fig_low_rank(results["lowrank"], figure_paths["fig7_low_rank"], plt)
    mats = io.read_npz(inputs["matrices"][0])
    _fig_sparsity(results["sparsity"], mats, figure_paths["fig8_sparsity"], plt)
    inits = results["inits"]
    m = settings["mode_connectivity"]
    n_good = int(((inits.init == "random") & (inits.relative_accuracy >= m["min_relative_accuracy"])).sum())
    _fig_mode(results["mode"], n_good, m["min_relative_accuracy"], figure_paths["exp6_mode_connectivity"], plt)
    plt.close("all")
    table = summary(results, settings, uncertainty)
    io.write_csv(table, out_csv)
    lines = ["## Paper 2 (Csiszárik et al. 2021): matching-method studies", "",
             "| Study | Quantity | Value | Paper |", "|---|---|---|---|"]
    ci = lambda r: f" [{r.low:.3f}, {r.high:.3f}] over {r.over}" if np.isfinite(r.low) else ""  # noqa: E731
    lines += [f"| {r.study} | {r.quantity} | {r.value:.3f}{ci(r)} | {r.paper} |" for r in table.itertuples()]
    io.write_text(out_md, "\n".join(lines) + "\n")
