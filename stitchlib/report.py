"""Tables and figures: similarity matrices in one long table, layer identification (paper 1, Table 1)
and heatmaps (paper 1, Fig. 1a / Fig. 2).

Every similarity source (stitching results, structural indices, …) becomes rows of one long table::

    measure, setting, source, target, source_arch, target_arch,
    source_layer, target_layer, source_index, target_index, value

and each measure has a direction (:data:`MEASURES`): for a distance the most similar is the smallest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from stitchlib import io


@dataclass(frozen=True)
class Measure:
    label: str             # as printed in tables (paper 1's names)
    higher_is_similar: bool
    slug: str              # file-name form

    @property
    def quantity(self) -> str:
        if self.label in ("TLM", "DM (func.)"):
            return "relative accuracy"
        return "similarity" if self.higher_is_similar else "distance"


# Structural indices (stitchlib.similarity names → printed labels), in paper 1's Table 1 order first.
INDEX_LABELS = {"pwcca": "PWCCA", "opd": "OPD", "lcka": "LCKA", "lcka_debiased": "LCKA (debiased)",
                "mean_cca": "mean CCA", "svcca": "SVCCA", "r2_lr": "R²_LR", "dm_struct": "DM (struct., in-sample)"}


def _measures() -> dict[str, Measure]:
    from stitchlib.similarity import MEASURES as INDICES

    idx = {name: Measure(label, INDICES[name].higher_is_similar, name.replace("dm_struct", "dm_struct_in_sample"))
           for name, label in INDEX_LABELS.items()}
    ordered = [idx["pwcca"], idx["opd"], idx["lcka"], Measure("TLM", True, "tlm"),
               Measure("DM (struct.)", False, "dm_struct"), Measure("DM (func.)", True, "dm_func"),
               *(m for k, m in idx.items() if k not in ("pwcca", "opd", "lcka"))]
    return {m.label: m for m in ordered}


MEASURES: dict[str, Measure] = _measures()

KEYS = ["setting", "source", "target", "source_arch", "target_arch", "source_layer", "target_layer",
        "source_index", "target_index"]


def stitching_long(df: pd.DataFrame) -> pd.DataFrame:
    """Stitching results (one row per layer pair and method) → long rows for TLM, DM (func.), DM (struct.)."""
    parts = []
    for method, measure, column in [("tlm", "TLM", "relative_accuracy"), ("dm", "DM (func.)", "relative_accuracy"),
                                    ("dm", "DM (struct.)", "struct")]:
        sub = df[df["method"] == method]
        if len(sub):
            parts.append(sub[KEYS].assign(measure=measure, value=sub[column].to_numpy()))
    return pd.concat(parts, ignore_index=True)[["measure", *KEYS, "value"]]


def collect_stitching(csvs: Iterable[str | Path]) -> pd.DataFrame:
    return stitching_long(pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True))


def mean_matrix(long: pd.DataFrame, measure: str, arch: str, setting: str) -> pd.DataFrame:
    """Mean over network pairs: source layers on rows, target layers on columns, in network order."""
    sub = long[(long.measure == measure) & (long.source_arch == arch) & (long.setting == setting)]
    m = sub.pivot_table(index=["source_index", "source_layer"], columns=["target_index", "target_layer"],
                        values="value", aggfunc="mean").sort_index().sort_index(axis=1)
    m.index, m.columns = m.index.get_level_values(1), m.columns.get_level_values(1)
    return m


def identification(long: pd.DataFrame, tie_rule: str = "fractional") -> pd.DataFrame:
    """Layer identification (paper 1, Table 1): per target layer of each network pair, is the most
    similar source layer the architecturally corresponding one (the same layer name)?

    Ties: ``fractional`` credits 1/k when the corresponding layer is one of k equally best source
    layers; ``strict`` credits it only as the unique best. The same rule applies to every measure.
    Returns per (measure, setting, arch): identified (sum of credits), targets, percent.
    """
    if tie_rule not in ("fractional", "strict"):
        raise ValueError(f"tables.tie_rule must be 'fractional' or 'strict', not {tie_rule!r}")
    out = []
    for (measure, setting, arch, _, _, tl), g in long.groupby(
            ["measure", "setting", "source_arch", "source", "target", "target_layer"], sort=False):
        v = g["value"].to_numpy(float)
        if not np.isfinite(v).any():
            continue
        v = np.where(np.isfinite(v), v, -np.inf if MEASURES[measure].higher_is_similar else np.inf)
        best = v.max() if MEASURES[measure].higher_is_similar else v.min()
        tied = g["source_layer"].to_numpy()[v == best]
        credit = 0.0
        if tl in tied:
            credit = 1.0 / len(tied) if tie_rule == "fractional" else float(len(tied) == 1)
        out.append({"measure": measure, "setting": setting, "arch": arch, "credit": credit})
    t = pd.DataFrame(out).groupby(["measure", "setting", "arch"], sort=False)["credit"].agg(["sum", "count"])
    t = t.rename(columns={"sum": "identified", "count": "targets"}).reset_index()
    t["percent"] = 100 * t["identified"] / t["targets"]
    return t


def table1_markdown(t: pd.DataFrame) -> str:
    """Paper 1's layout: one row per measure; columns intra/inter × architecture; % identified."""
    wide = t.pivot_table(index="measure", columns=["setting", "arch"], values="percent", sort=False)
    order = [m for m in MEASURES if m in wide.index]
    cols = sorted(wide.columns, key=lambda c: (c[0] != "intra", c[1]))
    wide = wide.loc[order, cols]
    header = "| measure | " + " | ".join(f"{s} {a}" for s, a in cols) + " |"
    lines = [header, "|---" * (len(cols) + 1) + "|"]
    for m, row in wide.iterrows():
        lines.append(f"| {m} | " + " | ".join("–" if np.isnan(x) else f"{x:.2f}%" for x in row) + " |")
    return "\n".join(lines) + "\n"


