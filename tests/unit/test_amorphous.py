"""Random packings, the melt-quench protocol and real melt-quenched SiOx glasses."""

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list

from xasflow.structures.amorphous import (
    AMU_PER_A3_IN_G_PER_CM3,
    build_random_packing,
    melt_quench_stages,
    silicon_valence,
    siox_composition,
    siox_density,
    species_counts,
)
from xasflow.structures.lammps_runner import MDParams, MDStage, Potential, resolve_potential, run_md

# Si-O distances of the glasses below fall in 1.5-1.95 A (bonded) or beyond 2.3 A: 2.2 A sits in
# the empty first minimum of the Si-O g(r) for both the Vashishta and the Tersoff potential.
SI_O_CUTOFF = 2.2


def _density(atoms: Atoms) -> float:
    return atoms.get_masses().sum() * AMU_PER_A3_IN_G_PER_CM3 / atoms.get_volume()


def _minimum_image_distances(atoms: Atoms) -> np.ndarray:
    distances = atoms.get_all_distances(mic=True)
    return distances[np.triu_indices(len(atoms), k=1)]


@pytest.mark.parametrize(
    "composition,n_atoms,expected",
    [
        ({"Si": 1, "O": 2}, 96, {"Si": 32, "O": 64}),
        ({"Si": 1, "O": 1}, 97, {"Si": 49, "O": 48}),  # the tie goes to the element listed first
        ({"Si": 1, "O": 0.4}, 100, {"Si": 71, "O": 29}),
        ({"Si": 0.25, "O": 0.5}, 99, {"Si": 33, "O": 66}),  # fractions need not sum to 1
    ],
)
def test_species_counts_are_exact_and_sum_to_n_atoms(composition, n_atoms, expected):
    assert species_counts(composition, n_atoms) == expected
    atoms = build_random_packing(composition, n_atoms, 2.2, seed=3)
    symbols = atoms.get_chemical_symbols()
    assert len(atoms) == n_atoms
    assert {element: symbols.count(element) for element in expected} == expected


@pytest.mark.parametrize("density", [2.2, 2.33, 1.0])
def test_packing_has_the_requested_density_in_a_periodic_cube(density):
    atoms = build_random_packing(siox_composition(1.3), 150, density, seed=1)
    assert atoms.pbc.all()
    lengths = atoms.cell.lengths()
    assert np.allclose(lengths, lengths[0]) and np.allclose(atoms.cell.angles(), 90)
    assert _density(atoms) == pytest.approx(density, rel=0.005)
    scaled = atoms.get_scaled_positions(wrap=False)
    assert np.all((scaled >= 0) & (scaled < 1))


def test_packing_respects_the_minimum_distance_through_the_periodic_boundary():
    atoms = build_random_packing({"Si": 1, "O": 2}, 192, 2.2, seed=7, min_distance=1.6)
    assert _minimum_image_distances(atoms).min() >= 1.6


def test_packing_respects_minimum_distances_per_pair():
    table = {("Si", "Si"): 2.3, ("O", "Si"): 1.5, ("O", "O"): 2.2}
    atoms = build_random_packing({"Si": 1, "O": 2}, 96, 2.2, seed=2, min_distance=table)
    first, second, distance = neighbor_list("ijd", atoms, 2.3)
    symbols = np.array(atoms.get_chemical_symbols())
    for (a, b), minimum in table.items():
        pair = (symbols[first] == a) & (symbols[second] == b)
        assert np.all(distance[pair] >= minimum)


