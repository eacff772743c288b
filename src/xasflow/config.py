"""Study configuration: load, validate against the JSON schema, fill defaults.

The schema lives in ``workflow/schemas/config.schema.yaml``: one place for every key, its type,
its default and its meaning. Snakemake (rules/common.smk) and the CLI both validate with it.

This module reads the configuration alone. Checks that need a built structure or an installed
file (enough absorbers for ``n_sites``, the potential file) live in ``xasflow.structures.checks``,
so that this module imports nothing from the rest of xasflow and every stage may import it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from xasflow.errors import UserError


class ConfigError(UserError):
    """The study configuration is invalid; the message names the file and the key."""

    @classmethod
    def for_key(cls, source: str, key: str, message: str) -> ConfigError:
        """``SOURCE: config key 'KEY' MESSAGE`` (or ``'KEY': MESSAGE`` when it starts with a colon):
        the one format every config check uses."""
        separator = "" if message.startswith(":") else " "
        return cls(f"{source}: config key '{key}'{separator}{message}")


# xasflow is installed editable from its repository (make run / make test do so), so the
# package finds the workflow's schema beside it.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_schema() -> dict:
    with open(SCHEMA_PATH) as handle:
        return yaml.safe_load(handle)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping.

    PyYAML keeps the last of two equal keys without a word, so a second ``kind:`` in a system
    would silently replace the first. Keys brought in by a merge (``<<: *anchor``) may still be
    overridden: only the keys written in the mapping itself must be unique.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._checked_mappings: set[int] = set()
        self._key_of_node: dict[int, str] = {}

    def construct_document(self, node: yaml.Node) -> Any:
        _index_keys(node, "", self._key_of_node)
        return super().construct_document(node)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Every mapping passes through here before its merge keys are expanded into it; a
        # mapping merged into another one passes again, expanded, and is not checked twice.
        if id(node) not in self._checked_mappings:
            self._checked_mappings.add(id(node))
            self._refuse_duplicate_keys(node)
        super().flatten_mapping(node)

    def _refuse_duplicate_keys(self, node: yaml.MappingNode) -> None:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in first_line:
                parent = self._key_of_node.get(id(node), "")
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '{parent}{key}' (first given on line {first_line[key]}); "
                    "give each key once",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1


def _index_keys(node: yaml.Node, prefix: str, key_of_node: dict[int, str]) -> None:
    """Record the dotted key prefix (``systems.np.``) of every mapping below ``node``."""
    if id(node) in key_of_node:  # an alias of a node seen before: its first place names it
        return
    key_of_node[id(node)] = prefix
    if isinstance(node, yaml.MappingNode):
        children = [(getattr(key, "value", "?"), value) for key, value in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = list(enumerate(node.value))
    else:
        return
    for name, child in children:
        _index_keys(child, f"{prefix}{name}.", key_of_node)


def read_yaml(path: str | Path) -> Any:
    """The content of a YAML (or JSON) file, refusing duplicate keys.

    Raises ``ConfigError`` naming the file, and for malformed YAML the line and the problem.
    """
    path = Path(path)
    try:
        with open(path) as handle:
            return yaml.load(handle, Loader=_UniqueKeyLoader)  # a SafeLoader: builds no Python objects
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from error


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


def _numbers(value: Any, key: tuple[str, ...] = ()) -> Iterator[tuple[str, float]]:
    """Every float anywhere in ``value`` with its dotted key (list items by index)."""
    if isinstance(value, float):
        yield ".".join(key), value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _numbers(item, (*key, str(name)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, (*key, str(index)))


def _check_finite(config: dict, source: str) -> None:
    # JSON Schema's number type admits YAML's .nan and .inf, and NaN passes no bound checks
    # with a readable message; refuse them first, by key.
    for key, number in _numbers(config):
        if not math.isfinite(number):
            raise ConfigError.for_key(source, key, f"is {number}; every number must be finite")


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Return a validated copy of ``config`` with every default filled in.

    Raises ``ConfigError`` with a one-line message naming the offending key. Checks that need
    a built structure or installed files are ``xasflow.structures.checks.check_study``.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: a study configuration must be a mapping, got {type(config).__name__}")
    _check_finite(config, source)
    filled = copy.deepcopy(config)
    schema = load_schema()
    errors = sorted(_Validator(schema).iter_errors(filled), key=lambda error: list(error.absolute_path))
    if errors:
        raise ConfigError(f"{source}: {_key_path(errors[0], schema)}")
    for check in _STUDY_CHECKS:
        check(filled, source)
    return filled


def validate_sections(sections: dict[str, Any], source: str = "--config-json") -> dict[str, Any]:
    """Validate the config sections a workflow job receives; return them with defaults filled.

    Each section present is checked against the schema (types, ranges, unknown keys, finite
    numbers); sections left out get their defaults. The rules cut these sections from a study
    that was validated whole, so the checks across sections have run already.
    """
    if not isinstance(sections, dict):
        raise ConfigError(f"{source}: config sections must be a mapping, got {type(sections).__name__}")
    _check_finite(sections, source)
    filled = copy.deepcopy(sections)
    schema = {**load_schema(), "required": []}
    errors = sorted(_Validator(schema).iter_errors(filled), key=lambda error: list(error.absolute_path))
    if errors:
        raise ConfigError(f"{source}: {_key_path(errors[0], schema)}")
    return filled


def system_elements(system: dict) -> tuple[str, ...]:
    """Elements of a validated system entry, sorted (the LAMMPS atom types follow this order)."""
    if system.get("composition"):
        return tuple(sorted(system["composition"]))
    return (system["element"],)


_REQUIRED_BY_KIND = {
    "nanoparticle": ("shape", "shells"),
    "amorphous": ("n_atoms", "density"),
    "polycrystal": ("box_length", "n_grains"),
}


def _check_system_keys(name: str, system: dict, source: str) -> None:
    """The keys a system's kind requires are there."""
    kind = system["kind"]
    if ("element" in system) == ("composition" in system):
        raise ConfigError.for_key(
            source, f"systems.{name}.element", "or 'composition' is required (exactly one of the two)"
        )
    required = (() if kind == "crystal" else ("temperature", "potential")) + _REQUIRED_BY_KIND.get(kind, ())
    for key in required:
        if key not in system:
            article = "an" if kind[0] in "aeiou" else "a"
            raise ConfigError.for_key(source, f"systems.{name}.{key}", f"is required for {article} {kind}")


