import pandas as pd
from _runner import run

from stitchlib import catalog, plotting, report


def job(sm):
    tables = {}
    for (dataset, measure, arch, setting), path in zip(sm.params.figures, sm.output):
        if dataset not in tables:
            tables[dataset] = pd.read_csv(next(p for p in sm.input if f"/{dataset}/" in p))
        m = report.mean_matrix(tables[dataset], measure, arch, setting)
        x = catalog.measure(measure)
        plotting.heatmap(m, path, f"{measure} ({x.quantity}), {arch}, {setting}-network, {dataset}",
                         x.higher_is_similar)


run(snakemake, job)
