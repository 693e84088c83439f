from _runner import run

from stitchlib import pipeline

run(snakemake, lambda sm: pipeline.train(sm.params.spec, sm.params.settings, sm.output.ckpt, sm.output.metrics,
                                         device=sm.params.device))
