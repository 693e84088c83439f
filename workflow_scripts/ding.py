from _runner import run

from stitchlib import ding

STAGES = {
    "probes": lambda sm: ding.probes_stage(sm.params.spec, dict(sm.input.items()), sm.params.settings, sm.output[0],
                                           device=sm.params.device),
    "sensitivity": lambda sm: ding.sensitivity_stage(sm.params.spec, sm.params.layers, dict(sm.input.items()),
                                                     sm.params.settings, sm.params.dm, sm.params.similarity,
                                                     sm.output[0], device=sm.params.device, fronts=sm.params.fronts),
    "specificity": lambda sm: ding.specificity_stage(sm.params.specs, dict(sm.input.items()), sm.params.settings,
                                                     sm.params.dm, sm.params.similarity, sm.output[0],
                                                     device=sm.params.device, fronts=sm.params.fronts),
    "ding_tables": lambda sm: ding.tables_stage(list(sm.input.sensitivity), list(sm.input.specificity),
                                                sm.params.alpha, dict(sm.output.items()), sm.params.uncertainty),
}

run(snakemake, lambda sm: STAGES[sm.rule](sm))
