"""EXAFS chi(k) as model input: Larch autobk recovers a constructed chi, short data are refused,
a chi model learns a coordination number from the first-shell amplitude and reads a measured
spectrum file, and the representation's parameters are checked.

The synthetic spectra are an edge, a smooth atomic background and the EXAFS of two shells,
chi(k) = sum_j S N_j / (k R_j^2) sin(2 k R_j) exp(-2 sigma^2 k^2), with k from the energy above
E0 (no phase shift, so the Fourier transform peaks at R_j itself).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.special import erf, erfinv

from xasflow.dataset.schema import build_dataset, write_dataset
from xasflow.errors import UserError
from xasflow.experiment import NormalizedSpectrum
from xasflow.inference.compatibility import IncompatibleSpectrumError, check_compatible
from xasflow.inference.predict import load_predictor
from xasflow.inference.run import predict_files
from xasflow.models import TrainParams, train_model
from xasflow.models.augment import AugmentationParams
from xasflow.models.data import SpectrumDataModule, measured_input
from xasflow.models.exafs import KTOE, chi_of_k, energy_of_k
from xasflow.models.train import _out_of_distribution_reference

# (N, R in Angstrom) of the two shells; sigma^2 in Angstrom^2
SHELLS = ((6.0, 2.0), (4.0, 3.2))
SIGMA2 = 0.005
DATASET_ENERGY = np.arange(-16.0, 521.0, 1.0)  # the EXAFS example's grid, eV relative to E0
K_GRID = TrainParams().k_grid()  # 2..11 / Angstrom by 0.1
# erfinv(-0.4): the edge below crosses 0.3 of its step (xasflow's E0, XanesNormalization) at E0
_EDGE_OFFSET = float(erfinv(-0.4))


def _chi(k: np.ndarray, shells=SHELLS, sigma2: float = SIGMA2, scale: float = 1.0) -> np.ndarray:
    k = np.maximum(np.asarray(k, dtype=float), 1e-6)
    return scale * sum(n / (k * r**2) * np.sin(2 * k * r) * np.exp(-2 * sigma2 * k**2) for n, r in shells)


def _mu(energy: np.ndarray, shells=SHELLS, scale: float = 1.0, slope: float = 1.5e-4) -> np.ndarray:
    """Edge (0.3 of the step at E0 = 0; a Gaussian-broadened step, without the long tails that
    would tilt a pre-edge line) + atomic background + EXAFS, on ``energy`` eV from E0."""
    energy = np.asarray(energy, dtype=float)
    edge = 0.5 * (1.0 + erf(energy / 2.0 + _EDGE_OFFSET))
    background = 0.05 * np.exp(-np.clip(energy, 0.0, None) / 150.0) - slope * energy
    k = np.sqrt(np.clip(energy, 0.0, None) / KTOE)
    return edge + background + np.where(energy > 0, _chi(k, shells, scale=scale), 0.0)


def _fourier_peak(chi_k2: np.ndarray, k_grid: np.ndarray, n_fft: int = 2048) -> float:
    """R (Angstrom) of the largest |FT| of Hanning-windowed k^2 chi(k) (FT with exp(2ikR))."""
    magnitude = np.abs(np.fft.rfft(chi_k2 * np.hanning(k_grid.size), n_fft))
    r = np.pi * np.arange(magnitude.size) / ((k_grid[1] - k_grid[0]) * n_fft)
    return float(r[np.argmax(magnitude)])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --- chi_of_k ---------------------------------------------------------------------------------------


def test_chi_of_k_recovers_a_two_shell_exafs():
    mu = _mu(DATASET_ENERGY)
    recovered = chi_of_k(DATASET_ENERGY, mu, K_GRID, k_weight=0)
    constructed = _chi(K_GRID)
    inside = (K_GRID >= 3.0) & (K_GRID <= 10.0)
    # measured: correlation 0.9994, largest difference 0.012 (chi spans +-0.36 there)
    assert np.corrcoef(recovered[inside], constructed[inside])[0, 1] > 0.99
    assert np.abs(recovered - constructed)[inside].max() < 0.03
    weighted = chi_of_k(DATASET_ENERGY, mu, K_GRID, k_weight=2)
    assert np.allclose(weighted, recovered * K_GRID**2)
    # no phase shift was added, so the first shell's peak is at R_1 (measured 1.994 Angstrom)
    assert abs(_fourier_peak(weighted, K_GRID) - SHELLS[0][1]) < 0.05
    assert abs(_fourier_peak(_chi(K_GRID) * K_GRID**2, K_GRID) - SHELLS[0][1]) < 0.05


def test_chi_of_k_treats_each_spectrum_alone_and_alike_on_any_grid():
    spectra = np.array([_mu(DATASET_ENERGY, slope=slope) for slope in (1e-4, 2e-4, 3e-4)])
    started = time.perf_counter()
    batch = chi_of_k(DATASET_ENERGY, spectra, K_GRID, k_weight=2)
    per_spectrum = (time.perf_counter() - started) / len(spectra)
    assert batch.shape == (3, K_GRID.size)
    assert np.array_equal(chi_of_k(DATASET_ENERGY, spectra[1], K_GRID, k_weight=2), batch[1])
    assert per_spectrum < 1.0  # about 0.01 s on one core
    # a measurement on a finer grid that stops just past k_max gets the chi of the dataset grid
    e0 = 7112.0
    measured_energy = np.arange(-30.0, energy_of_k(11.0) + 0.5, 0.5)
    spectrum = NormalizedSpectrum(
        path="synthetic.dat",
        energy=e0 + measured_energy,
        norm=_mu(measured_energy, slope=2e-4),
        e0=e0,
        edge_step=1.0,
        pre_edge_range=(-30.0, -10.0),
        norm_range=(15.0, 50.0),
    )
    measured = measured_input(spectrum, TrainParams(representation="chi"), K_GRID)
    assert np.abs(measured - batch[1]).max() < 0.01 * np.ptp(batch[1])


def test_chi_of_k_refuses_data_that_end_below_k_max():
    short = DATASET_ENERGY[DATASET_ENERGY <= 300.0]
    with pytest.raises(UserError, match=r"ends at E0 \+ 300\.0 eV .*needs data to E0 \+ 461\.0 eV"):
        chi_of_k(short, _mu(short), K_GRID, k_weight=2)
    # k_max 8 needs 243.8 eV only
    assert chi_of_k(short, _mu(short), K_GRID[K_GRID <= 8.0 + 1e-9], k_weight=2).shape == (61,)


def test_a_chi_model_refuses_a_spectrum_that_ends_below_k_max():
    card = {"absorber": "Fe", "edge": "K", "input": {"representation": "chi", "k": [2.0, 11.0, 0.1]}}
    e0 = 7112.0
    energy = np.arange(-40.0, 300.5, 0.5)
    spectrum = NormalizedSpectrum(
        path="short_exafs.dat",
        energy=e0 + energy,
        norm=_mu(energy),
        e0=e0,
        edge_step=1.0,
        pre_edge_range=(-40.0, -10.0),
        norm_range=(15.0, 50.0),
        element="Fe",
        edge="K",
    )
    with pytest.raises(IncompatibleSpectrumError, match=r"reads up to 7573\.0 eV \(E0 \+461\.0 eV\)"):
        check_compatible(spectrum, card, K_GRID, "chi_mlp")
    long_enough = replace(spectrum, energy=e0 + DATASET_ENERGY, norm=_mu(DATASET_ENERGY))
    check_compatible(long_enough, card, K_GRID, "chi_mlp")  # covers E0 -10 .. +461 eV
    # a mu model's card checks its own grid, as before
    check_compatible(spectrum, {"absorber": "Fe", "edge": "K"}, np.arange(-10.0, 200.0), "mu_mlp")


# --- a chi model learns ---------------------------------------------------------------------------

SYSTEMS = ("s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7")
SPECTRA_PER_SYSTEM = 30
EXAFS_SCALE = 0.15  # S0^2 |f(k)| folded into one number: chi(k = 3) ~ 0.1, as measured


def _exafs_dataset(energy: np.ndarray, seed: int = 5):
    """First-shell N = the coordination number (4..12), R_1 and sigma^2 jittered per spectrum;
    a fixed second shell, background slopes and noise that carry no label."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"mu": [], "cn": [], "system": []}
    for system in SYSTEMS:
        for _ in range(SPECTRA_PER_SYSTEM):
            cn = int(rng.integers(4, 13))
            shells = ((float(cn), 2.0 + rng.normal(0.0, 0.01)), (4.0, 3.2))
            mu = _mu(energy, shells, scale=EXAFS_SCALE, slope=rng.uniform(0.5e-4, 2.5e-4))
            rows["mu"].append(mu + rng.normal(0.0, 0.002, energy.size))
            rows["cn"].append(cn)
            rows["system"].append(system)
    n = len(rows["cn"])
    r = np.linspace(1.5, 5.5, 20)
    return build_dataset(
        energy=energy,
        r=r,
        mu=np.asarray(rows["mu"]),
        e0=np.full(n, 7112.0),
        coordination_number=np.asarray(rows["cn"], dtype=float),
        rdf=np.outer(rows["cn"], np.exp(-(((r - 2.0) / 0.1) ** 2))),
        surface=np.zeros(n, dtype=int),
        system=rows["system"],
        frame=np.zeros(n, dtype=int),
        site=np.arange(n),
        absorber=["Fe"] * n,
        attrs={"xasflow_version": "test", "config_hash": "2" * 16, "provenance": {"source": "synthetic"}},
    )


