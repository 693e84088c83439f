from _runner import run

from stitchlib import pipeline

run(snakemake, lambda sm: pipeline.extract(
    sm.params.spec, sm.input.ckpt, {"train": sm.output.train, "test": sm.output.test},
    batch_size=sm.params.settings["batch_size"], chunk=sm.params.settings["chunk"],
    dtype=sm.params.settings["dtype"], device=sm.params.device))
