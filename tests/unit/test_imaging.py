"""2D XANES imaging: stack I/O, per-pixel normalization, batched NNLS, maps, PCA, CLI.

Synthetic stacks are mixtures of the measured Fe K-edge references in ``shared/data`` with known
fractions and Poisson counting noise (:mod:`xasflow.inference.imaging_synthetic`).
"""

from __future__ import annotations

from dataclasses import replace

import h5py
import numpy as np
import pytest
import zarr
from larch import Group
from larch.xafs import pre_edge
from scipy.optimize import nnls

from xasflow.cli import main
from xasflow.errors import UserError
from xasflow.experiment.normalization import normalize
from xasflow.inference.imaging import ImagingParams, map_stack, open_maps, region_compositions
from xasflow.inference.imaging_fit import PcaDenoiser, ReferenceFit, RegionAccumulator, half_step_energy
from xasflow.inference.imaging_io import StackError, Tile, open_stack, tiff_energy_path, tiles, write_stack
from xasflow.inference.imaging_normalize import TileNormalizer
from xasflow.inference.imaging_synthetic import (
    FE_REFERENCE_FILES,
    FE_STACK_ENERGY,
    fe_references,
    fraction_errors,
    synthetic_stack,
)
from xasflow.spectrum import Spectrum

#: Fraction RMSE at 1e6 photons per pixel per energy must be below this (measured ~0.004).
HIGH_DOSE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def fe(shared_data):
    """(references (4, 100), names, normalization) of the measured Fe references."""
    return fe_references(shared_data)


def make_stack(fe, shape=(16, 16), dose=1e4, seed=0):
    return synthetic_stack(*fe, image_shape=shape, dose=dose, seed=seed)


def map_file(path, fe, out, params=None, **options):
    references, names, normalization = fe
    params = params or ImagingParams(tile_size=8)
    with open_stack(path, **options) as stack:
        return open_maps(map_stack(stack, references, names, normalization, out, params))


# --- stack I/O ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".zarr", ".h5", ".tif"])
def test_stack_round_trip_in_tiles(fe, tmp_path, suffix):
    stack, truth = make_stack(fe, (16, 12))
    path = write_stack(tmp_path / f"stack{suffix}", truth.energy, stack, chunk=8)
    energy = tiff_energy_path(path) if suffix == ".tif" else "energy"
    with open_stack(path, energy=energy) as opened:
        assert opened.shape == (100, 16, 12)
        np.testing.assert_allclose(opened.energy, truth.energy, atol=1e-4)
        tile = Tile(slice(3, 11), slice(5, 12))
        np.testing.assert_array_equal(opened.read_tile(tile), stack[:, 3:11, 5:12])


def test_energies_recorded_high_to_low_are_reversed(fe, tmp_path):
    stack, truth = make_stack(fe, (6, 6))
    path = tmp_path / "down.h5"
    with h5py.File(path, "w") as handle:
        handle["stack"] = stack[::-1]
        handle["energy"] = truth.energy[::-1]
    with open_stack(path) as opened:
        np.testing.assert_array_equal(opened.energy, truth.energy)
        np.testing.assert_array_equal(opened.read_tile(Tile(slice(0, 6), slice(0, 6))), stack)


def test_energies_from_a_text_file_and_a_bare_zarr_array(fe, tmp_path):
    stack, truth = make_stack(fe, (6, 5))
    energy_file = tmp_path / "energy.txt"
    np.savetxt(energy_file, truth.energy)
    zarr.create_array(tmp_path / "bare.zarr", data=stack)
    h5 = tmp_path / "s.h5"
    with h5py.File(h5, "w") as handle:
        handle["stack"] = stack
    for path in (tmp_path / "bare.zarr", h5):
        with open_stack(path, energy=energy_file) as opened:
            np.testing.assert_allclose(opened.energy, truth.energy)
            np.testing.assert_array_equal(opened.read_tile(Tile(slice(0, 6), slice(0, 5))), stack)
    _one_line_error(tmp_path / "bare.zarr", "holds no energies")


