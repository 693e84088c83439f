from _runner import run

from stitchlib import pipeline


def job(sm):
    inputs = {k: v for k, v in sm.input.items() if k != "detectors"}
    inputs["detectors"] = list(sm.input.detectors)
    pipeline.ood_pair(sm.params.src, sm.params.tgt, inputs, sm.wildcards.method, sm.output.csv, sm.output.npz,
                      device=sm.params.device)


run(snakemake, job)
