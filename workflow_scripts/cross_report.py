from _runner import run

from stitchlib import crossarch


def job(sm):
    pairs, triangle = sm.params.figures
    crossarch.report(sm.params.jobs, {"dm": list(sm.input.dm), "tlm": list(sm.input.tlm)}, sm.params.specs,
                     {"table": sm.output.table, "summary_csv": sm.output.summary_csv,
                      "summary_md": sm.output.summary_md, "triangle": triangle, "pairs": pairs},
                     uncertainty=sm.params.uncertainty)


run(snakemake, job)