def test_tiles_cover_the_image_once():
    covered = np.zeros((37, 20), int)
    for tile in tiles((37, 20), 16):
        covered[tile.y, tile.x] += 1
    assert (covered == 1).all()


def _one_line_error(path, expected, **options):
    with pytest.raises(StackError) as caught:
        with open_stack(path, **options) as stack:
            stack.read_tile(Tile(slice(0, stack.shape[1]), slice(0, stack.shape[2])))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)) and expected in message, message


def test_bad_stacks_are_refused_with_one_line(fe, tmp_path):
    stack, truth = make_stack(fe, (4, 4))
    h5 = tmp_path / "s.h5"
    with h5py.File(h5, "w") as handle:
        handle["images"] = stack
        handle["energy"] = truth.energy
        handle["short"] = truth.energy[:-1]
        handle["zigzag"] = np.r_[truth.energy[:50], truth.energy[50:][::-1]]
    _one_line_error(h5, "no dataset 'stack'")
    _one_line_error(h5, "no energy dataset 'E'", dataset="images", energy="E")
    _one_line_error(h5, "99 energies given for 100 images", dataset="images", energy="short")
    _one_line_error(h5, "not monotonic", dataset="images", energy="zigzag")
    broken = stack.copy()
    broken[7, 2, 3] = np.nan
    zarr_path = write_stack(tmp_path / "nan.zarr", truth.energy, broken)
    _one_line_error(zarr_path, "NaN or inf) at energy 7064.00 eV, pixel y=2, x=3")
    tif = write_stack(tmp_path / "s.tif", truth.energy, stack)
    _one_line_error(tif, "needs its energies")
    _one_line_error(tmp_path / "missing.zarr", "no such file")
    (tmp_path / "s.npy").write_bytes(b"")
    _one_line_error(tmp_path / "s.npy", "unknown stack format")


# --- normalization and fitting ----------------------------------------------------------------


def test_pixel_normalization_equals_larch_and_the_project(fe):
    references, names, normalization = fe
    stack, truth = make_stack(fe, (4, 4), dose=1e4)
    mu = stack.reshape(100, -1).T.astype(float)
    normalized = TileNormalizer(truth.energy, normalization)(mu)
    pre1, pre2 = normalization.pre_edge_range
    norm1, norm2 = normalization.norm_range
    for pixel in (5, 10):
        spectrum = Spectrum(truth.energy, mu[pixel], source=f"pixel {pixel}", kind="measured")
        project = normalize(spectrum, normalization.e0, pre1, pre2, norm1, norm2)
        np.testing.assert_allclose(normalized.norm[pixel], project.norm, atol=1e-9)
        assert normalized.edge_step[pixel] == pytest.approx(project.edge_step, rel=1e-9)
        group = Group()
        pre_edge(
            truth.energy,
            mu[pixel],
            group=group,
            e0=normalization.e0,
            pre1=pre1,
            pre2=pre2,
            norm1=norm1,
            norm2=norm2,
        )
        np.testing.assert_allclose(normalized.norm[pixel], group.norm, atol=1e-9)
    # the step noise estimate follows the real scatter of the step (within 30%)
    many, _ = make_stack(fe, (32, 32), dose=1e3)
    result = TileNormalizer(truth.energy, normalization)(many.reshape(100, -1).T)
    empty = ~make_stack(fe, (32, 32), dose=None)[1].sample.ravel()
    assert np.std(result.edge_step[empty]) == pytest.approx(np.median(result.step_noise[empty]), rel=0.3)


