"""Figures: the one place that sets up matplotlib, draws value matrices and saves figures atomically.

Paper 1's figures (layer-pair heatmaps, Fig. 2's relative accuracy beside OOD AUROC, Fig. 1c's energies) are
here; the studies' own figure layouts (stitchlib.crossarch, stitchlib.frankenstein) are built from the same
pieces: :func:`pyplot`, :func:`matrix`, :func:`band` and :func:`save`. matplotlib is imported on first use, so
importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stitchlib import io


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (jobs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, dpi: int = 110, tight: bool = False) -> None:
    """Write ``fig`` as PNG atomically (nothing appears at ``path`` unless complete) and close it."""
    if tight:
        fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)


def matrix(ax, m: pd.DataFrame, title: str, cmap: str = "viridis", vmin: float | None = None,
           vmax: float | None = None, text: bool = True, fontsize: float = 7, xlabel: str = "target layer",
           ylabel: str = "source layer", tick_rotation: float = 45):
    """Draw a value matrix (rows × columns of ``m``, labelled by its index and columns) with the value printed
    in each finite cell, in white on dark colours and black on light ones; returns the image for a colorbar."""
    vals = m.to_numpy(float)
    im = ax.imshow(vals, cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(m.shape[1]), m.columns, rotation=tick_rotation, ha="right", fontsize=fontsize)
    ax.set_yticks(range(m.shape[0]), m.index, fontsize=fontsize)
    ax.set_xlabel(xlabel, fontsize=fontsize)
    ax.set_ylabel(ylabel, fontsize=fontsize)
    ax.set_title(title, fontsize=9)
    if text:
        for (i, j), v in np.ndenumerate(vals):
            if np.isfinite(v):
                r, g, b, _ = im.cmap(im.norm(v))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=fontsize - 1,
                        color="white" if dark else "black")
    return im


def band(ax, x: str, g: pd.DataFrame, col: str, label: str, **style) -> None:
    """Mean of ``col`` over runs at each ``x`` with a ±1 standard deviation band."""
    stats = g.groupby(x)[col].agg(["mean", "std"]).fillna(0.0)
    line, = ax.plot(stats.index, stats["mean"], label=label, **style)
    ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2,
                    color=line.get_color())


# ----------------------------------------------------------------------------- paper 1's figures

def heatmap(m: pd.DataFrame, path: str | Path, title: str, higher_is_similar: bool = True) -> None:
    """Paper 1 Fig. 1a: source layer on rows, target layer on columns, the value printed in each cell (the
    colour scale reversed for distances, so that similar is always bright)."""
    plt = pyplot()
    n_rows, n_cols = m.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n_cols, 1.0 + 0.55 * n_rows))
    im = matrix(ax, m, title, "viridis" if higher_is_similar else "viridis_r", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    save(fig, path, tight=True)


def similarity_and_ood(similarity: pd.DataFrame, auroc: pd.DataFrame, path: str | Path, title: str) -> None:
    """Paper 1 Fig. 2: relative accuracy (left) beside the OOD AUROC of the same stitches (right;
    0.5 = in-distribution, 1 = the stitched activations are clearly out of distribution)."""
    plt = pyplot()
    n = similarity.shape[1]
    fig, axes = plt.subplots(1, 2, figsize=(2 + 1.2 * n, 1.6 + 0.5 * n))
    fig.colorbar(matrix(axes[0], similarity, "relative accuracy"), ax=axes[0], fraction=0.046)
    fig.colorbar(matrix(axes[1], auroc, "OOD AUROC (0.5 = in-distribution)", "magma", 0.0, 1.0),
                 ax=axes[1], fraction=0.046)
    fig.suptitle(title, fontsize=10)
    save(fig, path, tight=True)


def energy_plot(energies: dict[str, np.ndarray], sources: list[str], target: str, path: str | Path,
                title: str) -> None:
    """Paper 1 Fig. 1c: top, the target layer's energies on its own test activations vs held-out outliers;
    bottom, energies of the activations stitched into it from every source layer."""
    plt = pyplot()
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
    save(fig, path, tight=True)
