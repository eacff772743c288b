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
        predictions=report(
            f"{RESULTS}/inference/predictions.csv",
            caption="../workflow/report/predictions_table.rst",
            category="Predictions",
            subcategory="all spectra and models",
            labels={"figure": "predictions (table)"},
        ),
        figure=report(
            f"{RESULTS}/inference/predictions.png",
            caption="../workflow/report/predictions.rst",
            category="Predictions",
            subcategory="all spectra and models",
            labels={"figure": "predictions with 90 % intervals"},
        ),
        rdf=report(
            f"{RESULTS}/inference/predictions_rdf.csv",
            caption="../workflow/report/predictions_rdf.rst",
            category="Predictions",
            subcategory="all spectra and models",
            labels={"figure": "predicted g(r) (table)"},
        ),
        spectrum_figures=report(
            directory(f"{RESULTS}/inference/spectra"),
            patterns=["{spectrum}.png"],
            caption="../workflow/report/spectrum_figures.rst",
            category="Predictions",
            subcategory="per spectrum",
            labels={"spectrum": "{spectrum}"},
        ),
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
        "--out {output.predictions:q} --rdf-out {output.rdf:q} --figure {output.figure:q} "
        "--spectrum-figures {output.spectrum_figures:q} > {log:q} 2>&1"


# Only with a `deconvolution` section in the config: the surface spectra of simulated particles
# deconvolved against the bulk system ({system}) of their composition, predicted by the study's
# models and verified against the particles' true surface spectra and labels.
rule deconvolve:
    input:
        dataset=DATASET_MANIFEST,  # the store's manifest: see rules/dataset.smk
        checkpoints=get_deconvolution_checkpoints,
        labels=get_deconvolution_labels,
        calibration=get_calibration(),
    output:
        summary=f"{RESULTS}/deconvolution/{{system}}/summary.json",
        table=f"{RESULTS}/deconvolution/{{system}}/summary.csv",
        markdown=f"{RESULTS}/deconvolution/{{system}}/summary.md",
        predictions=f"{RESULTS}/deconvolution/{{system}}/predictions.csv",
        spectra=f"{RESULTS}/deconvolution/{{system}}/spectra.csv",
        plots=report(
            directory(f"{RESULTS}/deconvolution/{{system}}/plots"),
            patterns=["{particle}.png"],
            caption="../workflow/report/deconvolution.rst",
            category="Deconvolution",
            subcategory="bulk {system}",
            labels={"bulk": "{system}", "particle": "{particle}"},
        ),
    log:
        f"{RESULTS}/logs/deconvolution/{{system}}.log",
    params:
        dataset=dataset_store,
        out_dir=output_dir,
        particles=deconvolution_particle_arguments,
        checkpoints=deconvolution_checkpoint_arguments,
        settings=deconvolution_settings,
        calibration=calibration_argument,
    threads: 1
    resources:
        runtime=20,
        mem_mb=4000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} xasflow deconvolve --dataset {params.dataset:q} --bulk-system {wildcards.system:q} "
        "{params.particles:q} {params.checkpoints:q} {params.settings:q} {params.calibration:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