@pytest.mark.parametrize("n_references", [1, 2, 4, 6])
def test_batched_nnls_equals_scipy(n_references):
    rng = np.random.default_rng(n_references)
    design = rng.standard_normal((40, n_references)) + 0.5 * rng.standard_normal((40, 1))  # correlated
    spectra = rng.standard_normal((300, 40)) + rng.standard_normal((300, n_references)) @ design.T
    weights, rss = ReferenceFit(design.T).nnls(spectra)
    for spectrum, weight, residual in zip(spectra, weights, rss, strict=True):
        expected, norm = nnls(design, spectrum)
        np.testing.assert_allclose(weight, expected, atol=1e-9)
        assert residual == pytest.approx(norm**2, rel=1e-9)
    assert (weights == 0).any() and (weights > 0).any()  # both bound and free components occurred


def test_nearly_identical_references_are_refused(fe):
    references = fe[0]
    with pytest.raises(UserError, match="nearly linearly dependent"):
        ReferenceFit(np.vstack([references[:2], references[1] * (1 + 1e-9)]), ["Fe", "FeO", "FeO again"])


def test_half_step_energy_of_the_references(fe):
    references, names, normalization = fe
    found = half_step_energy(FE_STACK_ENERGY, references, 0)
    for reference, energy in zip(references, found, strict=True):
        first = int(np.argmax(reference >= 0.5))
        expected = np.interp(0.5, reference[first - 1 : first + 1], FE_STACK_ENERGY[first - 1 : first + 1])
        assert energy == pytest.approx(expected, abs=1e-9)
    by_name = dict(zip(names, found, strict=True))
    assert by_name["Fe2O3"] > by_name["FeO"] > by_name["Fe"]  # the chemical shift with oxidation state


# --- maps -------------------------------------------------------------------------------------


def test_noise_free_fractions_are_exact_and_empty_pixels_masked(fe, tmp_path):
    stack, truth = make_stack(fe, (16, 16), dose=None)
    maps = map_file(write_stack(tmp_path / "s.zarr", truth.energy, stack), fe, tmp_path / "out")
    rmse, coverage = fraction_errors(maps["fraction"].values, truth)
    # float32 stack and float32 tile arithmetic: 1e-5 here, against 0.004 at the highest dose
    assert rmse < 1e-4 and coverage == 1.0
    np.testing.assert_array_equal(maps["mask"].values.astype(bool), truth.sample)
    np.testing.assert_allclose(maps["weight_sum"].values[truth.sample], 1.0, atol=1e-4)


def test_fractions_recovered_at_high_dose_with_calibrated_uncertainty(fe, tmp_path):
    stack, truth = make_stack(fe, (16, 16), dose=1e6, seed=3)
    maps = map_file(write_stack(tmp_path / "s.h5", truth.energy, stack), fe, tmp_path / "out")
    rmse, coverage = fraction_errors(maps["fraction"].values, truth)
    assert rmse < HIGH_DOSE_TOLERANCE and coverage == 1.0
    # uncertainties: the spread of (estimate - truth) / std is about 1 (Poisson noise is not white)
    stack, truth = make_stack(fe, (32, 32), dose=1e4, seed=4)
    maps = map_file(write_stack(tmp_path / "t.zarr", truth.energy, stack), fe, tmp_path / "out2")
    z = (maps["fraction"].values - truth.fractions) / maps["fraction_std"].values
    assert 0.7 < np.nanstd(z) < 1.5


def test_tiled_maps_equal_untiled(fe, tmp_path):
    stack, truth = make_stack(fe, (16, 16), dose=1e3, seed=5)
    path = write_stack(tmp_path / "s.zarr", truth.energy, stack, chunk=5)
    for denoise in ("none", "pca"):
        whole = map_file(path, fe, tmp_path / "whole", ImagingParams(tile_size=64, denoise=denoise))
        tiled = map_file(path, fe, tmp_path / "tiled", ImagingParams(tile_size=5, denoise=denoise, workers=2))
        for name in ("fraction", "fraction_std", "edge_energy", "edge_step", "mask", "residual_rms"):
            np.testing.assert_allclose(tiled[name].values, whole[name].values, rtol=1e-6, atol=1e-9)


