from _runner import run

from stitchlib import pipeline

run(snakemake, lambda sm: pipeline.train_detector(sm.params.spec, sm.wildcards.layer, dict(sm.input.items()),
                                                  sm.params.settings, sm.output.pt, sm.output.json,
                                                  device=sm.params.device, out_npz=sm.output.npz,
                                                  fronts=sm.params.fronts, outliers=sm.params.outliers))
