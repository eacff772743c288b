"""Fidelity metrics and the calibration transform, on constructed cases with known answers, and
on the real Cu foil."""

from __future__ import annotations

import numpy as np
import pytest

from xasflow.experiment.fidelity import (
    CalibrationTransform,
    assess_reference,
    feature_energies,
    fidelity_metrics,
    fit_calibration,
)

GRID = np.arange(-12.0, 45.0 + 1e-9, 0.25)


def _xanes_like(energy: np.ndarray) -> np.ndarray:
    """An edge (arctangent step at 0 eV) with a white line at 8 eV and a peak at 20 eV."""
    step = 0.5 + np.arctan(energy / 1.5) / np.pi
    return (
        step
        + 0.45 * np.exp(-0.5 * ((energy - 8) / 2.0) ** 2)
        + 0.2 * np.exp(-0.5 * ((energy - 20) / 3.0) ** 2)
    )


def test_identical_spectra_have_r_one_and_zero_rmse():
    mu = _xanes_like(GRID)
    metrics = fidelity_metrics(GRID, mu, mu, (-12, 45))
    assert metrics.pearson_r == pytest.approx(1.0)
    assert metrics.spearman_r == pytest.approx(1.0)
    assert metrics.rmse == pytest.approx(0.0, abs=1e-12)


def test_rmse_and_correlation_of_an_offset_and_a_mirror():
    mu = _xanes_like(GRID)
    offset = fidelity_metrics(GRID, mu, mu + 0.1, (-12, 45))
    assert offset.pearson_r == pytest.approx(1.0)  # r ignores an offset, the RMSE does not
    assert offset.rmse == pytest.approx(0.1)
    mirrored = fidelity_metrics(GRID, mu, -mu, (-12, 45))
    assert mirrored.pearson_r == pytest.approx(-1.0)


def test_window_restricts_the_comparison():
    mu = _xanes_like(GRID)
    other = mu.copy()
    other[GRID > 30] += 0.5  # differs only above 30 eV
    assert fidelity_metrics(GRID, mu, other, (-12, 30)).rmse == pytest.approx(0.0, abs=1e-12)
    assert fidelity_metrics(GRID, mu, other, (-12, 45)).rmse > 0.2
    with pytest.raises(ValueError, match="at least 5"):
        fidelity_metrics(GRID, mu, other, (50, 60))


def test_feature_energies_find_the_constructed_peaks_and_the_edge():
    peaks, inflections = feature_energies(GRID, _xanes_like(GRID))
    assert peaks[0] == pytest.approx(8.0, abs=0.5)  # white line, pulled slightly by the step
    assert peaks[1] == pytest.approx(20.0, abs=0.6)
    assert inflections[0] == pytest.approx(0.0, abs=0.5)


def test_identity_transform_returns_the_spectrum():
    mu = _xanes_like(GRID)
    assert np.allclose(CalibrationTransform().apply(GRID, mu, GRID), mu)


def test_shift_moves_a_peak_and_stretch_scales_its_energy():
    mu = _xanes_like(GRID)
    shifted = CalibrationTransform(shift=2.0).apply(GRID, mu, GRID)
    assert feature_energies(GRID, shifted)[0][0] == pytest.approx(
        feature_energies(GRID, mu)[0][0] + 2.0, abs=0.1
    )
    stretched = CalibrationTransform(stretch=0.1).apply(GRID, mu, GRID)
    assert feature_energies(GRID, stretched)[0][1] == pytest.approx(
        1.1 * feature_energies(GRID, mu)[0][1], abs=0.3
    )


def test_broadening_keeps_the_area_of_a_peak_and_lowers_its_height():
    grid = np.arange(-40.0, 40.0, 0.1)
    peak = np.exp(-0.5 * (grid / 1.0) ** 2)
    broadened = CalibrationTransform(fwhm=3.0).apply(grid, peak, grid)
    assert broadened.sum() == pytest.approx(peak.sum(), rel=1e-3)
    # Gaussians add in quadrature: sigma 1 and FWHM 3 (sigma 1.274) give sigma 1.620
    assert broadened.max() == pytest.approx(1.0 / 1.620, rel=0.01)
    with pytest.raises(ValueError, match="broadening"):
        CalibrationTransform(fwhm=-1.0)


def test_fit_recovers_a_known_transform():
    fine = np.arange(-16.0, 53.0, 0.25)
    simulated = _xanes_like(fine)
    truth = CalibrationTransform(shift=-1.2, stretch=0.06, fwhm=2.5, fwhm_slope=0.0)
    measured = truth.apply(fine, simulated, GRID)
    fitted = fit_calibration(fine, simulated, GRID, measured, (-12, 45), energy_dependent=False)
    assert fitted.shift == pytest.approx(truth.shift, abs=0.15)
    assert fitted.stretch == pytest.approx(truth.stretch, abs=0.01)
    assert fitted.fwhm == pytest.approx(truth.fwhm, abs=0.3)
    metrics = fidelity_metrics(GRID, measured, fitted.apply(fine, simulated, GRID), (-12, 45))
    assert metrics.pearson_r > 0.9999


