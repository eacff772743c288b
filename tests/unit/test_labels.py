"""The shared label module on structures whose answers are known, and the alloy/MC pipeline."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list

from xasflow.config import ConfigError, validate_config
from xasflow.structures.builders import (
    BulkSpec,
    NanoparticleSpec,
    build_bulk,
    build_nanoparticle,
    decorate,
    species_counts,
)
from xasflow.structures.io import read_labels
from xasflow.structures.labels import (
    LabelParams,
    cna_cutoff,
    compute_site_labels,
    reference_number_density,
)
from xasflow.structures.lammps_runner import structure_types
from xasflow.structures.pipeline import label_system, simulate_system
from xasflow.study import system_spec


def _cristobalite() -> Atoms:
    """Idealised beta-cristobalite: Si on a diamond lattice, O at the middle of each Si-Si bond."""
    silicon = bulk("Si", "diamond", a=7.16, cubic=True)
    first, second, offset = neighbor_list("ijS", silicon, 3.2)
    oxygens = []
    for i, j, shift in zip(first, second, offset, strict=True):
        if i < j or (i == j and tuple(shift) > (0, 0, 0)):
            continue
        partner = silicon.positions[j] + shift @ silicon.cell.array
        oxygens.append(0.5 * (silicon.positions[i] + partner))
    atoms = silicon + Atoms(["O"] * len(oxygens), positions=oxygens, cell=silicon.cell, pbc=True)
    atoms.wrap()
    return atoms


def test_bcc_shell_coordination_numbers_are_eight_and_six():
    atoms = build_bulk(BulkSpec("Fe", "bcc", 2.866, (3, 3, 3)))
    labels = compute_site_labels(atoms, LabelParams(cn_cutoff=2.7, shell_edges=(2.7, 3.3)))
    assert np.all(labels.shell_cn[:, 0] == 8)
    assert np.all(labels.shell_cn[:, 1] == 6)
    assert np.all(labels.coordination_number == 8)


def test_fcc_has_twelve_first_and_six_second_neighbours():
    atoms = build_bulk(BulkSpec("Cu", "fcc", 3.615, (3, 3, 3)))
    labels = compute_site_labels(atoms, LabelParams(shell_edges=(3.1, 4.0)))
    assert np.all(labels.coordination_number == 12)
    assert np.all(labels.shell_cn == [12, 6])


def test_bain_path_ends_are_bcc_and_fcc():
    bcc = build_bulk(BulkSpec("Fe", "bct", 2.866, (3, 3, 3), c_over_a=1.0))
    assert np.all(compute_site_labels(bcc, LabelParams(cn_cutoff=2.7)).coordination_number == 8)
    # fcc seen as bct: a_bct = a_fcc / sqrt(2), c = a_fcc
    a_fcc = 3.6
    fcc = build_bulk(BulkSpec("Fe", "bct", a_fcc / np.sqrt(2), (4, 4, 3), c_over_a=np.sqrt(2)))
    assert np.all(compute_site_labels(fcc, LabelParams(cn_cutoff=2.9)).coordination_number == 12)
    middle = build_bulk(BulkSpec("Fe", "bct", 2.7, (3, 3, 3), c_over_a=1.2))
    assert len(set(compute_site_labels(middle, LabelParams(cn_cutoff=2.9)).coordination_number)) == 1


def test_cristobalite_silicon_valence_is_four_and_partial_rdfs_integrate_to_partial_cns():
    atoms = _cristobalite()
    params = LabelParams(
        cn_cutoff=2.0, pair_cutoffs=((("Si", "Si"), 3.3),), valence_ligand="O", r_min=0.8, r_max=4.0, n_r=321
    )
    labels = compute_site_labels(atoms, params)
    assert labels.species == ("O", "Si")
    silicon = labels.element == "Si"
    oxygen = ~silicon
    assert np.all(labels.valence[silicon] == 4)
    assert np.all(labels.valence[oxygen] == -1)
    assert np.all(labels.partial_cn[oxygen] == [0, 2])
    # Si-Si within 3.3 A: the 4 diamond neighbours at 3.10 A
    assert np.all(labels.partial_cn[silicon] == [4, 4])
    assert np.allclose(labels.local_composition[silicon], [0.5, 0.5])
    r = labels.r
    volume = atoms.get_volume()
    rho_oxygen = np.sum(oxygen) / volume
    shell = r < 2.0
    si_o = np.trapezoid(4 * np.pi * r[shell] ** 2 * rho_oxygen * labels.partial_rdf[0, 0, shell], r[shell])
    assert si_o == pytest.approx(4, abs=0.05)
    # the Si-O peak is at a sqrt(3)/8 = 1.55 A
    assert r[np.argmax(labels.partial_rdf[0, 0])] == pytest.approx(7.16 * np.sqrt(3) / 8, abs=0.03)


def test_random_alloy_partial_cns_follow_the_composition():
    atoms = decorate(build_bulk(BulkSpec("Cu", "fcc", 3.6, (6, 6, 6))), {"Cu": 3, "Ni": 1}, seed=5)
    counts = species_counts({"Cu": 3, "Ni": 1}, len(atoms))
    assert counts == {"Cu": 648, "Ni": 216}
    assert (np.asarray(atoms.get_chemical_symbols()) == "Ni").sum() == 216
    labels = compute_site_labels(atoms, LabelParams())
    assert np.all(labels.partial_cn.sum(axis=1) == 12)
    assert labels.partial_cn[:, 1].mean() == pytest.approx(12 * 216 / 863, rel=0.02)
    again = decorate(build_bulk(BulkSpec("Cu", "fcc", 3.6, (6, 6, 6))), {"Cu": 3, "Ni": 1}, seed=5)
    assert again.get_chemical_symbols() == atoms.get_chemical_symbols()


def test_species_counts_round_to_the_total():
    assert species_counts({"Si": 1, "O": 1.5}, 100) == {"Si": 40, "O": 60}
    assert sum(species_counts({"Si": 1, "O": 0.3}, 97).values()) == 97
    with pytest.raises(ValueError, match="composition"):
        species_counts({"Si": -1}, 10)


def test_periodic_cells_have_no_surface_and_clusters_do():
    atoms = build_nanoparticle(NanoparticleSpec("Cu", "icosahedron", 3, 3.615))
    labels = compute_site_labels(atoms, LabelParams(), reference_number_density("fcc", 3.615))
    assert labels.surface.sum() == 42
    periodic = _cristobalite()  # every atom has few neighbours, none is a surface atom
    assert compute_site_labels(periodic, LabelParams(cn_cutoff=2.0)).surface.sum() == 0


def test_common_neighbour_analysis_types_crystals():
    assert np.all(
        structure_types(bulk("Cu", "fcc", a=3.615, cubic=True).repeat(3), cna_cutoff("fcc", 3.615)) == 1
    )
    assert np.all(
        structure_types(bulk("Fe", "bcc", a=2.866, cubic=True).repeat(3), cna_cutoff("bcc", 2.866)) == 3
    )
    cluster = build_nanoparticle(NanoparticleSpec("Cu", "cuboctahedron", 4, 3.615))
    types = structure_types(cluster, cna_cutoff("fcc", 3.615))
    # the 55 interior atoms of a 147-atom cuboctahedron are fcc; surface atoms are not
    assert np.sum(types == 1) == 55


def _system(**extra):
    base = {"kind": "nanoparticle", "temperature": 600, "potential": {"generator": "zhou2004"}}
    return {**base, **extra}


def test_config_rules_for_alloys_and_new_kinds():
    good = validate_config(
        {
            "absorber": "Pt",
            "systems": {
                "ptcu": _system(
                    composition={"Pt": 1, "Cu": 1},
                    shape="icosahedron",
                    shells=3,
                    mc={"interval": 10, "attempts": 5},
                )
            },
        }
    )
    assert good["systems"]["ptcu"]["structure_seed"] == 1
    bad = [
        (_system(element="Pt", composition={"Pt": 1}, shape="icosahedron", shells=3), "exactly one"),
        (
            _system(element="Pt", shape="icosahedron", shells=3, mc={"interval": 10, "attempts": 5}),
            "two or more",
        ),
        (_system(element="Pt", shape="icosahedron", shells=3, lattice="bct"), "bct"),
        ({**_system(element="Pt"), "kind": "polycrystal", "n_grains": 4}, "box_length"),
        ({**_system(composition={"Si": 1, "O": 2}), "kind": "amorphous", "n_atoms": 90}, "density"),
        (_system(element="Pt", shape="icosahedron", shells=3, potential={"style": "eam"}), "potential"),
    ]
    for system, message in bad:
        with pytest.raises(ConfigError, match=message):
            validate_config({"absorber": "Pt", "systems": {"s": system}})
    with pytest.raises(ConfigError, match="absorber"):
        validate_config(
            {"absorber": "Au", "systems": {"s": _system(element="Pt", shape="icosahedron", shells=3)}}
        )


@pytest.mark.slow
def test_monte_carlo_swaps_segregate_a_pt_cu_particle_away_from_the_random_reference(tmp_path):
    particle = _system(
        composition={"Pt": 0.5, "Cu": 0.5},
        shape="cuboctahedron",
        shells=4,
        lattice_constant=3.77,
        md={"equilibration_steps": 2000, "snapshot_interval": 500, "n_snapshots": 2},
    )
    config = validate_config(
        {
            "absorber": "Pt",
            "systems": {"ptcu": {**particle, "mc": {"interval": 10, "attempts": 5}}, "random": particle},
        }
    )
    params = LabelParams.from_config(config["labels"])
    summaries = {}
    for name, entry in config["systems"].items():
        spec = system_spec(name, entry)
        out = tmp_path / name
        snapshots = simulate_system(spec, out)
        label_system(snapshots, spec, params, out / "labels.npz", out / "initial.extxyz")
        summaries[name] = json.loads((out / "labels.json").read_text())
        record = json.loads((out / "md.json").read_text())
        assert record["potential_file"].endswith("zhou2004_Cu-Pt.eam.alloy")
        assert len(record["potential_sha256"]) == 64
    segregated, random = summaries["ptcu"], summaries["random"]
    # Cu (lower cohesive energy in the Zhou potential, lower surface energy) enriches the surface
    # (measured: +0.22 and +0.28 for structure seeds 1 and 2 after 3000 MD steps with swaps)
    assert segregated["surface_segregation"]["Cu"] > 0.15
    # MD alone barely reorders the alloy: only atoms whose CN crosses the surface threshold move
    # between the two sets (measured +0.04 and +0.03)
    assert abs(random["surface_segregation"]["Cu"]) < 0.08
    gained = segregated["surface_composition_mean"]["Cu"] - random["surface_composition_mean"]["Cu"]
    assert gained > 0.12
    assert json.loads((tmp_path / "ptcu" / "md.json").read_text())["mc_swap_accepted"] > 50
    labels = read_labels(tmp_path / "ptcu" / "labels.npz")
    assert labels["reference_surface_composition"] == pytest.approx(
        [segregated["reference_surface_composition"][s] for s in ("Cu", "Pt")]
    )
    pt = labels["element"] == "Pt"
    # partial CNs of Pt: Pt-Cu + Pt-Pt is the total, and the core is Pt-rich, so Pt-Pt > Pt-Cu
    assert np.all(labels["partial_cn"][pt].sum(axis=1) == labels["coordination_number"][pt])
    assert labels["partial_cn"][pt, 1].mean() > labels["partial_cn"][pt, 0].mean()
