from _runner import run

from stitchlib import pipeline

run(snakemake, lambda sm: pipeline.similarity_indices(
    sm.params.specs, dict(sm.input.items()), [tuple(p) for p in sm.params.pairs], sm.params.settings, sm.output.csv,
    sm.params.uncertainty, sm.output.replicates))
