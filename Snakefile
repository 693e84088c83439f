# stitchlib workflow: trained checkpoints → HDF5 activations → DM/TLM stitchers → tables and figures.
# Run `snakemake --cores N` (see README). Every rule is a thin adapter over stitchlib.

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names another: a paper config must not inherit the default's
# datasets and architectures (Snakemake would merge the two).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/networks.smk"
include: "rules/stitching.smk"
include: "rules/ood.smk"
include: "rules/tables.smk"
include: "rules/ding.smk"
include: "rules/crossarch.smk"
include: "rules/frankenstein.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
