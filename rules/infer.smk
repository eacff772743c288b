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
        "xasflow pseudo-experiment --config-json {params.config_json:q} --dataset {params.dataset} "
        "--spectrum {output.spectrum} --truth {output.truth} {params.calibration} > {log} 2>&1"


rule predict:
    input:
        checkpoints=get_checkpoints(),
        spectra=get_inference_spectra(),
        truths=get_truths(),
    output:
        predictions=f"{RESULTS}/inference/predictions.csv",
        # written by `xasflow predict` beside --out as <stem>_rdf.csv (inference.run.rdf_table_path)
        rdf=f"{RESULTS}/inference/predictions_rdf.csv",
    log:
        f"{RESULTS}/logs/predict.log",
    params:
        checkpoints=checkpoint_arguments,
        truths=truth_arguments,
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "xasflow predict {input.spectra} {params.checkpoints} {params.truths} "
        "--out {output.predictions} > {log} 2>&1"
