from _runner import run

from stitchlib import crossarch

run(snakemake, lambda sm: crossarch.init_network(sm.params.spec, sm.output.ckpt,
                                                 {"train": sm.output.train, "test": sm.output.test},
                                                 sm.params.settings, device=sm.params.device))
