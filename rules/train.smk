rule train:
    input:
        dataset=DATASET_MANIFEST,  # the store's manifest: see rules/dataset.smk
        calibration=get_calibration(),
    output:
        checkpoint=f"{RESULTS}/models/{{model}}/model.ckpt",
        metrics=f"{RESULTS}/models/{{model}}/metrics.json",
        parity=report(
            f"{RESULTS}/models/{{model}}/parity.png",
            caption="../workflow/report/parity.rst",
            category="Models",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "parity (test systems)"},
        ),
        loss=report(
            f"{RESULTS}/models/{{model}}/loss.png",
            caption="../workflow/report/loss.rst",
            category="Models",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "loss per epoch"},
        ),
        reliability=report(
            f"{RESULTS}/models/{{model}}/reliability.png",
            caption="../workflow/report/reliability.rst",
            category="Models",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "interval coverage (test systems)"},
        ),
        comparison=report(
            f"{RESULTS}/models/{{model}}/comparison.csv",
            caption="../workflow/report/comparison.rst",
            category="Models",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "network against baselines (table)"},
        ),
    log:
        f"{RESULTS}/logs/train/{{model}}.log",
    params:
        dataset=dataset_store,
        config_json=train_config_json,
        out_dir=output_dir,
        calibration=calibration_argument,
    threads: 2
    resources:
        runtime=120,
        mem_mb=8000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} xasflow train --config-json {params.config_json:q} --model {wildcards.model:q} "
        "--dataset {params.dataset:q} --out-dir {params.out_dir:q} {params.calibration:q} > {log:q} 2>&1"


# On demand (not in `all`): leave-one-system-out over every system, for one model. Pooled test
# metrics of the network and every baseline, and intervals calibrated across systems; one
# training per system. Target: results/<study>/crossval/<model>/crossval.json
rule crossval:
    input:
        dataset=DATASET_MANIFEST,
        calibration=get_calibration(),
    output:
        summary=f"{RESULTS}/crossval/{{model}}/crossval.json",
        table=f"{RESULTS}/crossval/{{model}}/crossval.csv",
        markdown=f"{RESULTS}/crossval/{{model}}/crossval.md",
        reliability=report(
            f"{RESULTS}/crossval/{{model}}/reliability.png",
            caption="../workflow/report/crossval.rst",
            category="Models",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "interval coverage (leave one system out)"},
        ),
    log:
        f"{RESULTS}/logs/crossval/{{model}}.log",
    params:
        dataset=dataset_store,
        config_json=train_config_json,
        out_dir=output_dir,
        calibration=calibration_argument,
    threads: 2
    resources:
        runtime=1440,
        mem_mb=8000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} xasflow crossval --config-json {params.config_json:q} --model {wildcards.model:q} "
        "--dataset {params.dataset:q} --out-dir {params.out_dir:q} {params.calibration:q} > {log:q} 2>&1"
