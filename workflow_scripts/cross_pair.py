from _runner import run

from stitchlib import crossarch

run(snakemake, lambda sm: crossarch.stitch_pair(sm.params.src, sm.params.tgt, dict(sm.input.items()), sm.params.dm,
                                                sm.params.tlm, dict(sm.output.items()),
                                                conv_stitch=sm.params.conv_stitch, device=sm.params.device,
                                                fronts=sm.params.fronts))
