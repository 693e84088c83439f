import pandas as pd
from _runner import run

from stitchlib import io, report


def job(sm):
    report.write_table1(pd.read_csv(sm.input.matrix), sm.output.csv, sm.output.md, sm.params.tie_rule,
                        f"Table 1: layer identification ({sm.wildcards.dataset})",
                        io.read_npz(sm.input.replicates)["replicates"], sm.params.uncertainty, sm.output.layers)


run(snakemake, job)
