"""Statistical tests of functional similarity (Ding, Denain & Steinhardt 2021), as paper 1 §5 runs them.

A set S of representations of the same test images, a functionality F (linear-probe accuracy on the test
split) and a dissimilarity d. With the reference A = argmax_{a∈S} F(a), every B ∈ S gives the functional
distance |F(A) − F(B)| and d(A, B); a good index ranks them alike, measured by Kendall's τ and Spearman's ρ
with one-sided p-values (H₁: positive correlation). A correlation that is not significant at ``alpha`` is
reported as ≈ 0, as in the paper.

* **Sensitivity** (Table 2): S = low-rank approximations of one layer at ranks from full down to 1. The
  approximation of rank r projects each row (a sample's spatial position, or token) onto the top-r
  principal directions of the layer's rows after centring and adds the mean back, so the dimension stays:
  ĥ = μ + (h − μ) V_r V_rᵀ.  The principal directions come from the training split and are applied to both
  splits (the probe trains on one and is scored on the other). Results are averaged over the chosen layers
  (and networks) as in the paper; per-layer values are kept.
* **Specificity** (Table 3): S = every layer of every network of an architecture (all seeds).

Dissimilarities: 1 − LCKA, 1 − PWCCA (or 1 − any similarity index of :mod:`stitchlib.similarity`), OPD,
DM (func.) = 1 − relative accuracy of the direct-matching stitch B → A (B's representation mapped by least
squares into A's layer, then A's network finishes the forward pass), DM (struct.) = ‖T(B) − A‖²_F / ‖A‖²_F on
the test split. For DM under low rank, source and target are approximated before the fit and the source
again at evaluation (paper 1 §5.1). The public code of paper 1 stops before the statistics; this module
follows Ding et al.

Probes: multinomial logistic regression on globally pooled features (conv: mean over positions; ViT: the CLS
token), centred and scaled by one global factor (a per-feature standardisation would blow rank-deficient
directions up to unit variance), L2 penalty ``l2``·‖W‖²/2 on the mean cross-entropy, fitted by full-batch
L-BFGS from zero (deterministic; float64 on the CPU, float32 on a GPU). Pooling commutes with the low-rank
projection, so a rank-r probe costs one projection of the pooled features.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
import torch

from stitchlib import catalog, io, pipeline
from stitchlib import similarity as sim
from stitchlib import uncertainty as unc
from stitchlib.stitching import AffineStitch, LowRank, evaluate, fit_dm, pooled
from stitchlib.train import pick_device

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- representations

def rank_grid(channels: int, ranks: int | list[int], where: str = "ding.sensitivity.ranks") -> list[int]:
    """Ranks from full (``channels``) down to 1: ``ranks`` = how many, spaced geometrically (full and 1
    always included, duplicates merged), or an explicit list (each at most ``channels``)."""
    if isinstance(ranks, int):
        grid = {int(round(r)) for r in np.geomspace(channels, 1, max(2, ranks))} | {channels, 1}
    else:
        bad = [r for r in ranks if not 1 <= r <= channels]
        if bad:
            raise ValueError(f"{where}: ranks {bad} are outside 1..{channels} (the layer's channels)")
        grid = set(ranks)
    return sorted(grid, reverse=True)


# ----------------------------------------------------------------------------- probes

def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                   l2: float = 1e-4, max_iter: int = 200, device: torch.device | str = "cpu") -> float:
    """Test accuracy of a multinomial logistic-regression probe trained on (train_x, train_y).

    Minimises mean cross-entropy + l2/2·‖W‖²_F (bias unpenalised) with full-batch L-BFGS (strong Wolfe line
    search) from zero, on features centred by the training mean and divided by their overall standard
    deviation — the same objective as scikit-learn's ``LogisticRegression(C=1 / (l2 · n))`` on those features.
    """
    device = torch.device(device)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    mu = train_x.mean(0)
    scale = float(np.sqrt(((train_x - mu) ** 2).mean())) or 1.0  # RMS of the centred entries
    x = torch.as_tensor((train_x - mu) / scale, dtype=dtype, device=device)
    y = torch.as_tensor(train_y, dtype=torch.long, device=device)
    k = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(x.shape[1], k, dtype=dtype, device=device, requires_grad=True)
    b = torch.zeros(k, dtype=dtype, device=device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        xt = torch.as_tensor((test_x - mu) / scale, dtype=dtype, device=device)
        pred = (xt @ w + b).argmax(1).cpu().numpy()
    return float((pred == np.asarray(test_y)).mean())


# ----------------------------------------------------------------------------- statistics

RANK_TIE_RTOL = 1e-12  # values this close (relative to the largest) are one rank: float64 rounding is no order


def _ties(x: np.ndarray) -> np.ndarray:
    """``x`` on a grid of RANK_TIE_RTOL × max|x|: values that differ by rounding alone (an index of 1 − 1e-16 and
    one of exactly 1, as a low-rank approximation that keeps the whole layer gives) become ties."""
    scale = np.abs(x).max() if len(x) else 0.0
    return np.round(x / (scale * RANK_TIE_RTOL)) if scale > 0 else x


def rank_correlations(functional: Iterable[float], dissimilarity: Iterable[float]) -> dict[str, float]:
    """Kendall's τ (τ-b) and Spearman's ρ between functional distance and dissimilarity, with one-sided
    p-values for a positive correlation (scipy). Values equal up to :data:`RANK_TIE_RTOL` are ties. Pairs with a
    NaN are dropped; fewer than 3 pairs, or a constant side, gives NaN (never significant)."""
    f, d = np.asarray(list(functional), float), np.asarray(list(dissimilarity), float)
    ok = np.isfinite(f) & np.isfinite(d)
    f, d = _ties(f[ok]), _ties(d[ok])
    out = {"tau": math.nan, "tau_p": math.nan, "rho": math.nan, "rho_p": math.nan, "n": int(ok.sum())}
    if len(f) < 3 or np.ptp(f) == 0 or np.ptp(d) == 0:
        return out
    tau = scipy.stats.kendalltau(f, d, alternative="greater")
    rho = scipy.stats.spearmanr(f, d, alternative="greater")
    out.update(tau=float(tau.statistic), tau_p=float(tau.pvalue), rho=float(rho.statistic), rho_p=float(rho.pvalue))
    return out


def dissimilarity(measure: str, value: float) -> float:
    """An index value as a dissimilarity: 1 − similarity for similarity indices, distances as they are."""
    return 1.0 - value if catalog.MEASURES[measure].higher_is_similar else value


def _reference(df: pd.DataFrame) -> pd.DataFrame:
    """Mark the reference (best probe accuracy; ties: the first row) and add the functional distance."""
    best = int(np.argmax(df["probe_accuracy"].to_numpy()))
    return df.assign(reference=np.arange(len(df)) == best,
                     functional_distance=(df["probe_accuracy"].iloc[best] - df["probe_accuracy"]).abs())


# ----------------------------------------------------------------------------- the comparisons

class _Comparer:
    """d(A, ·) for a fixed reference representation A: structural indices on the test split (A first: PWCCA
    weights A's canonical directions, counted as in Morcos et al.'s code, ``pwcca_count='neurons'``, so the
    directions a low-rank B lacks count with correlation 0), and DM B → A fitted on the K DM training images
    into A's layer, evaluated through A's network."""

    def __init__(self, measures: list[str], sim_settings: dict[str, Any], n: int | None,
                 receiver, layer: str, tgt_fit: np.ndarray, tgt_test: np.ndarray, labels: np.ndarray,
                 receiver_accuracy: float, rcond: float):
        self.measures, self.settings, self.n = measures, sim_settings, n
        self.receiver, self.layer_index = receiver, receiver.layer_index(layer)
        self.tgt_fit, self.tgt_test = tgt_fit, torch.as_tensor(tgt_test, dtype=torch.float32)
        self.labels, self.receiver_accuracy, self.rcond = torch.as_tensor(labels), receiver_accuracy, rcond
        self.layout = receiver.layout
        self._a = self._stats(tgt_test, "A")

    def _stats(self, h: np.ndarray, name: str) -> dict[str, Any]:
        h = h[: self.n]
        out, keys = {}, {}
        for m in self.measures:
            keys.setdefault((self.settings["reshape"][m], catalog.MEASURES[m].needs_loadings), []).append(m)
        for key, ms in keys.items():
            out[key] = sim.layer_stats(h, name=name, reshape=key[0], layout=self.layout,
                                       loadings=True if key[1] else None, rtol=self.settings.get("rtol"),
                                       rank_scale=sim.rank_scale_for(ms))
        return out

    def __call__(self, src_fit: np.ndarray, src_test: np.ndarray, name: str) -> dict[str, float]:
        b, row = self._stats(src_test, name), {}
        opts = {"regularization": self.settings["regularization"], "svcca_variance": self.settings["svcca_variance"],
                "pwcca_count": "neurons"}
        for m in self.measures:
            key = (self.settings["reshape"][m], catalog.MEASURES[m].needs_loadings)
            try:
                value = sim.pairwise([self._a[key]], [b[key]], [m], **opts)[m][0, 0]
            except ValueError as e:
                log.warning("%s of %s against the reference: %s (recorded as NaN)", m, name, e)
                value = math.nan
            row[f"d_{m}"] = dissimilarity(m, float(value))
        stitch = AffineStitch.between(src_fit.shape[1:], self.tgt_fit.shape[1:], self.layout)
        fit_dm(stitch, [src_fit], [self.tgt_fit], rcond=self.rcond)
        r = evaluate(stitch.to(next(self.receiver.parameters()).device), self.receiver, self.layer_index,
                     torch.as_tensor(src_test, dtype=torch.float32), self.tgt_test, self.labels)
        row.update(dm_accuracy=r["accuracy"], d_dm_func=1.0 - r["accuracy"] / self.receiver_accuracy,
                   d_dm_struct_stitched=r["struct"])
        return row


def _network_accuracy(test_h5: str) -> float:
    return float((io.read_array(test_h5, "logits").argmax(1) == io.read_array(test_h5, "labels")).mean())


def _similarity_n(settings: dict[str, Any]) -> int | None:
    return None if settings["samples"] == "all" else settings["samples"]


def sensitivity_rows(net, layer: str, train_h5: str, test_h5: str, fit: np.ndarray,
                     settings: dict[str, Any], sim_settings: dict[str, Any], rcond: float,
                     device: torch.device) -> pd.DataFrame:
    """One row per rank of the low-rank family of ``layer``: probe accuracy, functional distance to the
    reference (best probe) and d(reference, rank) for every measure. The principal directions and the pooled
    training features come from the training split's summary (``lowrank/<layer>``, ``pooled/<layer>``, written by
    extraction); ``fit`` are the layer's activations of the K DM training images."""
    layout = net.layout
    train_y, test_y = io.read_array(train_h5, "labels"), io.read_array(test_h5, "labels")
    lra = LowRank(*(io.read_array(train_h5, f"lowrank/{layer}/{k}") for k in ("mean", "basis", "variances")))
    pool_train = io.read_array(train_h5, f"pooled/{layer}")
    test = io.read_layer(test_h5, layer)
    pool_test = pooled(test, layout)
    ranks = rank_grid(lra.channels, settings["sensitivity"]["ranks"], f"ding.sensitivity.ranks ({layer})")
    probe = settings["probe"]
    acc = [probe_accuracy(lra.apply(pool_train, r, "pool"), train_y, lra.apply(pool_test, r, "pool"), test_y,
                          l2=probe["l2"], max_iter=probe["max_iter"], device=device) for r in ranks]
    df = _reference(pd.DataFrame({"layer": layer, "rank": ranks, "channels": lra.channels, "probe_accuracy": acc}))
    ref = int(df["rank"][df["reference"]].iloc[0])
    compare = _Comparer(settings["measures"], sim_settings, _similarity_n(sim_settings), net, layer,
                        lra.apply(fit, ref, layout), lra.apply(test, ref, layout), test_y,
                        _network_accuracy(test_h5), rcond)
    out = [compare(lra.apply(fit, r, layout), lra.apply(test, r, layout), f"{layer} rank {r}") for r in ranks]
    return pd.concat([df, pd.DataFrame(out)], axis=1)


