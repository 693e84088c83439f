from _runner import run

from stitchlib import pipeline

run(snakemake, lambda sm: pipeline.detector_index(sm.params.spec, {k: list(v) for k, v in sm.input.items()},
                                                  sm.output[0]))
