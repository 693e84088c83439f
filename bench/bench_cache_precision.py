"""What a float16 cache and a cached test subset change: the default config's trained networks re-extracted with
``extract.dtype: float16`` and with ``cache.test.samples``, then DM (K = 100) fitted and evaluated and the structural
indices computed from each cache, compared with the float32 cache of the whole test split.

    python bench/bench_cache_precision.py results/models/digits [--subset 200] [--out DIR]

(the folder holds a finished default run's checkpoints, resnet18-s{0,1}.pt and vit-s{0,1}.pt).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stitchlib import config as sconf  # noqa: E402
from stitchlib import pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", type=Path)
    ap.add_argument("--subset", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("/tmp/stitchlib-cache-precision"))
    args = ap.parse_args()
    cfg = sconf.load(ROOT / "config.yaml")
    variants = {"float32": ("float32", None), "float16": ("float16", None),
                f"test subset {args.subset}": ("float32", {"samples": args.subset, "seed": 0})}
    rows = []
    for arch in ("resnet18", "vit"):
        specs = {n: sconf.network_spec(cfg, "digits", n) for n in (f"{arch}-s0", f"{arch}-s1")}
        results = {}
        for name, (dtype, test) in variants.items():
            folder = args.out / name.replace(" ", "_") / arch
            files = {}
            for net, spec in specs.items():
                files[net] = {s: str(folder / f"{net}-{s}.h5") for s in ("train", "test")}
                pipeline.extract(spec, str(args.models / f"{net}.pt"), files[net], dtype=dtype, device="cpu", test=test)
            s, t = specs.values()
            a, b = files[s["net"]], files[t["net"]]
            inputs = {"src_train": a["train"], "src_test": a["test"], "tgt_train": b["train"], "tgt_test": b["test"],
                      "tgt_ckpt": str(args.models / f"{t['net']}.pt")}
            pipeline.dm_pair(s, t, inputs, cfg["dm"], str(folder / "dm.pt"), str(folder / "dm.csv"), device="cpu")
            pipeline.similarity_indices(specs, {n: f["test"] for n, f in files.items()}, [(s["net"], t["net"])],
                                        cfg["similarity"], str(folder / "indices.csv"))
            results[name] = (pd.read_csv(folder / "dm.csv"), pd.read_csv(folder / "indices.csv"))
        dm0, ix0 = results["float32"]
        for name, (dm, ix) in results.items():
            if name == "float32":
                continue
            row = {"network pair": f"{arch}-s0 → s1", "cache": name,
                   "max |Δ relative accuracy| (DM)": np.abs(dm.relative_accuracy - dm0.relative_accuracy).max(),
                   "max |Δ DM struct| / struct": (np.abs(dm.struct - dm0.struct) / dm0.struct).max()}
            for measure in ("LCKA", "PWCCA", "OPD"):
                v, v0 = ix[ix.measure == measure].value.to_numpy(), ix0[ix0.measure == measure].value.to_numpy()
                row[f"max |Δ {measure}|"] = np.abs(v - v0).max()
            rows.append(row)
    with pd.option_context("display.float_format", "{:.2g}".format, "display.width", 200):
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
