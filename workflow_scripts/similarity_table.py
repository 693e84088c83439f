from _runner import run

from stitchlib import report

run(snakemake, lambda sm: report.similarity_table(list(sm.input.stitching), list(sm.input.indices), sm.output.csv,
                                                  sm.output.replicates, sm.params.uncertainty))
