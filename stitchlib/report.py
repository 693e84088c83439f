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
from stitchlib import uncertainty as unc

KEYS = ["setting", "source", "target", "source_arch", "target_arch", "source_layer", "target_layer",
        "source_index", "target_index"]


def stitching_long(df: pd.DataFrame, replicates: dict[str, np.ndarray] | None = None):
    """Stitching results (one row per layer pair and method) → long rows for TLM, DM (func.), DM (struct.).
    ``replicates``: per result column, its bootstrap replicates (rows of ``df`` × B); then also returns the long
    rows' replicates (rows × B), in the same order."""
    parts, reps = [], []
    for m in ("tlm", "dm_func", "dm_struct_stitched"):  # this order: the long table's rows stay as they were
        x = catalog.MEASURES[m]
        mask = (df["method"] == x.method).to_numpy()
        sub = df[mask]
        if len(sub):
            parts.append(sub[KEYS].assign(measure=x.label, value=sub[x.column].to_numpy()))
            reps += [replicates[x.column][mask]] if replicates is not None else []
    long = pd.concat(parts, ignore_index=True)[["measure", *KEYS, "value"]]
    return long if replicates is None else (long, np.concatenate(reps))


def collect_stitching(csvs: Iterable[str | Path]) -> pd.DataFrame:
    return stitching_long(pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True))


def similarity_table(stitching: list[str], indices: list[str], out_csv: str, out_npz: str,
                     uncertainty: dict) -> None:
    """The long table of every measure (``out_csv``) and, with ``uncertainty.enabled``, its bootstrap replicates
    over the test images (``out_npz`` 'replicates': rows × B, float32; NaN where a measure has none): the
    stitching measures from the per-image terms next to each stitching CSV (relative accuracy paired with the
    receiver's own accuracy on the same resample, DM (struct.) as Σ‖T(a) − b‖² / Σ‖b‖²), the indices from the
    indices jobs' replicates — all from `stitchlib.uncertainty.resample_counts(n, B, seed)`."""
    B = uncertainty["replicates"] if uncertainty["enabled"] else 0
    parts, reps = [], []
    if stitching:
        df = pd.concat([pd.read_csv(p) for p in stitching], ignore_index=True)
        cols = {"relative_accuracy": [], "struct": []}
        for p in stitching:
            z = io.read_npz(Path(p).with_suffix(".npz"))
            C = unc.resample_counts(z["receiver"].shape[-1], B, uncertainty["seed"])
            cols["relative_accuracy"].append(unc.mean_ratio(z["correct"], z["receiver"], C).T.astype(np.float32))
            cols["struct"].append(unc.mean_ratio(z["err"], z["norm"], C).T.astype(np.float32))
        long, r = stitching_long(df, {k: np.concatenate(v) for k, v in cols.items()})
        parts, reps = [long], [r]
    for p in indices:
        parts.append(pd.read_csv(p))
        r = io.read_npz(Path(p).with_suffix(".npz"))["replicates"]
        reps.append(r if r.shape[1] == B else np.full((len(parts[-1]), B), np.nan, np.float32))
    io.write_npz(out_npz, {"replicates": np.concatenate(reps)})
    io.write_csv(pd.concat(parts, ignore_index=True), out_csv)


def mean_matrix(long: pd.DataFrame, measure: str, arch: str, setting: str) -> pd.DataFrame:
    """Mean over network pairs: source layers on rows, target layers on columns, in network order."""
    sub = long[(long.measure == measure) & (long.source_arch == arch) & (long.setting == setting)]
    m = sub.pivot_table(index=["source_index", "source_layer"], columns=["target_index", "target_layer"],
                        values="value", aggfunc="mean").sort_index().sort_index(axis=1)
    m.index, m.columns = m.index.get_level_values(1), m.columns.get_level_values(1)
    return m


