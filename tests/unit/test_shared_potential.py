"""One SCF potential per system (FEFF10's POT stage run once, reused by every site), and the
static-lattice spectra of measured references. Real FEFF10 runs throughout."""

from __future__ import annotations

import dataclasses

import ase.io
import numpy as np
import pytest

from xasflow.spectra.batch import read_batch, representative_site, run_batch
from xasflow.spectra.cache import SpectrumCache
from xasflow.spectra.engines import Feff10Engine, with_shared_potential
from xasflow.spectra.feff import FeffParams, cut_cluster, run_site
from xasflow.spectra.reference import ReferenceError, ReferenceSpec, compute_reference, reference_structure
from xasflow.structures.builders import BulkSpec, NanoparticleSpec, build_bulk, build_nanoparticle
from xasflow.structures.sampling import SiteChoice, write_manifest

SCF = FeffParams(
    cluster_radius=5.0,
    fms_radius=4.0,
    scf=True,
    scf_radius=3.0,
    core_hole="RPA",
    energy_min=-20.0,
    energy_max=60.0,
    energy_step=2.0,
)


def test_a_shared_potential_gives_the_per_site_spectrum_for_the_same_cluster(tmp_path):
    atoms = build_bulk(BulkSpec("Cu", "fcc", 3.615, (3, 3, 3)))
    cluster = cut_cluster(atoms, 0, SCF.cluster_radius)
    own = run_site(cluster, SCF, tmp_path / "own", "own SCF")
    engine = with_shared_potential(Feff10Engine(SCF), None, cluster, tmp_path / "potential", "potential")
    assert engine.potential is not None and (tmp_path / "potential" / "pot.bin").is_file()
    shared = engine.run_site(cluster, tmp_path / "shared", "shared SCF")
    assert own.status == shared.status == "ok"
    assert np.allclose(own.energy, shared.energy) and np.allclose(own.mu, shared.mu, atol=1e-6)
    # skipping the POT stage is where the time goes
    assert shared.engine_seconds < own.engine_seconds
    # the spectrum depends on the potential, so the cache key does too
    assert "shared_potential" in engine.key_parameters()
    assert "shared_potential" not in Feff10Engine(SCF).key_parameters()


def test_sharing_is_off_without_scf_or_when_asked_per_site():
    assert Feff10Engine(SCF).shares_potential
    assert not Feff10Engine(dataclasses.replace(SCF, scf=False)).shares_potential
    assert not Feff10Engine(dataclasses.replace(SCF, scf_sharing="site")).shares_potential
    with pytest.raises(ValueError, match="scf_sharing"):
        FeffParams(scf_sharing="cluster")


def test_the_most_bulk_like_site_carries_the_potential():
    manifest = [
        SiteChoice("np", 1, 3, "Cu", 12, 0, 1),
        SiteChoice("np", 0, 7, "Cu", 6, 1, 0),
        SiteChoice("np", 0, 9, "Cu", 12, 0, 0),
    ]
    assert representative_site(manifest) == manifest[2]  # CN 12, then the earliest frame


def test_every_batch_of_a_system_uses_the_same_potential_and_a_failure_is_recorded(tmp_path):
    particle = build_nanoparticle(NanoparticleSpec("Cu", "cuboctahedron", 3, 3.615))
    snapshots = tmp_path / "snapshots.extxyz"
    ase.io.write(snapshots, [particle], format="extxyz")
    sites = [SiteChoice("np", 0, 0, "Cu", 12, 0, 0), SiteChoice("np", 0, 1, "Cu", 5, 1, 1)]
    manifest = write_manifest(sites, tmp_path / "sites.csv")
    cache = SpectrumCache(tmp_path / "cache")
    first = run_batch(manifest, snapshots, 0, Feff10Engine(SCF), tmp_path / "batch_000", cache, 5.0)
    second = run_batch(manifest, snapshots, 1, Feff10Engine(SCF), tmp_path / "batch_001", cache, 5.0)
    assert first["succeeded"] == second["succeeded"] == 1
    inputs = [
        (tmp_path / batch / "potential" / "feff.inp").read_text() for batch in ("batch_000", "batch_001")
    ]
    assert inputs[0] == inputs[1]  # the second batch took the first one's potential (from the cache)
    site = tmp_path / "batch_001" / read_batch(tmp_path / "batch_001")[0]["directory"]
    assert "shared_potential" in (site / "params.json").read_text()

    # a potential that cannot be computed fails every site of the batch, with the reason
    impossible = dataclasses.replace(SCF, time_limit=1e-3)
    counts = run_batch(manifest, snapshots, 0, Feff10Engine(impossible), tmp_path / "batch_bad", None, 5.0)
    assert counts["failed"] == counts["requested"] == 1
    assert read_batch(tmp_path / "batch_bad")[0]["reason"].startswith("shared SCF potential failed")


def test_reference_structures_and_their_errors():
    hcp = reference_structure(ReferenceSpec("co", "co.xdi", "Co", "hcp", 2.507, 4.07))
    assert len(hcp) == 2 and hcp.cell.lengths()[2] == pytest.approx(4.07)
    with pytest.raises(ReferenceError, match="lattice"):
        reference_structure(ReferenceSpec("x", "x.xdi", "Cu", "diamond", 3.6))
    with pytest.raises(ReferenceError, match="cannot read structure file"):
        reference_structure(ReferenceSpec("x", "x.xdi", "Cu", structure_file="/nonexistent.cif"))


def test_a_bcc_reference_is_one_inequivalent_site_standing_for_the_cell(tmp_path):
    spec = ReferenceSpec("fe", "fe.xdi", "Fe", "bcc", 2.8665)
    params = dataclasses.replace(SCF, edge_tolerance=40.0)
    spectrum = compute_reference(spec, Feff10Engine(params), tmp_path / "fe", params.cluster_radius)
    assert spectrum.n_sites == 1 and spectrum.failed == 0
    assert (tmp_path / "fe" / "spectrum.csv").is_file() and (tmp_path / "fe" / "results.csv").is_file()
    # the Fe K edge (7112 eV) within the tolerance, and mu ~1 above it
    assert abs(spectrum.energy[np.argmax(np.gradient(spectrum.mu))] - 7112) < 30
    assert spectrum.mu[-10:].mean() == pytest.approx(1.0, abs=0.35)
