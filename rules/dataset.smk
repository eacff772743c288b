# The dataset rule declares the manifest beside the store, not the store (see DATASET_STORE in
# common.smk): the last good store survives a failed rebuild.
rule dataset:
    input:
        manifests=get_manifests(),
        batches=get_batches(),
        spectra=get_batch_spectra(),
        labels=get_labels(),
        md=get_md_records(),
    output:
        manifest=DATASET_MANIFEST,
        failures=f"{RESULTS}/dataset/failures.csv",
        summary=f"{RESULTS}/dataset/summary.json",
    log:
        f"{RESULTS}/logs/dataset.log",
    params:
        config_json=dataset_config_json,
        batch_dirs=batch_directories,
        labels=labels_arguments,
        md=md_arguments,
        store=published_store,
    threads: 1
    resources:
        runtime=30,
        mem_mb=4000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "xasflow dataset --config-json {params.config_json:q} --manifests {input.manifests:q} "
        "--batches {params.batch_dirs:q} --labels {params.labels:q} --md {params.md:q} "
        "--out {params.store:q} --failures {output.failures:q} --summary {output.summary:q} > {log:q} 2>&1"
