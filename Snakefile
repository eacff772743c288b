# xasflow: MD structures -> FEFF10 spectra -> zarr dataset -> trained models -> predictions.
# Science lives in config.yaml (validated against workflow/schemas/config.schema.yaml);
# machine settings live in profiles (workflow/profiles/).

configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/structures.smk"
include: "rules/spectra.smk"
include: "rules/dataset.smk"
include: "rules/train.smk"
include: "rules/infer.smk"


rule all:
    input:
        get_final_outputs(),
    default_target: True
