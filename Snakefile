# stitchlib workflow: trained checkpoints → HDF5 activations → DM/TLM stitchers → tables and figures.
# Run `snakemake --cores N` (see README). Every rule is a thin adapter over stitchlib.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/networks.smk"
include: "rules/stitching.smk"
include: "rules/ood.smk"
include: "rules/tables.smk"


rule all:
    input:
        all_targets(),
    default_target: True
