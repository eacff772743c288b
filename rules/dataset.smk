rule dataset:
    input:
        manifests=get_manifests(),
        batches=get_batches(),
        labels=get_labels(),
        md=get_md_records(),
    output:
        dataset=directory(f"{RESULTS}/dataset/spectra.zarr"),
        failures=f"{RESULTS}/dataset/failures.csv",
        summary=f"{RESULTS}/dataset/summary.json",
    log:
        f"{RESULTS}/logs/dataset.log",
    params:
        config_json=dataset_config_json,
        batch_dirs=batch_directories,
        labels=labels_arguments,
        md=md_arguments,
    threads: 1
    resources:
        runtime=30,
        mem_mb=4000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "xasflow dataset --config-json {params.config_json:q} --manifests {input.manifests} "
        "--batches {params.batch_dirs} --labels {params.labels} --md {params.md} "
        "--out {output.dataset} --failures {output.failures} --summary {output.summary} > {log} 2>&1"
