# Ding et al. (2021) statistical tests of functional similarity (paper 1 §5): linear probes of every layer,
# low-rank families of chosen layers (sensitivity, Table 2), every layer of every seed (specificity, Table 3).

# Input and path functions: ding_tables, specificity_inputs, ding_table_inputs in common.smk.

if config["ding"]["enabled"]:
    STUDY_TARGETS.append(ding_tables)


rule probes:
    input:
        unpack(net_acts),
    output:
        f"{R}/ding/{{dataset}}/probes/{{net}}.csv",
    log:
        f"{R}/logs/probes/{{dataset}}/{{net}}.log",
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("probes", "mem_mb"),
        disk_mb=requested("probes", "disk_mb"),
        runtime=60,
    params:
        spec=net_spec,
        settings=config["ding"],
        device=DEVICE,
    script:
        "../workflow_scripts/ding.py"


rule sensitivity:
    input:
        unpack(net_acts_and_ckpt),
    output:
        f"{R}/ding/{{dataset}}/sensitivity/{{net}}.csv",
    log:
        f"{R}/logs/sensitivity/{{dataset}}/{{net}}.log",
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("sensitivity", "mem_mb"),
        disk_mb=requested("sensitivity", "disk_mb"),
        runtime=120,
    params:
        spec=net_spec,
        layers=sensitivity_layers,
        settings=config["ding"],
        dm=config["dm"],
        similarity=config["similarity"],
        fronts=FRONTS["dm"],
        device=DEVICE,
    script:
        "../workflow_scripts/ding.py"


rule specificity:
    input:
        unpack(specificity_inputs),
    output:
        f"{R}/ding/{{dataset}}/specificity/{{arch}}.csv",
    log:
        f"{R}/logs/specificity/{{dataset}}/{{arch}}.log",
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("specificity", "mem_mb"),
        disk_mb=requested("specificity", "disk_mb"),
        runtime=120,
    params:
        specs=arch_specs,
        settings=config["ding"],
        dm=config["dm"],
        similarity=config["similarity"],
        fronts=FRONTS["dm"],
        device=DEVICE,
    script:
        "../workflow_scripts/ding.py"


rule ding_tables:
    input:
        unpack(ding_table_inputs),
    output:
        table2_csv=report(
            f"{R}/tables/{{dataset}}/table2.csv",
            caption="../report/ding.rst",
            category="Paper 1",
            subcategory="Tables 2-3 (Ding et al.)",
            labels={"table": "2: sensitivity"},
        ),
        table2_md=f"{R}/tables/{{dataset}}/table2.md",
        table3_csv=report(
            f"{R}/tables/{{dataset}}/table3.csv",
            caption="../report/ding.rst",
            category="Paper 1",
            subcategory="Tables 2-3 (Ding et al.)",
            labels={"table": "3: specificity"},
        ),
        table3_md=f"{R}/tables/{{dataset}}/table3.md",
    log:
        f"{R}/logs/ding_tables/{{dataset}}.log",
    conda:
        "../envs/stitchlib.yaml"
    threads: 1
    resources:
        mem_mb=requested("ding_tables", "mem_mb"),
        disk_mb=requested("ding_tables", "disk_mb"),
        runtime=10,
    params:
        alpha=config["ding"]["alpha"],
        uncertainty=config["uncertainty"],
    script:
        "../workflow_scripts/ding.py"
