"""Zhou-Johnson-Wadley EAM setfl files: analytic functions, file layout, and real LAMMPS relaxations."""

import math

import numpy as np
import pytest

from xasflow.structures.lammps_runner import open_lammps
from xasflow.structures.zhou_eam import (
    CUTOFF_PER_RE,
    ZHOU_2004,
    electron_density,
    embedding_energy,
    mixed_pair_potential,
    pair_potential,
    write_setfl,
)

CELLS = 3  # conventional cubic cells per edge


def _relax(tmp_path, symbols, lattice, start_lattice_constant, alloy_fraction=None):
    """Minimize a periodic crystal at zero pressure; return (lattice constant A, energy eV/atom)."""
    potential = write_setfl(symbols, tmp_path / f"{''.join(symbols)}.eam.alloy")
    lmp = open_lammps(tmp_path / "log.lammps")
    try:
        for command in (
            "units metal",
            "atom_style atomic",
            "boundary p p p",
            f"lattice {lattice} {start_lattice_constant}",
            f"region box block 0 {CELLS} 0 {CELLS} 0 {CELLS}",
            f"create_box {len(symbols)} box",
            "create_atoms 1 box",
        ):
            lmp.command(command)
        if alloy_fraction is not None:
            lmp.command(f"set type 1 type/ratio 2 {alloy_fraction} 4321")
        lmp.command("pair_style eam/alloy")
        lmp.command(f"pair_coeff * * {potential} {' '.join(symbols)}")
        lmp.command("fix 1 all box/relax iso 0.0")
        lmp.command("minimize 1e-12 1e-12 5000 10000")
        return lmp.get_thermo("lx") / CELLS, lmp.get_thermo("pe") / lmp.get_natoms()
    finally:
        lmp.close()


# element, experimental lattice constant (A), cohesive energy the paper's table reproduces (eV),
# experimental cohesive energy (eV), and whether the 3 % check against experiment applies.
# The table gives Au 3.93 and Al 3.58 eV exactly: those are its fit targets, 3.1 % and 6.5 %
# above the experimental values used here, a property of the published potential, not of this
# code, so for those two the test checks the published value only.
PURE_METALS = [
    ("Cu", 3.615, 3.54, 3.54, True),
    ("Ni", 3.524, 4.45, 4.45, True),
    ("Pd", 3.891, 3.91, 3.89, True),
    ("Pt", 3.924, 5.77, 5.77, True),
    ("Au", 4.078, 3.93, 3.81, False),
    ("Al", 4.050, 3.58, 3.36, False),
    ("Fe", 2.866, 4.29, 4.28, True),
]


@pytest.mark.parametrize(
    ("symbol", "experimental_a", "published_ec", "experimental_ec", "check_exp"), PURE_METALS
)
def test_pure_metal_relaxes_to_published_lattice_constant_and_cohesive_energy(
    tmp_path, symbol, experimental_a, published_ec, experimental_ec, check_exp
):
    element = ZHOU_2004[symbol]
    lattice_constant, energy = _relax(tmp_path, [symbol], element.lattice, 1.03 * element.lattice_constant)
    cohesive_energy = -energy
    assert lattice_constant == pytest.approx(element.lattice_constant, rel=0.01)
    assert lattice_constant == pytest.approx(experimental_a, rel=0.015)
    assert cohesive_energy == pytest.approx(published_ec, rel=0.005)
    if check_exp:
        assert cohesive_energy == pytest.approx(experimental_ec, rel=0.03)


def test_lattice_constants_follow_the_structure():
    assert ZHOU_2004["Cu"].lattice_constant == pytest.approx(math.sqrt(2) * 2.556162)
    assert ZHOU_2004["Fe"].lattice_constant == pytest.approx(2 * 2.481987 / math.sqrt(3))
    assert ZHOU_2004["Ti"].lattice_constant == pytest.approx(2.933872)
    paper_elements = "Cu Ag Au Ni Pd Pt Al Pb Fe Mo Ta W Mg Co Ti Zr".split()
    assert set(paper_elements) <= set(ZHOU_2004)


