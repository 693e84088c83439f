"""The effect on a finished run of each option that restores paper 1's code (README: Departures from the papers'
code), recomputed from the run's own files: its activation caches, stitches, OOD energies and tables.

    python tools/fidelity_effects.py results                      # every part, the default config
    python tools/fidelity_effects.py results --parts pwcca fpr    # some of them

Parts (each prints a small table):
  indices    every index recomputed by this code vs the run's results/similarity CSVs (what changed, and where
             the scale-invariant rank differs from the unscaled one); Table 1 of both
  pwcca      Table 1's PWCCA row with similarity.pwcca_count rank (default) and paper1 (paper 1's code)
  struct     DM (struct.) of the run's DM stitches as one whole-test-set ratio and as paper 1's per-batch mean;
             Table 1's DM (struct.) row under both
  dm_all     DM with dm.samples: all, the exact solve vs paper 1's pinv: how many layer pairs' accuracies differ
             (one intra and one inter network pair per architecture)
  fpr        FPR@95 of every stitch from the run's energies, at_least (default) vs closest (paper 1's code)
  detectors  per architecture, the detectors of the network with the most finished stitches into it, trained as
             the config says and with ood.preset paper1 (and without positional embedding for ViTs), the run's
             stitches into it scored by each: AUROC differences, and FPR@95 under both threshold rules
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stitchlib import catalog, io, ood, pipeline, report, stitching  # noqa: E402
from stitchlib import config as sconf  # noqa: E402

PARTS = ("indices", "pwcca", "struct", "dm_all", "fpr", "detectors")


class Run:
    """A finished run of ``config``: its files, network specs and pairs."""

    def __init__(self, results: Path, config: Path, dataset: str = "digits"):
        self.cfg = sconf.validate(yaml.safe_load(config.read_text()))
        self.r, self.ds = results, dataset
        self.archs = sconf.matrix_architectures(self.cfg)
        self.pairs = [p for s in self.cfg["stitching"]["settings"] for p in sconf.network_pairs(self.cfg, s)]

    def spec(self, net: str) -> dict:
        return sconf.network_spec(self.cfg, self.ds, net)

    def acts(self, net: str, split: str) -> str:
        return str(self.r / "activations" / self.ds / net / f"{split}.h5")

    def nets(self, arch: str) -> list[str]:
        return [n for n in sconf.networks(self.cfg) if sconf.parse_network(n)[0] == arch]

    def arch_pairs(self, arch: str) -> list[tuple[str, str]]:
        return [p for p in self.pairs if sconf.parse_network(p[0])[0] == arch]

    def finished(self, kind: str, method: str, suffix: str) -> list[tuple[str, str]]:
        """The pairs whose ``kind`` ('stitching' or 'ood/scores') files for ``method`` exist (a run in progress)."""
        done = [(s, t) for s, t in self.pairs if (self.r / kind / self.ds / method / f"{s}__{t}{suffix}").exists()]
        print(f"({len(done)} of {len(self.pairs)} network pairs have {kind}/{method} files)")
        return done

    def indices(self, arch: str, **settings) -> pd.DataFrame:
        nets = self.nets(arch)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "indices.csv"
            pipeline.similarity_indices({n: self.spec(n) for n in nets}, {n: self.acts(n, "test") for n in nets},
                                        self.arch_pairs(arch), {**self.cfg["similarity"], **settings}, str(out))
            return pd.read_csv(out)


def table1(long: pd.DataFrame) -> pd.DataFrame:
    t = report.identification(long)
    return t.pivot_table(index="measure", columns=["setting", "arch"], values="percent").round(2)


def part_indices(run: Run) -> None:
    from stitchlib import similarity as sim

    new = pd.concat([run.indices(a) for a in run.archs], ignore_index=True)
    old = pd.concat([pd.read_csv(run.r / "similarity" / run.ds / f"{a}.csv") for a in run.archs], ignore_index=True)
    keys = ["measure", *report.KEYS]
    both = old.merge(new, on=keys, suffixes=("_run", "_now"))
    both["diff"] = (both.value_now - both.value_run).abs()
    print("indices recomputed by this code vs the run's (|Δ| over every layer pair of every network pair):")
    print(both.groupby("measure")["diff"].agg(max="max", changed=lambda d: int((d > 1e-9).sum()), pairs="count")
          .to_string(float_format=lambda v: f"{v:.2e}"))
    ranks = []
    for arch in run.archs:
        for net in run.nets(arch):
            for layer in run.spec(net)["layers"]:
                for reshape in ("pool", "positions"):
                    r = {s: sim.layer_stats_h5(run.acts(net, "test"), layer, reshape=reshape, rank_scale=s).rank
                         for s in sim.RANK_SCALES}
                    ranks.append({"net": net, "layer": layer, "reshape": reshape, **r})
    ranks = pd.DataFrame(ranks)
    print(f"\nlayer factorisations whose rank differs between rank_scale columns and global: "
          f"{int((ranks['columns'] != ranks['global']).sum())} of {len(ranks)}")
    print(ranks[ranks["columns"] != ranks["global"]].to_string(index=False))
    print("\nTable 1 of the run's indices vs this code's:")
    print(pd.concat({"run": table1(old), "now": table1(new)}, axis=1).to_string())


def part_pwcca(run: Run) -> None:
    rows, values = [], {}
    for count in ("rank", "paper1"):
        values[count] = long = pd.concat([run.indices(a, measures=["pwcca"], pwcca_count=count) for a in run.archs])
        rows.append(table1(long).rename(index={"PWCCA": f"PWCCA ({count})"}))
    d = values["paper1"].assign(diff=(values["paper1"].value - values["rank"].value).abs().to_numpy())
    print("PWCCA, |paper1 − rank| per layer pair:")
    print(d.groupby(["source_arch", "setting"])["diff"].agg(
        pairs="count", differ=lambda x: int((x > 1e-6).sum()), max="max", mean="mean").round(3).to_string())
    print("\nTable 1, PWCCA by similarity.pwcca_count:")
    print(pd.concat(rows).to_string())


def part_struct(run: Run, batch: int = 256) -> None:
    """DM(struct) of the run's DM stitches, whole ratio vs mean over batches of ``batch`` test images."""
    frames, diffs = [], []
    for src, tgt in run.finished("stitching", "dm", ".csv"):
        s, t = run.spec(src), run.spec(tgt)
        path = run.r / "stitching" / run.ds / "dm" / f"{src}__{tgt}"
        st = pipeline._load_stitches(f"{path}.pt", s, t, run.acts(src, "test"), run.acts(tgt, "test"))
        df = pd.read_csv(f"{path}.csv")
        targets = {tl: io.read_layer(run.acts(tgt, "test"), tl).astype(np.float64) for tl in t["layers"]}
        means = []
        for sl in s["layers"]:
            out = io.read_layer(run.acts(src, "test"), sl)
            for tl in t["layers"]:
                y = pipeline.stitched(st[f"{sl}->{tl}"], out).double().numpy()
                e = ((y - targets[tl]) ** 2).reshape(len(y), -1).sum(1)
                m = (targets[tl] ** 2).reshape(len(y), -1).sum(1)
                whole = e.sum() / m.sum()
                per = np.mean([e[i:i + batch].sum() / m[i:i + batch].sum() for i in range(0, len(e), batch)])
                means.append(per)
                diffs.append(abs(per - whole))
        frames.append(df.assign(struct_batch_mean=means))
    dm = pd.concat(frames, ignore_index=True)
    print(f"DM (struct.) per-batch mean (batches of {batch}) vs whole-set ratio over {len(diffs)} DM stitches: "
          f"max |Δ| {max(diffs):.2e}, mean {np.mean(diffs):.2e}")
    out = []
    for rule, column in (("whole", "struct"), ("batch_mean", "struct_batch_mean")):
        long = report.stitching_long(dm.assign(struct=dm[column]))
        long = long[long.measure == catalog.MEASURES["dm_struct_stitched"].label]
        out.append(table1(long).rename(index=lambda m, r=rule: f"{m} ({r})"))
    print(pd.concat(out).to_string())


