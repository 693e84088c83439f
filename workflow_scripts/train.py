from _runner import run

from stitchlib import hooked, pipeline


def job(sm):
    if sm.params.spec["family"] == "custom":  # a network of your own: import its state dict, train nothing
        hooked.import_network(sm.params.spec, sm.output.ckpt, sm.output.metrics, device=sm.params.device)
    else:
        pipeline.train(sm.params.spec, sm.params.settings, sm.output.ckpt, sm.output.metrics, device=sm.params.device)


run(snakemake, job)
