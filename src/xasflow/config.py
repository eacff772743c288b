"""Study configuration: load, validate against the JSON schema, fill defaults.

The schema lives in ``workflow/schemas/config.schema.yaml``: one place for every key, its type,
its default and its meaning. Snakemake (rules/common.smk) and the CLI both validate with it.

This module reads the configuration alone and imports nothing from the rest of xasflow, so that
every stage may import it. Planning that needs a built structure (the sites of a crystal) is
``xasflow.structures.plan``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from xasflow.errors import UserError


class ConfigError(UserError):
    """The study configuration is invalid; the message names the key."""


# xasflow is installed editable from its repository (make run / make test do so), so the
# package finds the workflow's schema beside it.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema() -> dict:
    with open(SCHEMA_PATH) as handle:
        return yaml.safe_load(handle)


def _with_defaults(validator_class):
    """A validator class that also fills ``default`` values into the instance it validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key_path(error: jsonschema.ValidationError, schema: dict) -> str:
    parts = [str(part) for part in error.absolute_path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - allowed)
        if unknown:
            parts.append(unknown[0])
            valid = ", ".join(sorted(allowed)) or "(none)"
            return f"config key '{'.'.join(parts)}' is not a known key (valid here: {valid})"
    location = ".".join(parts) or "(top level)"
    safe_path = schema["$defs"]["path"]
    if error.validator == "pattern" and error.validator_value == safe_path["pattern"]:
        return f"config key '{location}': {error.instance!r} is not allowed here ({safe_path['description']})"
    return f"config key '{location}': {error.message}"


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Return a validated copy of ``config`` with every default filled in.

    Raises ``ConfigError`` with a one-line message naming the offending key.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: a study configuration must be a mapping, got {type(config).__name__}")
    filled = copy.deepcopy(config)
    schema = load_schema()
    errors = sorted(_Validator(schema).iter_errors(filled), key=lambda error: list(error.absolute_path))
    if errors:
        raise ConfigError(f"{source}: {_key_path(errors[0], schema)}")
    for name, system in filled["systems"].items():
        _check_system(name, system, source)
    _check_cross_references(filled, source)
    return filled


_REQUIRED_BY_KIND = {
    "nanoparticle": ("shape", "shells"),
    "amorphous": ("n_atoms", "density"),
    "polycrystal": ("box_length", "n_grains"),
}


def system_elements(system: dict) -> tuple[str, ...]:
    """Elements of a validated system entry, sorted (the LAMMPS atom types follow this order)."""
    if system.get("composition"):
        return tuple(sorted(system["composition"]))
    return (system["element"],)


def _check_system(name: str, system: dict, source: str) -> None:
    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{source}: config key 'systems.{name}.{key}' {message}")

    kind = system["kind"]
    if ("element" in system) == ("composition" in system):
        fail("element", "or 'composition' is required (exactly one of the two)")
    if kind != "crystal":
        for key in ("temperature", "potential"):
            if key not in system:
                fail(key, f"is required for {kind}")
    if system.get("sampling_strategy") == "inequivalent" and kind != "crystal":
        fail("sampling_strategy", ": inequivalent needs kind crystal (MD snapshots have no symmetry)")
    for key in _REQUIRED_BY_KIND.get(kind, ()):
        if key not in system:
            fail(key, f"is required for {'an' if kind[0] in 'aeiou' else 'a'} {kind}")
    if system.get("lattice") == "bct" and kind not in ("bulk", "crystal"):
        fail("lattice", f": bct (the Bain path) is available for bulk and crystal, not {kind}")
    if "mc" in system and len(system_elements(system)) < 2:
        fail("mc", "needs a composition of two or more elements (swaps of one element change nothing)")
    if kind == "polycrystal" and system.get("box_length", 0) < 2 * system.get("lattice_constant", 0):
        fail("box_length", f"({system.get('box_length')}) must be at least twice the lattice constant")