def part_dm_all(run: Run) -> None:
    """DM on the whole training split, exact vs pinv, evaluated through each receiver: one intra and one inter
    network pair per architecture (the whole-split fits take minutes per pair)."""
    rows = []
    pairs = [p for a in run.archs for p in run.arch_pairs(a)[:1] + [q for q in run.arch_pairs(a) if q[0] != q[1]][:1]]
    for src, tgt in pairs:
        s, t = run.spec(src), run.spec(tgt)
        receiver = pipeline.models.fold_batchnorm(pipeline.load_network(
            t, run.r / "models" / run.ds / f"{tgt}.pt", torch.device("cpu")))
        res = {}
        for solver in stitching.LeastSquares.SOLVERS:
            settings = {**run.cfg["dm"], "samples": "all", "solver": solver}
            fronts = [pipeline.CachedFronts(run.acts(n, "train")) for n in (src, tgt)]
            shapes = tuple(pipeline.layer_shapes(run.acts(n, "test")) for n in (src, tgt))
            st = pipeline.fit_dm_pair(s, t, *fronts, shapes, settings)
            res[solver] = pipeline.evaluate_pair(st, s, t, receiver, run.acts(src, "test"), run.acts(tgt, "test"),
                                                 "dm")[0]
        d = (res["pinv"].accuracy - res["exact"].accuracy).abs()
        rows.append({"arch": s["arch"], "pair": f"{src}→{tgt}", "layer pairs": len(d),
                     "differ": int((d > 0).sum()), "max |Δ acc|": d.max(), "mean |Δ acc|": d.mean()})
        print(rows[-1], flush=True)
    t = pd.DataFrame(rows)
    print("\nDM with dm.samples: all, paper 1's pinv vs the exact solve (test accuracy):")
    print(t.groupby("arch").agg(pairs=("pair", "count"), layer_pairs=("layer pairs", "sum"),
                                differ=("differ", "sum"), max_diff=("max |Δ acc|", "max"),
                                mean_diff=("mean |Δ acc|", "mean")).to_string())


