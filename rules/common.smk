import json
import sys
from pathlib import Path

from xasflow.config import ConfigError, batch_runtime_minutes, read_yaml, validate_config
from xasflow.spectrum import group_reference
from xasflow.structures.checks import check_study
from xasflow.structures.plan import batches_for


def _validated_config(config, configfiles):
    """The merged config, validated, with defaults, and checked against the structures it implies.

    Snakemake has already parsed the config files, keeping the last of duplicate keys; each file
    is read again here so that a key given twice is refused with its line.
    """
    for path in configfiles:
        read_yaml(path)
    source = " + ".join(str(path) for path in configfiles) or "config"
    validated = validate_config(config, source=source)
    check_study(validated, source=source)
    return validated


try:
    _validated = _validated_config(config, workflow.configfiles)
except ConfigError as error:
    sys.stderr.write(f"xasflow: error: {error}\n")
    sys.exit(2)
config.clear()
config.update(_validated)

RESULTS = config["results_dir"]
SYSTEMS = sorted(config["systems"])
MODELS = sorted(config["training"]["models"])
PSEUDO = config["inference"].get("pseudo_experiment")
MEASURED = {entry["name"]: entry for entry in config["inference"]["spectra"]}
REFERENCES = config["references"]
CALIBRATION = config["calibration"]["reference"]
DECONVOLUTION = config.get("deconvolution")  # optional section: no default, no job without it


# The dataset job declares the manifest beside the store, not the store itself. Snakemake deletes a
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


wildcard_constraints:
    system="|".join(SYSTEMS),
    model="|".join(MODELS),
    batch=r"\d{3}",


def _json(section):
    return json.dumps(section, sort_keys=True)


def system_config_json(wildcards):
    """Only this system's entry: editing another system does not rerun this one."""
    return _json({"systems": {wildcards.system: config["systems"][wildcards.system]}})


def labels_config_json(wildcards):
    return _json(
        {"systems": {wildcards.system: config["systems"][wildcards.system]}, "labels": config["labels"]}
    )


def sites_config_json(wildcards):
    return _json(
        {
            "systems": {wildcards.system: config["systems"][wildcards.system]},
            "absorber": config["absorber"],
            "sampling": config["sampling"],
            "spectra": {key: config["spectra"][key] for key in BATCHING_KEYS if key in config["spectra"]},
        }
    )


BATCHING_KEYS = ("batch_size", "target_batch_minutes", "seconds_per_site")


def spectra_config_json(wildcards):
    """Engine settings only, with this system's engine choice: re-batching or moving the cache
    does not rerun calculations."""
    skipped = (*BATCHING_KEYS, "cache_dir")
    spectra = {key: value for key, value in config["spectra"].items() if key not in skipped}
    spectra["engine"] = config["systems"][wildcards.system].get("engine", config["spectra"]["engine"])
    return _json({"spectra": spectra})


# Functions that build several command-line words return a list: a rule's shell line quotes
# each word with {params.NAME:q}, like every other placeholder.


def cache_argument(wildcards):
    cache_dir = config["spectra"]["cache_dir"]
    return ["--cache-dir", cache_dir] if cache_dir else []


def dataset_config_json(wildcards):
    keys = ("study", "absorber", "systems", "labels", "sampling", "spectra", "dataset")
    return _json({key: config[key] for key in keys})


def fidelity_config_json(wildcards):
    """Engine settings, references and calibration: what the simulated references depend on."""
    return _json(
        {
            "spectra": {key: value for key, value in config["spectra"].items() if key not in (*BATCHING_KEYS, "cache_dir")},
            "references": REFERENCES,
            "calibration": config["calibration"],
        }
    )


def get_reference_files(wildcards=None):
    return [entry["path"] for entry in REFERENCES.values()]


def get_calibration(wildcards=None):
    """The calibration record training needs, when the study names a calibration reference."""
    return [f"{RESULTS}/fidelity/calibration.json"] if CALIBRATION else []


def calibration_argument(wildcards, input):
    return [word for path in input.calibration for word in ("--calibration", path)]


def train_config_json(wildcards):
    return _json(
        {
            "training": {
                "models": {wildcards.model: config["training"]["models"][wildcards.model]},
                "targets": config["training"]["targets"],
                "val_systems": config["training"]["val_systems"],
                "test_systems": config["training"]["test_systems"],
                "augmentation": config["training"]["augmentation"],
            },
            "inference": {"pseudo_experiment": PSEUDO} if PSEUDO else {},
        }
    )


def pseudo_config_json(wildcards):
    return _json({"inference": {"pseudo_experiment": PSEUDO}})


def get_batches(wildcards=None):
    return [
        f"{RESULTS}/spectra/{system}/batch_{batch:03d}/results.csv"
        for system in SYSTEMS
        for batch in range(batches_for(config, system))
    ]


def get_manifests(wildcards=None):
    return [f"{RESULTS}/sites/{system}.csv" for system in SYSTEMS]


def get_labels(wildcards=None):
    return [f"{RESULTS}/structures/{system}/labels.npz" for system in SYSTEMS]


def get_md_records(wildcards=None):
    return [f"{RESULTS}/structures/{system}/md.json" for system in SYSTEMS]


def output_dir(wildcards, output):
    """Folder of a rule's first output."""
    return str(Path(output[0]).parent)


def feff_batch_runtime(wildcards):
    """Minutes of wall time a spectrum batch may take on a cluster."""
    return batch_runtime_minutes(config)


def batch_number(wildcards):
    return int(wildcards.batch)


def batch_directories(wildcards, input):
    return [str(Path(path).parent) for path in input.batches]


def labels_arguments(wildcards, input):
    return [f"{path.split('/')[-2]}={path}" for path in input.labels]