def probe_rows(layers: list[str], layouts: dict[str, str], train_h5: str, test_h5: str, settings: dict[str, Any],
               device: torch.device) -> pd.DataFrame:
    """Probe accuracy of every layer of one network: pooled training features from the training split's summary,
    the test split's pooled from its cache."""
    train_y, test_y = io.read_array(train_h5, "labels"), io.read_array(test_h5, "labels")
    p = settings["probe"]
    return pd.DataFrame([{"layer": layer, "probe_accuracy": probe_accuracy(
        io.read_array(train_h5, f"pooled/{layer}"), train_y, _pooled_h5(test_h5, layer, layouts[layer]), test_y,
        l2=p["l2"], max_iter=p["max_iter"], device=device)} for layer in layers])


def _pooled_h5(path: str, layer: str, layout: str, block_mb: int = 256) -> np.ndarray:
    """:func:`pooled` features of a cached layer, read in blocks of at most ``block_mb`` MB."""
    with io.open_activations(path) as f:
        per_image = 4 * int(np.prod(f["layers"][layer].shape[1:]))
    return np.concatenate([pooled(b[f"layers/{layer}"], layout) for _, b in
                           io.blocks(path, [f"layers/{layer}"], io.block_size(per_image, block_mb, 1))])


def specificity_rows(probes: pd.DataFrame, load_net, files: dict[str, dict[str, str]], fits,
                     settings: dict[str, Any], sim_settings: dict[str, Any], rcond: float) -> pd.DataFrame:
    """d(reference, B) for every (network, layer) B of ``probes`` (columns net, layer, probe_accuracy), the
    reference being the best-probed one; ``load_net(net)`` gives the reference's network for DM, ``fits(net)``
    a network's activations of the K DM training images, by layer."""
    df = _reference(probes.reset_index(drop=True))
    a = df[df["reference"]].iloc[0]
    tgt = files[a["net"]]
    compare = _Comparer(settings["measures"], sim_settings, _similarity_n(sim_settings), load_net(a["net"]),
                        a["layer"], fits(a["net"])[a["layer"]],
                        io.read_layer(tgt["test"], a["layer"]), io.read_array(tgt["test"], "labels"),
                        _network_accuracy(tgt["test"]), rcond)
    start, out = time.time(), []
    for _, b in df.iterrows():
        src = files[b["net"]]
        out.append(compare(fits(b["net"])[b["layer"]], io.read_layer(src["test"], b["layer"]),
                           f"{b['net']}:{b['layer']}"))
    log.info("specificity: %d representations against %s:%s in %.1f s", len(df), a["net"], a["layer"],
             time.time() - start)
    return pd.concat([df, pd.DataFrame(out)], axis=1)


