# The dataset rule declares the manifest beside the store, not the store: Snakemake deletes a
# job's outputs before it runs and after it fails, and the last good store must survive a failed
# rebuild. `xasflow dataset` publishes the store itself (staged, swapped in whole only when
# complete) and writes the manifest, holding the store's checksums, last.
DATASET_STORE = f"{RESULTS}/dataset/spectra.zarr"
DATASET_MANIFEST = f"{DATASET_STORE}.json"


def dataset_store(wildcards, input):
    """The zarr store a rule reads, beside the manifest it takes as input (spectra.zarr.json)."""
    return str(Path(input.dataset).with_suffix(""))


def published_store(wildcards, output):
    """The zarr store `xasflow dataset` publishes beside the manifest it writes."""
    return str(Path(output.manifest).with_suffix(""))


def get_batch_spectra(wildcards=None):
    """Each batch's spectra.npz: the dataset command reads it beside the batch's results.csv."""
    return [str(Path(path).with_name("spectra.npz")) for path in get_batches()]


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
        "xasflow dataset --config-json {params.config_json:q} --manifests {input.manifests} "
        "--batches {params.batch_dirs} --labels {params.labels} --md {params.md} "
        "--out {params.store} --failures {output.failures} --summary {output.summary} > {log} 2>&1"