def md_arguments(wildcards, input):
    return [f"{path.split('/')[-2]}={path}" for path in input.md]


def get_checkpoints(wildcards=None):
    return [f"{RESULTS}/models/{model}/model.ckpt" for model in MODELS]


def get_inference_spectra(wildcards=None):
    """The files the predictions read: each measured file or Athena project, the pseudo-experiment."""
    spectra = [entry["path"] for entry in MEASURED.values()]
    if PSEUDO:
        spectra.append(f"{RESULTS}/inference/pseudo/{PSEUDO['system']}.dat")
    return spectra


def spectrum_arguments(wildcards, input):
    """`xasflow predict`'s spectra, in the order of input.spectra: a file as it is, one group of an
    Athena project as PATH:LABEL (config key `group`; the input itself stays the project file)."""
    files = list(input.spectra)
    measured = [
        group_reference(path, entry["group"]) for path, entry in zip(files, MEASURED.values(), strict=False)
    ]
    return measured + files[len(measured) :]


def get_truths(wildcards=None):
    return [f"{RESULTS}/inference/pseudo/{PSEUDO['system']}.truth.json"] if PSEUDO else []


def checkpoint_arguments(wildcards, input):
    return [word for path in input.checkpoints for word in ("--checkpoint", path)]


def truth_arguments(wildcards, input):
    return [word for path in input.truths for word in ("--truth", path)]


def deconvolution_bulks():
    """The bulk systems particles are deconvolved against: one deconvolution job each."""
    return sorted(set(DECONVOLUTION["particles"].values())) if DECONVOLUTION else []


def deconvolution_particles(wildcards):
    """The particles deconvolved against the bulk system ``wildcards.system``."""
    return sorted(particle for particle, bulk in DECONVOLUTION["particles"].items() if bulk == wildcards.system)


def deconvolution_models():
    return DECONVOLUTION["models"] or MODELS


def get_deconvolution_checkpoints(wildcards):
    return [f"{RESULTS}/models/{model}/model.ckpt" for model in deconvolution_models()]


def get_deconvolution_labels(wildcards):
    return [f"{RESULTS}/structures/{particle}/labels.npz" for particle in deconvolution_particles(wildcards)]


def deconvolution_particle_arguments(wildcards, input):
    particles = deconvolution_particles(wildcards)
    labels = [f"{particle}={path}" for particle, path in zip(particles, input.labels)]
    return ["--particle-system", *particles, "--labels", *labels]


def deconvolution_checkpoint_arguments(wildcards, input):
    return [
        word
        for model, path in zip(deconvolution_models(), input.checkpoints)
        for word in ("--checkpoint", f"{model}={path}")
    ]


def deconvolution_settings(wildcards):
    settings = ["--draws", str(DECONVOLUTION["draws"]), "--seed", str(DECONVOLUTION["seed"])]
    return settings + (["--held-out"] if DECONVOLUTION["held_out"] else [])


def get_final_outputs():
    outputs = [
        DATASET_MANIFEST,
        f"{RESULTS}/dataset/summary.json",
        *[f"{RESULTS}/models/{model}/metrics.json" for model in MODELS],
    ]
    if get_inference_spectra():
        outputs.append(f"{RESULTS}/inference/predictions.csv")
        outputs.append(f"{RESULTS}/inference/predictions.png")  # the report shows it
    if REFERENCES:
        outputs.append(f"{RESULTS}/fidelity/fidelity.csv")
    outputs += [f"{RESULTS}/deconvolution/{bulk}/summary.json" for bulk in deconvolution_bulks()]
    outputs += imaging_outputs()  # rules/imaging.smk
    return outputs


# --- imaging (rules/imaging.smk) ---


def imaging_section():
    return config.get("imaging") or {}


def imaging_config_json(wildcards):
    return _json({"imaging": imaging_section()})


def imaging_reference_files(wildcards=None):
    """The reference spectrum files (an Athena group 'x.prj:LABEL' depends on x.prj)."""
    return [path.split(".prj:")[0] + ".prj" if ".prj:" in path else path for path in imaging_section()["references"].values()]


def imaging_stack_input(wildcards):
    entry = imaging_section()["stacks"][wildcards.stack]
    return [entry["path"], *([entry["energy_file"]] if "energy_file" in entry else [])]


def imaging_stack_arguments(wildcards):
    """xasflow image's arguments for one stack: where its data are, the references, settings."""
    section = imaging_section()
    entry = section["stacks"][wildcards.stack]
    words = [entry["path"], "--dataset", entry.get("dataset", "stack")]
    words += ["--energy-file", entry["energy_file"]] if "energy_file" in entry else ["--energy-dataset", entry.get("energy_dataset", "energy")]
    for name, path in section["references"].items():
        words += ["--reference", f"{name}={path}"]
    words += ["--denoise", section["denoise"], "--tile", str(section["tile"])]
    words += ["--min-edge-step", str(section["min_edge_step"]), "--threshold", str(section["threshold"])]
    words += ["--network-train-size", str(section["network_train_size"])]
    words += ["--network-settings", json.dumps(section["network"], sort_keys=True)]
    for checkpoint in imaging_model_checkpoints(wildcards):
        words += ["--model", checkpoint]
    return words


def imaging_model_checkpoints(wildcards):
    """Checkpoints of the models mapped on every stack (imaging.models; none by default)."""
    return [f"{RESULTS}/models/{model}/model.ckpt" for model in imaging_section().get("models", [])]


def imaging_outputs():
    section = imaging_section()
    if not section:
        return []
    outputs = [f"{RESULTS}/imaging/stacks/{name}/imaging.json" for name in section.get("stacks", {})]
    if "validation" in section:
        outputs.append(f"{RESULTS}/imaging/validation/validation.json")
    return outputs
