# One HTML file with every table and figure of the run and the config that produced it (stitchlib.html_report).
# Included last: its inputs are every other final output of the run.

STUDY_TARGETS.append(report_target)


rule report:
    input:
        report_inputs,
    output:
        REPORT,
    log:
        f"{R}/logs/report.log",
    conda:
        "../envs/stitchlib.yaml"
    threads: 1
    resources:
        mem_mb=requested("report", "mem_mb"),
        disk_mb=requested("report", "disk_mb"),
        runtime=10,
    params:
        config=config,
    script:
        "../workflow_scripts/report.py"
