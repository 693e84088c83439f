import numpy as np
import pandas as pd
from _runner import run

from stitchlib import catalog, io, plotting, report


def job(sm):
    tables, u = {}, sm.params.uncertainty
    for (dataset, measure, arch, setting), path in zip(sm.params.figures, sm.output):
        if dataset not in tables:
            reps = io.read_npz(sm.input[f"{dataset}_replicates"])["replicates"]
            tables[dataset] = pd.read_csv(sm.input[dataset]), reps
        long, reps = tables[dataset]
        x = catalog.measure(measure)
        title = f"{measure} ({x.quantity}), {arch}, {setting}-network"
        if u["enabled"]:
            m, lo, hi = report.matrix_intervals(long, reps, measure, arch, setting, u)
            over = "seeds" if np.isnan(reps[(long.measure == measure).to_numpy()]).all() else "seeds, images"
            plotting.heatmap(m, path, f"{title}, {dataset}\noutlined: {100 * u['level']:.0f} % interval ({over}) "
                             "overlaps the column's best", x.higher_is_similar,
                             report.overlaps_best(m, lo, hi, x.higher_is_similar))
        else:
            plotting.heatmap(report.mean_matrix(long, measure, arch, setting), path, f"{title}, {dataset}",
                             x.higher_is_similar)


run(snakemake, job)
