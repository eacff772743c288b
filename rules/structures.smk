rule md:
    output:
        snapshots=f"{RESULTS}/structures/{{system}}/snapshots.extxyz",
        initial=f"{RESULTS}/structures/{{system}}/initial.extxyz",
        record=f"{RESULTS}/structures/{{system}}/md.json",
    log:
        f"{RESULTS}/logs/md/{{system}}.log",
    params:
        config_json=system_config_json,
        out_dir=output_dir,
    threads: 1
    resources:
        runtime=30,
        mem_mb=2000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "xasflow structures md --config-json {params.config_json:q} --system {wildcards.system:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule labels:
    input:
        snapshots=f"{RESULTS}/structures/{{system}}/snapshots.extxyz",
        initial=f"{RESULTS}/structures/{{system}}/initial.extxyz",
    output:
        labels=f"{RESULTS}/structures/{{system}}/labels.npz",
        summary=f"{RESULTS}/structures/{{system}}/labels.json",
    log:
        f"{RESULTS}/logs/labels/{{system}}.log",
    params:
        config_json=labels_config_json,
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "xasflow structures labels --config-json {params.config_json:q} --system {wildcards.system:q} "
        "--snapshots {input.snapshots:q} --initial {input.initial:q} --out {output.labels:q} > {log:q} 2>&1"


rule sites:
    input:
        labels=f"{RESULTS}/structures/{{system}}/labels.npz",
        snapshots=f"{RESULTS}/structures/{{system}}/snapshots.extxyz",
    output:
        f"{RESULTS}/sites/{{system}}.csv",
    log:
        f"{RESULTS}/logs/sites/{{system}}.log",
    params:
        config_json=sites_config_json,
    threads: 1
    resources:
        runtime=5,
        mem_mb=1000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "xasflow structures sites --config-json {params.config_json:q} --system {wildcards.system:q} "
        "--labels {input.labels:q} --snapshots {input.snapshots:q} --out {output:q} > {log:q} 2>&1"