def _straightforward_maps(stack, references, normalization, params):
    """The maps computed pixel by pixel in float64: normalization, mask, scipy NNLS, fractions and
    their uncertainties written out as matrices, half-step energy."""
    energy = FE_STACK_ENERGY
    normalizer = TileNormalizer(energy, normalization)
    mu = stack.reshape(len(energy), -1).T.astype(float)
    normalized = normalizer(mu)
    mask = (normalized.edge_step >= params.min_edge_step) & (
        normalized.edge_step >= params.min_step_snr * normalized.step_noise
    )
    k, n_pixels = len(references), len(mu)
    maps = {name: np.full(n_pixels, np.nan) for name in ("weight_sum", "residual_rms", "edge_energy")}
    maps |= {"fraction": np.full((k, n_pixels), np.nan), "fraction_std": np.full((k, n_pixels), np.nan)}
    covariance_unit = np.linalg.inv(references @ references.T)
    for pixel in np.flatnonzero(mask):
        spectrum = normalized.norm[pixel]
        weights, residual_norm = nnls(references.T, spectrum)
        total = weights.sum()
        fractions = weights / total
        jacobian = (np.eye(k) - np.outer(fractions, np.ones(k))) / total
        variance = residual_norm**2 / (len(energy) - k)
        maps["fraction"][:, pixel] = fractions
        maps["fraction_std"][:, pixel] = np.sqrt(
            np.diag(jacobian @ (variance * covariance_unit) @ jacobian.T)
        )
        maps["weight_sum"][pixel] = total
        maps["residual_rms"][pixel] = residual_norm / np.sqrt(len(energy))
        searched = np.maximum.accumulate(
            spectrum[normalizer.pre_points.stop : normalizer.post_points.start + 1]
        )
        above = int(np.argmax(searched >= 0.5))
        low = normalizer.pre_points.stop + above - 1
        if searched[above] >= 0.5 and above > 0:  # else not found: NaN
            maps["edge_energy"][pixel] = np.interp(
                0.5, searched[above - 1 : above + 1], energy[low : low + 2]
            )
    return maps | {"edge_step": normalized.edge_step, "mask": mask}


@pytest.mark.parametrize("flatten", [False, True])
@pytest.mark.parametrize("dose", [None, 1e5, 1e3])
def test_maps_equal_a_straightforward_float64_computation(fe, tmp_path, flatten, dose):
    # the map path folds the normalization into the fit's operators and works in float32
    # (RawTileFit); pixel by pixel in float64 the maps agree to float32 rounding, as amplified by
    # the references' conditioning (measured: fractions 3e-4, as before the folding)
    references, names, normalization = fe
    normalization = replace(normalization, flatten=flatten)
    stack, truth = synthetic_stack(references, names, normalization, image_shape=(24, 20), dose=dose, seed=8)
    params = ImagingParams(tile_size=16)
    maps = map_file(
        write_stack(tmp_path / "s.zarr", truth.energy, stack),
        (references, names, normalization),
        tmp_path / "out",
        params,
    )
    expected = _straightforward_maps(stack, references, normalization, params)
    mask = maps["mask"].values.astype(bool).ravel()
    np.testing.assert_array_equal(mask, expected["mask"])
    assert mask.sum() > 100
    if dose is not None:  # with noise, weights held at 0 occur
        assert (expected["fraction"][:, mask] == 0).any()
    tolerances = {
        "fraction": (0, 1e-3),
        # noise-free, float32 rounding is the residual (1e-5 in both paths): absolute floors
        "fraction_std": (1e-3, 1e-4),
        "weight_sum": (1e-4, 0),
        "residual_rms": (1e-3, 3e-5),
        "edge_energy": (0, 1e-2),
        "edge_step": (1e-4, 1e-6),
    }
    for name, (rtol, atol) in tolerances.items():
        found = maps[name].values.reshape(*expected[name].shape[:-1], -1)
        np.testing.assert_allclose(found, expected[name], rtol=rtol, atol=atol, err_msg=name)


