# Networks: seeded training (or, for a network of your own, importing its state dict), then every stitch
# point's activations cached to HDF5.


rule train:
    input:
        lambda w: sconf.state_dict_files(config, w.dataset, w.net),
    output:
        ckpt=f"{R}/models/{{dataset}}/{{net}}.pt",
        metrics=f"{R}/models/{{dataset}}/{{net}}.json",
    params:
        spec=lambda w: network_spec(config, w.dataset, w.net),
        settings=lambda w: sconf.train_settings(config, sconf.parse_network(w.net)[0]),
        device=config["device"],
    log:
        f"{R}/logs/train/{{dataset}}/{{net}}.log",
    threads: THREADS
    resources:
        mem_mb=requested("train", "mem_mb"),
        disk_mb=requested("train", "disk_mb"),
        runtime=120,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/train.py"


rule extract:
    input:
        ckpt=lambda w: ckpt(w.dataset, w.net),
    output:
        train=f"{R}/activations/{{dataset}}/{{net}}/train.h5",
        test=f"{R}/activations/{{dataset}}/{{net}}/test.h5",
    params:
        spec=lambda w: network_spec(config, w.dataset, w.net),
        settings=extract_settings,
        device=config["device"],
    log:
        f"{R}/logs/extract/{{dataset}}/{{net}}.log",
    threads: THREADS
    resources:
        mem_mb=requested("extract", "mem_mb"),
        disk_mb=requested("extract", "disk_mb"),
        runtime=30,
    conda:
        "../envs/stitchlib.yaml"
    script:
        "../workflow_scripts/extract.py"
