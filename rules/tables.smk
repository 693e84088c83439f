# Tables and figures from the long similarity table of each dataset.


rule similarity_table:
    input:
        unpack(similarity_inputs),
    output:
        csv=f"{R}/matrices/{{dataset}}/similarity.csv",
        replicates=f"{R}/matrices/{{dataset}}/similarity.npz",
    log:
        f"{R}/logs/similarity_table/{{dataset}}.log",
    priority: 10
    conda:
        "../envs/stitchlib.yaml"
    threads: 1
    resources:
        mem_mb=requested("similarity_table", "mem_mb"),
        disk_mb=requested("similarity_table", "disk_mb"),
        runtime=10,
    params:
        uncertainty=config["uncertainty"],
    script:
        "../workflow_scripts/similarity_table.py"


rule table1:
    input:
        matrix=matrix,
        replicates=matrix_replicates,
    output:
        csv=report(
            f"{R}/tables/{{dataset}}/table1.csv",
            caption="../report/table1.rst",
            category="Paper 1",
            subcategory="Table 1",
        ),
        md=f"{R}/tables/{{dataset}}/table1.md",
        layers=f"{R}/tables/{{dataset}}/table1_layers.csv",
    log:
        f"{R}/logs/table1/{{dataset}}.log",
    priority: 10
    conda:
        "../envs/stitchlib.yaml"
    threads: 1
    resources:
        mem_mb=requested("table1", "mem_mb"),
        disk_mb=requested("table1", "disk_mb"),
        runtime=10,
    params:
        tie_rule=config["tables"]["tie_rule"],
        uncertainty=config["uncertainty"],
    script:
        "../workflow_scripts/table1.py"


rule heatmaps:
    input:
        unpack(heatmap_inputs),
    output:
        [
            report(
                f,
                caption="../report/heatmap.rst",
                category="Paper 1",
                subcategory="Heatmaps",
                labels={"dataset": d, "measure": m, "architecture": a, "setting": s},
            )
            for d in config["datasets"]
            for f, (m, a, s) in zip(heatmaps(d), heatmap_specs())
        ],
    log:
        f"{R}/logs/heatmaps.log",
    priority: 10
    conda:
        "../envs/stitchlib.yaml"
    threads: 1
    resources:
        mem_mb=requested("heatmaps", "mem_mb"),
        disk_mb=requested("heatmaps", "disk_mb"),
        runtime=10,
    params:
        figures=[(d, *f) for d in config["datasets"] for f in heatmap_specs()],
        uncertainty=config["uncertainty"],
    script:
        "../workflow_scripts/heatmaps.py"