def part_fpr(run: Run) -> None:
    diffs = []
    for m in run.cfg["stitching"]["methods"]:
        for src, tgt in run.finished("ood/scores", m, ".npz"):
            e = np.load(run.r / "ood" / run.ds / "scores" / m / f"{src}__{tgt}.npz")
            for key in e.files:
                if key.startswith("stitched/"):
                    _, _, tl = key.split("/")
                    a, c = (ood.ood_metrics(e[f"in/{tl}"], e[key], fpr_rule=r)["fpr95"] for r in ood.FPR_RULES)
                    diffs.append({"method": m, "diff": c - a})
    d = pd.DataFrame(diffs)
    print("FPR@95, closest (paper 1's code) − at_least (default), every stitch:")
    print(d.groupby("method")["diff"].agg(stitches="count", changed=lambda x: int((x != 0).sum()),
                                          mean="mean", min="min", max="max").to_string())


VARIANTS = {  # ood overrides: the config's own detectors, paper 1's preset, and two of its choices alone (the
    # milestone at half the default's 4 fine-tuning epochs, counted in iterations, as the preset sets it)
    "default": {},
    "paper1 preset": {"preset": "paper1"},
    "lr stepped per iteration": {"finetune": {"lr_step": "iteration", "schedule": "multistep", "milestones": [2]}},
    "no positional embedding": {"detector": {"tokens": {"positional": False}}},
}


def _ood_variant(run: Run, override: dict) -> dict:
    o = run.cfg["ood"]
    merged = {**o, **{k: {**o[k], **v} if isinstance(v, dict) else v for k, v in override.items() if k != "detector"}}
    merged["detector"] = {k: {**o["detector"][k], **override.get("detector", {}).get(k, {})} for k in o["detector"]}
    return sconf.ood_settings({**run.cfg, "ood": merged})


