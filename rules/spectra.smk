rule feff_batch:
    input:
        manifest=f"{RESULTS}/sites/{{system}}.csv",
        snapshots=f"{RESULTS}/structures/{{system}}/snapshots.extxyz",
    output:
        results=f"{RESULTS}/spectra/{{system}}/batch_{{batch}}/results.csv",
        spectra=f"{RESULTS}/spectra/{{system}}/batch_{{batch}}/spectra.npz",
    log:
        f"{RESULTS}/logs/spectra/{{system}}/batch_{{batch}}.log",
    params:
        config_json=spectra_config_json,
        out_dir=output_dir,
        batch=batch_number,
        cache=cache_argument,
    threads: 1
    resources:
        runtime=feff_batch_runtime,
        mem_mb=2000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "xasflow spectra run --config-json {params.config_json:q} --manifest {input.manifest:q} "
        "--snapshots {input.snapshots:q} --batch {params.batch:q} --out-dir {params.out_dir:q} "
        "{params.cache:q} > {log:q} 2>&1"


rule fidelity:
    input:
        references=get_reference_files(),
    output:
        table=report(
            f"{RESULTS}/fidelity/fidelity.csv",
            caption="../workflow/report/fidelity.rst",
            category="Fidelity",
            subcategory="all references",
            labels={"reference": "all", "figure": "agreement table"},
        ),
        record=f"{RESULTS}/fidelity/fidelity.json",
        calibration=get_calibration(),
        # one overlay.png per reference (measured, simulated, calibrated), each its own report entry
        overlays=[
            report(
                f"{RESULTS}/fidelity/{name}/overlay.png",
                caption="../workflow/report/overlay.rst",
                category="Fidelity",
                subcategory=name,
                labels={"reference": name, "figure": "measured, simulated, calibrated"},
            )
            for name in sorted(REFERENCES)
        ],
    log:
        f"{RESULTS}/logs/fidelity.log",
    params:
        config_json=fidelity_config_json,
        out_dir=output_dir,
        cache=cache_argument,
    threads: 1
    resources:
        runtime=60,
        mem_mb=2000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "xasflow fidelity --config-json {params.config_json:q} --out-dir {params.out_dir:q} "
        "{params.cache:q} > {log:q} 2>&1"
