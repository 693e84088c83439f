# Ding et al. (2021) statistical tests of functional similarity (paper 1 §5): linear probes of every layer,
# low-rank families of chosen layers (sensitivity, Table 2), every layer of every seed (specificity, Table 3).

# Input and path functions: ding_tables, ding_specs in common.smk.

if config["ding"]["enabled"]:
    STUDY_TARGETS.append(ding_tables)


rule probes:
    input:
        train=lambda w: acts(w.dataset, w.net, "train"),
        test=lambda w: acts(w.dataset, w.net, "test"),
    output:
        f"{R}/ding/{{dataset}}/probes/{{net}}.csv",
    params:
        spec=lambda w: network_spec(config, w.dataset, w.net),
        settings=config["ding"],
        device=config["device"],
    log:
        f"{R}/logs/probes/{{dataset}}/{{net}}.log",
    threads: THREADS
    resources:
        mem_mb=requested("probes", "mem_mb"),
        disk_mb=requested("probes", "disk_mb"),
        runtime=60,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/ding.py"


rule sensitivity:
    input:
        train=lambda w: acts(w.dataset, w.net, "train"),
        test=lambda w: acts(w.dataset, w.net, "test"),
        ckpt=lambda w: ckpt(w.dataset, w.net),
    output:
        f"{R}/ding/{{dataset}}/sensitivity/{{net}}.csv",
    params:
        spec=lambda w: network_spec(config, w.dataset, w.net),
        layers=lambda w: sconf.sensitivity_layers(config, sconf.parse_network(w.net)[0]),
        settings=config["ding"],
        dm=config["dm"],
        similarity=config["similarity"],
        fronts=FRONTS["dm"],
        device=config["device"],
    log:
        f"{R}/logs/sensitivity/{{dataset}}/{{net}}.log",
    threads: THREADS
    resources:
        mem_mb=requested("sensitivity", "mem_mb"),
        disk_mb=requested("sensitivity", "disk_mb"),
        runtime=120,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/ding.py"


rule specificity:
    input:
        unpack(lambda w: {f"{net}/{kind}": path for net in arch_networks(w.arch) for kind, path in (
            ("probes", f"{R}/ding/{w.dataset}/probes/{net}.csv"), ("train", acts(w.dataset, net, "train")),
            ("test", acts(w.dataset, net, "test")), ("ckpt", ckpt(w.dataset, net)))}),
    output:
        f"{R}/ding/{{dataset}}/specificity/{{arch}}.csv",
    params:
        specs=lambda w: ding_specs(w.dataset, w.arch),
        settings=config["ding"],
        dm=config["dm"],
        similarity=config["similarity"],
        fronts=FRONTS["dm"],
        device=config["device"],
    log:
        f"{R}/logs/specificity/{{dataset}}/{{arch}}.log",
    threads: THREADS
    resources:
        mem_mb=requested("specificity", "mem_mb"),
        disk_mb=requested("specificity", "disk_mb"),
        runtime=120,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/ding.py"


rule ding_tables:
    input:
        sensitivity=lambda w: [f"{R}/ding/{w.dataset}/sensitivity/{net}.csv" for net in sconf.networks(config)],
        specificity=lambda w: [f"{R}/ding/{w.dataset}/specificity/{arch}.csv"
                               for arch in sconf.matrix_architectures(config)],
    output:
        table2_csv=f"{R}/tables/{{dataset}}/table2.csv",
        table2_md=f"{R}/tables/{{dataset}}/table2.md",
        table3_csv=f"{R}/tables/{{dataset}}/table3.csv",
        table3_md=f"{R}/tables/{{dataset}}/table3.md",
    params:
        alpha=config["ding"]["alpha"],
    log:
        f"{R}/logs/ding_tables/{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=requested("ding_tables", "mem_mb"),
        disk_mb=requested("ding_tables", "disk_mb"),
        runtime=10,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/ding.py"
