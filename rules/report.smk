# One HTML file with every table and figure of the run and the config that produced it (stitchlib.html_report).
# Included last: its inputs are every other final output of the run.

REPORT = f"{R}/report.html"
STUDY_TARGETS.append(lambda dataset: [REPORT])


rule report:
    input:
        lambda w: [t for t in all_targets() if t != REPORT],
    output:
        REPORT,
    params:
        config=config,
    log:
        f"{R}/logs/report.log",
    threads: 1
    resources:
        mem_mb=requested("report", "mem_mb"),
        disk_mb=requested("report", "disk_mb"),
        runtime=10,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/report.py"