# ----------------------------------------------------------------------------- tables

def _measure_columns(df: pd.DataFrame) -> list[str]:
    return [c[2:] for c in df.columns if c.startswith("d_")]


def correlations(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rank correlations of functional distance with every d_<measure> column, per group of ``by``."""
    out = []
    for key, g in df.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        for m in _measure_columns(df):
            out.append({**dict(zip(by, key)), "measure": catalog.MEASURES[m].label,
                        **rank_correlations(g["functional_distance"], g[f"d_{m}"])})
    return pd.DataFrame(out)


def summarise(per_group: pd.DataFrame, by: list[str], alpha: float, uncertainty: dict | None = None) -> pd.DataFrame:
    """Mean τ and ρ over groups (e.g. layers), with Fisher's combined one-sided p-value; ``significant`` marks
    p < alpha for each statistic. ``uncertainty`` (enabled): also each mean's interval (``tau_low`` …) over the
    networks, resampled with their layers (`stitchlib.uncertainty.cluster_bootstrap`)."""
    boot = uncertainty is not None and uncertainty["enabled"]
    out = []
    for key, g in per_group.groupby([*by, "measure"], sort=False):
        row = dict(zip([*by, "measure"], key))
        for s in ("tau", "rho"):
            p = g[f"{s}_p"].dropna()
            row[s] = float(g[s].mean()) if g[s].notna().all() else math.nan
            if boot:
                b = unc.cluster_bootstrap(g[s], list(g["net"]), replicates=uncertainty["replicates"],
                                          seed=uncertainty["seed"])
                row[f"{s}_low"], row[f"{s}_high"] = map(float, b.interval(uncertainty["level"], uncertainty["method"]))
            p = p.clip(lower=1e-300)  # log(0) would make the combined statistic infinite
            row[f"{s}_p"] = float(scipy.stats.combine_pvalues(p, method="fisher").pvalue) if len(p) else math.nan
        row["groups"] = len(g)
        out.append(row)
    return mark(pd.DataFrame(out), alpha)


def mark(df: pd.DataFrame, alpha: float) -> pd.DataFrame:
    return df.assign(tau_significant=df["tau_p"] < alpha, rho_significant=df["rho_p"] < alpha)


def markdown(table: pd.DataFrame, title: str, note: str) -> str:
    """The paper's layout: one row per task × model, τ and ρ per measure; ≈ 0 where not significant."""
    measures = list(dict.fromkeys(table["measure"]))

    def cell(r, s):
        ci = f" [{r[s + '_low']:.2f}, {r[s + '_high']:.2f}]" if np.isfinite(r.get(f"{s}_low", np.nan)) else ""
        return "≈ 0" if not r[f"{s}_significant"] else f"{r[s]:.4f}{ci}"

    head = "| Task | Model | " + " | ".join(f"{m} τ | {m} ρ" for m in measures) + " |"
    lines = [f"## {title}", "", head, "|" + "---|" * (2 + 2 * len(measures))]
    for (task, model), g in table.groupby(["dataset", "model"], sort=False):
        by = {r["measure"]: r for _, r in g.iterrows()}
        lines.append(f"| {task} | {model} | " + " | ".join(f"{cell(by[m], 'tau')} | {cell(by[m], 'rho')}"
                                                           for m in measures) + " |")
    return "\n".join([*lines, "", note, ""])


def table2(sensitivity: pd.DataFrame, alpha: float, uncertainty: dict | None = None
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-layer correlations (every network × layer family) and their mean per task × model."""
    per_layer = mark(correlations(sensitivity, ["dataset", "model", "net", "layer"]), alpha)
    return per_layer, summarise(per_layer, ["dataset", "model"], alpha, uncertainty)


def table3(specificity: pd.DataFrame, alpha: float) -> pd.DataFrame:
    return mark(correlations(specificity, ["dataset", "model"]), alpha)


# ----------------------------------------------------------------------------- workflow stages

def probes_stage(spec: dict[str, Any], inputs: dict[str, str], settings: dict[str, Any], out_csv: str,
                 device: str = "auto") -> None:
    """Probe accuracy of every stitch point of one network (the specificity test's F)."""
    pipeline.check_activations(spec, inputs["train"], inputs["test"])
    layouts = {layer: io.layer_layout(inputs["train"], layer) for layer in spec["layers"]}
    df = probe_rows(spec["layers"], layouts, inputs["train"], inputs["test"], settings, pick_device(device))
    io.write_csv(df.assign(dataset=spec["dataset"], model=spec["arch"], net=spec["net"]), out_csv)


def _fit_rows(spec: dict[str, Any], inputs: dict[str, str], layers: list[str], dm: dict[str, Any],
              fronts: dict[str, Any] | None, dev) -> dict[str, np.ndarray]:
    """A network's activations of the K DM training images at ``layers``: from the cache, or recomputed
    (``fronts``: the dm consumer's policy)."""
    fronts = fronts or pipeline.FRONTS_DEFAULT
    src = pipeline.train_fronts(spec, fronts["policy"], inputs, dev, chunk=fronts["chunk"], buffer=fronts["buffer"])
    return src.rows(layers, pipeline.dm_sample_index(src.n, dm["samples"], dm["seed"]))


def sensitivity_stage(spec: dict[str, Any], layers: list[str], inputs: dict[str, str], settings: dict[str, Any],
                      dm: dict[str, Any], similarity: dict[str, Any], out_csv: str, device: str = "auto",
                      fronts: dict[str, Any] | None = None) -> None:
    """The low-rank families of ``layers`` of one network, every rank compared with the best-probed one."""
    dev = pick_device(device)
    pipeline.check_activations(spec, inputs["train"], inputs["test"])
    net = pipeline.load_network(spec, inputs["ckpt"], dev)
    fit = _fit_rows(spec, inputs, layers, dm, fronts, dev)
    parts = []
    for layer in layers:
        start = time.time()
        parts.append(sensitivity_rows(net, layer, inputs["train"], inputs["test"], fit[layer], settings, similarity,
                                      dm["rcond"], dev))
        log.info("%s %s: %d ranks in %.1f s", spec["net"], layer, len(parts[-1]), time.time() - start)
    df = pd.concat(parts, ignore_index=True)
    io.write_csv(df.assign(dataset=spec["dataset"], model=spec["arch"], net=spec["net"]), out_csv)


def specificity_stage(specs: dict[str, dict[str, Any]], inputs: dict[str, str], settings: dict[str, Any],
                      dm: dict[str, Any], similarity: dict[str, Any], out_csv: str, device: str = "auto",
                      fronts: dict[str, Any] | None = None) -> None:
    """Every layer of every network of one architecture against the best-probed one. ``inputs`` holds, per
    network, ``{net}/probes``, ``{net}/train``, ``{net}/test`` and ``{net}/ckpt``."""
    dev = pick_device(device)
    probes = pd.concat([pd.read_csv(inputs[f"{net}/probes"]) for net in specs], ignore_index=True)
    files = {net: {k: inputs[f"{net}/{k}"] for k in ("train", "test", "ckpt")} for net in specs}
    for net, spec in specs.items():
        pipeline.check_activations(spec, files[net]["train"], files[net]["test"])
    fits = lru_cache(maxsize=1)(lambda net: _fit_rows(specs[net], files[net], specs[net]["layers"], dm, fronts, dev))
    df = specificity_rows(probes[["net", "layer", "probe_accuracy"]], lambda net: pipeline.load_network(
        specs[net], files[net]["ckpt"], dev), files, fits, settings, similarity, dm["rcond"])
    spec = specs[next(iter(specs))]
    io.write_csv(df.assign(dataset=spec["dataset"], model=spec["arch"]), out_csv)


def tables_stage(sensitivity_csvs: list[str], specificity_csvs: list[str], alpha: float, out: dict[str, str],
                 uncertainty: dict | None = None) -> None:
    """Tables 2 and 3 (CSV with per-layer rows and p-values; Markdown in the paper's layout). Table 2's means get
    intervals over the networks (``uncertainty``); Table 3's correlations are single numbers over every layer of
    every seed."""
    note = (f"Kendall's τ and Spearman's ρ between |F(A) − F(B)| (linear-probe accuracy) and each dissimilarity; "
            f"one-sided p-values; ≈ 0 = not significant at α = {alpha}.")
    sens = pd.concat([pd.read_csv(p) for p in sensitivity_csvs], ignore_index=True)
    per_layer, mean = table2(sens, alpha, uncertainty)
    io.write_csv(pd.concat([mean.assign(net="mean", layer="mean"), per_layer], ignore_index=True), out["table2_csv"])
    ci = (f" [{100 * uncertainty['level']:.0f} % interval over the networks, each resampled with its layers]"
          if uncertainty is not None and uncertainty["enabled"] else "")
    io.write_text(out["table2_md"], markdown(mean, "Table 2: sensitivity test (low-rank approximations)",
                                             note + " Mean over layers and networks" + ci +
                                             "; Fisher's combined p-value."))
    spec = table3(pd.concat([pd.read_csv(p) for p in specificity_csvs], ignore_index=True), alpha)
    io.write_csv(spec, out["table3_csv"])
    io.write_text(out["table3_md"], markdown(spec, "Table 3: specificity test (every layer of every seed)", note))