def _check_cross_references(config: dict, source: str) -> None:
    systems = set(config["systems"])
    training = config["training"]
    for split in ("val_systems", "test_systems"):
        for name in training[split]:
            if name not in systems:
                raise ConfigError(
                    f"{source}: config key 'training.{split}' names '{name}', which is not in systems "
                    f"({', '.join(sorted(systems))})"
                )
    pseudo = config["inference"].get("pseudo_experiment")
    if pseudo:
        held_out = pseudo.get("system")
        if held_out not in systems:
            raise ConfigError(
                f"{source}: config key 'inference.pseudo_experiment.system' names '{held_out}', "
                f"which is not in systems ({', '.join(sorted(systems))})"
            )
        if held_out in training["val_systems"] or held_out in training["test_systems"]:
            raise ConfigError(
                f"{source}: config key 'inference.pseudo_experiment.system': '{held_out}' must be held out, "
                "not in training.val_systems or training.test_systems"
            )
    if not any(config["absorber"] in system_elements(system) for system in config["systems"].values()):
        raise ConfigError(
            f"{source}: config key 'absorber': no system contains element '{config['absorber']}'"
        )
    references = config["references"]
    for name, reference in references.items():
        has_lattice = "lattice" in reference
        if has_lattice == ("structure_file" in reference):
            raise ConfigError(
                f"{source}: config key 'references.{name}': give either lattice (with lattice_constant) "
                "or structure_file"
            )
        if has_lattice and "lattice_constant" not in reference:
            raise ConfigError(
                f"{source}: config key 'references.{name}.lattice_constant' is required with lattice"
            )
    calibration_reference = config["calibration"]["reference"]
    if calibration_reference is not None:
        if calibration_reference not in references:
            raise ConfigError(
                f"{source}: config key 'calibration.reference' names '{calibration_reference}', which is not "
                f"in references ({', '.join(sorted(references)) or 'none'})"
            )
        reference = references[calibration_reference]
        edge = reference.get("edge", config["spectra"]["edge"])
        if reference["element"] != config["absorber"] or edge != config["spectra"]["edge"]:
            raise ConfigError(
                f"{source}: config key 'calibration.reference': '{calibration_reference}' is a "
                f"{reference['element']} {edge} spectrum; the calibration reference must be the absorber's "
                f"({config['absorber']} {config['spectra']['edge']})"
            )
    window = config["calibration"]["window"]
    if not window[0] < window[1]:
        raise ConfigError(f"{source}: config key 'calibration.window' {window} must be increasing")
    spectra = config["spectra"]
    if spectra["fms_radius"] > spectra["cluster_radius"]:
        raise ConfigError(
            f"{source}: config key 'spectra.fms_radius' ({spectra['fms_radius']}) exceeds "
            f"spectra.cluster_radius ({spectra['cluster_radius']})"
        )


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML study configuration and validate it (``ConfigError`` names file and key)."""
    path = Path(path)
    try:
        with open(path) as handle:
            raw = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error
    return validate_config(raw, source=str(path))


def config_hash(section: Any) -> str:
    """Stable short hash of any JSON-serialisable part of the configuration."""
    return hashlib.sha256(json.dumps(section, sort_keys=True).encode()).hexdigest()[:16]


def batch_size(config: dict) -> int:
    """Sites per spectrum job: ``spectra.batch_size``, or sized to ``spectra.target_batch_minutes``."""
    spectra = config["spectra"]
    if spectra.get("target_batch_minutes"):
        return max(1, int(spectra["target_batch_minutes"] * 60 // spectra["seconds_per_site"]))
    return int(spectra["batch_size"])


def sampling_strategy(config: dict, system: str) -> str:
    """The site-sampling strategy of ``system`` (a static crystal defaults to inequivalent)."""
    spec = config["systems"][system]
    if "sampling_strategy" in spec:
        return spec["sampling_strategy"]
    return "inequivalent" if spec["kind"] == "crystal" else config["sampling"]["strategy"]


def batch_runtime_minutes(config: dict) -> int:
    """SLURM runtime to request for one spectrum batch: 3x the estimate, plus 10 minutes."""
    estimate = batch_size(config) * config["spectra"]["seconds_per_site"] / 60
    return int(3 * estimate) + 10
