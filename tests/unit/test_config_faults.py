"""Configurations that used to be accepted and then failed late, ran something unintended, or were
silently changed: each is refused before any job, naming the key (issue 10, faults 1 and 6)."""

import copy
from pathlib import Path

import pytest
import yaml

from xasflow.cli import main
from xasflow.config import ConfigError, load_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


def _study(**sections):
    """A small valid study: a Cu nanoparticle and a bulk crystal (55 and 256 Cu atoms)."""
    particle = {
        "kind": "nanoparticle",
        "element": "Cu",
        "shape": "icosahedron",
        "shells": 3,
        "temperature": 300,
        "potential": {"style": "eam", "file": "Cu_u3.eam"},
    }
    bulk = {**copy.deepcopy(particle), "kind": "bulk"}
    del bulk["shape"], bulk["shells"]
    return {"systems": {"np": particle, "bulk": bulk}, **sections}


def _refused(config, key_pattern):
    with pytest.raises(ConfigError, match=key_pattern):
        validate_config(config)


# Fault 1: strings that reach shell lines


INJECTIONS = ["res$(touch PWNED)", "res`touch PWNED`", "res;touch PWNED", "a|b", "a&b", "a\nb", "a'b", 'a"b']


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize(
    ("key", "place"),
    [
        ("results_dir", lambda config, value: config.update(results_dir=value)),
        ("spectra.cache_dir", lambda config, value: config.update(spectra={"cache_dir": value})),
        (
            "inference.spectra.0.path",
            lambda config, value: config.update(inference={"spectra": [{"name": "foil", "path": value}]}),
        ),
        (
            "systems.np.potential.file",
            lambda config, value: config["systems"]["np"]["potential"].update(file=value),
        ),
    ],
)
def test_validate_config_refuses_shell_characters_in_paths_naming_the_key(
    tmp_path, capsys, key, place, value
):
    config = _study()
    place(config, value)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate-config", str(path)]) == 2
    error = capsys.readouterr().err
    assert f"config key '{key}'" in error and "not allowed" in error
    assert len(error.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("key", "config"),
    [
        ("results_dir", _study(results_dir="my results")),
        (
            "inference.spectra.0.path",
            _study(inference={"spectra": [{"name": "foil", "path": "my data/cu.xdi"}]}),
        ),
    ],
)
def test_a_path_with_a_space_is_refused_cleanly(key, config):
    # Spaces would survive the quoted shell lines, but not LAMMPS's pair_coeff, which splits the
    # potential path (generated under results_dir for zhou2004) on them.
    _refused(config, rf"config key '{key}': '[^']* [^']*' is not allowed here \(a path of letters")


def test_ordinary_paths_are_accepted():
    config = _study(
        results_dir="/scratch/user/run-2024_05",
        spectra={"cache_dir": "../cache/spectra"},
        inference={"spectra": [{"name": "cu", "path": "../shared/data/experimental/cu_10k.xmu"}]},
    )
    assert validate_config(config)["results_dir"] == "/scratch/user/run-2024_05"
    assert validate_config(_study(spectra={"cache_dir": None}))["spectra"]["cache_dir"] is None


