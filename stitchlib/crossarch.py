"""Cross-architecture stitching: paper 3's small-ResNet grid (Hernandez et al. 2022) and conv ↔ ViT (paper 1's code).

Every sender *block output* is stitched into every receiver *block input* (the stem output is the input
of block 0), for every ordered pair of networks, with DM and then TLM initialised from DM
(``pipeline.dm_pair`` / ``pipeline.tlm_pair``: the same fitting, training and whole-test-split evaluation as
paper 1's matrices; the stitch types are ``stitching.make_stitch``'s).

Proportional depth of a stitch point = the fraction of the network's blocks that run before it
(``catalog.blocks_before``): the output of block i of n_s has depth (i + 1)/n_s, the input of block j of
n_r has depth j/n_r. A stitch is *equal* when the two depths are equal (the receiver resumes where the
sender stopped, proportionally: the identity position when a network is stitched with itself), *later*
when the sender's depth is larger, *earlier* when smaller. Paper 3 found high accuracy for later and equal
stitches, lower for earlier ones, and lower still with random networks.

Random controls: a random network is the seeded initialisation of the trained one — the exact weights its
training started from (``init_network``).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from stitchlib import catalog, io, pipeline, plotting
from stitchlib import uncertainty as unc

log = logging.getLogger(__name__)

RELATIONS = ("later", "earlier", "equal")


# ----------------------------------------------------------------------------- stitch points and depth

def _blocks_before(spec: dict[str, Any]) -> tuple[dict[str, int], int]:
    return catalog.blocks_before(spec["family"], spec["params"])


def senders(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec restricted to block outputs (stitch points after at least one block)."""
    before, _ = _blocks_before(spec)
    return {**spec, "layers": [layer for layer in spec["layers"] if before[layer] >= 1]}


