# stitchlib workflow: trained checkpoints → HDF5 activations → DM/TLM stitchers → tables and figures.
# Run `snakemake --cores N` (see README). Every rule is a thin adapter over stitchlib.

import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


# The raw config files first: their YAML errors with line and column, a key given twice, YTE when configs are
# untrusted (Snakemake itself reads a --configfile before this runs and keeps the last of two keys silently).
sys.path.insert(0, workflow.basedir)  # stitchlib from this checkout, also under --software-deployment-method conda
from stitchlib.config import ConfigError, check_config_files

try:
    check_config_files(workflow.overwrite_configfiles or ["config.yaml"])
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None


# The embedded default, unless --configfile names another: a paper config must not inherit the default's
# datasets and architectures (Snakemake would merge the two).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


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
