# OOD detectors (paper 1, Section 4): outlier activations per network, one detector per (network, layer),
# then the AUROC of every stitch's activations against the receiving layer's own: one job per network pair
# scores every stitching method, loading each detector once (one CSV and NPZ per method, as the stitches).


rule outliers:
    input:
        ckpt=lambda w: ckpt(w.dataset, w.net),
    output:
        outliers=f"{R}/activations/{{dataset}}/{{net}}/outliers.h5",
        heldout=f"{R}/activations/{{dataset}}/{{net}}/heldout.h5",
    params:
        spec=lambda w: network_spec(config, w.dataset, w.net),
        settings=config["extract"],
        outliers=config["ood"]["outliers"],
        device=config["device"],
    log:
        f"{R}/logs/outliers/{{dataset}}/{{net}}.log",
    threads: THREADS
    resources:
        mem_mb=requested("outliers", "mem_mb"),
        disk_mb=requested("outliers", "disk_mb"),
        runtime=30,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/extract.py"


rule detector:
    input:
        unpack(detector_inputs),
    output:
        pt=f"{R}/ood/{{dataset}}/detectors/{{net}}/{{layer}}.pt",
        json=f"{R}/ood/{{dataset}}/detectors/{{net}}/{{layer}}.json",
        npz=f"{R}/ood/{{dataset}}/detectors/{{net}}/{{layer}}.npz",
    params:
        spec=lambda w: network_spec(config, w.dataset, w.net),
        settings={k: v for k, v in config["ood"].items() if k not in ("enabled", "outliers")},
        fronts=FRONTS["detector"],
        outliers=config["ood"]["outliers"],
        device=config["device"],
    log:
        f"{R}/logs/detector/{{dataset}}/{{net}}/{{layer}}.log",
    threads: THREADS
    resources:
        mem_mb=requested("detector", "mem_mb"),
        disk_mb=requested("detector", "disk_mb"),
        runtime=240,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/detector.py"


rule ood_scores:
    input:
        stitches=[f"{R}/stitching/{{dataset}}/{m}/{{src}}__{{tgt}}.pt" for m in config["stitching"]["methods"]],
        src_test=lambda w: acts(w.dataset, w.src, "test"),
        tgt_test=lambda w: acts(w.dataset, w.tgt, "test"),
        detectors=lambda w: detectors(w.dataset, w.tgt),
    output:
        csv=[f"{R}/ood/{{dataset}}/scores/{m}/{{src}}__{{tgt}}.csv" for m in config["stitching"]["methods"]],
        npz=[f"{R}/ood/{{dataset}}/scores/{m}/{{src}}__{{tgt}}.npz" for m in config["stitching"]["methods"]],
    params:
        src=lambda w: network_spec(config, w.dataset, w.src),
        tgt=lambda w: network_spec(config, w.dataset, w.tgt),
        methods=config["stitching"]["methods"],
        block_mb=config["cache"]["block_mb"],
        device=config["device"],
    log:
        f"{R}/logs/ood_scores/{{dataset}}/{{src}}__{{tgt}}.log",
    threads: THREADS
    resources:
        mem_mb=requested("ood_scores", "mem_mb"),
        disk_mb=requested("ood_scores", "disk_mb"),
        runtime=30,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/ood_scores.py"


rule ood_figures:
    input:
        similarity=f"{R}/matrices/{{dataset}}/similarity.csv",
        scores=lambda w: ood_score_files(w.dataset, "csv"),
        energies=lambda w: ood_score_files(w.dataset, "npz"),
    output:
        table=f"{R}/matrices/{{dataset}}/ood.csv",
        figures=directory(f"{R}/figures/{{dataset}}/ood"),
    params:
        energy_plots=lambda w: energy_plots(w.dataset),
    log:
        f"{R}/logs/ood_figures/{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=requested("ood_figures", "mem_mb"),
        disk_mb=requested("ood_figures", "disk_mb"),
        runtime=10,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/ood_figures.py"