def _check_system_options(name: str, system: dict, source: str) -> None:
    """Options that only some kinds or compositions can use."""
    kind = system["kind"]
    elements = system_elements(system)

    def fail(key: str, message: str) -> None:
        raise ConfigError.for_key(source, f"systems.{name}.{key}", message)

    if system.get("sampling_strategy") == "inequivalent" and kind != "crystal":
        fail("sampling_strategy", ": inequivalent needs kind crystal (MD snapshots have no symmetry)")
    if system["lattice"] == "bct" and kind not in ("bulk", "crystal"):
        fail("lattice", f": bct (the Bain path) is available for bulk and crystal, not {kind}")
    if "mc" in system and len(elements) < 2:
        fail("mc", "needs a composition of two or more elements (swaps of one element change nothing)")
    if kind == "polycrystal" and system["box_length"] < 2 * system["lattice_constant"]:
        fail("box_length", f"({system['box_length']}) must be at least twice the lattice constant")
    if "potential" in system and system["potential"].get("style") == "eam" and len(elements) > 1:
        fail(
            "potential.style",
            f": eam (funcfl) files hold one element; {'-'.join(elements)} needs eam/alloy or eam/fs",
        )


def _check_systems(config: dict, source: str) -> None:
    absorber = config["absorber"]
    for name, system in config["systems"].items():
        _check_system_keys(name, system, source)
        _check_system_options(name, system, source)
        if absorber not in system_elements(system):
            key = "composition" if "composition" in system else "element"
            raise ConfigError.for_key(
                source,
                f"systems.{name}.{key}",
                f"has no {absorber} atoms, but absorber is {absorber}: every system needs absorbing sites",
            )


