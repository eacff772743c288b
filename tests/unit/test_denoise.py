"""The self-supervised stack denoiser (xasflow.inference.denoise) on stacks mixed from the
measured Fe K references in ../shared/data/experimental, with Poisson counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.optimize import nnls

from xasflow.config import load_schema
from xasflow.errors import UserError
from xasflow.experiment import read_spectrum
from xasflow.experiment.normalization import normalize
from xasflow.inference.denoise import DenoiseError, DenoiseSettings, background_basis, denoise_stack

REFERENCE_FILES = ("fe_metal_rt.xdi", "feo_rt1.xdi", "fe2o3_rt.xdi", "fe3c_rt.xdi")
ENERGY = np.linspace(7095.0, 7194.0, 100)  # eV, across the Fe K edge
SIZE = 32  # pixels per side of the test images
FAST = {"epochs": 12, "seed": 3}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def references(shared_data) -> np.ndarray:
    """(4, 100) normalized mu of Fe foil, FeO, Fe2O3 and Fe3C on ENERGY."""
    rows = []
    for name in REFERENCE_FILES:
        normalized = normalize(read_spectrum(shared_data / "experimental" / name))
        rows.append(np.interp(ENERGY, normalized.energy, normalized.norm))
    return np.asarray(rows)


def _stack(references, dose, seed=0, size=SIZE):
    """Poisson counts (P, E), true fractions (P, 4) summing to 1, noise-free mu (P, E)."""
    rng = np.random.default_rng(seed)
    fields = np.stack(
        [gaussian_filter(rng.normal(size=(size, size)), size / 8, mode="wrap") for _ in references]
    )
    weights = np.exp(1.5 * fields / fields.std(axis=(1, 2), keepdims=True))
    fractions = (weights / weights.sum(axis=0)).reshape(len(references), -1).T
    basis = background_basis(ENERGY, 1)
    clean = np.clip(fractions @ references + 0.1 * basis[0] + 0.02 * basis[1], 0.0, None)
    return rng.poisson(dose * clean).astype(np.float32), fractions, clean


def _nnls_fractions(mu, references):
    basis = background_basis(ENERGY, 1)
    design = np.vstack([references, basis, -basis]).T
    return np.array([nnls(design, spectrum)[0][: len(references)] for spectrum in mu])


def _rmse(estimate, truth):
    return float(np.sqrt(np.mean((estimate - truth) ** 2)))


def _counts_settings(dose, **changes):
    return DenoiseSettings(input="counts", counts_per_unit=float(dose), **{**FAST, **changes})


@pytest.fixture(scope="module")
def low_dose(references):
    """A 32x32 stack at 10 counts per pixel per energy, denoised once for several tests."""
    torch.set_num_threads(1)
    counts, fractions, clean = _stack(references, dose=10)
    result = denoise_stack(counts, ENERGY, references, _counts_settings(10), image_shape=(SIZE, SIZE))
    return counts, fractions, clean, result


def test_denoised_spectra_are_closer_to_the_truth_than_the_counts(low_dose):
    counts, _, clean, result = low_dose
    assert result.denoised.shape == counts.shape and result.denoised.dtype == np.float32
    noisy_error = _rmse(counts / 10, clean)
    denoised_error = _rmse(result.denoised / 10, clean)
    assert denoised_error < 0.25 * noisy_error, (denoised_error, noisy_error)
    assert result.loss_history.shape == (FAST["epochs"],) and np.all(np.isfinite(result.loss_history))


def test_fractions_are_non_negative_and_shaped_per_pixel(low_dose, references):
    counts, _, _, result = low_dose
    assert result.fractions.shape == result.network_fractions.shape == (counts.shape[0], len(references))
    assert result.fractions.min() >= 0.0 and result.network_fractions.min() >= 0.0
    assert result.background.shape == counts.shape
    # what the result holds is consistent: the spectrum is the mixture plus the background
    explained = (result.fractions @ references) * 10 + result.background + result.residual
    np.testing.assert_allclose(result.denoised, explained, atol=1e-3)


def test_fraction_maps_at_low_dose_beat_per_pixel_fits_by_half(low_dose, references):
    counts, fractions, _, result = low_dose
    raw = _rmse(_nnls_fractions(counts / 10, references), fractions)
    denoised = _rmse(result.fractions, fractions)
    assert denoised <= 0.5 * raw, (denoised, raw)


def test_maps_at_high_dose_are_no_worse_than_per_pixel_fits(references):
    counts, fractions, _ = _stack(references, dose=3000, seed=1)
    result = denoise_stack(
        counts, ENERGY, references, _counts_settings(3000, epochs=6), image_shape=(SIZE, SIZE)
    )
    raw = _rmse(_nnls_fractions(counts / 3000, references), fractions)
    assert _rmse(result.fractions, fractions) <= 1.05 * raw


def test_mu_input_and_pixels_without_neighbours(references):
    counts, _, clean = _stack(references, dose=30, seed=2, size=16)
    mu = counts / 30
    spatial = denoise_stack(mu, ENERGY, references, FAST, image_shape=(16, 16))
    alone = denoise_stack(mu, ENERGY, references, FAST)
    assert _rmse(spatial.denoised, clean) < 0.5 * _rmse(mu, clean)
    # alone, a pixel can only be fitted by the physics; still far better than the raw spectrum
    assert _rmse(alone.denoised, clean) < 0.6 * _rmse(mu, clean)
    assert alone.fractions.min() >= 0.0 and np.isnan(alone.prior_std).all()


def test_checkpoint_applies_as_saved_and_fine_tunes_reproducibly(references, tmp_path):
    first, _, _ = _stack(references, dose=30, seed=4, size=16)
    second, _, _ = _stack(references, dose=30, seed=5, size=16)
    settings = _counts_settings(30, epochs=3)
    trained = denoise_stack(first, ENERGY, references, settings, image_shape=(16, 16))
    path = trained.save_checkpoint(tmp_path / "denoiser.pt")

    applied = denoise_stack(
        first, ENERGY, references, dataclasses.replace(settings, epochs=0), path, (16, 16)
    )
    np.testing.assert_array_equal(applied.denoised, trained.denoised)

    tuned = [denoise_stack(second, ENERGY, references, settings, path, (16, 16)) for _ in range(2)]
    np.testing.assert_array_equal(tuned[0].denoised, tuned[1].denoised)
    np.testing.assert_array_equal(tuned[0].fractions, tuned[1].fractions)
    untuned = denoise_stack(
        second, ENERGY, references, dataclasses.replace(settings, epochs=0), path, (16, 16)
    )
    assert not np.array_equal(tuned[0].denoised, untuned.denoised)  # fine-tuning changed the network


def test_the_network_never_sees_the_pixel_it_predicts(references, tmp_path):
    """Blind spot: changing one pixel's counts (a corner, an edge, an inner pixel) leaves the
    network's prediction for that pixel unchanged, and changes it for its neighbours."""
    counts, _, _ = _stack(references, dose=30, seed=6, size=12)
    settings = _counts_settings(30, epochs=2)
    path = denoise_stack(counts, ENERGY, references, settings, image_shape=(12, 12)).save_checkpoint(
        tmp_path / "blind.pt"
    )
    apply = dataclasses.replace(settings, epochs=0)
    before = denoise_stack(counts, ENERGY, references, apply, path, (12, 12)).network_fractions
    for pixel in (0, 5, 12 * 6 + 7):
        changed = counts.copy()
        changed[pixel] = 3 * changed[pixel] + 40
        after = denoise_stack(changed, ENERGY, references, apply, path, (12, 12)).network_fractions
        np.testing.assert_allclose(after[pixel], before[pixel], rtol=1e-5, atol=1e-6)
        assert np.abs(after - before).max() > 1e-3  # the change is seen elsewhere


