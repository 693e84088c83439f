# OOD detectors (paper 1, Section 4): outlier activations per network, one detector per (network, layer),
# indexed per network (one file OOD scoring depends on), then the AUROC of every stitch's activations against the
# receiving layer's own: one job per network pair scores every stitching method, loading each detector once (one
# CSV and NPZ per method, as the stitches).


rule outliers:
    input:
        ckpt=net_ckpt,
    output:
        outliers=f"{R}/activations/{{dataset}}/{{net}}/outliers.h5",
        heldout=f"{R}/activations/{{dataset}}/{{net}}/heldout.h5",
    log:
        f"{R}/logs/outliers/{{dataset}}/{{net}}.log",
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("outliers", "mem_mb"),
        disk_mb=requested("outliers", "disk_mb"),
        runtime=30,
    params:
        spec=net_spec,
        settings=config["extract"],
        outliers=config["ood"]["outliers"],
        device=DEVICE,
    script:
        "../workflow_scripts/extract.py"


rule detector:
    input:
        unpack(detector_inputs),
    output:
        pt=f"{R}/ood/{{dataset}}/detectors/{{net}}/{{layer}}.pt",
        json=f"{R}/ood/{{dataset}}/detectors/{{net}}/{{layer}}.json",
        npz=f"{R}/ood/{{dataset}}/detectors/{{net}}/{{layer}}.npz",
    log:
        f"{R}/logs/detector/{{dataset}}/{{net}}/{{layer}}.log",
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("detector", "mem_mb"),
        disk_mb=requested("detector", "disk_mb"),
        runtime=240,
    params:
        spec=net_spec,
        settings=DETECTOR_SETTINGS,
        fronts=FRONTS["detector"],
        outliers=config["ood"]["outliers"],
        device=DEVICE,
    script:
        "../workflow_scripts/detector.py"


rule detectors:
    input:
        unpack(detector_files),
    output:
        f"{R}/ood/{{dataset}}/detectors/{{net}}.json",
    log:
        f"{R}/logs/detectors/{{dataset}}/{{net}}.log",
    localrule: True
    conda:
        "../envs/stitchlib.yaml"
    threads: 1
    resources:
        mem_mb=requested("detectors", "mem_mb"),
        disk_mb=requested("detectors", "disk_mb"),
        runtime=5,
    params:
        spec=net_spec,
    script:
        "../workflow_scripts/detectors.py"


rule ood_scores:
    input:
        unpack(ood_score_inputs),
    output:
        csv=[f"{R}/ood/{{dataset}}/scores/{m}/{{src}}__{{tgt}}.csv" for m in METHODS],
        npz=[f"{R}/ood/{{dataset}}/scores/{m}/{{src}}__{{tgt}}.npz" for m in METHODS],
    log:
        f"{R}/logs/ood_scores/{{dataset}}/{{src}}__{{tgt}}.log",
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("ood_scores", "mem_mb"),
        disk_mb=requested("ood_scores", "disk_mb"),
        runtime=30,
    params:
        src=src_spec,
        tgt=tgt_spec,
        methods=METHODS,
        fpr95=FPR95,
        block_mb=config["cache"]["block_mb"],
        device=DEVICE,
    script:
        "../workflow_scripts/ood_scores.py"


rule ood_figures:
    input:
        unpack(ood_figure_inputs),
    output:
        table=f"{R}/matrices/{{dataset}}/ood.csv",
        figures=report(
            directory(f"{R}/figures/{{dataset}}/ood"),
            patterns=["{name}.png"],
            caption="../report/ood.rst",
            category="Paper 1",
            subcategory="OOD detectors",
        ),
    log:
        f"{R}/logs/ood_figures/{{dataset}}.log",
    conda:
        "../envs/stitchlib.yaml"
    threads: 1
    resources:
        mem_mb=requested("ood_figures", "mem_mb"),
        disk_mb=requested("ood_figures", "disk_mb"),
        runtime=10,
    params:
        energy_plots=energy_plots_of,
    script:
        "../workflow_scripts/ood_figures.py"
