"""Tables: similarity matrices in one long table and layer identification (paper 1, Table 1); the figures drawn
from them are in stitchlib.plotting.

Every similarity source (stitching results, structural indices, …) becomes rows of one long table::

    measure, setting, source, target, source_arch, target_arch,
    source_layer, target_layer, source_index, target_index, value

and each measure (``stitchlib.catalog.MEASURES``, by its table label) has a direction: for a distance the most
similar is the smallest.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from stitchlib import catalog, io

KEYS = ["setting", "source", "target", "source_arch", "target_arch", "source_layer", "target_layer",
        "source_index", "target_index"]


def stitching_long(df: pd.DataFrame) -> pd.DataFrame:
    """Stitching results (one row per layer pair and method) → long rows for TLM, DM (func.), DM (struct.)."""
    parts = []
    for m in ("tlm", "dm_func", "dm_struct_stitched"):  # this order: the long table's rows stay as they were
        x = catalog.MEASURES[m]
        sub = df[df["method"] == x.method]
        if len(sub):
            parts.append(sub[KEYS].assign(measure=x.label, value=sub[x.column].to_numpy()))
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
        higher = catalog.measure(measure).higher_is_similar
        v = np.where(np.isfinite(v), v, -np.inf if higher else np.inf)
        best = v.max() if higher else v.min()
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
    order = [m for m in catalog.LABELS if m in wide.index]
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