def _known_system(config: dict, source: str, key: str, name: str) -> None:
    systems = config["systems"]
    if name not in systems:
        raise ConfigError.for_key(
            source, key, f"names '{name}', which is not in systems ({', '.join(sorted(systems))})"
        )


def _check_splits(config: dict, source: str) -> None:
    """Validation and test systems exist, and at least one system is left to train on."""
    training = config["training"]
    excluded = set()
    for split in ("val_systems", "test_systems"):
        for name in training[split]:
            _known_system(config, source, f"training.{split}", name)
            excluded.add(name)
    pseudo = config["inference"].get("pseudo_experiment")
    if pseudo:
        excluded.add(pseudo["system"])
    if not set(config["systems"]) - excluded:
        raise ConfigError.for_key(
            source,
            "training",
            "leaves no system to train on: every system is in val_systems or test_systems or is held out "
            "by inference.pseudo_experiment.system",
        )


def _check_pseudo_experiment(config: dict, source: str) -> None:
    pseudo = config["inference"].get("pseudo_experiment")
    if not pseudo:
        return
    held_out = pseudo["system"]
    _known_system(config, source, "inference.pseudo_experiment.system", held_out)
    training = config["training"]
    if held_out in training["val_systems"] or held_out in training["test_systems"]:
        raise ConfigError.for_key(
            source,
            "inference.pseudo_experiment.system",
            f": '{held_out}' must be held out, not in training.val_systems or training.test_systems",
        )


def _check_references(config: dict, source: str) -> None:
    for name, reference in config["references"].items():
        has_lattice = "lattice" in reference
        if has_lattice == ("structure_file" in reference):
            raise ConfigError.for_key(
                source,
                f"references.{name}",
                ": give either lattice (with lattice_constant) or structure_file",
            )
        if has_lattice and "lattice_constant" not in reference:
            raise ConfigError.for_key(
                source, f"references.{name}.lattice_constant", "is required with lattice"
            )


def _check_calibration(config: dict, source: str) -> None:
    name = config["calibration"]["reference"]
    if name is None:
        return
    references = config["references"]
    if name not in references:
        raise ConfigError.for_key(
            source,
            "calibration.reference",
            f"names '{name}', which is not in references ({', '.join(sorted(references)) or 'none'})",
        )
    reference = references[name]
    study_edge = config["spectra"]["edge"]
    edge = reference.get("edge", study_edge)  # a reference's edge defaults to the study's
    if reference["element"] != config["absorber"] or edge != study_edge:
        raise ConfigError.for_key(
            source,
            "calibration.reference",
            f": '{name}' is a {reference['element']} {edge} spectrum; the calibration reference must be "
            f"the absorber's ({config['absorber']} {study_edge})",
        )


def _increasing(source: str, section: str, low_key: str, high_key: str, low: Any, high: Any) -> None:
    if not low < high:
        raise ConfigError.for_key(
            source, f"{section}.{low_key}", f"({low}) must be below {section}.{high_key} ({high})"
        )