def _chi_params(**overrides) -> TrainParams:
    values = dict(
        architecture="mlp",
        representation="chi",
        targets=("coordination_number",),
        ensemble=1,
        max_epochs=40,
        hidden_sizes=(32,),
        dropout=0.0,
        learning_rate=3e-3,
        val_systems=("s1", "s2"),
        test_systems=("s6", "s7"),
        seed=4,
    )
    values.update(overrides)
    return TrainParams(**values)


@pytest.fixture(scope="module")
def trained_chi(tmp_path_factory):
    energy = np.arange(-16.0, 501.0, 1.0)
    path = write_dataset(_exafs_dataset(energy), tmp_path_factory.mktemp("exafs") / "d.zarr")
    out_dir = tmp_path_factory.mktemp("chi_mlp")
    return out_dir, train_model(path, _chi_params(), out_dir), path


def test_a_chi_model_learns_the_first_shell_amplitude(trained_chi):
    out_dir, metrics, _ = trained_chi
    cn = metrics["targets"]["coordination_number"]
    assert cn["test"]["mae"] < 0.5 * cn["baselines"]["mean"]["mae"]
    assert metrics["params"]["representation"] == "chi"
    predictor = load_predictor(out_dir / "model.ckpt")
    assert np.allclose(predictor.energy, K_GRID)  # the input axis of a chi model is k
    assert predictor.model.params.representation == "chi"
    card = predictor.model_card
    assert card["input"]["representation"] == "chi"
    assert card["input"]["k"] == [2.0, 11.0, 0.1]
    assert card["input"]["k_weight"] == 2
    assert card["input"]["background"].startswith("Larch autobk, rbkg 1.0")
    assert card["energy_grid_eV"][1] == pytest.approx(energy_of_k(11.0))


