# Tables and figures from the long similarity table of each dataset.


rule similarity_table:
    input:
        stitching=lambda w: stitching_csvs(w.dataset),
        indices=lambda w: index_csvs(w.dataset),
    output:
        f"{R}/matrices/{{dataset}}/similarity.csv",
    log:
        f"{R}/logs/similarity_table/{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=requested("similarity_table", "mem_mb"),
        disk_mb=requested("similarity_table", "disk_mb"),
        runtime=10,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/similarity_table.py"


rule table1:
    input:
        f"{R}/matrices/{{dataset}}/similarity.csv",
    output:
        csv=f"{R}/tables/{{dataset}}/table1.csv",
        md=f"{R}/tables/{{dataset}}/table1.md",
    params:
        tie_rule=config["tables"]["tie_rule"],
    log:
        f"{R}/logs/table1/{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=requested("table1", "mem_mb"),
        disk_mb=requested("table1", "disk_mb"),
        runtime=10,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/table1.py"


rule heatmaps:
    input:
        expand(f"{R}/matrices/{{dataset}}/similarity.csv", dataset=config["datasets"]),
    output:
        [f for d in config["datasets"] for f in heatmaps(d)],
    params:
        figures=[(d, *f) for d in config["datasets"] for f in heatmap_specs()],
    log:
        f"{R}/logs/heatmaps.log",
    threads: 1
    resources:
        mem_mb=requested("heatmaps", "mem_mb"),
        disk_mb=requested("heatmaps", "disk_mb"),
        runtime=10,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/heatmaps.py"
