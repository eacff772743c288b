"""Configurations that used to be accepted and then failed late, ran something unintended, or were
silently changed: each is refused before any job, naming the key (issue 10, faults 1 and 6)."""

import copy
from pathlib import Path

import pytest
import yaml

from xasflow.cli import main
from xasflow.config import ConfigError, validate_config

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
