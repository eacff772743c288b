# xasflow: MD structures -> FEFF10 spectra -> zarr dataset -> trained models -> predictions.
# Science lives in config.yaml (validated against workflow/schemas/config.schema.yaml);
# machine settings live in profiles (workflow/profiles/).

# config.yaml is the default study; a study given with --configfile replaces it instead of being
# merged into it (Snakemake merges nested keys, which would mix two studies' systems).
if "systems" not in config:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/structures.smk"
include: "rules/spectra.smk"
include: "rules/dataset.smk"
include: "rules/train.smk"
include: "rules/infer.smk"
include: "rules/imaging.smk"


rule all:
    input:
        get_final_outputs(),
    default_target: True
