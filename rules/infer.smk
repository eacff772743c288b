rule pseudo_experiment:
    input:
        dataset=DATASET_MANIFEST,  # the store's manifest: see rules/dataset.smk
        calibration=get_calibration(),
    output:
        spectrum=f"{RESULTS}/inference/pseudo/{{system}}.dat",
        truth=f"{RESULTS}/inference/pseudo/{{system}}.truth.json",
    log:
        f"{RESULTS}/logs/pseudo/{{system}}.log",
    params:
        dataset=dataset_store,
        config_json=pseudo_config_json,
        calibration=calibration_argument,
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "xasflow pseudo-experiment --config-json {params.config_json:q} --dataset {params.dataset:q} "
        "--spectrum {output.spectrum:q} --truth {output.truth:q} {params.calibration:q} > {log:q} 2>&1"


rule predict:
    input:
        checkpoints=get_checkpoints(),
        spectra=get_inference_spectra(),
        truths=get_truths(),
    output:
        predictions=f"{RESULTS}/inference/predictions.csv",
        rdf=f"{RESULTS}/inference/predictions_rdf.csv",
    log:
        f"{RESULTS}/logs/predict.log",
    params:
        spectra=spectrum_arguments,
        checkpoints=checkpoint_arguments,
        truths=truth_arguments,
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "xasflow predict {params.spectra:q} {params.checkpoints:q} {params.truths:q} "
        "--out {output.predictions:q} --rdf-out {output.rdf:q} > {log:q} 2>&1"
