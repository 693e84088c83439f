# Paper 2 (Csiszárik et al. 2021): matching classes, TLM options and their figures. Each job runs one
# experiment on one (Model 1, Model 2) pair from the activation caches; one job draws every figure.


rule frankenstein_run:
    input:
        unpack(pair_inputs),
    output:
        csv=f"{R}/frankenstein/{{dataset}}/{{experiment}}/{{src}}__{{tgt}}.csv",
    log:
        f"{R}/logs/frankenstein/{{dataset}}/{{experiment}}/{{src}}__{{tgt}}.log",
    wildcard_constraints:
        experiment="|".join(sorted(FRANK_CSV)),
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("frankenstein_run", "mem_mb"),
        disk_mb=requested("frankenstein_run", "disk_mb"),
        runtime=120,
    params:
        src=src_spec,
        tgt=tgt_spec,
        settings=frank_experiment_settings,
        fronts=FRONTS["frankenstein"],
        device=DEVICE,
    script:
        "../workflow_scripts/frankenstein.py"


use rule frankenstein_run as frankenstein_inits with:
    output:
        csv=f"{R}/frankenstein/{{dataset}}/inits/{{src}}__{{tgt}}.csv",
        mode=f"{R}/frankenstein/{{dataset}}/mode/{{src}}__{{tgt}}.csv",
    log:
        f"{R}/logs/frankenstein/{{dataset}}/inits/{{src}}__{{tgt}}.log",
    resources:
        mem_mb=requested("frankenstein_inits", "mem_mb"),
        disk_mb=requested("frankenstein_inits", "disk_mb"),
        runtime=120,
    params:
        src=src_spec,
        tgt=tgt_spec,
        settings=frank_settings("inits"),
        fronts=FRONTS["frankenstein"],
        device=DEVICE,


use rule frankenstein_run as frankenstein_sparsity with:
    output:
        csv=f"{R}/frankenstein/{{dataset}}/sparsity/{{src}}__{{tgt}}.csv",
        matrices=f"{R}/frankenstein/{{dataset}}/sparsity/{{src}}__{{tgt}}.npz",
    log:
        f"{R}/logs/frankenstein/{{dataset}}/sparsity/{{src}}__{{tgt}}.log",
    resources:
        mem_mb=requested("frankenstein_sparsity", "mem_mb"),
        disk_mb=requested("frankenstein_sparsity", "disk_mb"),
        runtime=120,
    params:
        src=src_spec,
        tgt=tgt_spec,
        settings=frank_settings("sparsity"),
        fronts=FRONTS["frankenstein"],
        device=DEVICE,


rule frankenstein_figures:
    input:
        unpack(frank_results),
    output:
        figures=[
            report(
                f"{R}/figures/{{dataset}}/frankenstein/{name}.png",
                caption="../report/frankenstein.rst",
                category="Paper 2",
                subcategory="Figures",
                labels={"figure": name},
            )
            for name in frank_figure_names()
        ],
        csv=report(
            f"{R}/tables/{{dataset}}/frankenstein/summary.csv",
            caption="../report/frankenstein.rst",
            category="Paper 2",
            subcategory="Summary",
        ),
        md=f"{R}/tables/{{dataset}}/frankenstein/summary.md",
    log:
        f"{R}/logs/frankenstein/{{dataset}}/figures.log",
    conda:
        "../envs/stitchlib.yaml"
    resources:
        mem_mb=requested("frankenstein_figures", "mem_mb"),
        disk_mb=requested("frankenstein_figures", "disk_mb"),
        runtime=10,
    params:
        settings=FRANK,
        names=frank_figure_names(),
        uncertainty=config["uncertainty"],
    script:
        "../workflow_scripts/frankenstein_figures.py"


STUDY_TARGETS.append(frank_targets)


rule frankenstein:
    input:
        [f for d in config["datasets"] for f in frank_targets(d)],
