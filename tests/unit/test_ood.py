"""The out-of-distribution flag on real data: FEFF10 spectra of fcc Cu (ideal and thermally
displaced), calibrated on the measured Cu foil as the workflow does, against the other Cu
measurements of shared data (not flagged) and an Fe foil (flagged)."""

from __future__ import annotations

import numpy as np
import pytest

from xasflow.experiment import read_spectrum, to_relative_grid
from xasflow.experiment.alignment import normalize_xanes
from xasflow.experiment.fidelity import fit_calibration
from xasflow.models.data import Normalization
from xasflow.models.ood import distance_threshold, nearest_distance, reference_spectra
from xasflow.models.targets import parse_targets
from xasflow.spectra.engines import Feff10Engine, with_shared_potential
from xasflow.spectra.feff import FeffParams, cut_cluster
from xasflow.spectrum import Spectrum
from xasflow.structures.builders import BulkSpec, build_bulk

pytestmark = pytest.mark.slow

GRID = np.arange(-16.0, 55.0 + 1e-9, 0.75)
WINDOW = (-12.0, 20.0)
PARAMS = FeffParams(cluster_radius=5.0, fms_radius=4.6, scf=True, scf_radius=3.5, core_hole="RPA")


@pytest.fixture(scope="module")
def copper_spectra(tmp_path_factory):
    """(mu (n, len(GRID)), displacement of each) for the ideal lattice and displaced copies."""
    scratch = tmp_path_factory.mktemp("ood")
    ideal = build_bulk(BulkSpec("Cu", "fcc", 3.615, (3, 3, 3)))
    engine = with_shared_potential(
        Feff10Engine(PARAMS), None, cut_cluster(ideal, 0, PARAMS.cluster_radius), scratch / "pot", "potential"
    )
    spectra, displacements = [], []
    for index, (sigma, seed) in enumerate([(0.0, 0), (0.04, 1), (0.04, 2), (0.07, 3), (0.07, 4), (0.1, 5)]):
        atoms = ideal.copy()
        if sigma:
            atoms.rattle(sigma, seed=seed)
        result = engine.run_site(cut_cluster(atoms, 0, PARAMS.cluster_radius), scratch / f"site{index}", "cu")
        assert result.status == "ok", result.reason
        normalized = normalize_xanes(
            Spectrum(result.energy, result.mu, source=f"site{index}", kind="computed")
        )
        spectra.append(to_relative_grid(normalized, GRID))
        displacements.append(sigma)
    return np.array(spectra), np.array(displacements)


def _measured(shared_data, name):
    return to_relative_grid(normalize_xanes(read_spectrum(shared_data / "experimental" / name)), GRID)


def test_fe_foil_is_flagged_and_other_cu_measurements_are_not(copper_spectra, shared_data):
    mu, displacement = copper_spectra
    foil = _measured(shared_data, "cu_metal_rt.xdi")  # the calibration reference
    transform = fit_calibration(GRID, mu.mean(axis=0), GRID, foil, WINDOW)
    calibrated = transform.apply(GRID, mu, GRID)
    inside = (GRID >= WINDOW[0]) & (GRID <= WINDOW[1])
    train, validation = (
        calibrated[displacement != 0.07][:, inside],
        calibrated[displacement == 0.07][:, inside],
    )
    labels = {"coordination_number": np.full(len(train), 12.0), "rdf": np.zeros((len(train), 3))}
    normalization = Normalization.fit(train, labels, parse_targets(None))
    systems = np.array([f"sigma{value}" for value in displacement[displacement != 0.07]])
    references = normalization.standardize_mu(reference_spectra(train, systems, np.zeros(len(train))))

    def standardized(spectrum):
        return normalization.standardize_mu(spectrum[inside][None, :])

    threshold = distance_threshold(
        references, normalization.standardize_mu(validation), standardized(foil)[0]
    )
    for name in ("cu_metal_10K.xdi", "cu_10k.xmu", "cu_50k.xmu", "cu_150k.xmu"):
        distance = nearest_distance(references, standardized(_measured(shared_data, name)))[0]
        assert distance <= threshold, f"{name}: {distance:.2f} > {threshold:.2f}"
    iron = nearest_distance(references, standardized(_measured(shared_data, "fe_metal_rt.xdi")))[0]
    assert iron > threshold, f"Fe foil: {iron:.2f} <= {threshold:.2f}"