# Fault 6: accepted, then failing late or silently changed


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        (
            {"dataset": {"energy_min": 45.0, "energy_max": -12.0}},
            r"dataset\.energy_min' \(45\.0\) must be below",
        ),
        ({"spectra": {"energy_min": 60.0, "energy_max": -20.0}}, r"spectra\.energy_min' \(60\.0\)"),
        ({"labels": {"r_min": 6.0, "r_max": 1.5}}, r"labels\.r_min' \(6\.0\)"),
        ({"spectra": {"fdmnes": {"energy_min": 10, "energy_max": -5}}}, r"spectra\.fdmnes\.energy_min'"),
        (
            {
                "training": {
                    "models": {"cnn": {"architecture": "cnn", "energy_min": 20.0, "energy_max": -5.0}}
                }
            },
            r"training\.models\.cnn\.energy_min' \(20\.0\) must be below",
        ),
        (  # a model's window defaults to the grid's end: 50 eV lies above the grid (-12..45)
            {"training": {"models": {"cnn": {"architecture": "cnn", "energy_min": 50.0}}}},
            r"training\.models\.cnn\.energy_min' \(50\.0\) must be below",
        ),
        (
            {"training": {"models": {"cnn": {"architecture": "cnn", "energy_min": -30, "energy_max": -20}}}},
            r"training\.models\.cnn': the window -30\.\.-20 eV lies outside the dataset grid",
        ),
        (  # path expansion has no pre-edge: an EXAFS-mode grid starts at E0
            {"spectra": {"mode": "exafs"}, "dataset": {"energy_min": -12.0, "energy_max": 400.0}},
            r"dataset\.energy_min' is -12\.0 eV; in EXAFS mode",
        ),
    ],
)
def test_inverted_ranges_are_refused(sections, key):
    _refused(_study(**sections), key)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("dataset: {energy_min: .nan}", "dataset.energy_min' is nan"),
        ("dataset: {energy_max: .inf}", "dataset.energy_max' is inf"),
        ("spectra: {fms_radius: .NaN}", "spectra.fms_radius' is nan"),
        ("labels: {shell_edges: [2.7, -.inf]}", "labels.shell_edges.1' is -inf"),
        (
            "training: {models: {cnn: {architecture: cnn, learning_rate: .nan}}}",
            "training.models.cnn.learning_rate' is nan",
        ),
    ],
)
def test_yaml_nan_and_inf_are_refused_by_key(tmp_path, text, key):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_study()) + text + "\n")
    with pytest.raises(ConfigError, match=f"study.yaml: config key '{key}; every number must be finite"):
        load_config(path)


def test_a_pair_style_the_pipeline_cannot_use_is_refused():
    config = _study()
    config["systems"]["np"]["potential"]["style"] = "eam/bogus"
    _refused(config, r"'systems\.np\.potential\.style': 'eam/bogus' is not one of \['eam', 'eam/alloy'")
    config["systems"]["np"]["potential"] = {"style": "eam", "file": "Cu_u3.eam"}
    config["systems"]["np"]["composition"] = {"Cu": 1, "Ni": 1}
    del config["systems"]["np"]["element"]
    _refused(config, r"'systems\.np\.potential\.style': eam \(funcfl\) files hold one element")


def test_a_study_without_models_is_refused():
    _refused(_study(training={"models": {}}), r"'training\.models': \{\} should be non-empty")


@pytest.mark.parametrize(
    "sections",
    [
        {"training": {"val_systems": ["np"], "test_systems": ["bulk"]}},
        {"training": {"test_systems": ["np"]}, "inference": {"pseudo_experiment": {"system": "bulk"}}},
    ],
)
def test_a_study_must_leave_a_system_to_train_on(sections):
    _refused(_study(**sections), r"config key 'training' leaves no system to train on")


def test_a_pseudo_experiment_names_its_system():
    _refused(
        _study(inference={"pseudo_experiment": {"noise": 0.01}}), r"pseudo_experiment.*'system' is a required"
    )


def test_every_system_needs_the_absorber():
    config = _study()
    config["systems"]["ni"] = {**config["systems"]["bulk"], "element": "Ni"}
    _refused(config, r"'systems\.ni\.element' has no Cu atoms, but absorber is Cu")


def test_duplicate_yaml_keys_are_refused_with_key_and_line(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        "systems:\n"
        "  np:\n"
        "    kind: nanoparticle\n"
        "    element: Cu\n"
        "    kind: bulk\n"
        "    temperature: 300\n"
        "    potential: {style: eam, file: Cu_u3.eam}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"study.yaml: not valid YAML at line 5: duplicate key 'systems\.np\.kind' "
        r"\(first given on line 3\)",
    ):
        load_config(path)


