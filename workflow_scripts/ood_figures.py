from pathlib import Path

import numpy as np
import pandas as pd
from _runner import run

from stitchlib import catalog, io, plotting, report


def job(sm):
    ood = pd.concat([pd.read_csv(p) for p in sm.input.scores], ignore_index=True)
    io.write_csv(ood, sm.output.table)
    sim = pd.read_csv(sm.input.similarity)
    out = Path(sm.output.figures)
    out.mkdir(parents=True, exist_ok=True)
    for (method, arch, setting), g in ood.groupby(["method", "source_arch", "setting"]):
        auroc = report.mean_matrix(g.rename(columns={"auroc": "value"}).assign(measure="auroc"), "auroc", arch, setting)
        acc = report.mean_matrix(sim, catalog.functional(method).label, arch, setting)
        plotting.similarity_and_ood(acc, auroc, out / f"{method}_{arch}_{setting}.png",
                                    f"{method.upper()}: {arch}, {setting}-network (mean over network pairs)")
    for method, net, layer in sm.params.energy_plots:
        npz = next(p for p in sm.input.energies if f"/{method}/{net}__{net}.npz" in p)
        e = dict(np.load(npz))
        sources = [k.split("/")[1] for k in e if k.startswith("stitched/") and k.endswith(f"/{layer}")]
        plotting.energy_plot(e, sources, layer, out / f"energy_{method}_{net}_{layer}.png",
                             f"{method.upper()}: energies at {layer} of {net} (intra-network)")


run(snakemake, job)
