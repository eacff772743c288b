"""Maps of a trained model over an energy stack (``xasflow image --model``).

The model is built here from a known relation, not trained: a linear two-member MLP ensemble
on a Cu K-edge grid that reads the measured Cu foil (``cu_metal_rt.xdi``) as coordination
number 12 and the same foil broadened by 4 eV as 4, with members that differ only by their
bias (so the ensemble spread, and the calibrated interval width, are known), a two-class
valence head and an out-of-distribution reference set of exactly those two spectra. A stack
whose left half is the foil and right half the broadened foil must map to 12 and 4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xasflow.cli import main
from xasflow.experiment import read_spectrum
from xasflow.experiment.alignment import XanesNormalization, normalize_xanes
from xasflow.experiment.fidelity import gaussian_broaden
from xasflow.inference.compatibility import IncompatibleSpectrumError
from xasflow.inference.imaging import ImagingParams, open_maps, prepare_references
from xasflow.inference.imaging_io import write_stack
from xasflow.inference.imaging_normalize import XanesAlignment, resolve_normalization
from xasflow.inference.imaging_run import run_imaging
from xasflow.inference.imaging_synthetic import FE_REFERENCE_FILES, fe_references, synthetic_stack
from xasflow.inference.predict import load_predictor
from xasflow.models.conformal import ConformalCalibration
from xasflow.models.data import Normalization, measured_input
from xasflow.models.module import CHECKSUM_KEY, SpectrumRegressor, checkpoint_checksum
from xasflow.models.params import TrainParams
from xasflow.models.targets import TargetScale
from xasflow.spectrum import Spectrum

#: Stack energies across the Cu K edge (8979 eV), eV.
STACK_ENERGY = np.arange(8940.0, 9060.0 + 1e-9, 1.0)
#: The model's grid, eV relative to E0.
MODEL_GRID = np.arange(-10.0, 30.0 + 1e-9, 1.0)
#: Known values of the two halves, and the members' bias offset in standardized CN units.
CN_FOIL, CN_BROADENED, BIAS_OFFSET, CN_STD = 12.0, 4.0, 0.05, 4.0
#: The calibration's 90 % multiplier of the ensemble spread.
Q90 = 1.645
#: Image layout: rows 0-3 empty (masked), left half foil, right half broadened foil, and a
#: 50/50 mixture block at the bottom.
IMAGE_SHAPE = (12, 16)


@pytest.fixture(scope="module")
def cu_spectra(shared_data, tmp_path_factory):
    """(foil, broadened foil) raw spectra and the broadened foil's file (two columns)."""
    foil = read_spectrum(shared_data / "experimental" / "cu_metal_rt.xdi")
    fine = np.arange(foil.energy[0], foil.energy[-1], 0.1)
    broadened_mu = gaussian_broaden(fine, np.interp(fine, foil.energy, foil.mu), 4.0)
    path = tmp_path_factory.mktemp("references") / "cu_broadened.dat"
    np.savetxt(path, np.column_stack([fine, broadened_mu]), header="energy mu")
    return foil, read_spectrum(path), path