def _score(run: Run, net: str, sources: list[str], methods: list[str], settings: dict, tmp: Path) -> pd.DataFrame:
    """Train ``net``'s detectors with ``settings`` and score the run's stitches from ``sources`` into it."""
    t, files = run.spec(net), {k: [] for k in pipeline.DETECTOR_FILES}
    for layer in t["layers"]:
        inputs = {k: run.acts(net, k) for k in ("train", "test", "outliers", "heldout")}
        paths = [str(tmp / f"{layer}.{ext}") for ext in ("pt", "json", "npz")]
        pipeline.train_detector(t, layer, inputs, {k: v for k, v in settings.items() if k != "fpr95"}, *paths[:2],
                                device="cpu", out_npz=paths[2])
        for k, p in zip(pipeline.DETECTOR_FILES, paths):
            files[k].append(p)
    pipeline.detector_index(t, files, str(tmp / "detectors.json"))
    frames = []
    for src in sources:
        inputs = {"src_test": run.acts(src, "test"), "tgt_test": run.acts(net, "test"),
                  "detectors": str(tmp / "detectors.json"),
                  "stitches": {m: str(run.r / "stitching" / run.ds / m / f"{src}__{net}.pt") for m in methods}}
        outs = {m: (str(tmp / f"{src}_{m}.csv"), str(tmp / f"{src}_{m}.npz")) for m in methods}
        pipeline.ood_pair(run.spec(src), t, inputs, outs, device="cpu", fpr_rule=settings["fpr95"])
        for m in methods:
            e = np.load(outs[m][1])
            df = pd.read_csv(outs[m][0])
            for rule in ood.FPR_RULES:  # from the energies: the CSV holds 10 digits
                df[f"fpr95_{rule}"] = [ood.ood_metrics(e[f"in/{tl}"], e[f"stitched/{sl}/{tl}"], fpr_rule=rule)
                                       ["fpr95"] for sl, tl in zip(df.source_layer, df.target_layer)]
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def part_detectors(run: Run) -> None:
    """Per architecture, the network with the most finished stitches into it: its detectors trained as the config
    says and with each variant, every finished DM/TLM stitch into it scored by both."""
    rows, fpr = [], []
    for arch in run.archs:
        stitched = {n: [s for s in run.nets(arch)
                        if (run.r / "stitching" / run.ds / "dm" / f"{s}__{n}.pt").exists()] for n in run.nets(arch)}
        net = max(stitched, key=lambda n: len(stitched[n]))
        methods = [m for m in run.cfg["stitching"]["methods"]
                   if all((run.r / "stitching" / run.ds / m / f"{s}__{net}.pt").exists() for s in stitched[net])]
        tokens = io.layer_layout(run.acts(net, "test"), run.spec(net)["layers"][0]) == "tokens"
        scores = {}
        for name, override in VARIANTS.items():
            if name == "no positional embedding" and not tokens:
                continue
            start = time.time()
            with tempfile.TemporaryDirectory() as tmp:
                scores[name] = _score(run, net, stitched[net], methods, _ood_variant(run, override), Path(tmp))
            print(f"{name}: {net} from {stitched[net]} ({', '.join(methods)}), {time.time() - start:.0f} s",
                  flush=True)
        base = scores.pop("default")
        fpr.append(base.assign(arch=arch, diff=base.fpr95_closest - base.fpr95_at_least))
        for name, df in scores.items():
            for m, g in df.groupby("method"):
                b = base[base.method == m]
                d = g.auroc.to_numpy() - b.auroc.to_numpy()
                rows.append({"variant": name, "arch": arch, "method": m, "stitches": len(d), "mean ΔAUROC": d.mean(),
                             "mean |ΔAUROC|": np.abs(d).mean(), "max |ΔAUROC|": np.abs(d).max(),
                             "corr": np.corrcoef(g.auroc, b.auroc)[0, 1]})
    print("\nFPR@95, closest (paper 1's code) − at_least (default), the config's detectors:")
    print(pd.concat(fpr).groupby(["arch", "method"])["diff"].agg(
        stitches="count", changed=lambda x: int((x.abs() > 1e-12).sum()), mean="mean", min="min", max="max")
        .round(4).to_string())
    print("\nAUROC with each variant's detectors − with the config's:")
    print(pd.DataFrame(rows).round(3).to_string(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="the finished run's results folder")
    ap.add_argument("--config", type=Path, default=Path("config.yaml"))
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--archs", nargs="+", help="paper 1's architectures to use (default: all of the config's)")
    ap.add_argument("--seeds", nargs="+", type=int, help="the seeds to use (default: all of the config's)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    run = Run(args.results, args.config)
    if args.seeds:
        run.cfg["seeds"] = args.seeds
        run.pairs = [p for p in run.pairs if all(sconf.parse_network(n)[1] in args.seeds for n in p)]
    if args.archs:
        run.archs = args.archs
        run.pairs = [p for p in run.pairs if sconf.parse_network(p[0])[0] in args.archs]
    for part in args.parts:
        start = time.time()
        print(f"\n=== {part}")
        globals()[f"part_{part}"](run)
        print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
