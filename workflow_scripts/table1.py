import pandas as pd
from _runner import run

from stitchlib import report

run(snakemake, lambda sm: report.write_table1(
    pd.read_csv(sm.input[0]), sm.output.csv, sm.output.md, sm.params.tie_rule,
    f"Table 1: layer identification ({sm.wildcards.dataset})"))
