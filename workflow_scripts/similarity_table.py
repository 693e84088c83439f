from _runner import run

from stitchlib import io, report

run(snakemake, lambda sm: io.write_csv(report.collect_stitching(sm.input.stitching), sm.output[0]))
