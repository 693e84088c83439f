from _runner import run

from stitchlib import pipeline


def job(sm):
    methods = sm.params.methods
    inputs = {k: v for k, v in sm.input.items() if k != "stitches"}
    inputs["stitches"] = dict(zip(methods, sm.input.stitches))
    outputs = {m: (csv, npz) for m, csv, npz in zip(methods, sm.output.csv, sm.output.npz)}
    pipeline.ood_pair(sm.params.src, sm.params.tgt, inputs, outputs, device=sm.params.device,
                      fpr_rule=sm.params.fpr95, block_mb=sm.params.block_mb)


run(snakemake, job)