def receivers(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec restricted to block inputs (stitch points before at least one block)."""
    before, n = _blocks_before(spec)
    return {**spec, "layers": [layer for layer in spec["layers"] if before[layer] < n]}


def depth(spec: dict[str, Any], layer: str) -> Fraction:
    """Proportional depth of a stitch point: blocks run before it / blocks of the network (exact)."""
    before, n = _blocks_before(spec)
    return Fraction(before[layer], n)


def relation(sender_depth: Fraction, receiver_depth: Fraction) -> str:
    """'later' / 'earlier' / 'equal': the sender's proportional depth against the receiver's."""
    if sender_depth == receiver_depth:
        return "equal"
    return "later" if sender_depth > receiver_depth else "earlier"


def receiver_block(spec: dict[str, Any], layer: str) -> str:
    """The block whose input the stitch point ``layer`` is."""
    names = catalog.layer_names(spec["family"], spec["params"])
    return names[names.index(layer) + 1]


# ----------------------------------------------------------------------------- jobs

def init_network(spec: dict[str, Any], ckpt: str, outputs: dict[str, str], settings: dict[str, Any],
                 device: str = "auto") -> None:
    """Random control: save the network's seeded initialisation (what ``pipeline.train`` starts from) and
    extract its activations like a trained network's."""
    torch.manual_seed(spec["seed"])
    net = pipeline.build_network(spec)
    io.save_state_dict(ckpt, {k: v.cpu() for k, v in net.state_dict().items()})
    pipeline.extract(spec, ckpt, outputs, batch_size=settings["batch_size"], chunk=settings["chunk"],
                     dtype=settings["dtype"], device=device, fronts=settings.get("fronts", True),
                     test=settings.get("test"))


def stitch_pair(src_spec: dict[str, Any], tgt_spec: dict[str, Any], inputs: dict[str, str],
                dm_settings: dict[str, Any], tlm_settings: dict[str, Any], outputs: dict[str, str],
                conv_stitch: str = "paper3", device: str = "auto", fronts: dict[str, Any] | None = None) -> None:
    """DM, then TLM from DM, for every sender block output × receiver block input of one network pair.

    ``inputs``: src/tgt train/test activation files and both checkpoints (trained or random); ``outputs``:
    dm_pt, dm_csv, tlm_pt, tlm_csv, and the per-image NPZs dm_npz, tlm_npz (default: beside the CSVs); ``fronts``:
    the cross consumer's cache policy (``pipeline.dm_pair``).
    """
    src, tgt = senders(src_spec), receivers(tgt_spec)
    pipeline.dm_pair(src, tgt, inputs, dm_settings, outputs["dm_pt"], outputs["dm_csv"], device, conv_stitch,
                     outputs.get("dm_npz"), fronts)
    pipeline.tlm_pair(src, tgt, {**inputs, "dm": outputs["dm_pt"]}, tlm_settings, outputs["tlm_pt"],
                      outputs["tlm_csv"], device, conv_stitch, outputs.get("tlm_npz"), fronts)


# ----------------------------------------------------------------------------- aggregation

def annotate(df: pd.DataFrame, specs: dict[str, dict], grid: str, condition: str) -> pd.DataFrame:
    """Add grid, condition, proportional depths, their relation and the receiving block to a pair's rows."""
    s, t = specs[df["source"].iloc[0]], specs[df["target"].iloc[0]]
    ds = [depth(s, layer) for layer in df["source_layer"]]
    dr = [depth(t, layer) for layer in df["target_layer"]]
    return df.assign(grid=grid, condition=condition, source_depth=[float(d) for d in ds],
                     target_depth=[float(d) for d in dr], relation=[relation(a, b) for a, b in zip(ds, dr)],
                     target_block=[receiver_block(t, layer) for layer in df["target_layer"]])


def summary(df: pd.DataFrame, correct: np.ndarray | None = None, uncertainty: dict | None = None) -> pd.DataFrame:
    """Paper 3's statistics per (grid, condition, method): mean stitched test accuracy of the stitches whose
    sender is proportionally later than / earlier than / equal to the receiver, with the cell counts.

    ``correct`` (rows of ``df`` × test images, each stitch's per-image accuracy) and ``uncertainty``: also each
    mean's interval over the test images (``<relation>_low`` / ``_high``; every stitch on the same resamples).
    The networks are fixed architectures, one seed each: no resampling over them."""
    boot = correct is not None and uncertainty is not None and uncertainty["enabled"]
    C = unc.resample_counts(correct.shape[1], uncertainty["replicates"], uncertainty["seed"]) if boot else None
    rows = []
    for (grid, condition, method), g in df.groupby(["grid", "condition", "method"], sort=False):
        row = {"grid": grid, "condition": condition, "method": method,
               "network_pairs": g[["source", "target"]].drop_duplicates().shape[0]}
        for r in RELATIONS:
            sel = g.index[g["relation"] == r]
            row[r], row[f"n_{r}"] = (float(df.loc[sel, "accuracy"].mean()) if len(sel) else float("nan")), len(sel)
            if boot:
                b = unc.stitch_bootstrap(correct[sel].mean(0), counts=C, jackknife=False) if len(sel) else None
                lo, hi = b.interval(uncertainty["level"], uncertainty["method"]) if b else (np.nan, np.nan)
                row[f"{r}_low"], row[f"{r}_high"] = float(lo), float(hi)
        rows.append(row)
    return pd.DataFrame(rows)


def summary_markdown(t: pd.DataFrame) -> str:
    head = ("Mean stitched test accuracy (whole test split) by the sender's proportional depth against the "
            "receiver's (cells in brackets"
            + ("; [95 % interval over the test images]" if "later_low" in t else "")
            + ").\n\n| grid | condition | method | later | earlier | equal | pairs |\n|---|---|---|---|---|---|---|\n")

    def fmt(r, k):
        if np.isnan(r[k]):
            return "–"
        ci = f" [{r[k + '_low']:.3f}, {r[k + '_high']:.3f}]" if f"{k}_low" in r and np.isfinite(r[f"{k}_low"]) else ""
        return f"{r[k]:.3f}{ci} ({r['n_' + k]})"

    return head + "".join(f"| {r['grid']} | {r['condition']} | {r['method']} | {fmt(r, 'later')} | "
                          f"{fmt(r, 'earlier')} | {fmt(r, 'equal')} | {r['network_pairs']} |\n"
                          for _, r in t.iterrows())


def depth_matrix(df: pd.DataFrame, bins: int = 8) -> pd.DataFrame:
    """Mean accuracy over all cells and network pairs, binned by proportional depth: sender depth on rows,
    receiver depth on columns, bin k = [k/bins, (k+1)/bins) (depth 1 in the last bin)."""
    b = lambda d: np.minimum((d.to_numpy() * bins + 1e-9).astype(int), bins - 1)  # noqa: E731
    m = df.assign(s=b(df["source_depth"]), r=b(df["target_depth"])).pivot_table(
        index="s", columns="r", values="accuracy", aggfunc="mean")
    m = m.reindex(index=range(bins), columns=range(bins))
    label = [f"{k / bins:.2f}–{(k + 1) / bins:.2f}" for k in range(bins)]
    m.index, m.columns = label, label
    return m


def triangle_figure(df: pd.DataFrame, method: str, path: str | Path, bins: int = 8) -> None:
    """Paper 3's triangle: per condition, accuracy binned by sender × receiver proportional depth."""
    plt = plotting.pyplot()
    conds = list(dict.fromkeys(df["condition"]))
    fig, axes = plt.subplots(1, len(conds), figsize=(1.0 + 3.6 * len(conds), 4.2), squeeze=False,
                             constrained_layout=True)
    for ax, c in zip(axes[0], conds):
        sub = df[df["condition"] == c]
        title = f"{c} ({sub[['source', 'target']].drop_duplicates().shape[0]} pairs)"
        im = _matrix(ax, depth_matrix(sub, bins), title, True, "receiver depth (block input)",
                     "sender depth (block output)")
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02, label="test accuracy")
    fig.suptitle(f"{method.upper()} stitching accuracy by proportional depth (below the diagonal: sender later)",
                 fontsize=9)
    plotting.save(fig, path, dpi=100)


