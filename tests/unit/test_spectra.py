"""FEFF10 input generation, cluster cutting and real FEFF10 runs (feff10-rs)."""

import numpy as np
import pytest

from xasflow.spectra.batch import read_batch, run_batch
from xasflow.spectra.cache import SpectrumCache
from xasflow.spectra.engines import Feff10Engine
from xasflow.spectra.feff import (
    Cluster,
    FeffParams,
    check_spectrum,
    cut_cluster,
    feff_input,
    read_xmu,
    run_site,
)
from xasflow.structures.builders import BulkSpec, NanoparticleSpec, build_bulk, build_nanoparticle
from xasflow.structures.sampling import SiteChoice, write_manifest

FAST = FeffParams(cluster_radius=5.0, fms_radius=4.0, energy_min=-20.0, energy_max=60.0, energy_step=2.0)


def test_periodic_cluster_uses_images_across_the_cell_boundary():
    atoms = build_bulk(BulkSpec("Cu", "fcc", 3.615, (3, 3, 3)))
    corner = int(np.argmin(np.linalg.norm(atoms.positions, axis=1)))  # the atom at the origin
    cluster = cut_cluster(atoms, corner, 3.0)
    assert len(cluster.symbols) == 13  # absorber + 12 neighbours, 8 of them are periodic images
    assert np.allclose(cluster.positions[0], 0)
    assert np.allclose(np.linalg.norm(cluster.positions[1:], axis=1), 3.615 / np.sqrt(2))
    distances = np.linalg.norm(cut_cluster(atoms, corner, 6.0).positions, axis=1)
    assert np.all(np.diff(distances) >= -1e-12)  # sorted by distance


def test_feff_input_lists_potentials_with_stoichiometry():
    cluster = Cluster(
        ("Cu", "Cu", "Ni", "Cu"), np.array([[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]], float)
    )
    text = feff_input(cluster, FeffParams(), "test")
    lines = text.splitlines()
    potentials = lines[lines.index("POTENTIALS") + 2 : lines.index("POTENTIALS") + 5]
    assert potentials[0].split() == ["0", "29", "Cu", "-1", "-1", "0"]
    assert potentials[1].split() == ["1", "28", "Ni", "-1", "-1", "1"]
    assert potentials[2].split() == ["2", "29", "Cu", "-1", "-1", "2"]
    atoms_block = lines[lines.index("ATOMS") + 1 : lines.index("END")]
    assert [line.split()[3] for line in atoms_block] == ["0", "2", "1", "2"]
    assert "FMS 4.6 0" in lines and "COREHOLE FSR" in lines
    assert not any(line.startswith("SCF") for line in lines)
    assert any(
        line.startswith("SCF 4.0") for line in feff_input(cluster, FeffParams(scf=True), "t").splitlines()
    )


def test_check_spectrum_reasons():
    energy = np.linspace(-20, 60, 81)
    good = 1 / (1 + np.exp(-energy / 2))
    assert check_spectrum(energy, good, 0.35) == ""
    assert "non-finite" in check_spectrum(energy, np.where(energy > 10, np.nan, good), 0.35)
    assert "negative" in check_spectrum(energy, good - 0.5, 0.35)
    assert "not within" in check_spectrum(energy, 3 * good, 0.35)
    assert "does not reach" in check_spectrum(energy[:30], good[:30], 0.35)


def test_exafs_mode_tolerates_a_dip_at_the_start_of_the_k_grid_only():
    # FEFF's EXAFS grid starts at k = 0; a slightly negative mu there is no physics failure
    relative = -11.5 + 3.81 * np.linspace(0, 12, 241) ** 2
    mu = np.where(relative < 20, 0.8, 1.0)
    dipped = mu.copy()
    dipped[:3] = -0.01  # k < 0.15 / A
    assert "negative" in check_spectrum(relative, dipped, 0.35)
    assert check_spectrum(relative, dipped, 0.35, mode="exafs") == ""
    late = mu.copy()
    late[100] = -0.01  # k = 5 / A
    assert "negative" in check_spectrum(relative, late, 0.35, mode="exafs")


@pytest.mark.slow
def test_feff10_computes_a_physical_cu_k_edge(tmp_path):
    atoms = build_bulk(BulkSpec("Cu", "fcc", 3.615, (3, 3, 3)))
    cluster = cut_cluster(atoms, 0, FAST.cluster_radius)
    result = run_site(cluster, FAST, tmp_path / "site", "Cu fcc")
    assert result.status == "ok", result.reason
    energy, relative, mu = read_xmu(tmp_path / "site" / "xmu.dat")
    # FEFF's absolute energies are within ~15 eV of the tabulated Cu K edge (8979 eV)
    assert abs(np.interp(0.0, relative, energy) - 8979) < 15
    assert mu[relative < -10].max() < 0.1  # below the edge: almost no absorption
    assert 0.7 < mu[(relative > 25) & (relative < 55)].mean() < 1.3
    kept = {path.name for path in (tmp_path / "site").iterdir()}
    assert {"feff.inp", "xmu.dat", "params.json", "log.dat"} <= kept
    assert not any(name.endswith(".bin") for name in kept)
    assert result.engine_seconds > 0


@pytest.mark.slow
def test_batch_records_a_failed_site_with_its_reason_and_keeps_the_others(tmp_path):
    particle = build_nanoparticle(NanoparticleSpec("Cu", "cuboctahedron", 3, 3.615))
    import ase.io

    snapshots = tmp_path / "snapshots.extxyz"
    ase.io.write(snapshots, [particle], format="extxyz")
    sites = [
        SiteChoice("np", 0, 0, "Cu", 12, 0, 0),
        SiteChoice("np", 0, 1, "Cu", 5, 1, 0),
    ]
    manifest = write_manifest(sites, tmp_path / "sites.csv")
    # an impossible tolerance makes FEFF's own (physical) result fail the post-edge check
    strict = FeffParams(**{**FAST.__dict__, "post_edge_tolerance": 1e-6})
    counts = run_batch(manifest, snapshots, 0, Feff10Engine(strict), tmp_path / "batch_000", None, 5.0)
    assert counts == {"requested": 2, "succeeded": 0, "failed": 2, "computed": 2, "cached": 0}
    rows = read_batch(tmp_path / "batch_000")
    assert all("not within 1e-06 of 1" in row["reason"] for row in rows)
    assert all((tmp_path / "batch_000" / row["directory"] / "log.dat").exists() for row in rows)

    cache = SpectrumCache(tmp_path / "cache")
    counts = run_batch(manifest, snapshots, 0, Feff10Engine(FAST), tmp_path / "batch_ok", cache, 5.0)
    assert counts == {"requested": 2, "succeeded": 2, "failed": 0, "computed": 2, "cached": 0}
    # failed results are never cached; successful ones are reused by the next run
    counts = run_batch(manifest, snapshots, 0, Feff10Engine(FAST), tmp_path / "batch_again", cache, 5.0)
    assert counts == {"requested": 2, "succeeded": 2, "failed": 0, "computed": 0, "cached": 2}
    rows = read_batch(tmp_path / "batch_ok")
    assert all(row["mu"].shape == row["energy"].shape for row in rows)