def matrix_intervals(long: pd.DataFrame, replicates: np.ndarray, measure: str, arch: str, setting: str,
                     uncertainty: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """:func:`mean_matrix` with the interval of each cell's mean over network pairs: replicate b resamples the
    networks (a pair weighs the product of its networks' counts) and applies image resample b to every pair (a
    measure without image replicates keeps its values: networks only). Returns (mean, low, high)."""
    mask = ((long.measure == measure) & (long.source_arch == arch) & (long.setting == setting)).to_numpy()
    sub, reps = long[mask], replicates[mask]
    reps = np.where(np.isnan(reps).all(1, keepdims=True), sub["value"].to_numpy(float)[:, None], reps)
    mean = mean_matrix(long, measure, arch, setting)
    pairs = list(dict.fromkeys(zip(sub.source, sub.target)))
    nets = sorted({n for p in pairs for n in p})
    cell = {(s, t): (i, j) for i, s in enumerate(mean.index) for j, t in enumerate(mean.columns)}
    V = np.full((reps.shape[1], *mean.shape, len(pairs)), np.nan)
    pos = {p: k for k, p in enumerate(pairs)}
    for r, row in enumerate(sub.itertuples()):
        V[(slice(None), *cell[row.source_layer, row.target_layer], pos[row.source, row.target])] = reps[r]
    w = unc.pair_weights(pairs, nets, unc.network_counts(len(nets), reps.shape[1], uncertainty["seed"]))
    pooled = unc.pooled(V, w)
    pooled = pooled[np.isfinite(pooled).reshape(len(pooled), -1).any(1)]  # drew no pair of this setting
    lo, hi = unc.interval(mean.to_numpy(float), pooled, level=uncertainty["level"], method=uncertainty["method"])
    return mean, pd.DataFrame(lo, mean.index, mean.columns), pd.DataFrame(hi, mean.index, mean.columns)


def overlaps_best(mean: pd.DataFrame, low: pd.DataFrame, high: pd.DataFrame, higher_is_similar: bool) -> np.ndarray:
    """Cells whose interval overlaps the interval of the best cell of their column (the source layers that
    cannot be told apart from the most similar one), the best cell included."""
    m, lo, hi = (x.to_numpy(float) for x in (mean, low, high))
    best = np.nanargmax(m, 0) if higher_is_similar else np.nanargmin(m, 0)
    cols = np.arange(m.shape[1])
    return (lo <= hi[best, cols]) & (hi >= lo[best, cols])


TIE_RULES = ("fractional", "strict", "bootstrap")


def credit(values: np.ndarray, corresponding: np.ndarray, higher_is_similar: bool, tie_rule: str) -> np.ndarray:
    """Identification credit of one target layer: ``values`` (source layers × replicates), ``corresponding``
    marks the architecturally corresponding source layer(s). ``fractional``: 1/k when it is one of k tied best;
    ``strict``: 1 only as the unique best. NaN values are never best; NaN where every source is NaN."""
    v = np.where(np.isfinite(values), values, -np.inf if higher_is_similar else np.inf)
    tied = v == (v.max(0) if higher_is_similar else v.min(0))
    k, hit = tied.sum(0), tied[corresponding].any(0)
    out = np.where(hit, 1.0 / k, 0.0) if tie_rule == "fractional" else (hit & (k == 1)).astype(float)
    return np.where(np.isfinite(values).any(0), out, np.nan)


def _targets(long: pd.DataFrame):
    """(measure, setting, arch, source, target, target layer, row positions, corresponding mask) per target layer
    of each network pair."""
    keys = ["measure", "setting", "source_arch", "source", "target", "target_layer"]
    for key, rows in long.groupby(keys, sort=False).indices.items():
        yield (*key, rows, long["source_layer"].to_numpy()[rows] == key[-1])


def identification(long: pd.DataFrame, tie_rule: str = "fractional") -> pd.DataFrame:
    """Layer identification (paper 1, Table 1): per target layer of each network pair, is the most
    similar source layer the architecturally corresponding one (the same layer name)?

    Ties (:func:`credit`): ``fractional`` credits 1/k when the corresponding layer is one of k equally best source
    layers; ``strict`` credits it only as the unique best. The same rule applies to every measure.
    Returns per (measure, setting, arch): identified (sum of credits), targets, percent.
    """
    if tie_rule not in ("fractional", "strict"):
        raise ValueError(f"tables.tie_rule must be 'fractional' or 'strict' here, not {tie_rule!r}")
    values, out = long["value"].to_numpy(float), []
    for measure, setting, arch, _, _, _, rows, corr in _targets(long):
        c = credit(values[rows, None], corr, catalog.measure(measure).higher_is_similar, tie_rule)[0]
        if np.isfinite(c):
            out.append({"measure": measure, "setting": setting, "arch": arch, "credit": c})
    t = pd.DataFrame(out).groupby(["measure", "setting", "arch"], sort=False)["credit"].agg(["sum", "count"])
    t = t.rename(columns={"sum": "identified", "count": "targets"}).reset_index()
    t["percent"] = 100 * t["identified"] / t["targets"]
    return t


def identification_intervals(long: pd.DataFrame, replicates: np.ndarray, tie_rule: str,
                             uncertainty: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 with intervals, and per target layer the bootstrap probability that the corresponding source
    layer is the most similar (``p_best``: the share of test-image resamples in which it is, ties fractional,
    averaged over network pairs).

    Replicate b resamples the networks (seeds; a pair weighs the product of its networks' counts,
    `stitchlib.uncertainty.pair_weights`) and applies image resample b to every pair; a measure without image
    replicates (``uncertainty.indices``) keeps its values, so its interval is over networks only
    (``over`` = 'networks'). ``tie_rule`` 'bootstrap': each target's credit is its p_best (images integrated
    into the value; its interval is over networks). Intervals: ``uncertainty.method`` at ``level``.
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tables.tie_rule must be one of {TIE_RULES}, not {tie_rule!r}")
    B = replicates.shape[1]
    values = long["value"].to_numpy(float)
    images = ~np.isnan(replicates).all(1)
    groups: dict[tuple, list] = {}
    for measure, setting, arch, src, tgt, tl, rows, corr in _targets(long):
        higher = catalog.measure(measure).higher_is_similar
        point = credit(values[rows, None], corr, higher, "fractional" if tie_rule == "bootstrap" else tie_rule)[0]
        if not np.isfinite(point):
            continue
        # one target's rows at a time (never a float64 copy of every replicate: rows × B is GBs at paper scale)
        reps = np.where(images[rows, None], replicates[rows], values[rows, None])
        frac = credit(reps, corr, higher, "fractional")
        p_best = float(np.nanmean(frac))
        rep = np.full(B, p_best) if tie_rule == "bootstrap" else credit(reps, corr, higher, tie_rule)
        groups.setdefault((measure, setting, arch), []).append(
            ((src, tgt), tl, p_best if tie_rule == "bootstrap" else point, rep, p_best, images[rows].all()))
    table, layers = [], []
    for (measure, setting, arch), g in groups.items():
        pairs = [x[0] for x in g]
        nets = sorted({n for p in pairs for n in p})
        w = unc.pair_weights(pairs, nets, unc.network_counts(len(nets), B, uncertainty["seed"]))
        est = 100 * float(np.mean([x[2] for x in g]))
        rate = 100 * unc.pooled(np.stack([x[3] for x in g], 1), w)
        rate = rate[np.isfinite(rate)]  # replicates that drew no pair of this setting (one network, inter)
        lo, hi = unc.interval([est], rate[:, None], level=uncertainty["level"], method=uncertainty["method"])
        table.append({"measure": measure, "setting": setting, "arch": arch, "identified": sum(x[2] for x in g),
                      "targets": len(g), "percent": est, "low": float(lo[0]), "high": float(hi[0]),
                      "over": "networks" if tie_rule == "bootstrap" or not all(x[5] for x in g)
                      else "images, networks", "replicates": len(rate)})
        for tl in dict.fromkeys(x[1] for x in g):
            p = [x[4] for x in g if x[1] == tl]
            layers.append({"measure": measure, "setting": setting, "arch": arch, "target_layer": tl,
                           "p_best": float(np.mean(p)), "pairs": len(p)})
    return pd.DataFrame(table), pd.DataFrame(layers)


def _pct(x: float) -> str:
    return "–" if np.isnan(x) else f"{x:.2f}%"


def _wide(t: pd.DataFrame, values: str) -> pd.DataFrame:
    wide = t.pivot_table(index="measure", columns=["setting", "arch"], values=values, sort=False, aggfunc="first")
    cols = sorted(wide.columns, key=lambda c: (c[0] != "intra", c[1]))
    return wide.loc[[m for m in catalog.LABELS if m in wide.index], cols]


def table1_markdown(t: pd.DataFrame) -> str:
    """Paper 1's layout: one row per measure; columns intra/inter × architecture; % identified, with its interval
    ``[low, high]`` when ``t`` has one († = over networks only)."""
    t = t.assign(cell=[_pct(r.percent) + ("" if "low" not in t or np.isnan(r.low) else
                                          f" [{r.low:.1f}, {r.high:.1f}]{'†' * (r.over == 'networks')}")
                       for r in t.itertuples()])
    wide = _wide(t, "cell")
    lines = ["| measure | " + " | ".join(f"{s} {a}" for s, a in wide.columns) + " |",
             "|---" * (wide.shape[1] + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(x if isinstance(x, str) else "–" for x in row) + " |"
              for m, row in wide.iterrows()]
    return "\n".join(lines) + "\n"


def layers_markdown(layers: pd.DataFrame) -> str:
    """Per (setting, architecture): target layers on rows, measures on columns, P(best) in %."""
    out = []
    for (setting, arch), g in layers.groupby(["setting", "arch"], sort=False):
        wide = g.pivot_table(index="target_layer", columns="measure", values="p_best", sort=False)
        wide = wide[[m for m in catalog.LABELS if m in wide.columns]]
        out += [f"**{setting} {arch}**", "", "| target layer | " + " | ".join(wide.columns) + " |",
                "|---" * (wide.shape[1] + 1) + "|"]
        out += [f"| {tl} | " + " | ".join(f"{100 * x:.0f}" for x in row) + " |" for tl, row in wide.iterrows()]
        out.append("")
    return "\n".join(out)


def write_table1(long: pd.DataFrame, csv: str, md: str, tie_rule: str, title: str,
                 replicates: np.ndarray | None = None, uncertainty: dict | None = None,
                 layers_csv: str | None = None) -> pd.DataFrame:
    """Table 1 (CSV and Markdown); with replicates (``similarity_table``'s) and ``uncertainty`` also its intervals
    and the per-target-layer P(best) (``layers_csv``, and below the table in the Markdown)."""
    boot = replicates is not None and replicates.shape[1] > 0
    if boot:
        t, layers = identification_intervals(long, replicates, tie_rule, uncertainty)
    else:
        if tie_rule == "bootstrap":
            raise ValueError("tables.tie_rule 'bootstrap' needs the bootstrap replicates (uncertainty.enabled)")
        t, layers = identification(long, tie_rule), pd.DataFrame(
            columns=["measure", "setting", "arch", "target_layer", "p_best", "pairs"])
    io.write_csv(t, csv)
    if layers_csv:
        io.write_csv(layers, layers_csv)
    note = (f"# {title}\n\n% of target layers whose most similar source layer is the architecturally "
            f"corresponding one (intra: the layer itself). Ties: {tie_rule}")
    if boot:
        u = uncertainty
        note += (f"{' (credit = P(best) below)' if tie_rule == 'bootstrap' else ''}. "
                 f"[{100 * u['level']:.0f} % interval, {u['method']}, {replicates.shape[1]} bootstrap replicates "
                 "resampling the networks (seeds) and the test images; † networks only: this index is not in "
                 "uncertainty.indices]")
    text = note + ".\n\n" + table1_markdown(t)
    if len(layers):
        text += ("\n## P(best): the bootstrap probability (%) that the corresponding source layer is the most "
                 "similar, per target layer\n\nOver the test-image resamples (ties fractional), averaged over "
                 "network pairs; the mean over target layers is the identification rate under tie rule "
                 "'bootstrap'. For the † indices (no test-image resamples) it is the point value's credit.\n\n"
                 + layers_markdown(layers))
    io.write_text(md, text)
    return t