def test_a_chi_model_reads_a_measured_spectrum_file(trained_chi, tmp_path):
    out_dir, _, _ = trained_chi
    e0 = 7112.0
    energy = np.arange(-60.0, 480.0, 0.5)
    files, truths = [], []
    for cn in (5, 11):
        mu = 0.2 + 1.7 * _mu(energy, ((float(cn), 2.0), (4.0, 3.2)), scale=EXAFS_SCALE)  # raw units
        path = tmp_path / f"fe_cn{cn}.dat"
        np.savetxt(path, np.column_stack([e0 + energy, mu]), header="energy mu")
        files.append(path)
        truths.append(cn)
    rows = predict_files([out_dir / "model.ckpt"], files, tmp_path / "predictions.csv")
    predicted = [float(row["predicted_coordination_number"]) for row in rows]
    # measured: 5.01 and 11.14 (normalize_xanes finds E0 within 0.02 eV and the step within 1.3 %)
    assert abs(predicted[0] - truths[0]) < 0.6 and abs(predicted[1] - truths[1]) < 0.6, predicted
    assert [row["out_of_distribution"] for row in rows] == ["false", "false"]


def _spectrum_file(path, energy_max: float):
    """A raw Fe K-edge spectrum file (energy, mu columns) from -60 eV to ``energy_max`` above E0."""
    energy = np.arange(-60.0, energy_max, 0.5)
    np.savetxt(path, np.column_stack([7112.0 + energy, 0.2 + 1.7 * _mu(energy)]), header="energy mu")
    return path


