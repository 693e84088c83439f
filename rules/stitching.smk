# Stitching: one job per (source network, target network, method) covers every layer pair, so the
# ≈ 2.3 s start-up of a torch job is paid once per network pair, not once per stitch.


rule dm:
    input:
        unpack(pair_inputs),
    output:
        stitches=f"{R}/stitching/{{dataset}}/dm/{{src}}__{{tgt}}.pt",
        csv=f"{R}/stitching/{{dataset}}/dm/{{src}}__{{tgt}}.csv",
    params:
        src=lambda w: network_spec(config, w.dataset, w.src),
        tgt=lambda w: network_spec(config, w.dataset, w.tgt),
        settings=config["dm"],
        fronts=FRONTS["dm"],
        device=config["device"],
    log:
        f"{R}/logs/dm/{{dataset}}/{{src}}__{{tgt}}.log",
    threads: THREADS
    resources:
        mem_mb=requested("dm", "mem_mb"),
        disk_mb=requested("dm", "disk_mb"),
        runtime=60,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/stitch.py"


rule tlm:
    input:
        unpack(pair_inputs),
        dm=f"{R}/stitching/{{dataset}}/dm/{{src}}__{{tgt}}.pt",
    output:
        stitches=f"{R}/stitching/{{dataset}}/tlm/{{src}}__{{tgt}}.pt",
        csv=f"{R}/stitching/{{dataset}}/tlm/{{src}}__{{tgt}}.csv",
    params:
        src=lambda w: network_spec(config, w.dataset, w.src),
        tgt=lambda w: network_spec(config, w.dataset, w.tgt),
        settings=config["tlm"],
        fronts=FRONTS["tlm"],
        device=config["device"],
    log:
        f"{R}/logs/tlm/{{dataset}}/{{src}}__{{tgt}}.log",
    threads: THREADS
    resources:
        mem_mb=requested("tlm", "mem_mb"),
        disk_mb=requested("tlm", "disk_mb"),
        runtime=240,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/stitch.py"


rule indices:
    input:
        unpack(lambda w: {net: acts(w.dataset, net, "test") for net in arch_networks(w.arch)}),
    output:
        f"{R}/similarity/{{dataset}}/{{arch}}.csv",
    params:
        specs=lambda w: {net: network_spec(config, w.dataset, net) for net in arch_networks(w.arch)},
        pairs=lambda w: [p for p in pairs() if sconf.parse_network(p[0])[0] == w.arch],
        settings=config["similarity"],
    log:
        f"{R}/logs/indices/{{dataset}}/{{arch}}.log",
    threads: THREADS
    resources:
        mem_mb=requested("indices", "mem_mb"),
        disk_mb=requested("indices", "disk_mb"),
        runtime=60,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/indices.py"