def test_transform_round_trips_through_a_dict():
    transform = CalibrationTransform(shift=0.5, stretch=0.1, fwhm=1.2, fwhm_slope=0.05)
    assert CalibrationTransform.from_dict(transform.to_dict()) == transform


def test_the_cu_foil_against_itself_is_perfect(shared_data):
    from xasflow.experiment import read_spectrum
    from xasflow.experiment.alignment import normalize_xanes

    foil = normalize_xanes(read_spectrum(shared_data / "experimental" / "cu_metal_rt.xdi"))
    fidelity, curves = assess_reference("cu", foil, foil, (-12, 45))
    assert fidelity.energy_offset == 0.0
    assert fidelity.raw.pearson_r == pytest.approx(1.0)
    assert fidelity.raw.rmse == pytest.approx(0.0, abs=1e-12)
    assert fidelity.calibrated.pearson_r > 0.9999
    assert curves["measured"].shape == curves["energy"].shape


def test_two_cu_foil_measurements_agree_better_than_cu_and_ni(shared_data):
    """Real data: the same material measured twice is closer than two different metals."""
    from xasflow.experiment import read_spectrum, to_relative_grid
    from xasflow.experiment.alignment import normalize_xanes

    def on_grid(name):
        return to_relative_grid(normalize_xanes(read_spectrum(shared_data / "experimental" / name)), GRID)

    cu_rt, cu_10k, ni = on_grid("cu_metal_rt.xdi"), on_grid("cu_metal_10K.xdi"), on_grid("ni_metal_rt.xdi")
    same = fidelity_metrics(GRID, cu_rt, cu_10k, (-12, 45))
    different = fidelity_metrics(GRID, cu_rt, ni, (-12, 45))
    assert same.pearson_r > 0.99
    assert same.rmse < different.rmse


# ---------------------------------------------------------------------------------------------
# one Gaussian broadening for calibration and pseudo-experiments


def test_gaussian_broadening_is_one_function_shared_with_pseudo_experiments():
    from xasflow.experiment.fidelity import gaussian_broaden
    from xasflow.inference import pseudo

    assert pseudo.gaussian_broaden is gaussian_broaden


def test_gaussian_broadening_keeps_area_flat_ends_and_accepts_a_scalar_fwhm():
    from xasflow.experiment.fidelity import gaussian_broaden

    grid = np.arange(-40.0, 40.0, 0.1)
    peak = np.exp(-0.5 * (grid / 1.0) ** 2)
    broadened = gaussian_broaden(grid, peak, 3.0)
    assert broadened.shape == peak.shape
    assert broadened.sum() == pytest.approx(peak.sum(), rel=1e-3)
    assert broadened.max() == pytest.approx(1.0 / 1.620, rel=0.01)  # sigma 1 (+) FWHM 3 -> 1.620
    step = _xanes_like(grid)
    assert np.allclose(gaussian_broaden(grid, np.ones((2, grid.size)), 5.0), 1.0)
    np.testing.assert_array_equal(gaussian_broaden(grid, step, 0.0), step)
    with pytest.raises(ValueError, match=">= 0 eV"):
        gaussian_broaden(grid, step, -1.0)


def test_gaussian_broadening_in_blocks_equals_one_block(monkeypatch):
    from xasflow.experiment import fidelity

    grid = np.arange(-20.0, 60.0, 0.1)
    spectra = np.vstack([_xanes_like(grid), _xanes_like(grid - 2.0)])
    fwhm = 1.0 + 0.05 * np.maximum(grid, 0.0)
    whole = fidelity.gaussian_broaden(grid, spectra, fwhm)
    monkeypatch.setattr(fidelity, "BROADENING_BLOCK", 37)
    np.testing.assert_allclose(fidelity.gaussian_broaden(grid, spectra, fwhm), whole, rtol=1e-12)


def test_energy_offset_is_withheld_between_absolute_and_relative_axes(shared_data):
    """A simulated spectrum on edge-relative energies (FDMNES) has no absolute E0 to subtract."""
    from dataclasses import replace

    from xasflow.experiment import read_spectrum
    from xasflow.experiment.alignment import normalize_xanes

    foil = read_spectrum(shared_data / "experimental" / "cu_metal_rt.xdi")
    measured = normalize_xanes(foil)
    relative = replace(foil, energy=foil.energy - 8979.0, energy_reference="relative:edge", kind="computed")
    simulated = normalize_xanes(relative)
    assert simulated.energy_reference == "relative:edge"
    fidelity, _ = assess_reference("cu", measured, simulated, (-12, 45))
    assert fidelity.energy_offset is None
    assert fidelity.raw.pearson_r == pytest.approx(1.0)  # the shapes still compare on E0
    assert fidelity.to_dict()["energy_offset_eV"] is None
