# Stitching: one job per (source network, target network, method) covers every layer pair, so the
# ≈ 2.3 s start-up of a torch job is paid once per network pair, not once per stitch.


rule dm:
    input:
        unpack(pair_inputs),
    output:
        stitches=f"{R}/stitching/{{dataset}}/dm/{{src}}__{{tgt}}.pt",
        csv=f"{R}/stitching/{{dataset}}/dm/{{src}}__{{tgt}}.csv",
        images=f"{R}/stitching/{{dataset}}/dm/{{src}}__{{tgt}}.npz",
    log:
        f"{R}/logs/dm/{{dataset}}/{{src}}__{{tgt}}.log",
    priority: table1_first
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("dm", "mem_mb"),
        disk_mb=requested("dm", "disk_mb"),
        runtime=60,
    params:
        src=src_spec,
        tgt=tgt_spec,
        settings=config["dm"],
        fronts=FRONTS["dm"],
        device=DEVICE,
    script:
        "../workflow_scripts/stitch.py"


rule tlm:
    input:
        unpack(pair_inputs),
        dm=dm_stitches,
    output:
        stitches=f"{R}/stitching/{{dataset}}/tlm/{{src}}__{{tgt}}.pt",
        csv=f"{R}/stitching/{{dataset}}/tlm/{{src}}__{{tgt}}.csv",
        images=f"{R}/stitching/{{dataset}}/tlm/{{src}}__{{tgt}}.npz",
    log:
        f"{R}/logs/tlm/{{dataset}}/{{src}}__{{tgt}}.log",
    priority: table1_first
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("tlm", "mem_mb"),
        disk_mb=requested("tlm", "disk_mb"),
        runtime=240,
    params:
        src=src_spec,
        tgt=tgt_spec,
        settings=config["tlm"],
        fronts=FRONTS["tlm"],
        device=DEVICE,
    script:
        "../workflow_scripts/stitch.py"


rule indices:
    input:
        unpack(index_inputs),
    output:
        csv=f"{R}/similarity/{{dataset}}/{{arch}}.csv",
        replicates=f"{R}/similarity/{{dataset}}/{{arch}}.npz",
    log:
        f"{R}/logs/indices/{{dataset}}/{{arch}}.log",
    priority: table1_first
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("indices", "mem_mb"),
        disk_mb=requested("indices", "disk_mb"),
        runtime=60,
    params:
        specs=arch_specs,
        pairs=index_pairs,
        settings=config["similarity"],
        uncertainty=config["uncertainty"],
    script:
        "../workflow_scripts/indices.py"