@pytest.mark.parametrize("solute", ["Ni", "Cu"])
def test_random_pt_alloy_relaxes_between_the_pure_lattice_constants(tmp_path, solute):
    symbols = ["Pt", solute]
    lattice_constant, energy = _relax(
        tmp_path, symbols, "fcc", ZHOU_2004["Pt"].lattice_constant, alloy_fraction=0.5
    )
    lines = (tmp_path / f"Pt{solute}.eam.alloy").read_text().splitlines()
    assert lines[3].split() == ["2", "Pt", solute]
    assert lines[5].split()[:2] == ["78", "195.08"]
    pure = sorted(ZHOU_2004[symbol].lattice_constant for symbol in symbols)
    assert pure[0] < lattice_constant < pure[1]
    assert energy < 0


def test_unknown_element_is_named_and_no_file_is_left(tmp_path):
    with pytest.raises(ValueError, match="'Xx'.*valid elements: Cu"):
        write_setfl(["Cu", "Xx"], tmp_path / "CuXx.eam.alloy")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("symbol", sorted(ZHOU_2004))
def test_embedding_is_continuous_and_functions_vanish_at_the_cutoff(symbol):
    element = ZHOU_2004[symbol]
    for joint in (element.rho_n, element.rho_o):
        below, above = embedding_energy(element, [joint * (1 - 1e-12), joint])
        assert above == pytest.approx(below, rel=1e-5)
    assert abs(float(embedding_energy(element, 0.0))) < 1e-5
    cutoff = CUTOFF_PER_RE * element.re
    assert abs(float(pair_potential(element, cutoff))) < 1e-4
    assert float(electron_density(element, cutoff)) < 1e-4 * element.fe


def test_mixing_rule_is_symmetric_and_reduces_to_the_pure_pair():
    r = np.linspace(1.5, 6.0, 50)
    pt, cu = ZHOU_2004["Pt"], ZHOU_2004["Cu"]
    np.testing.assert_allclose(mixed_pair_potential(pt, cu, r), mixed_pair_potential(cu, pt, r))
    np.testing.assert_allclose(mixed_pair_potential(pt, pt, r), pair_potential(pt, r))
    assert abs(float(mixed_pair_potential(pt, cu, CUTOFF_PER_RE * pt.re))) < 1e-4


def test_setfl_tables_hold_the_analytic_functions(tmp_path):
    n_r, n_rho = 500, 400
    path = write_setfl(["Cu", "Ni"], tmp_path / "CuNi.eam.alloy", n_r=n_r, n_rho=n_rho)
    lines = path.read_text().splitlines()
    n_rho_read, drho, n_r_read, dr, cutoff = lines[4].split()
    assert (int(n_rho_read), int(n_r_read)) == (n_rho, n_r)
    assert float(cutoff) == pytest.approx(CUTOFF_PER_RE * ZHOU_2004["Cu"].re)
    cu_header = lines[5].split()
    assert cu_header == ["29", "63.546", f"{ZHOU_2004['Cu'].lattice_constant:.6f}", "fcc"]
    # after the Cu header: F(rho), f(r), then the Ni header line and its tables, then 3 pairs
    cu_values = np.array(" ".join(lines[6 : 6 + (n_rho + n_r) // 5]).split(), dtype=float)
    rho = np.arange(n_rho) * float(drho)
    r = np.arange(n_r) * float(dr)
    np.testing.assert_allclose(cu_values[:n_rho], embedding_energy(ZHOU_2004["Cu"], rho), rtol=1e-12)
    np.testing.assert_allclose(cu_values[n_rho:], electron_density(ZHOU_2004["Cu"], r), rtol=1e-12)
    pairs = np.array(" ".join(lines[-3 * n_r // 5 :]).split(), dtype=float).reshape(3, n_r)
    cu, ni = ZHOU_2004["Cu"], ZHOU_2004["Ni"]
    np.testing.assert_allclose(pairs[1], r * mixed_pair_potential(ni, cu, r), rtol=1e-12, atol=1e-300)
    assert [p.name for p in tmp_path.iterdir()] == ["CuNi.eam.alloy"]
