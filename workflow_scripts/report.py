from _runner import run

from stitchlib import html_report

run(snakemake, lambda sm: html_report.write(sm.output[0], list(sm.input), sm.params.config,
                                             sm.params.config["results"]))
