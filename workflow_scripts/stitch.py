from _runner import run

from stitchlib import pipeline

STAGES = {"dm": pipeline.dm_pair, "tlm": pipeline.tlm_pair}

run(snakemake, lambda sm: STAGES[sm.rule](sm.params.src, sm.params.tgt, dict(sm.input.items()), sm.params.settings,
                                          sm.output.stitches, sm.output.csv, device=sm.params.device,
                                          out_npz=sm.output.images, fronts=sm.params.fronts))
