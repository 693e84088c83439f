from _runner import run

from stitchlib import pipeline

run(snakemake, lambda sm: pipeline.extract(
    sm.params.spec, sm.input.ckpt, dict(sm.output.items()), batch_size=sm.params.settings["batch_size"],
    chunk=sm.params.settings["chunk"], dtype=sm.params.settings["dtype"], device=sm.params.device,
    outliers=getattr(sm.params, "outliers", None), fronts=sm.params.settings.get("fronts", True),
    test=sm.params.settings.get("test")))