def _rmse_by_dose(fe, tmp_path, doses, denoise, seed=6):
    errors = []
    for dose in doses:
        stack, truth = make_stack(fe, (32, 32), dose=dose, seed=seed)
        path = write_stack(tmp_path / f"{dose:g}.zarr", truth.energy, stack)
        maps = map_file(
            path, fe, tmp_path / f"{denoise}{dose:g}", ImagingParams(tile_size=16, denoise=denoise)
        )
        errors.append(fraction_errors(maps["fraction"].values, truth)[0])
    return errors


def test_raw_fit_error_grows_as_dose_falls_and_pca_helps_at_low_dose(fe, tmp_path):
    doses = [1e5, 1e4, 1e3, 1e2]
    raw = _rmse_by_dose(fe, tmp_path, doses, "none")
    assert all(low < high for low, high in zip(raw, raw[1:], strict=False)), raw
    pca = _rmse_by_dose(fe, tmp_path, doses[2:], "pca")
    assert pca[0] < 0.9 * raw[2] and pca[1] < 0.9 * raw[3], (raw, pca)


def test_a_denoiser_callable_is_used(fe, tmp_path):
    stack, truth = make_stack(fe, (16, 16), dose=1e3, seed=7)
    path = write_stack(tmp_path / "s.zarr", truth.energy, stack)
    references, names, normalization = fe
    pca_maps = map_file(path, fe, tmp_path / "pca", ImagingParams(tile_size=8, denoise="pca"))
    sample = stack.reshape(100, -1).T[truth.sample.ravel()].astype(float)
    with open_stack(path) as opened:
        given = map_stack(
            opened, references, names, normalization, tmp_path / "given", denoiser=PcaDenoiser(sample, 4)
        )
    assert "pca (5 components" in open_maps(given).attrs["denoiser"]
    plain = map_file(path, fe, tmp_path / "plain")
    assert not np.allclose(open_maps(given)["fraction"].values, plain["fraction"].values, equal_nan=True)
    assert (
        fraction_errors(pca_maps["fraction"].values, truth)[0]
        < fraction_errors(plain["fraction"].values, truth)[0]
    )


def test_region_composition_and_enrichment_probability():
    accumulator = RegionAccumulator(2)
    labels = np.array([1, 1, 1, 1, 2, 2, 0])
    fractions = np.array([[0.7, 0.3]] * 4 + [[0.45, 0.55]] * 2 + [[1.0, 0.0]])
    deviations = np.full((7, 2), 0.1)
    accumulator.add(labels, fractions, deviations)
    first, second = accumulator.compositions(threshold=0.5)
    assert (first.label, first.n_pixels, second.n_pixels) == (1, 4, 2)
    np.testing.assert_allclose(first.mean_fraction, [0.7, 0.3])
    np.testing.assert_allclose(first.standard_error, [0.05, 0.05])  # sqrt(4 * 0.1^2) / 4
    # P(mean > 0.5) for 0.7 +- 0.05 is Phi(4) and for 0.45 +- 0.0707 is Phi(-0.707)
    assert first.enrichment_probability[0] == pytest.approx(0.999968, abs=1e-6)
    assert second.enrichment_probability[0] == pytest.approx(0.23975, abs=1e-4)


def test_regions_of_a_map(fe, tmp_path):
    stack, truth = make_stack(fe, (16, 16), dose=1e5, seed=8)
    path = write_stack(tmp_path / "s.zarr", truth.energy, stack)
    maps = map_file(path, fe, tmp_path / "out")
    labels = np.where(truth.sample, 1, 0)
    labels[:, 8:] *= 2
    regions = region_compositions(tmp_path / "out" / "maps.zarr", labels, threshold=0.3)
    for region in regions:
        expected = np.nanmean(np.where(labels == region.label, truth.fractions, np.nan), axis=(1, 2))
        np.testing.assert_allclose(region.mean_fraction, expected, atol=0.02)
        sure = np.abs(region.mean_fraction - 0.3) > 5 * region.standard_error
        np.testing.assert_array_equal(region.enrichment_probability[sure] > 0.5, expected[sure] > 0.3)
    assert maps["mask"].values.sum() == truth.sample.sum()
    (auto,) = region_compositions(tmp_path / "out" / "maps.zarr", None, threshold=0.3)  # one particle
    assert auto.n_pixels == truth.sample.sum()


