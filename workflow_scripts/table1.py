import numpy as np
import pandas as pd
from _runner import run

from stitchlib import report


def job(sm):
    with np.load(sm.input.replicates) as z:
        reps = z["replicates"]
    report.write_table1(pd.read_csv(sm.input.matrix), sm.output.csv, sm.output.md, sm.params.tie_rule,
                        f"Table 1: layer identification ({sm.wildcards.dataset})", reps, sm.params.uncertainty,
                        sm.output.layers)


run(snakemake, job)