def _matrix(ax, m: pd.DataFrame, title: str, text: bool, xlabel: str, ylabel: str):
    """Accuracies on a fixed 0–1 scale (every panel comparable)."""
    return plotting.matrix(ax, m, title, vmin=0.0, vmax=1.0, text=text, fontsize=6, xlabel=xlabel, ylabel=ylabel,
                           tick_rotation=60)


def pair_matrix(df: pd.DataFrame) -> pd.DataFrame:
    """One network pair's sender block output × receiver block input accuracy matrix."""
    m = df.pivot_table(index=["source_index", "source_layer"], columns=["target_index", "target_block"],
                       values="accuracy", aggfunc="mean").sort_index().sort_index(axis=1)
    m.index, m.columns = m.index.get_level_values(1), [f"→{b}" for b in m.columns.get_level_values(1)]
    return m


def pairs_figure(df: pd.DataFrame, title: str, path: str | Path) -> None:
    """Every network pair's matrix: sender networks on rows, receiver networks on columns."""
    plt = plotting.pyplot()
    src, tgt = list(dict.fromkeys(df["source"])), list(dict.fromkeys(df["target"]))
    fig, axes = plt.subplots(len(src), len(tgt), figsize=(1.2 + 2.8 * len(tgt), 0.8 + 2.8 * len(src)), squeeze=False,
                             constrained_layout=True)
    for (i, s), (j, t) in ((a, b) for a in enumerate(src) for b in enumerate(tgt)):
        sub = df[(df["source"] == s) & (df["target"] == t)]
        if len(sub):
            im = _matrix(axes[i, j], pair_matrix(sub), f"{s} → {t}", len(src) * len(tgt) <= 4, "receiver block input",
                         "sender block output")
        else:
            axes[i, j].axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.02, label="test accuracy")
    fig.suptitle(title, fontsize=10)
    plotting.save(fig, path, dpi=100)


def report(jobs: list[tuple[str, str, str, str]], csvs: dict[str, list[str]], specs: dict[str, dict],
           outputs: dict[str, Any], bins: int = 8, uncertainty: dict | None = None) -> pd.DataFrame:
    """All the study's outputs from the pair jobs' CSVs (and, for the summary's intervals, the per-image NPZ
    beside each CSV).

    ``jobs``: (grid, condition, sender, receiver) in the order of ``csvs[method]``; ``outputs``: table (all
    rows), summary_csv, summary_md, triangle[method], pairs[(grid, condition, method)] (PNG paths).
    """
    df = pd.concat([annotate(pd.read_csv(p), specs, grid, cond) for m in csvs
                    for (grid, cond, _, _), p in zip(jobs, csvs[m])], ignore_index=True)
    io.write_csv(df, outputs["table"])
    correct = None
    if uncertainty is not None and uncertainty["enabled"]:
        correct = np.concatenate([io.read_npz(Path(p).with_suffix(".npz"))["correct"] for m in csvs for p in csvs[m]])
    t = summary(df, correct, uncertainty)
    io.write_csv(t, outputs["summary_csv"])
    io.write_text(outputs["summary_md"], "# Cross-architecture stitching (paper 3)\n\n" + summary_markdown(t))
    for method, path in outputs["triangle"].items():
        triangle_figure(df[(df["grid"] == "resnets") & (df["method"] == method)], method, path, bins)
    for (grid, cond, method), path in outputs["pairs"].items():
        sub = df[(df["grid"] == grid) & (df["condition"] == cond) & (df["method"] == method)]
        pairs_figure(sub, f"{method.upper()} stitching accuracy, {grid}, {cond}", path)
    log.info("%d stitches from %d pair jobs", len(df), len(jobs))
    return t