def _layout():
    """Fractions of the (foil, broadened) references per pixel, shape (2, ny, nx), and the
    sample mask."""
    ny, nx = IMAGE_SHAPE
    fractions = np.zeros((2, ny, nx))
    fractions[0, 4:, : nx // 2] = 1.0
    fractions[1, 4:, nx // 2 :] = 1.0
    fractions[:, 10:, 4:12] = 0.5
    return fractions, fractions.sum(axis=0) > 0


@pytest.fixture(scope="module")
def cu_stack(cu_spectra, tmp_path_factory):
    """A noise-free stack of the foil and the broadened foil on a sloping background."""
    foil, broadened, _ = cu_spectra
    references, _ = prepare_references([foil, broadened], STACK_ENERGY)
    fractions, sample = _layout()
    step = np.where(sample, 0.8, 0.0)
    background = 0.3 - 1e-4 * (STACK_ENERGY - 8979.0)
    mu = background[:, None, None] + step[None] * np.einsum("kyx,ke->eyx", fractions, references)
    path = write_stack(
        tmp_path_factory.mktemp("stack") / "cu.zarr", STACK_ENERGY, mu.astype(np.float32), chunk=4
    )
    return path, mu


def _model_input(mu: np.ndarray) -> np.ndarray:
    """One pixel's spectrum as ``xasflow predict`` reads it for a model on MODEL_GRID."""
    spectrum = normalize_xanes(Spectrum(STACK_ENERGY, mu, source="pixel", kind="measured"))
    params = TrainParams(architecture="mlp", representation="mu")
    return measured_input(spectrum, params, MODEL_GRID)


def _save(module: SpectrumRegressor, path) -> None:
    """A checkpoint as train_model writes it (weights, plain hyperparameters, checksum)."""
    state = module.state_dict()
    hyper = dict(module.hparams)
    torch.save(
        {"state_dict": state, "hyper_parameters": hyper, CHECKSUM_KEY: checkpoint_checksum(state, hyper)},
        path,
    )


@pytest.fixture(scope="module")
def cu_model(cu_stack, tmp_path_factory):
    """The linear model of the module docstring, saved as ``cu/model.ckpt``; and the two
    pure spectra as the model reads them."""
    _, mu = cu_stack
    foil_input, broadened_input = _model_input(mu[:, 5, 0]), _model_input(mu[:, 5, -1])
    mean = (foil_input + broadened_input) / 2
    std = np.abs(foil_input - broadened_input) / 2 + 0.01
    normalization = Normalization(
        mu_mean=mean,
        mu_std=std,
        targets={
            "coordination_number": TargetScale("regression", (CN_FOIL + CN_BROADENED) / 2, CN_STD),
            "valence": TargetScale("classification", classes=(1, 2)),
        },
    )
    params = TrainParams(
        architecture="mlp",
        hidden_sizes=(),
        dropout=0.0,
        ensemble=2,
        targets=({"variable": "coordination_number"}, {"variable": "valence", "kind": "classification"}),
    )
    calibration = ConformalCalibration((0.68, 0.9, 0.95), np.array([1.0, Q90, 1.96]), 0.0, True, 100)
    module = SpectrumRegressor(
        params,
        MODEL_GRID,
        [1.0, 2.0],
        normalization,
        model_card={"absorber": "Cu", "edge": "K", "targets": {"coordination_number": {"units": "atoms"}}},
        ood_reference_count=2,
        ood_threshold=0.5,
        conformal={"coordination_number": calibration.to_dict()},
    )
    standardized = normalization.standardize_mu(np.array([foil_input, broadened_input])).astype(float)
    direction = standardized[0] - standardized[1]
    weight = 2 * direction / (direction @ direction)  # +1 (12) on the foil, -1 (4) on the broadened foil
    bias = -weight @ standardized.mean(axis=0)
    with torch.no_grad():
        for member, offset in zip(module.network.members, (BIAS_OFFSET, -BIAS_OFFSET), strict=True):
            heads = member.heads.heads
            heads["coordination_number"].weight[0] = torch.tensor(weight)
            heads["coordination_number"].bias[0] = bias + offset
            heads["valence"].weight[1] = torch.tensor(4 * weight)  # logit of valence 2 vs 1
            heads["valence"].bias[1] = 4 * bias
        module.ood_reference.copy_(torch.from_numpy(standardized))
    path = tmp_path_factory.mktemp("models") / "cu" / "model.ckpt"
    path.parent.mkdir()
    _save(module, path)
    return path


def _map(cu_stack, cu_spectra, cu_model, out, **params):
    foil, _, broadened_path = cu_spectra
    references = {"foil": foil.source, "broadened": str(broadened_path)}
    run_imaging(cu_stack[0], references, out, ImagingParams(tile_size=4, **params), models=[cu_model])
    return open_maps(out / "maps.zarr")


def test_pixels_are_aligned_as_xasflow_predict_aligns_one_spectrum(cu_stack):
    _, mu = cu_stack
    ranges = XanesNormalization()
    mean = mu[:, 4:, :].mean(axis=(1, 2))
    e0 = normalize_xanes(Spectrum(STACK_ENERGY, mean, source="mean", kind="measured")).e0
    normalization = resolve_normalization(
        STACK_ENERGY, mean, "mean", e0, (ranges.pre1, ranges.pre2), (ranges.norm1, ranges.norm2)
    )
    pixels = [(5, 0), (5, 15), (11, 7), (11, 2)]
    # scaled and offset copies: the alignment does not depend on the absorbance scale
    spectra = np.array([mu[:, y, x] for y, x in pixels] + [3 * mu[:, 5, 0] + 0.2])
    aligned = XanesAlignment(STACK_ENERGY, normalization, ranges.edge_level)(spectra)
    values, covered = aligned.on_relative_grid(MODEL_GRID)
    assert covered.all()
    for row, spectrum in enumerate(spectra):
        np.testing.assert_allclose(values[row], _model_input(spectrum), atol=1e-9)
        single = normalize_xanes(Spectrum(STACK_ENERGY, spectrum, source="pixel", kind="measured"))
        assert aligned.e0[row] == pytest.approx(single.e0, abs=1e-9)


def test_model_maps_separate_the_halves_with_known_values_and_intervals(
    cu_stack, cu_spectra, cu_model, tmp_path
):
    maps = _map(cu_stack, cu_spectra, cu_model, tmp_path / "out")
    assert maps.attrs["models"] == {"cu": str(cu_model)}
    labels = [quantity["label"] for quantity in maps.attrs["model_quantities"]]
    assert labels == ["cu:coordination_number", "cu:valence", "cu:P(valence=1)", "cu:P(valence=2)"]
    assert maps.attrs["model_spectra"] == ["raw"]
    cn = maps["model_prediction"][0, 0].values
    width = maps["model_interval_90"][0, 0].values
    left, right = cn[4:10, :8], cn[4:10, 8:]
    np.testing.assert_allclose(left, CN_FOIL, atol=0.05)
    np.testing.assert_allclose(right, CN_BROADENED, atol=0.05)
    # two members biased by +-0.05 standardized units: spread 0.05 x 4 = 0.2 atoms
    np.testing.assert_allclose(width[4:], 2 * Q90 * BIAS_OFFSET * CN_STD, rtol=1e-4)
    valence = maps["model_prediction"][0, 1].values
    assert valence[4:10, :8].min() > 1.95 and valence[4:10, 8:].max() < 1.05
    np.testing.assert_allclose(
        maps["model_prediction"][0, 2].values[4:] + maps["model_prediction"][0, 3].values[4:], 1.0, atol=1e-6
    )
    assert np.isnan(maps["model_interval_90"][0, 1].values).all()  # classes: no calibrated interval
    # the pure halves are the model's own reference spectra; the 50/50 mixture lies between them
    # in CN and is far from both (flagged)
    distance = maps["model_input_distance"][0, 0].values
    flag = maps["model_out_of_distribution"][0, 0].values
    assert distance[4:10].max() < 1e-3 and (flag[4:10] == 0).all()
    assert 6 < np.nanmean(cn[10:, 4:12]) < 10 and (flag[10:, 4:12] == 1).all()
    # masked pixels (no edge) are NaN in every model map
    assert not maps["mask"].values[:4].any()
    for name in (
        "model_prediction",
        "model_interval_90",
        "model_input_distance",
        "model_out_of_distribution",
    ):
        assert np.isnan(maps[name].values[..., :4, :]).all()
    assert np.isfinite(maps["model_e0"].values[0, 4:]).all()


def test_region_table_and_figures_of_the_model_maps(cu_stack, cu_spectra, cu_model, tmp_path):
    regions = np.zeros(IMAGE_SHAPE, dtype=np.int32)
    regions[4:10, :8], regions[4:10, 8:] = 1, 2
    np.save(tmp_path / "regions.npy", regions)
    foil, _, broadened_path = cu_spectra
    summary = run_imaging(
        cu_stack[0],
        {"foil": foil.source, "broadened": str(broadened_path)},
        tmp_path / "out",
        ImagingParams(tile_size=4),
        region_labels=tmp_path / "regions.npy",
        models=[cu_model],
    )
    rows = {(row["label"], row["quantity"]): row for row in summary["model_regions"]}
    assert rows[1, "cu:coordination_number"]["mean"] == pytest.approx(CN_FOIL, abs=0.05)
    assert rows[2, "cu:coordination_number"]["mean"] == pytest.approx(CN_BROADENED, abs=0.05)
    assert rows[1, "cu:coordination_number"]["n_predicted"] == 48
    assert rows[2, "cu:coordination_number"]["out_of_distribution_share"] == 0
    table = (tmp_path / "out" / "model_regions.csv").read_text().splitlines()
    assert (
        table[0].startswith("label,n_pixels,spectra,quantity,n_predicted,mean,") and len(table) == 1 + 2 * 4
    )
    assert (tmp_path / "out" / "figures" / "model_cu.png").stat().st_size > 1000


def test_the_denoised_pixels_are_mapped_too(cu_stack, cu_spectra, cu_model, tmp_path):
    maps = _map(cu_stack, cu_spectra, cu_model, tmp_path / "pca", denoise="pca")
    assert maps.attrs["model_spectra"] == ["raw", "denoised"]
    assert maps["model_prediction"].shape == (2, 4, *IMAGE_SHAPE)
    denoised = maps["model_prediction"][1, 0].values
    np.testing.assert_allclose(denoised[4:10, :8], CN_FOIL, atol=0.1)
    np.testing.assert_allclose(denoised[4:10, 8:], CN_BROADENED, atol=0.1)


def test_the_map_equals_the_model_on_each_pixel(cu_stack, cu_spectra, cu_model, tmp_path):
    """The map holds what Predictor.predict gives each pixel's spectrum prepared as by
    ``xasflow predict`` (normalize_xanes + measured_input)."""
    maps = _map(cu_stack, cu_spectra, cu_model, tmp_path / "out")
    _, mu = cu_stack
    predictor = load_predictor(cu_model)
    pixels = [(4, 3), (11, 6), (11, 13), (7, 12)]
    inputs = np.array([_model_input(mu[:, y, x].astype(np.float32).astype(float)) for y, x in pixels])
    expected = predictor.predict(inputs)
    for row, (y, x) in enumerate(pixels):
        assert maps["model_prediction"][0, 0, y, x] == pytest.approx(
            expected["coordination_number"][row], abs=1e-4
        )
        assert maps["model_input_distance"][0, 0, y, x] == pytest.approx(
            expected["input_distance"][row], abs=1e-4
        )


def test_a_stack_of_another_element_is_refused_with_one_line(shared_data, cu_model, tmp_path, capsys):
    references, names, normalization = fe_references(shared_data)
    stack, truth = synthetic_stack(references, names, normalization, image_shape=(8, 8), dose=None)
    path = write_stack(tmp_path / "fe.zarr", truth.energy, stack)
    reference_arguments = [
        f"--reference={name}={shared_data / 'experimental' / file}"
        for name, file in FE_REFERENCE_FILES.items()
    ]
    code = main(
        ["image", str(path), *reference_arguments, "--out-dir", str(tmp_path / "o"), "--model", str(cu_model)]
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1
    assert error[0].startswith(f"xasflow: error: {path}: its edge at E0 = 71")
    assert "from the Cu K edge" in error[0] and "model cu reads Cu K-edge spectra" in error[0]
    assert "looks like Fe K" in error[0]
    assert not (tmp_path / "o" / "maps.zarr").exists()
    with pytest.raises(IncompatibleSpectrumError):
        run_imaging(
            path,
            {name: shared_data / "experimental" / file for name, file in FE_REFERENCE_FILES.items()},
            tmp_path / "o",
            models=[cu_model],
        )


def test_the_image_command_prints_the_model_regions(cu_stack, cu_spectra, cu_model, tmp_path, capsys):
    foil, _, broadened_path = cu_spectra
    code = main(
        [
            "image",
            str(cu_stack[0]),
            f"--reference=foil={foil.source}",
            f"--reference=broadened={broadened_path}",
            "--out-dir",
            str(tmp_path / "out"),
            "--tile",
            "8",
            "--model",
            str(cu_model),
        ]
    )
    output = capsys.readouterr().out
    assert code == 0
    assert "cu:coordination_number (raw)" in output and "90 % width 0.658" in output
