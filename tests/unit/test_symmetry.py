"""Unit tests for xasflow.structures.symmetry (symmetry-inequivalent sites, weighted averages)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.cluster import Octahedron
from ase.neighborlist import neighbor_list
from ase.spacegroup import crystal

from xasflow.structures import symmetry
from xasflow.structures.symmetry import EquivalentSite, inequivalent_sites, site_weights, weighted_average

CU_LATTICE = 3.61  # Angstrom


def fcc_cu_supercell() -> Atoms:
    return bulk("Cu", "fcc", a=CU_LATTICE, cubic=True).repeat((2, 2, 2))


def rutile() -> Atoms:
    return crystal(
        ["Ti", "O"],
        basis=[(0, 0, 0), (0.3, 0.3, 0)],
        spacegroup=136,
        cellpar=[4.6, 4.6, 2.95, 90, 90, 90],
    )


def spinel_fe3o4() -> Atoms:
    """Magnetite, Fd-3m origin choice 2: Fe 8a (tetrahedral), Fe 16d (octahedral), O 32e."""
    return crystal(
        ["Fe", "Fe", "O"],
        basis=[(1 / 8, 1 / 8, 1 / 8), (1 / 2, 1 / 2, 1 / 2), (0.255, 0.255, 0.255)],
        spacegroup=227,
        setting=2,
        cellpar=[8.39, 8.39, 8.39, 90, 90, 90],
    )


def cuboctahedron() -> Atoms:
    return Octahedron("Cu", 5, 2, latticeconstant=CU_LATTICE)


def sizes(sites: list[EquivalentSite]) -> list[int]:
    return sorted(site.multiplicity for site in sites)


def assert_valid_partition(sites: list[EquivalentSite], atoms: Atoms, element: str | None = None) -> None:
    symbols = atoms.get_chemical_symbols()
    expected = [i for i, symbol in enumerate(symbols) if element is None or symbol == element]
    members = sorted(i for site in sites for i in site.members)
    assert members == expected
    assert [site.index for site in sites] == sorted(site.index for site in sites)
    for site in sites:
        assert site.index == min(site.members)
        assert {symbols[i] for i in site.members} == {site.element}


def test_fcc_cu_supercell_is_one_class():
    atoms = fcc_cu_supercell()
    sites = inequivalent_sites(atoms)
    assert len(atoms) == 32
    assert sites == [EquivalentSite(index=0, element="Cu", multiplicity=32, members=tuple(range(32)))]


def test_bcc_fe_supercell_is_one_class():
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((2, 2, 2))
    sites = inequivalent_sites(atoms, element="Fe")
    assert [(site.index, site.multiplicity) for site in sites] == [(0, 16)]


def test_magnetic_moments_are_ignored():
    # As documented: spin sublattices of an antiferromagnet (corner vs body centre) stay one class.
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((2, 2, 2))
    atoms.set_initial_magnetic_moments([2.0, -2.0] * 8)
    assert sizes(inequivalent_sites(atoms)) == [16]


def test_rutile_one_ti_and_one_o_class():
    atoms = rutile()
    sites = inequivalent_sites(atoms)
    assert_valid_partition(sites, atoms)
    assert {site.element: site.multiplicity for site in sites} == {"Ti": 2, "O": 4}

    oxygen = inequivalent_sites(atoms, element="O")
    assert [site.element for site in oxygen] == ["O"]
    assert oxygen[0].multiplicity == 4
    assert_valid_partition(oxygen, atoms, element="O")


def test_atoms_outside_the_cell_keep_their_indices():
    atoms = rutile()
    shifted = atoms.copy()
    shifted.positions[3] += shifted.cell[0] - 2 * shifted.cell[2]
    assert inequivalent_sites(shifted) == inequivalent_sites(atoms)


def test_spinel_fe_sits_on_two_wyckoff_positions():
    atoms = spinel_fe3o4()
    assert atoms.get_chemical_formula() == "Fe24O32"
    iron = inequivalent_sites(atoms, element="Fe")
    assert_valid_partition(iron, atoms, element="Fe")
    assert sizes(iron) == [8, 16]  # Wyckoff 8a and 16d of Fd-3m
    assert sizes(inequivalent_sites(atoms, element="O")) == [32]

    # The classes must be the right atoms: 8a is tetrahedral (4 O), 16d octahedral (6 O).
    first, neighbours = neighbor_list("ij", atoms, 2.3)
    symbols = np.array(atoms.get_chemical_symbols())
    oxygen_neighbours = np.bincount(first[symbols[neighbours] == "O"], minlength=len(atoms))
    by_size = {site.multiplicity: site for site in iron}
    assert set(oxygen_neighbours[list(by_size[8].members)]) == {4}
    assert set(oxygen_neighbours[list(by_size[16].members)]) == {6}


def test_indices_follow_a_scrambled_input_order():
    atoms = spinel_fe3o4()
    order = np.random.default_rng(7).permutation(len(atoms))
    scrambled = atoms[order]
    expected = sorted(
        tuple(sorted(int(np.flatnonzero(order == i)[0]) for i in s.members))
        for s in inequivalent_sites(atoms)
    )
    assert sorted(site.members for site in inequivalent_sites(scrambled)) == expected


def test_map_to_input_matches_permuted_and_translated_sites():
    reference = np.random.default_rng(3).random((6, 3))
    order = np.array([4, 0, 5, 2, 1, 3])
    candidate = reference[order] + np.array([1.0, -2.0, 0.0])  # whole lattice translations
    to_input = symmetry._map_to_input(candidate, reference, cell=np.eye(3) * 5.0)
    np.testing.assert_array_equal(to_input, order)
    with pytest.raises(RuntimeError, match="map"):
        symmetry._map_to_input(candidate + 0.1, reference, cell=np.eye(3) * 5.0)


def test_thermally_displaced_supercell_has_no_symmetry():
    atoms = fcc_cu_supercell()
    atoms.positions += np.random.default_rng(0).normal(0.0, 0.05, atoms.positions.shape)
    sites = inequivalent_sites(atoms)
    assert len(sites) == 32
    assert [site.members for site in sites] == [(i,) for i in range(32)]
    assert {site.multiplicity for site in sites} == {1}


def test_cuboctahedron_classes_follow_the_oh_shells():
    # 55 atoms: centre (1), first shell = cuboctahedron vertices (12); the second shell of 42 is
    # 12 vertices + 24 edge midpoints + 6 square-face centres. Oh maps each set onto itself only.
    atoms = cuboctahedron()
    assert len(atoms) == 55
    assert not atoms.pbc.any()
    sites = inequivalent_sites(atoms)
    assert_valid_partition(sites, atoms)
    assert sizes(sites) == [1, 6, 12, 12, 24]

    radius = np.linalg.norm(atoms.positions - atoms.positions.mean(axis=0), axis=1) / CU_LATTICE
    shell_radius = {
        1: 0.0,
        6: 1.0,  # square-face centres, (a, 0, 0)
        24: np.sqrt(1.5),  # edge midpoints, (a, a/2, a/2)
    }
    for site in sites:
        members_radius = radius[list(site.members)]
        np.testing.assert_allclose(members_radius, members_radius[0], atol=1e-9)
        if site.multiplicity in shell_radius:
            assert members_radius[0] == pytest.approx(shell_radius[site.multiplicity])
    twelve = sorted(radius[site.index] for site in sites if site.multiplicity == 12)
    np.testing.assert_allclose(twelve, [np.sqrt(0.5), np.sqrt(2.0)])  # first- and second-shell vertices


def test_displaced_cluster_with_tight_tolerance_has_no_symmetry():
    atoms = cuboctahedron()
    atoms.positions += np.random.default_rng(0).normal(0.0, 0.05, atoms.positions.shape)
    sites = inequivalent_sites(atoms, cluster_tolerance=0.01)
    assert [site.members for site in sites] == [(i,) for i in range(55)]


def test_cluster_fallback_when_pymatgen_drops_atoms(caplog):
    # For a heteronuclear linear molecule pymatgen's grouping omits an atom; we must not lose it.
    carbon_monoxide = Atoms("CO", positions=[(0, 0, 0), (0, 0, 1.13)])
    with caplog.at_level(logging.WARNING, logger="xasflow.structures.symmetry"):
        sites = inequivalent_sites(carbon_monoxide)
    assert [(site.element, site.members) for site in sites] == [("C", (0,)), ("O", (1,))]
    assert "every atom as its own class" in caplog.text


def test_cluster_fallback_when_analysis_raises(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ValueError("no point group")

    monkeypatch.setattr(symmetry, "PointGroupAnalyzer", broken)
    atoms = cuboctahedron()
    with caplog.at_level(logging.WARNING, logger="xasflow.structures.symmetry"):
        sites = inequivalent_sites(atoms, element="Cu")
    assert [site.members for site in sites] == [(i,) for i in range(55)]
    assert "no point group" in caplog.text


def test_symmetric_molecule_and_single_atom():
    methane = Atoms(
        "CH4",
        positions=[
            (0, 0, 0),
            (0.63, 0.63, 0.63),
            (-0.63, -0.63, 0.63),
            (-0.63, 0.63, -0.63),
            (0.63, -0.63, -0.63),
        ],
    )
    assert [(s.element, s.members) for s in inequivalent_sites(methane)] == [("C", (0,)), ("H", (1, 2, 3, 4))]
    assert inequivalent_sites(Atoms("Cu")) == [EquivalentSite(0, "Cu", 1, (0,))]


def test_input_atoms_are_unchanged():
    for atoms in (spinel_fe3o4(), cuboctahedron()):
        atoms.positions[0] += 10.0  # outside the cell for the crystal; must stay there
        before = atoms.copy()
        inequivalent_sites(atoms, element="Fe" if atoms.pbc.all() else None)
        np.testing.assert_array_equal(atoms.positions, before.positions)
        np.testing.assert_array_equal(atoms.numbers, before.numbers)
        np.testing.assert_array_equal(atoms.cell[:], before.cell[:])
        np.testing.assert_array_equal(atoms.pbc, before.pbc)
        assert atoms.info == before.info
        assert set(atoms.arrays) == set(before.arrays)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="'Ni' is not in the structure"):
        inequivalent_sites(rutile(), element="Ni")
    slab = rutile()
    slab.pbc = (True, True, False)
    with pytest.raises(ValueError, match="mixed"):
        inequivalent_sites(slab)
    with pytest.raises(ValueError, match="empty"):
        inequivalent_sites(Atoms())
    with pytest.raises(ValueError, match="symprec"):
        inequivalent_sites(rutile(), symprec=0.0)
    with pytest.raises(ValueError, match="multiplicity"):
        EquivalentSite(index=0, element="Cu", multiplicity=2, members=(0,))


def test_site_weights_from_multiplicities():
    iron = inequivalent_sites(spinel_fe3o4(), element="Fe")
    weights = site_weights(iron)
    by_size = {site.multiplicity: site.index for site in iron}
    assert weights == {by_size[8]: pytest.approx(1 / 3), by_size[16]: pytest.approx(2 / 3)}
    assert sum(weights.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        site_weights([])


def test_weighted_average_exact_numbers():
    spectra = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    weights = np.array([1.0, 3.0])
    average = weighted_average(spectra, weights)
    np.testing.assert_allclose(average, [3.25, 4.25, 5.25])
    assert average.shape == (3,)
    np.testing.assert_array_equal(weights, [1.0, 3.0])  # not normalised in place
    np.testing.assert_allclose(weighted_average(spectra, [0, 2]), [4.0, 5.0, 6.0])


@pytest.mark.parametrize(
    ("spectra", "weights", "message"),
    [
        (np.ones((2, 3)), np.ones(3), "shape"),
        (np.ones(3), np.ones(3), "shape"),
        (np.ones((2, 3)), np.ones((2, 1)), "shape"),
        (np.ones((2, 3)), np.array([1.0, -0.5]), "negative"),
        (np.ones((2, 3)), np.zeros(2), "zero"),
        (np.ones((2, 3)), np.array([1.0, np.nan]), "non-finite"),
    ],
)
def test_weighted_average_rejects_bad_inputs(spectra, weights, message):
    with pytest.raises(ValueError, match=message):
        weighted_average(spectra, weights)
