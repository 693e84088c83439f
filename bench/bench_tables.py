"""The table and heatmap jobs at a paper config's size: their measured peak memory beside stitchlib.footprint's
estimate. What these jobs hold grows with the long table's rows × bootstrap replicates (paper 1 on CIFAR-10: 10
seeds of ResNet-18 and ViT, 208,000 rows × 1,000 replicates), which the scale rehearsal (bench_scale.py, one seed,
two stitch points) never reaches.

Synthetic inputs with the config's exact row structure are written first: per stitched network pair and method a
stitching CSV and its per-image NPZ (``--images`` test images: the per-image terms are resampled to replicates
in the similarity table job, their count changes nothing the table jobs hold), per architecture an indices CSV
and its replicates (LCKA rows resampled, the others NaN, as the workflow writes them). Then, each in its own
process, the similarity table job (report.similarity_table), Table 1 (report.write_table1) and the heatmaps'
intervals (report.matrix_intervals for every figure; drawing them adds nothing that grows); per job its peak RSS.

    python bench/bench_tables.py [configs/paper1-cifar10.yaml] [--images 1000] [--replicates B] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stitchlib import catalog, footprint, io, report  # noqa: E402
from stitchlib import config as sconf  # noqa: E402
from stitchlib.cli import plan_config  # noqa: E402


def write_inputs(cfg: dict, out: Path, images: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Stitching CSVs + NPZs and indices CSVs + NPZs of the first dataset, shaped as the workflow writes them."""
    rng, B = np.random.default_rng(seed), cfg["uncertainty"]["replicates"]
    layers = {a: sconf.layers(cfg, a) for a in sconf.matrix_architectures(cfg)}
    pairs = list(dict.fromkeys(p for s in cfg["stitching"]["settings"] for p in sconf.network_pairs(cfg, s)))
    stitching, indices = [], []
    for s, t in pairs:
        sa, ta = sconf.parse_network(s)[0], sconf.parse_network(t)[0]
        keys = [{"setting": "intra" if s == t else "inter", "source": s, "target": t, "source_arch": sa,
                 "target_arch": ta, "source_layer": sl, "target_layer": tl, "source_index": i, "target_index": j}
                for i, sl in enumerate(layers[sa]) for j, tl in enumerate(layers[ta])]
        for m in cfg["stitching"]["methods"]:
            acc = rng.uniform(0.1, 1, len(keys))
            df = pd.DataFrame([{"method": m, **k, "accuracy": a, "receiver_accuracy": 0.9, "relative_accuracy": a / 0.9,
                                "struct": rng.uniform()} for k, a in zip(keys, acc)])
            path = out / f"{m}_{s}__{t}.csv"
            io.write_csv(df, path)
            io.write_npz(path.with_suffix(".npz"), {
                "correct": (rng.uniform(size=(len(keys), images)) < acc[:, None]).astype(np.float32),
                "err": rng.uniform(size=(len(keys), images)).astype(np.float32),
                "norm": rng.uniform(1, 2, (len(keys), images)).astype(np.float32),
                "receiver": (rng.uniform(size=images) < 0.9).astype(np.float32)})
            stitching.append(str(path))
    boot = catalog.bootstrapped_indices(cfg["similarity"]["measures"], cfg["uncertainty"])
    for arch, names in layers.items():
        nets = [sconf.network_id(arch, seed) for seed in cfg["seeds"]]
        rows = [{"measure": catalog.MEASURES[m].label, "setting": "intra" if s == t else "inter", "source": s,
                 "target": t, "source_arch": arch, "target_arch": arch, "source_layer": sl, "target_layer": tl,
                 "source_index": i, "target_index": j, "value": rng.uniform()}
                for s in nets for t in nets for m in cfg["similarity"]["measures"]
                for i, sl in enumerate(names) for j, tl in enumerate(names)]
        df = pd.DataFrame(rows)
        reps = np.full((len(df), B), np.nan, np.float32)
        resampled = df.measure.isin([catalog.MEASURES[m].label for m in boot]).to_numpy()
        reps[resampled] = rng.uniform(size=(int(resampled.sum()), B)).astype(np.float32)
        path = out / f"indices_{arch}.csv"
        io.write_csv(df, path)
        io.write_npz(path.with_suffix(".npz"), {"replicates": reps})
        indices.append(str(path))
    return stitching, indices


def job(name: str, cfg_path: str, folder: Path) -> None:
    """One table job, run in this (fresh) process."""
    cfg = plan_config(cfg_path, no_data=True)
    u = cfg["uncertainty"]
    if name == "similarity_table":
        report.similarity_table(sorted(str(p) for p in folder.glob("*_*__*.csv")),
                                sorted(str(p) for p in folder.glob("indices_*.csv")), str(folder / "similarity.csv"),
                                str(folder / "similarity.npz"), u)
        return
    long, reps = pd.read_csv(folder / "similarity.csv"), io.read_npz(folder / "similarity.npz")["replicates"]
    if name == "table1":
        report.write_table1(long, str(folder / "table1.csv"), str(folder / "table1.md"), cfg["tables"]["tie_rule"],
                            "Table 1", reps, u, str(folder / "table1_layers.csv"))
    else:
        for measure in long.measure.unique():
            for arch in long.source_arch.unique():
                for setting in ("intra", "inter"):
                    report.matrix_intervals(long, reps, measure, arch, setting, u)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs" / "paper1-cifar10.yaml"))
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--job", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        return job(args.job, args.config, args.out)
    cfg = plan_config(args.config, no_data=True)
    folder = args.out or Path(tempfile.mkdtemp(prefix="bench_tables_"))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.time()
    stitching, indices = write_inputs(cfg, folder, args.images)
    print(f"# {args.config}: {len(stitching)} stitching files, {len(indices)} indices files, "
          f"{cfg['uncertainty']['replicates']} replicates; inputs written in {time.time() - start:.0f} s to {folder}")
    est = footprint.estimate(cfg)
    print(f"{'job':<18}{'rows':>9}{'seconds':>9}{'peak RSS':>11}{'estimate':>11}{'ratio':>7}")
    for name in ("similarity_table", "table1", "heatmaps"):
        start = time.time()
        proc = subprocess.Popen([sys.executable, __file__, args.config, "--job", name, "--out", str(folder)])
        _, status, usage = os.wait4(proc.pid, 0)
        if status:
            sys.exit(f"{name} failed ({status})")
        rows = len(pd.read_csv(folder / "similarity.csv", usecols=["measure"]))
        peak, e = usage.ru_maxrss * 1024, est[name].mem
        print(f"{name:<18}{rows:>9}{time.time() - start:>9.0f}{peak / 1e9:>9.2f} GB{e / 1e9:>8.2f} GB"
              f"{peak / e:>7.2f}")


if __name__ == "__main__":
    main()