def _check_ranges(config: dict, source: str) -> None:
    """Every (start, end) pair of the config is increasing, and radii are nested."""
    for section, low_key, high_key in (
        ("labels", "r_min", "r_max"),
        ("spectra", "energy_min", "energy_max"),
        ("dataset", "energy_min", "energy_max"),
    ):
        values = config[section]
        _increasing(source, section, low_key, high_key, values[low_key], values[high_key])
    fdmnes = config["spectra"]["fdmnes"]
    if "energy_min" in fdmnes and "energy_max" in fdmnes:
        _increasing(
            source, "spectra.fdmnes", "energy_min", "energy_max", fdmnes["energy_min"], fdmnes["energy_max"]
        )
    window = config["calibration"]["window"]
    if not window[0] < window[1]:
        raise ConfigError.for_key(source, "calibration.window", f"{window} must be increasing")
    spectra = config["spectra"]
    if spectra.get("mode") == "exafs" and config["dataset"]["energy_min"] < 0:
        raise ConfigError.for_key(
            source,
            "dataset.energy_min",
            f"is {config['dataset']['energy_min']} eV; in EXAFS mode (spectra.mode: exafs) FEFF's path "
            "expansion gives no pre-edge: the grid must start at E0 (0 eV)",
        )
    if spectra["fms_radius"] > spectra["cluster_radius"]:
        raise ConfigError.for_key(
            source,
            "spectra.fms_radius",
            f"({spectra['fms_radius']}) exceeds spectra.cluster_radius ({spectra['cluster_radius']})",
        )


def _check_model_windows(config: dict, source: str) -> None:
    """Each model reads an increasing part of the dataset grid that overlaps the grid."""
    grid_min, grid_max = config["dataset"]["energy_min"], config["dataset"]["energy_max"]
    for name, model in config["training"]["models"].items():
        section = f"training.models.{name}"
        # a model's window defaults to the whole dataset grid (schema: "default: the grid's start")
        low, high = model.get("energy_min", grid_min), model.get("energy_max", grid_max)
        _increasing(source, section, "energy_min", "energy_max", low, high)
        if low >= grid_max or high <= grid_min:
            raise ConfigError.for_key(
                source,
                section,
                f": the window {low}..{high} eV lies outside the dataset grid {grid_min}..{grid_max} eV "
                "(dataset.energy_min, dataset.energy_max)",
            )


def _check_inference_spectra(config: dict, source: str) -> None:
    seen: set[str] = set()
    for index, entry in enumerate(config["inference"]["spectra"]):
        if entry["name"] in seen:
            raise ConfigError.for_key(
                source,
                f"inference.spectra.{index}.name",
                f"'{entry['name']}' is given twice; names must be unique",
            )
        seen.add(entry["name"])


def _check_deconvolution(config: dict, source: str) -> None:
    """Deconvolved particles are nanoparticles, their bulks are not, and the models exist."""
    section = config.get("deconvolution")  # optional section: no default
    if not section:
        return
    for particle, bulk in section["particles"].items():
        _known_system(config, source, f"deconvolution.particles.{particle}", particle)
        _known_system(config, source, f"deconvolution.particles.{particle}", bulk)
        if config["systems"][particle]["kind"] != "nanoparticle":
            raise ConfigError.for_key(
                source, f"deconvolution.particles.{particle}", "names a system that is not a nanoparticle"
            )
        if config["systems"][bulk]["kind"] == "nanoparticle":
            raise ConfigError.for_key(
                source,
                f"deconvolution.particles.{particle}",
                f"names '{bulk}' as bulk, which is a nanoparticle; give the bulk alloy of its composition",
            )
    models = config["training"]["models"]
    for model in section["models"]:
        if model not in models:
            raise ConfigError.for_key(
                source,
                "deconvolution.models",
                f"names '{model}', which is not in training.models ({', '.join(models)})",
            )


def _check_imaging(config: dict, source: str) -> None:
    """The models mapped on the imaging stacks are models of the study."""
    models = config["training"]["models"]
    for model in (config.get("imaging") or {}).get("models", ()):
        if model not in models:
            raise ConfigError.for_key(
                source,
                "imaging.models",
                f"names '{model}', which is not in training.models ({', '.join(models)})",
            )


_STUDY_CHECKS = (
    _check_systems,
    _check_splits,
    _check_pseudo_experiment,
    _check_references,
    _check_calibration,
    _check_ranges,
    _check_model_windows,
    _check_inference_spectra,
    _check_deconvolution,
    _check_imaging,
)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML study configuration and validate it (``ConfigError`` names file and key)."""
    return validate_config(read_yaml(path), source=str(path))


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