def write_table1(long: pd.DataFrame, csv: str, md: str, tie_rule: str, title: str) -> pd.DataFrame:
    t = identification(long, tie_rule)
    io.write_csv(t, csv)
    note = (f"# {title}\n\n% of target layers whose most similar source layer is the architecturally "
            f"corresponding one (intra: the layer itself). Ties: {tie_rule}.\n\n")
    io.write_text(md, note + table1_markdown(t))
    return t


def heatmap(matrix: pd.DataFrame, path: str | Path, title: str, higher_is_similar: bool = True) -> None:
    """Source layer on rows, target layer on columns, the value printed in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = matrix.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n_cols, 1.0 + 0.55 * n_rows))
    cmap = "viridis" if higher_is_similar else "viridis_r"
    im = ax.imshow(matrix.to_numpy(float), cmap=cmap, aspect="auto")
    ax.set_xticks(range(n_cols), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(n_rows), matrix.index)
    ax.set_xlabel("target layer")
    ax.set_ylabel("source layer")
    ax.set_title(title, fontsize=9)
    vals = matrix.to_numpy(float)
    finite = vals[np.isfinite(vals)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(n_rows):
        for j in range(n_cols):
            v = vals[i, j]
            dark = (v < mid) == higher_is_similar
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_matrix(ax, matrix: pd.DataFrame, title: str, cmap: str, vmin=None, vmax=None):
    vals = matrix.to_numpy(float)
    im = ax.imshow(vals, cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=7)
    ax.set_xlabel("target layer")
    ax.set_ylabel("source layer")
    ax.set_title(title, fontsize=9)
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if im.norm(vals[i, j]) < 0.5 else "black")
    return im


def similarity_and_ood(similarity: pd.DataFrame, auroc: pd.DataFrame, path: str | Path, title: str) -> None:
    """Paper 1 Fig. 2: relative accuracy (left) beside the OOD AUROC of the same stitches (right;
    0.5 = in-distribution, 1 = the stitched activations are clearly out of distribution)."""
    plt = _plt()
    n = similarity.shape[1]
    fig, axes = plt.subplots(1, 2, figsize=(2 + 1.2 * n, 1.6 + 0.5 * n))
    fig.colorbar(_draw_matrix(axes[0], similarity, "relative accuracy", "viridis"), ax=axes[0], fraction=0.046)
    fig.colorbar(_draw_matrix(axes[1], auroc, "OOD AUROC (0.5 = in-distribution)", "magma", 0.0, 1.0),
                 ax=axes[1], fraction=0.046)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def energy_plot(energies: dict[str, np.ndarray], sources: list[str], target: str, path: str | Path,
                title: str) -> None:
    """Paper 1 Fig. 1c: top, the target layer's energies on its own test activations vs held-out outliers;
    bottom, energies of the activations stitched into it from every source layer."""
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    all_e = np.concatenate([energies[f"in/{target}"], energies[f"heldout/{target}"],
                            *[energies[f"stitched/{s}/{target}"] for s in sources]])
    bins = np.linspace(np.percentile(all_e, 0.5), np.percentile(all_e, 99.5), 60)
    top.hist(energies[f"in/{target}"], bins, alpha=0.6, density=True, label=f"{target} (in-distribution)")
    top.hist(energies[f"heldout/{target}"], bins, alpha=0.6, density=True, label="held-out outliers")
    top.legend(fontsize=8)
    top.set_ylabel("density")
    cmap = plt.get_cmap("viridis")
    for k, s in enumerate(sources):
        bottom.hist(energies[f"stitched/{s}/{target}"], bins, histtype="step", density=True,
                    color=cmap(k / max(1, len(sources) - 1)), label=f"from {s}")
    bottom.legend(fontsize=7, ncol=2)
    bottom.set_xlabel("energy  E = −logsumexp(logits)   (low = in-distribution)")
    bottom.set_ylabel("density")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
