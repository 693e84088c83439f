from _runner import run

from stitchlib import frankenstein

EXPERIMENT = {"frankenstein_inits": "inits", "frankenstein_sparsity": "sparsity"}

run(snakemake, lambda sm: frankenstein.run(EXPERIMENT.get(sm.rule) or sm.wildcards.experiment, sm.params.src,
                                           sm.params.tgt, dict(sm.input.items()), sm.params.settings,
                                           dict(sm.output.items()), device=sm.params.device,
                                           fronts=sm.params.fronts))