def _refusal(call) -> str:
    with pytest.raises(UserError) as raised:
        call()
    message = str(raised.value)
    assert isinstance(raised.value, DenoiseError) and "\n" not in message
    return message


def test_bad_inputs_are_refused_in_one_line(references, tmp_path):
    counts, _, _ = _stack(references, dose=30, size=8)
    settings = _counts_settings(30, epochs=1)

    def run(spectra=counts, energy=ENERGY, refs=references, chosen=settings, checkpoint=None, shape=(8, 8)):
        return lambda: denoise_stack(spectra, energy, refs, chosen, checkpoint, shape)

    assert "all three must agree" in _refusal(run(spectra=counts[:, :-1]))
    assert "all three must agree" in _refusal(run(refs=references[:, 1:]))
    with_nan = counts.copy()
    with_nan[3, 7] = np.nan
    assert "spectra: 1 values are NaN" in _refusal(run(spectra=with_nan))
    negative = counts.copy()
    negative[0, 0] = -2
    assert "counts cannot be negative" in _refusal(run(spectra=negative))
    assert "does not hold 64 pixels" in _refusal(run(shape=(8, 7)))
    assert "strictly increasing" in _refusal(run(energy=ENERGY[::-1]))
    assert "counts_per_unit" in _refusal(lambda: DenoiseSettings(input="counts"))
    assert "unknown key 'epoch'" in _refusal(run(chosen={"epoch": 3}))
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_text("not a network")
    assert "notes.pt" in _refusal(run(checkpoint=not_a_checkpoint))
    saved = denoise_stack(counts, ENERGY, references, settings, image_shape=(8, 8)).save_checkpoint(
        tmp_path / "a.pt"
    )
    assert "trained with 4 references; 3 given" in _refusal(run(refs=references[:3], checkpoint=saved))


def test_settings_defaults_agree_with_the_config_schema():
    section = load_schema()["properties"]["imaging"]["properties"]["network"]["properties"]
    fields = {field.name: field.default for field in dataclasses.fields(DenoiseSettings)}
    assert set(section) == set(fields)
    for key, entry in section.items():
        default = list(fields[key]) if isinstance(fields[key], tuple) else fields[key]
        assert entry.get("default") == default, key
