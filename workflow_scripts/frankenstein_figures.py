from _runner import run

from stitchlib import frankenstein

run(snakemake, lambda sm: frankenstein.figures({k: list(v) for k, v in sm.input.items()}, sm.params.settings,
                                               dict(zip(sm.params.names, sm.output.figures)), sm.output.csv,
                                               sm.output.md, sm.params.uncertainty))
