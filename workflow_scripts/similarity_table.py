import pandas as pd
from _runner import run

from stitchlib import io, report


def job(sm):
    parts = [report.collect_stitching(sm.input.stitching)] if sm.input.stitching else []
    parts += [pd.read_csv(p) for p in sm.input.indices]
    io.write_csv(pd.concat(parts, ignore_index=True), sm.output[0])


run(snakemake, job)
