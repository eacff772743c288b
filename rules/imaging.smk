# Only with an `imaging` section in the config: 2D XANES energy stacks mapped into fractions of
# the reference spectra (rule image_stack, one job per measured stack; with imaging.models also
# into maps of those trained models' predictions), and the maps checked on
# synthetic stacks of the same references with known truth (rule image_validation). The helper
# functions are in rules/common.smk.


rule image_validation:
    input:
        references=imaging_reference_files,
    output:
        summary=f"{RESULTS}/imaging/validation/validation.json",
        table=f"{RESULTS}/imaging/validation/validation.csv",
        markdown=f"{RESULTS}/imaging/validation/validation.md",
        figure=report(
            f"{RESULTS}/imaging/validation/validation.png",
            caption="../workflow/report/imaging_validation.rst",
            category="Imaging",
        ),
    log:
        f"{RESULTS}/logs/imaging/validation.log",
    params:
        config_json=imaging_config_json,
        out_dir=output_dir,
    threads: 1
    resources:
        runtime=60,
        mem_mb=4000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} xasflow image-validate --config-json {params.config_json:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule image_stack:
    input:
        stack=imaging_stack_input,
        references=imaging_reference_files,
        models=imaging_model_checkpoints,
    output:
        summary=f"{RESULTS}/imaging/stacks/{{stack}}/imaging.json",
        regions=f"{RESULTS}/imaging/stacks/{{stack}}/regions.csv",
        figures=report(
            directory(f"{RESULTS}/imaging/stacks/{{stack}}/figures"),
            patterns=["{map}.png"],
            caption="../workflow/report/imaging_maps.rst",
            category="Imaging",
            subcategory="stack {stack}",
            labels={"stack": "{stack}", "map": "{map}"},
        ),
    log:
        f"{RESULTS}/logs/imaging/{{stack}}.log",
    params:
        arguments=imaging_stack_arguments,
        out_dir=output_dir,
    threads: 1
    resources:
        runtime=120,
        mem_mb=8000,
    conda:
        "../envs/xasflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads:q} xasflow image {params.arguments:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