def test_same_seed_same_packing_other_seed_other_packing():
    first = build_random_packing({"Si": 1, "O": 2}, 60, 2.2, seed=11)
    again = build_random_packing({"Si": 1, "O": 2}, 60, 2.2, seed=11)
    other = build_random_packing({"Si": 1, "O": 2}, 60, 2.2, seed=12)
    assert first.get_chemical_symbols() == again.get_chemical_symbols()
    assert np.array_equal(first.positions, again.positions)
    assert not np.allclose(first.positions, other.positions)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"density": 0.0}, "density"),
        ({"density": -2.2}, "density"),
        ({"density": 12.0}, "density=12.0"),  # too dense for atoms 1.5 A apart
        ({"n_atoms": 0}, "n_atoms"),
        ({"composition": {}}, "composition"),
        ({"composition": {"Si": 1, "O": -1}}, "fraction of O"),
        ({"composition": {"Si": 1, "Xx": 1}}, "'Xx'"),
        ({"composition": {"Si": 1, "O": 0.01}, "n_atoms": 20}, "no atom of"),
        ({"min_distance": -1.0}, "min_distance"),
        ({"min_distance": {("Si", "O"): 1.5}}, "pair"),
    ],
)
def test_bad_packing_inputs_raise_value_error(kwargs, message):
    arguments = {"composition": {"Si": 1, "O": 2}, "n_atoms": 48, "density": 2.2, "seed": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        build_random_packing(**arguments)


def test_siox_helpers():
    assert siox_composition(2) == {"Si": 1.0, "O": 2.0}
    assert siox_density(2) == pytest.approx(2.20)
    assert siox_density(0) == pytest.approx(2.33)
    assert 2.15 <= siox_density(0.4) <= 2.33
    for bad in (0, -1, 2.5, float("nan")):
        with pytest.raises(ValueError, match="x="):
            siox_composition(bad)


def test_melt_quench_stages_hold_then_cool_at_fixed_volume():
    melt, quench = melt_quench_stages(4000, 300, 2500, 100000)
    assert melt == MDStage(2500, 4000, 4000, ensemble="nvt")
    assert quench == MDStage(100000, 4000, 300, ensemble="nvt")
    with pytest.raises(ValueError, match="melt_temperature 300"):
        melt_quench_stages(300, 300, 10, 10)
    with pytest.raises(ValueError, match="quench_steps"):
        melt_quench_stages(4000, 300, 10, 0)


def test_silicon_valence_counts_oxygen_across_the_periodic_boundary():
    # Si at a corner of a 10 A cube: two O inside the cell, two reached only through images
    bond = 1.6
    direction = np.array([[1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]]) / np.sqrt(3)
    positions = np.vstack(
        [[0.2, 0.2, 0.2], [0.2, 0.2, 0.2] + bond * direction, [5.0, 5.0, 5.0], [6.0, 5.0, 5.0]]
    )
    atoms = Atoms("SiO4SiO", positions=positions, cell=np.eye(3) * 10.0, pbc=True)
    atoms.wrap()
    assert silicon_valence(atoms, SI_O_CUTOFF).tolist() == [4, 1]
    with pytest.raises(ValueError, match="si_o_cutoff"):
        silicon_valence(atoms, 0.0)


def _melt_quench(composition, n_atoms, density, potential, stages, timestep, seed=1):
    atoms = build_random_packing(composition, n_atoms, density, seed)
    params = MDParams(
        temperature=300.0,
        equilibration_steps=500,
        snapshot_interval=250,
        n_snapshots=1,
        timestep=timestep,
        seed=seed,
        ensemble="nvt",
        minimize=True,
        pre_stages=stages,
        thermo_interval=1000,
    )
    (glass,) = run_md(atoms, potential, params, "amorphous-test")
    assert len(glass) == len(atoms)
    assert sorted(glass.get_chemical_symbols()) == sorted(atoms.get_chemical_symbols())
    assert glass.get_volume() == pytest.approx(atoms.get_volume())
    return glass


def _bonds(glass: Atoms, first_element: str, second_element: str, cutoff: float) -> np.ndarray:
    """Per atom of ``first_element``: the number of ``second_element`` neighbours within cutoff."""
    first, second = neighbor_list("ij", glass, cutoff)
    symbols = np.array(glass.get_chemical_symbols())
    pair = (symbols[first] == first_element) & (symbols[second] == second_element)
    return np.bincount(first[pair], minlength=len(glass))[symbols == first_element]


@pytest.mark.slow
def test_melt_quenched_silica_is_a_fourfold_network():
    # the example's protocol: 192 atoms, Vashishta 1994, 2 fs, 4000 K for 5 ps, 200 ps to 300 K
    potential = Potential("vashishta", resolve_potential("SiO.1994.vashishta"), ("Si", "O"))
    stages = melt_quench_stages(4000.0, 300.0, 2500, 100000)
    glass = _melt_quench(siox_composition(2), 192, siox_density(2), potential, stages, 0.002)

    distances = neighbor_list("d", glass, 3.0)
    first, second = neighbor_list("ij", glass, 3.0)
    symbols = np.array(glass.get_chemical_symbols())
    si_o = distances[(symbols[first] == "Si") & (symbols[second] == "O")]
    assert not np.any((si_o > 1.95) & (si_o < 2.3)), "the Si-O cutoff must sit in an empty minimum"

    valence = silicon_valence(glass, SI_O_CUTOFF)
    oxygen_coordination = _bonds(glass, "O", "Si", SI_O_CUTOFF)
    # Quenches this fast leave a few percent of threefold Si with a non-bridging O: 95.3-96.9 %
    # fourfold over 5 seeds of this 64-Si cell (one defect is 1.6 %); the issue asks for > 95 %.
    # Not every seed gets there: the example's seed 21 (and a longer hold at 300 K) gave 92.2 %.
    assert np.mean(valence == 4) > 0.95
    assert valence.min() >= 3 and valence.max() <= 5
    assert np.mean(oxygen_coordination == 2) >= 0.90
    assert valence.sum() == oxygen_coordination.sum()
    assert _bonds(glass, "O", "O", 2.0).sum() == 0
    assert _bonds(glass, "Si", "Si", 2.6).sum() == 0


@pytest.mark.slow
def test_melt_quenched_silicon_monoxide_mixes_suboxide_valences():
    # Vashishta keeps Si apart, so SiOx with x < 2 needs Munetoh's Tersoff (Si-Si bonds)
    potential = Potential("tersoff", resolve_potential("SiO.tersoff"), ("Si", "O"))
    stages = melt_quench_stages(5000.0, 300.0, 10000, 40000)
    glass = _melt_quench(siox_composition(1), 96, siox_density(1), potential, stages, 0.0005)

    valence = silicon_valence(glass, SI_O_CUTOFF)
    oxygen_coordination = _bonds(glass, "O", "Si", SI_O_CUTOFF)
    # mean Si valence = x * mean O coordination; it is 2x only if every O bridges exactly two Si.
    # This Tersoff potential binds about a third of the O to three Si, so SiO gives 2.2-2.4.
    assert valence.mean() == pytest.approx(oxygen_coordination.mean() * 1.0)
    assert 1.9 < valence.mean() < 2.6
    assert {1, 2, 3} <= set(valence.tolist())  # a mix of suboxide Si, not SiO2 + Si
    assert _bonds(glass, "Si", "Si", 2.7).sum() > 0
    assert _bonds(glass, "O", "O", 2.0).sum() == 0