def test_merge_keys_may_still_be_overridden():
    config = load_config(ROOT / "config.yaml")  # bulk_600K: {<<: *bulk, temperature: 600}
    assert config["systems"]["bulk_600K"]["temperature"] == 600


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("systems:\n  np: {kind: bulk\n")
    with pytest.raises(ConfigError, match=r"study.yaml: not valid YAML at line 3: expected ',' or '\}'"):
        load_config(path)


def test_duplicate_inference_spectrum_names_are_refused():
    spectra = [{"name": "foil", "path": "a.xdi"}, {"name": "foil", "path": "b.xdi"}]
    _refused(_study(inference={"spectra": spectra}), r"'inference\.spectra\.1\.name' 'foil' is given twice")


# Checks that need structures or installed files (xasflow.structures.checks)


def _checked(config):
    from xasflow.structures.checks import check_study

    validated = validate_config(config)
    check_study(validated, source="study.yaml")
    return validated


def test_a_missing_potential_file_is_refused_before_any_md(tmp_path, monkeypatch):
    config = _study()
    config["systems"]["np"]["potential"]["file"] = "Cu_u4.eam"  # a typo of the shipped Cu_u3.eam
    with pytest.raises(
        ConfigError,
        match=r"study.yaml: config key 'systems\.np\.potential\.file' 'Cu_u4\.eam' is neither a file nor",
    ):
        _checked(config)
    monkeypatch.chdir(tmp_path)  # a relative path is taken from the working directory
    (tmp_path / "Cu_u4.eam").write_text("a user's own file\n")
    _checked(config)
    config["systems"]["np"]["potential"] = {"generator": "zhou2004"}
    _checked(config)


def test_more_sites_than_absorbing_atoms_are_refused_naming_the_key():
    config = _study()
    config["systems"]["np"]["md"] = {"n_snapshots": 2}
    config["systems"]["np"]["n_sites"] = 111  # 55 atoms in 2 snapshots: 110 sites
    with pytest.raises(
        ConfigError,
        match=r"config key 'systems\.np\.n_sites' \(111\) asks for more sites than system 'np' has: "
        r"55 Cu atoms in 2 frame\(s\), at most 110",
    ):
        _checked(config)
    config["systems"]["np"]["n_sites"] = 110
    _checked(config)
    del config["systems"]["np"]["n_sites"]
    config["sampling"] = {"sites_per_system": 200}  # the default of n_sites
    with pytest.raises(ConfigError, match=r"config key 'sampling\.sites_per_system' \(200\).*system 'np'"):
        _checked(config)


def test_only_the_absorbing_element_of_an_alloy_counts():
    config = _study(absorber="Pt")
    config["systems"] = {
        "ptcu": {**config["systems"]["np"], "composition": {"Pt": 1, "Cu": 1}, "n_sites": 55}
    }
    del config["systems"]["ptcu"]["element"]
    config["systems"]["ptcu"]["potential"] = {"generator": "zhou2004"}
    config["systems"]["ptcu"]["md"] = {"n_snapshots": 1}
    with pytest.raises(ConfigError, match=r"system 'ptcu' has: \d\d Pt atoms in 1 frame"):
        _checked(config)


def test_a_static_crystal_has_one_frame():
    config = _study()
    config["systems"]["crystal"] = {"kind": "crystal", "element": "Cu", "supercell": [2, 2, 2]}
    _checked(config)  # inequivalent: one site, whatever n_sites says
    config["systems"]["crystal"].update(sampling_strategy="uniform", n_sites=33)  # 32 atoms, 1 frame
    with pytest.raises(ConfigError, match=r"'systems\.crystal\.n_sites' \(33\).*32 Cu atoms in 1 frame"):
        _checked(config)


def test_the_shipped_studies_pass_the_structure_checks():
    for path in [
        ROOT / "config.yaml",
        ROOT / "tests/configs/tiny.yaml",
        *sorted(ROOT.glob("config/examples/*.yaml")),
    ]:
        from xasflow.structures.checks import check_study

        check_study(load_config(path), source=str(path))