# --- command line -----------------------------------------------------------------------------


def test_image_command_writes_maps_figures_and_regions(fe, shared_data, tmp_path, capsys):
    stack, truth = make_stack(fe, (24, 20), dose=1e5, seed=9)
    path = write_stack(tmp_path / "s.tif", truth.energy, stack)
    references = [
        f"--reference={name}={shared_data / 'experimental' / file}"
        for name, file in FE_REFERENCE_FILES.items()
    ]
    out = tmp_path / "out"
    code = main(
        [
            "image",
            str(path),
            *references,
            "--out-dir",
            str(out),
            "--energy-file",
            str(tiff_energy_path(path)),
            "--tile",
            "8",
            "--denoise",
            "pca",
        ]
    )
    assert code == 0
    maps = open_maps(out / "maps.zarr")
    assert maps.attrs["components"] == list(FE_REFERENCE_FILES)
    assert fraction_errors(maps["fraction"].values, truth)[0] < 0.03
    assert {p.name for p in (out / "figures").iterdir()} == {"fractions.png", "fraction_std.png", "edge.png"}
    assert (out / "regions.csv").read_text().count("\n") == 1 + len(FE_REFERENCE_FILES)
    assert "region 1" in capsys.readouterr().out


def test_image_command_refuses_bad_input_with_one_line(fe, shared_data, tmp_path, capsys):
    stack, truth = make_stack(fe, (4, 4))
    path = write_stack(tmp_path / "s.zarr", truth.energy, stack)
    zarr.open_group(path, mode="a")["energy"][3] = truth.energy[1]
    code = main(
        [
            "image",
            str(path),
            "--reference",
            str(shared_data / "experimental" / "feo_rt1.xdi"),
            "--out-dir",
            str(tmp_path / "o"),
        ]
    )
    error = capsys.readouterr().err.strip().splitlines()
    expected = (
        f"xasflow: error: {path}: energies are not monotonic (image 2 at 7054.00 eV is followed by "
        "7052.00 eV); they must increase (or decrease) strictly"
    )
    assert code == 2 and error == [expected]
    assert not (tmp_path / "o" / "maps.zarr").exists()


def test_the_network_denoiser_trains_once_and_maps_every_tile(fe, tmp_path):
    """denoise: network trains the self-supervised denoiser on the fullest tile, saves it, applies
    it to all four tiles, and at a low dose its maps beat the raw per-pixel fits."""
    stack, truth = make_stack(fe, (32, 32), dose=1e2, seed=2)
    path = write_stack(tmp_path / "s.zarr", truth.energy, stack)
    raw = map_file(path, fe, tmp_path / "raw", ImagingParams(tile_size=16))
    network = map_file(
        path,
        fe,
        tmp_path / "network",
        ImagingParams(tile_size=16, denoise="network", denoise_config={"epochs": 10, "seed": 0}),
    )
    assert (tmp_path / "network" / "denoiser.pt").stat().st_size > 1000
    assert network.attrs["denoiser"].startswith("network")
    assert np.array_equal(network["mask"].values, raw["mask"].values)  # the mask comes from the raw data
    raw_rmse, _ = fraction_errors(raw["fraction"].values, truth)
    network_rmse, _ = fraction_errors(network["fraction"].values, truth)
    assert network_rmse < 0.8 * raw_rmse, (network_rmse, raw_rmse)
    with pytest.raises(UserError, match="denoise 'wavelet' is not one of none, pca, network"):
        ImagingParams(denoise="wavelet")
