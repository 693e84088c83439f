# Networks: seeded training (or, for a network of your own, importing its state dict), then every stitch
# point's activations cached to HDF5.


rule train:
    input:
        state_dict_input,
    output:
        ckpt=f"{R}/models/{{dataset}}/{{net}}.pt",
        metrics=f"{R}/models/{{dataset}}/{{net}}.json",
    log:
        f"{R}/logs/train/{{dataset}}/{{net}}.log",
    priority: table1_first
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("train", "mem_mb"),
        disk_mb=requested("train", "disk_mb"),
        runtime=120,
    params:
        spec=net_spec,
        settings=train_settings,
        device=DEVICE,
    script:
        "../workflow_scripts/train.py"


rule extract:
    input:
        ckpt=net_ckpt,
    output:
        train=f"{R}/activations/{{dataset}}/{{net}}/train.h5",
        test=f"{R}/activations/{{dataset}}/{{net}}/test.h5",
    log:
        f"{R}/logs/extract/{{dataset}}/{{net}}.log",
    priority: table1_first
    conda:
        "../envs/stitchlib.yaml"
    threads: THREADS
    resources:
        mem_mb=requested("extract", "mem_mb"),
        disk_mb=requested("extract", "disk_mb"),
        runtime=30,
    params:
        spec=net_spec,
        settings=extract_settings,
        device=DEVICE,
    script:
        "../workflow_scripts/extract.py"
