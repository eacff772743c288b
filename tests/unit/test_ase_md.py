"""MD and Monte Carlo swaps through ASE calculators: CHGNet (weights shipped in its wheel) and a
user's calculator named by import path (ASE's EMT), both real potentials."""

import hashlib
import json

import numpy as np
import pytest
from ase import Atoms

from xasflow.structures.ase_md import CalculatorPotential, _exchange, run_ase_md
from xasflow.structures.builders import NanoparticleSpec, build_nanoparticle, decorate
from xasflow.structures.labels import (
    LabelParams,
    composition_of,
    compute_site_labels,
    reference_number_density,
)
from xasflow.structures.lammps_runner import MDError, MDParams, SwapParams
from xasflow.structures.pipeline import simulate_system
from xasflow.study import system_spec


def _particle(composition: dict, shells: int = 3, lattice_constant: float = 3.86, seed: int = 3) -> Atoms:
    atoms = build_nanoparticle(NanoparticleSpec("Pt", "cuboctahedron", shells, lattice_constant, 0))
    return decorate(atoms, composition, seed)


def _surface_fraction(atoms: Atoms, element: str) -> float:
    density = reference_number_density("fcc", 3.86, 1.0)
    labels = compute_site_labels(atoms, LabelParams(cn_cutoff=3.3, surface_cn_max=10), density, ("Pt", "Ru"))
    return composition_of(labels.element, labels.surface, ("Pt", "Ru"))[element]


def test_chgnet_provenance_names_the_shipped_weights():
    record = CalculatorPotential("chgnet", ("Pt", "Ru")).provenance()
    assert record["calculator"] == "chgnet"
    assert record["calculator_model"] == "0.3.0"
    assert record["calculator_weights"].endswith(".pth.tar")
    assert len(record["calculator_weights_sha256"]) == 64
    import chgnet

    assert record["calculator_version"] == chgnet.__version__


def test_swap_keeps_each_sites_kinetic_energy():
    atoms = Atoms("PtRu", positions=[[0, 0, 0], [2.7, 0, 0]])
    atoms.set_momenta([[3.0, 0.0, 0.0], [0.0, -1.0, 0.5]])
    before = 0.5 * (atoms.get_momenta() ** 2).sum(axis=1) / atoms.get_masses()
    _exchange(atoms, 0, 1)
    after = 0.5 * (atoms.get_momenta() ** 2).sum(axis=1) / atoms.get_masses()
    assert atoms.get_chemical_symbols() == ["Ru", "Pt"]
    assert after == pytest.approx(before, rel=1e-12)


@pytest.mark.slow
def test_chgnet_monte_carlo_moves_pt_to_the_surface_of_a_pt_ru_particle():
    """Pt (lower surface energy) segregates to the surface of Pt-Ru particles: 300 swap trials
    on a 55-atom Pt50Ru50 cuboctahedron raise its surface Pt share above the random start."""
    atoms = _particle({"Pt": 0.5, "Ru": 0.5})
    start = _surface_fraction(atoms, "Pt")
    params = MDParams(
        temperature=300.0,
        equilibration_steps=0,
        snapshot_interval=10,
        n_snapshots=1,
        timestep=0.002,
        seed=1,
        swap=SwapParams(interval=1, attempts=30),
    )
    (snapshot,) = run_ase_md(atoms, CalculatorPotential("chgnet", ("Pt", "Ru")), params, "ptru55")
    assert snapshot.info["swap_attempts"] == 300
    assert 0 < snapshot.info["swap_accepted"] < 300
    assert sorted(snapshot.get_chemical_symbols()) == sorted(atoms.get_chemical_symbols())
    assert _surface_fraction(snapshot, "Pt") > start + 0.1


def test_a_users_calculator_plugs_in_by_import_path(tmp_path):
    """ASE's EMT (Pt and Cu) through the same protocol and pipeline as CHGNet: snapshots,
    swap counts, the MD log and the provenance record."""
    entry = {
        "kind": "nanoparticle",
        "composition": {"Pt": 0.5, "Cu": 0.5},
        "shape": "cuboctahedron",
        "shells": 3,
        "lattice_constant": 3.77,
        "c_over_a": 1.0,
        "lattice": "fcc",
        "reentrance": 0,
        "temperature": 600,
        "structure_seed": 2,
        "potential": {"calculator": "ase.calculators.emt:EMT"},
        "md": {
            "timestep": 0.002,
            "equilibration_steps": 40,
            "snapshot_interval": 20,
            "n_snapshots": 2,
            "seed": 4,
        },
        "mc": {"interval": 10, "attempts": 5},
    }
    spec = system_spec("ptcu_emt", entry)
    simulate_system(spec, tmp_path)
    record = json.loads((tmp_path / "md.json").read_text())
    assert record["potential_style"] == "ase:ase.calculators.emt:EMT"
    assert record["mc_swap_attempts"] == 8 * 5  # 8 rounds in 80 steps, one pair of species
    assert (tmp_path / "md.log").read_text().startswith("# step temperature_K")
    from xasflow.structures.io import read_snapshots

    snapshots = read_snapshots(tmp_path / "snapshots.extxyz")
    assert len(snapshots) == 2
    for snapshot in snapshots:
        assert len(snapshot) == 55
        assert np.abs(snapshot.positions.mean(axis=0)).max() < 1e-6  # centred like LAMMPS frames
        assert 100 < snapshot.info["temperature_K"] < 2000


def test_an_unknown_calculator_is_refused_with_its_name():
    with pytest.raises(MDError, match="no_such_package.calc:Calc"):
        CalculatorPotential("no_such_package.calc:Calc", ("Pt",)).make()


def test_an_element_outside_the_potential_is_refused():
    atoms = _particle({"Pt": 1.0}, shells=2)
    params = MDParams(
        temperature=300, equilibration_steps=1, snapshot_interval=1, n_snapshots=1, timestep=0.002
    )
    with pytest.raises(MDError, match="ptx.*Pt"):
        run_ase_md(atoms, CalculatorPotential("ase.calculators.emt:EMT", ("Cu",)), params, "ptx")


def test_weights_checksum_matches_the_file():
    potential = CalculatorPotential("chgnet", ("Pt",))
    record = potential.provenance()
    from pathlib import Path

    import chgnet

    weights = next((Path(chgnet.__file__).parent / "pretrained" / "0.3.0").glob("*.pth.tar"))
    assert record["calculator_weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