def test_chi_training_spectra_are_augmented_as_mu_then_converted(trained_chi):
    _, _, path = trained_chi
    datamodule = SpectrumDataModule(path, _chi_params(batch_size=8), AugmentationParams(seed=1))
    datamodule.setup()
    assert datamodule.full_energy.size == 517 and np.allclose(datamodule.energy, K_GRID)
    augmented = next(iter(datamodule.train_dataloader()))["mu"]  # standardized chi(k)
    assert augmented.shape == (8, K_GRID.size) and torch.isfinite(augmented).all()
    # a redrawn spectrum is near, not equal to, a stored one (noise, shifts, broadening)
    distances = torch.cdist(augmented, datamodule.tensors("train")["mu"]).min(dim=1).values
    assert (distances > 0).all()


def test_the_calibration_foil_is_left_out_of_the_ood_threshold_when_too_short(trained_chi, tmp_path, caplog):
    _, _, path = trained_chi
    datamodule = SpectrumDataModule(path, _chi_params())
    datamodule.setup()
    short = {"measured_path": str(_spectrum_file(tmp_path / "foil_xanes.dat", 80.0))}
    references, threshold = _out_of_distribution_reference(datamodule, short)
    assert "not used for the out-of-distribution threshold" in caplog.text
    assert threshold == _out_of_distribution_reference(datamodule, None)[1]
    caplog.clear()
    long = {"measured_path": str(_spectrum_file(tmp_path / "foil_exafs.dat", 480.0))}
    assert _out_of_distribution_reference(datamodule, long)[0].shape == references.shape
    assert "not used" not in caplog.text


def test_a_dataset_that_ends_below_k_max_is_refused(tmp_path):
    energy = np.arange(-16.0, 301.0, 1.0)
    path = write_dataset(_exafs_dataset(energy), tmp_path / "short.zarr")
    with pytest.raises(UserError, match=r"short\.zarr: .*ends at E0 \+ 300\.0 eV .*E0 \+ 461\.0 eV"):
        SpectrumDataModule(path, _chi_params()).setup()


# --- parameters -----------------------------------------------------------------------------------


def test_k_settings_round_trip_and_mu_stays_the_default():
    params = TrainParams(architecture="mlp", k_min=3.0, k_max=12.0, k_step=0.05, k_weight=1)
    assert params.representation == "mu"
    assert TrainParams.from_dict(params.to_dict()) == params
    chi = TrainParams.from_dict({"architecture": "mlp", "representation": "chi", "k_weight": "3"})
    assert (chi.k_weight, chi.k_grid()[0], chi.k_grid()[-1], chi.k_grid().size) == (3, 2.0, 11.0, 91)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"representation": "fft"}, r"representation is 'fft'; valid: mu, chi"),
        ({"k_min": 11.0, "k_max": 3.0}, r"k_min 11.0 must be >= 0 and below k_max 3.0"),
        ({"k_min": -1.0}, r"k_min -1.0 must be >= 0"),
        ({"k_step": 0.0}, r"k_step is 0.0; it must be > 0"),
        ({"k_weight": 4}, r"k_weight is 4; valid: 0, 1, 2, 3"),
        ({"representation": "chi", "k_step": 5.0}, r"holds 2 points; valid: at least 4"),
        ({"representation": "chi", "energy_min": -10.0}, r"a chi model reads k_min..k_max"),
    ],
)
def test_invalid_representation_settings_are_refused(values, message):
    with pytest.raises(UserError, match=message):
        TrainParams(**values)
