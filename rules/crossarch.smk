# Cross-architecture stitching (paper 3's small-ResNet grid; conv ↔ ViT as in paper 1's code): one job per
# (condition, sender network, receiver network) fits DM and trains TLM for every block output × block input,
# random controls are the networks' seeded initialisations, one job writes the tables and figures.
# Its input and path functions are in common.smk.


STUDY_TARGETS.append(cross_targets)


rule cross_init:
    output:
        ckpt=f"{R}/models/{{dataset}}/init/{{net}}.pt",
        train=f"{R}/activations/{{dataset}}/init/{{net}}/train.h5",
        test=f"{R}/activations/{{dataset}}/init/{{net}}/test.h5",
    log:
        f"{R}/logs/cross_init/{{dataset}}/{{net}}.log",
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("cross_init", "mem_mb"),
        disk_mb=requested("cross_init", "disk_mb"),
        runtime=30,
    params:
        spec=net_spec,
        settings=extract_settings,
        device=DEVICE,
    script:
        "../workflow_scripts/cross_init.py"


rule cross_pair:
    input:
        unpack(cross_pair_inputs),
    output:
        dm_pt=cross_pair_file("{dataset}", "{condition}", "dm", "{src}", "{tgt}", "pt"),
        dm_csv=cross_pair_file("{dataset}", "{condition}", "dm", "{src}", "{tgt}", "csv"),
        tlm_pt=cross_pair_file("{dataset}", "{condition}", "tlm", "{src}", "{tgt}", "pt"),
        tlm_csv=cross_pair_file("{dataset}", "{condition}", "tlm", "{src}", "{tgt}", "csv"),
        dm_npz=cross_pair_file("{dataset}", "{condition}", "dm", "{src}", "{tgt}", "npz"),
        tlm_npz=cross_pair_file("{dataset}", "{condition}", "tlm", "{src}", "{tgt}", "npz"),
    log:
        f"{R}/logs/cross_pair/{{dataset}}/{{condition}}/{{src}}__{{tgt}}.log",
    wildcard_constraints:
        condition="|".join(sconf.CONTROLS),
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("cross_pair", "mem_mb"),
        disk_mb=requested("cross_pair", "disk_mb"),
        runtime=240,
    params:
        src=src_spec,
        tgt=tgt_spec,
        dm=sconf.cross_dm_settings(config),
        tlm=sconf.cross_tlm_settings(config),
        conv_stitch=config["cross"]["stitch"],
        fronts=FRONTS["cross"],
        device=DEVICE,
    script:
        "../workflow_scripts/cross_pair.py"


rule cross_report:
    input:
        unpack(cross_report_inputs),
    output:
        table=f"{R}/matrices/{{dataset}}/cross/stitches.csv",
        summary_csv=report(
            f"{R}/tables/{{dataset}}/cross/summary.csv",
            caption="../report/cross.rst",
            category="Paper 3",
            subcategory="Summary",
        ),
        summary_md=f"{R}/tables/{{dataset}}/cross/summary.md",
        figures=[
            report(f, caption="../report/cross.rst", category="Paper 3", subcategory="Figures")
            for figures in cross_figures("{dataset}")
            for f in figures.values()
        ],
    log:
        f"{R}/logs/cross_report/{{dataset}}.log",
    conda:
        "../envs/stitchlib.yaml"
    threads: 1
    resources:
        mem_mb=requested("cross_report", "mem_mb"),
        disk_mb=requested("cross_report", "disk_mb"),
        runtime=10,
    params:
        figures=cross_figures_of,
        jobs=CROSS_JOBS,
        specs=cross_specs,
        uncertainty=config["uncertainty"],
    script:
        "../workflow_scripts/cross_report.py"


# `snakemake cross`: this study's outputs only.
rule cross:
    input:
        [f for d in config["datasets"] for f in cross_targets(d)],
