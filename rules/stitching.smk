# Stitching: one job per (source network, target network, method) covers every layer pair, so the
# ≈ 2.3 s start-up of a torch job is paid once per network pair, not once per stitch.


rule dm:
    input:
        unpack(pair_inputs),
    output:
        stitches=f"{R}/stitching/{{dataset}}/dm/{{src}}__{{tgt}}.pt",
        csv=f"{R}/stitching/{{dataset}}/dm/{{src}}__{{tgt}}.csv",
    params:
        src=src_spec,
        tgt=tgt_spec,
        settings=config["dm"],
        device=DEVICE,
    log:
        f"{R}/logs/dm/{{dataset}}/{{src}}__{{tgt}}.log",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    priority: table1_first
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/stitch.py"


rule tlm:
    input:
        unpack(pair_inputs),
        dm=dm_stitches,
    output:
        stitches=f"{R}/stitching/{{dataset}}/tlm/{{src}}__{{tgt}}.pt",
        csv=f"{R}/stitching/{{dataset}}/tlm/{{src}}__{{tgt}}.csv",
    params:
        src=src_spec,
        tgt=tgt_spec,
        settings=config["tlm"],
        device=DEVICE,
    log:
        f"{R}/logs/tlm/{{dataset}}/{{src}}__{{tgt}}.log",
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
    priority: table1_first
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/stitch.py"


rule indices:
    input:
        unpack(index_inputs),
    output:
        f"{R}/similarity/{{dataset}}/{{arch}}.csv",
    params:
        specs=arch_specs,
        pairs=index_pairs,
        settings=config["similarity"],
    log:
        f"{R}/logs/indices/{{dataset}}/{{arch}}.log",
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=60,
    priority: table1_first
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/indices.py"
