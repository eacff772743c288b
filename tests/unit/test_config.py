"""Config validation: defaults filled from the schema, bad keys named before anything runs."""

from pathlib import Path

import pytest
import yaml

from xasflow.config import ConfigError, load_config, validate_config
from xasflow.structures.plan import batches_for, sites_for

ROOT = Path(__file__).resolve().parents[2]


def _minimal():
    return {
        "systems": {
            "np": {
                "kind": "nanoparticle",
                "element": "Cu",
                "shape": "icosahedron",
                "shells": 3,
                "temperature": 300,
                "potential": {"style": "eam", "file": "Cu_u3.eam"},
            }
        }
    }


def test_defaults_are_filled_without_touching_the_input():
    raw = _minimal()
    config = validate_config(raw)
    assert config["spectra"]["fms_radius"] == 4.6
    assert config["systems"]["np"]["md"]["n_snapshots"] == 3
    assert config["labels"]["cn_cutoff"] == 3.1
    assert "spectra" not in raw and "md" not in raw["systems"]["np"]


@pytest.mark.parametrize("path", ["config.yaml", "tests/configs/tiny.yaml"])
def test_shipped_configs_are_valid(path):
    config = load_config(ROOT / path)
    assert config["inference"]["pseudo_experiment"]["system"] in config["systems"]


def test_an_inference_spectrum_may_name_one_group_of_an_athena_project():
    raw = _minimal()
    raw["inference"] = {
        "spectra": [
            {"name": "pt_all", "path": "data/PtData.prj"},
            {"name": "pt_20k", "path": "data/PtData.prj", "group": "10wt% 20K"},
        ]
    }
    spectra = validate_config(raw)["inference"]["spectra"]
    assert [entry["group"] for entry in spectra] == ["", "10wt% 20K"]
    # the label travels beside the path: the path itself keeps to the safe characters
    raw["inference"]["spectra"][1] = {"name": "pt_20k", "path": "data/PtData.prj:10wt% 20K"}
    with pytest.raises(ConfigError, match="inference.spectra.1.path"):
        validate_config(raw)


def test_unknown_key_is_named():
    raw = _minimal()
    raw["spectra"] = {"fms_radus": 5.0}
    with pytest.raises(ConfigError, match=r"'spectra\.fms_radus' is not a known key"):
        validate_config(raw)


def test_wrong_type_is_named():
    raw = _minimal()
    raw["systems"]["np"]["md"] = {"n_snapshots": "three"}
    with pytest.raises(ConfigError, match=r"'systems\.np\.md\.n_snapshots'.*not of type 'integer'"):
        validate_config(raw)


def test_nanoparticle_needs_shape():
    raw = _minimal()
    del raw["systems"]["np"]["shape"]
    with pytest.raises(ConfigError, match=r"'systems\.np\.shape' is required"):
        validate_config(raw)


def test_split_naming_an_unknown_system_is_rejected():
    raw = _minimal()
    raw["training"] = {"test_systems": ["np_missing"]}
    with pytest.raises(ConfigError, match="training.test_systems.*np_missing"):
        validate_config(raw)


def test_fms_radius_beyond_cluster_is_rejected():
    raw = _minimal()
    raw["spectra"] = {"fms_radius": 7.0, "cluster_radius": 6.0}
    with pytest.raises(ConfigError, match="fms_radius"):
        validate_config(raw)


def test_unreadable_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("systems: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(path)


def test_batches_cover_the_sites():
    raw = _minimal()
    raw["sampling"] = {"sites_per_system": 21}
    raw["spectra"] = {"batch_size": 10}
    config = validate_config(raw)
    assert sites_for(config, "np") == 21
    assert batches_for(config, "np") == 3


def test_default_config_round_trips_through_yaml():
    config = load_config(ROOT / "config.yaml")
    assert validate_config(yaml.safe_load(yaml.safe_dump(config))) == config


def test_batches_sized_to_a_target_time_keep_a_large_dataset_to_a_few_hundred_jobs():
    from xasflow.config import batch_runtime_minutes, batch_size

    raw = _minimal()
    raw["systems"] = {f"np{index}": raw["systems"]["np"] for index in range(10)}
    raw["sampling"] = {"sites_per_system": 5000}  # 50,000 spectra
    raw["spectra"] = {"target_batch_minutes": 60, "seconds_per_site": 10}
    config = validate_config(raw)
    assert batch_size(config) == 360
    jobs = sum(batches_for(config, system) for system in config["systems"])
    assert jobs == 10 * 14  # ceil(5000 / 360) per system
    assert batch_runtime_minutes(config) == 3 * 60 + 10
    raw["spectra"] = {"batch_size": 7}
    assert batch_size(validate_config(raw)) == 7


def _with_reference(**reference):
    config = _minimal()
    config["references"] = {"foil": {"path": "foil.xdi", "element": "Cu", **reference}}
    return config


def test_a_reference_needs_a_lattice_or_a_structure_file():
    assert (
        validate_config(_with_reference(lattice="fcc", lattice_constant=3.615))["references"]["foil"][
            "temperature"
        ]
        == 300
    )
    with pytest.raises(ConfigError, match="references.foil.*either lattice"):
        validate_config(_with_reference())
    with pytest.raises(ConfigError, match="references.foil.lattice_constant"):
        validate_config(_with_reference(lattice="fcc"))
    with pytest.raises(ConfigError, match="references.foil.lattice"):
        validate_config(_with_reference(lattice="diamond", lattice_constant=3.6))


def test_the_calibration_reference_must_exist_and_be_the_absorbers_edge():
    config = _with_reference(lattice="fcc", lattice_constant=3.615)
    config["calibration"] = {"reference": "foil"}
    assert validate_config(config)["calibration"]["window"] == [-12.0, 45.0]
    config["calibration"] = {"reference": "nickel"}
    with pytest.raises(ConfigError, match="calibration.reference.*'nickel'.*not in references"):
        validate_config(config)
    config = _with_reference(lattice="fcc", lattice_constant=3.524, element="Ni")
    config["calibration"] = {"reference": "foil"}
    with pytest.raises(ConfigError, match="must be the absorber's"):
        validate_config(config)


def test_augmentation_defaults_and_bounds():
    config = validate_config(_minimal())
    assert config["training"]["augmentation"]["site_average"] == 1
    bad = _minimal()
    bad["training"] = {"augmentation": {"noise": -0.01}}
    with pytest.raises(ConfigError, match="training.augmentation.noise"):
        validate_config(bad)


def test_config_imports_nothing_from_other_xasflow_modules():
    """Every stage imports the config module, so it must not import any stage."""
    import ast

    tree = ast.parse((ROOT / "src" / "xasflow" / "config.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert {name for name in imported if name.startswith("xasflow")} == {"xasflow.errors"}


def test_imaging_models_default_to_none_and_must_be_models_of_the_study():
    raw = _minimal()
    raw["imaging"] = {"references": {"Cu": "cu.xdi"}}
    assert validate_config(raw)["imaging"]["models"] == []
    raw["imaging"]["models"] = ["transformer"]
    with pytest.raises(ConfigError, match=r"imaging\.models.*'transformer'.*not in training\.models"):
        validate_config(raw)
