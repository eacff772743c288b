"""Unit tests of xasflow.models and xasflow.inference.predict on a small synthetic dataset.

The synthetic spectra carry a white line whose height and position grow with the coordination
number, so a working network must beat a model that predicts the training mean.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xasflow.dataset.schema import DatasetSchemaError, build_dataset, write_dataset
from xasflow.errors import UserError
from xasflow.inference.predict import load_predictor
from xasflow.models import (
    MultiscaleCNN,
    SpectrumCNN,
    SpectrumDataModule,
    SpectrumMLP,
    SpectrumRegressor,
    TrainParams,
    build_network,
    train_model,
)

N_ENERGY = 64
N_R = 60
HEADS = {"coordination_number": 1, "rdf": N_R}
# system name -> (mean, spread) of its site coordination numbers; the test system has a wide spread
SYSTEMS = {
    "np_small_300K": (6.0, 2.0),
    "np_medium_300K": (7.5, 2.0),
    "np_large_300K": (9.0, 2.0),
    "bulk_fcc_300K": (11.0, 1.0),
    "amorphous_600K": (5.0, 1.5),
    "np_mixed_300K": (8.0, 2.5),
}
VAL_SYSTEMS = ("np_medium_300K",)
TEST_SYSTEMS = ("np_mixed_300K",)
FRAMES, SITES = 4, 5


def _synthetic_dataset(seed: int = 7):
    rng = np.random.default_rng(seed)
    energy = np.linspace(-20.0, 60.0, N_ENERGY)  # eV relative to E0
    r = np.linspace(1.5, 6.0, N_R)  # Angstrom
    rows: dict[str, list] = {key: [] for key in ("mu", "cn", "rdf", "system", "frame", "site")}
    for system, (mean_cn, spread) in SYSTEMS.items():
        for frame in range(FRAMES):
            for site in range(SITES):
                cn = float(np.clip(rng.normal(mean_cn, spread), 3.0, 12.0))
                edge = 1.0 / (1.0 + np.exp(-energy / 1.5))
                white_line = (0.2 + 0.08 * cn) * np.exp(-(((energy - (4.0 + 0.8 * cn)) / 4.0) ** 2))
                mu = edge + white_line + rng.normal(0.0, 0.01, N_ENERGY)
                rdf = (
                    0.4 * cn * np.exp(-(((r - 2.55) / 0.12) ** 2))
                    + 1.5 * np.exp(-(((r - 3.6) / 0.15) ** 2))
                    + 1.0 / (1.0 + np.exp(-(r - 4.2) / 0.3))
                )
                for key, value in zip(
                    ("mu", "cn", "rdf", "system", "frame", "site"),
                    (mu, cn, rdf, system, frame, site),
                    strict=True,
                ):
                    rows[key].append(value)
    n_spectra = len(rows["cn"])
    coordination_number = np.asarray(rows["cn"])
    return build_dataset(
        energy=energy,
        r=r,
        mu=np.asarray(rows["mu"]),
        e0=8979.0 + rng.normal(0.0, 0.3, n_spectra),
        coordination_number=coordination_number,
        rdf=np.asarray(rows["rdf"]),
        surface=(coordination_number < 9).astype(int),
        system=rows["system"],
        frame=np.asarray(rows["frame"]),
        site=np.asarray(rows["site"]),
        absorber=["Cu"] * n_spectra,
        attrs={"xasflow_version": "test", "config_hash": "0" * 16, "provenance": {"source": "synthetic"}},
    )


def _params(**overrides) -> TrainParams:
    values = dict(
        architecture="mlp",
        max_epochs=40,
        batch_size=16,
        learning_rate=3e-3,
        targets=({"variable": "coordination_number"}, {"variable": "rdf", "weight": 0.1}),
        hidden_sizes=(64, 32),
        channels=(8, 16),
        kernel_size=5,
        dropout=0.0,
        val_systems=VAL_SYSTEMS,
        test_systems=TEST_SYSTEMS,
    )
    values.update(overrides)
    return TrainParams(**values)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    return write_dataset(_synthetic_dataset(), tmp_path_factory.mktemp("data") / "spectra.zarr")


@pytest.fixture(scope="module", params=["cnn", "mlp"])
def trained(request, dataset_path, tmp_path_factory):
    """(params, out_dir, metrics) of one short training run per architecture."""
    params = _params(architecture=request.param)
    out_dir = tmp_path_factory.mktemp(f"train_{request.param}")
    metrics = train_model(dataset_path, params, out_dir)
    return params, out_dir, metrics


# --- networks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "network",
    [
        SpectrumCNN(N_ENERGY, HEADS, channels=(4, 8, 8), kernel_size=3, hidden_sizes=(16,)),
        SpectrumCNN(N_ENERGY, HEADS, channels=(4,), kernel_size=4, hidden_sizes=()),
        SpectrumMLP(N_ENERGY, HEADS, hidden_sizes=(32, 16), dropout=0.2),
        SpectrumMLP(N_ENERGY, HEADS, hidden_sizes=()),
        MultiscaleCNN(N_ENERGY, HEADS, channels=(4, 8), kernel_sizes=(3, 9, 21), hidden_sizes=(16,)),
    ],
    ids=["cnn", "cnn_even_kernel", "mlp", "linear", "multiscale"],
)
def test_forward_shapes(network):
    output = network(torch.randn(5, N_ENERGY))
    assert set(output) == {"coordination_number", "rdf"}
    assert output["coordination_number"].shape == (5, 1)
    assert output["rdf"].shape == (5, N_R)


@pytest.mark.parametrize(
    "architecture, network_type", [("cnn", SpectrumCNN), ("mlp", SpectrumMLP), ("multiscale", MultiscaleCNN)]
)
def test_build_network_follows_params(architecture, network_type):
    network = build_network(_params(architecture=architecture, ensemble=3), N_ENERGY, HEADS)
    assert len(network.members) == 3
    assert all(isinstance(member, network_type) for member in network.members)
    assert network(torch.randn(2, N_ENERGY))["rdf"].shape == (3, 2, N_R)


def test_cnn_too_many_blocks_raises():
    with pytest.raises(ValueError, match="leave no energy points"):
        SpectrumCNN(8, HEADS, channels=(4, 4, 4, 4), kernel_size=3)


# --- parameters and splits ------------------------------------------------------------------------


def test_from_dict_converts_lists_and_numbers():
    params = TrainParams.from_dict(
        {"architecture": "mlp", "hidden_sizes": [32, 16], "learning_rate": "1e-3", "test_systems": ["a"]}
    )
    assert params.hidden_sizes == (32, 16)
    assert params.learning_rate == pytest.approx(1e-3)
    assert params.test_systems == ("a",)
    assert TrainParams.from_dict(params.to_dict()) == params


def test_from_dict_unknown_key_raises():
    with pytest.raises(UserError, match="'learnig_rate'"):
        TrainParams.from_dict({"learnig_rate": 0.01})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"architecture": "transformer"}, "architecture"),
        ({"dropout": 1.0}, "dropout"),
        (
            {"val_systems": ("a",), "test_systems": ("a",)},
            "'a' is named in both val_systems and test_systems",
        ),
        ({"test_systems": ("a",), "exclude_systems": ("a",)}, "'a'"),
    ],
)
def test_invalid_params_raise(overrides, message):
    with pytest.raises(UserError, match=message):
        TrainParams(**overrides)


def test_automatic_split_is_deterministic_and_disjoint():
    systems = [f"system_{index}" for index in range(6)] * 3
    split = TrainParams(seed=3, exclude_systems=("system_5",)).resolve_splits(systems)
    assert split == TrainParams(seed=3, exclude_systems=("system_5",)).resolve_splits(systems)
    assert len(split.val) >= 1 and len(split.test) >= 1 and len(split.train) >= 1
    named = [*split.train, *split.val, *split.test, *split.excluded]
    assert sorted(named) == sorted(set(systems))  # every system exactly once
    assert split.excluded == ("system_5",)
    # with three systems left, each split still gets one
    small = TrainParams().resolve_splits(["a", "b", "c"])
    assert (len(small.train), len(small.val), len(small.test)) == (1, 1, 1)


def test_no_system_left_for_training_raises():
    with pytest.raises(UserError, match="no system is left for training"):
        TrainParams(val_systems=("a",), test_systems=("b",)).resolve_splits(["a", "b"])


def test_datamodule_splits_by_system(dataset_path):
    datamodule = SpectrumDataModule(dataset_path, _params(val_systems=(), test_systems=(), seed=11))
    datamodule.setup("fit")
    split_systems = {name: set(datamodule.arrays(name).system) for name in ("train", "val", "test")}
    assert all(split_systems.values())
    assert not split_systems["train"] & split_systems["val"]
    assert not split_systems["train"] & split_systems["test"]
    assert not split_systems["val"] & split_systems["test"]
    # whole systems: every spectrum of a system is in its split
    assert sum(len(datamodule.arrays(name)) for name in split_systems) == len(SYSTEMS) * FRAMES * SITES
    for name, systems in split_systems.items():
        assert len(datamodule.arrays(name)) == len(systems) * FRAMES * SITES
    # statistics come from the training split only
    train = datamodule.arrays("train")
    assert datamodule.normalization.targets["coordination_number"].mean == pytest.approx(
        float(np.mean(train.targets["coordination_number"]))
    )
    np.testing.assert_allclose(datamodule.normalization.mu_mean, train.mu.mean(axis=0), rtol=1e-5)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["mu"].shape == (16, N_ENERGY) and batch["rdf"].shape == (16, N_R)


def test_datamodule_does_not_open_data_in_init(tmp_path):
    datamodule = SpectrumDataModule(tmp_path / "missing.zarr", _params())  # no error until setup()
    assert datamodule.split is None and datamodule.energy is None and datamodule.normalization is None
    with pytest.raises(RuntimeError, match=r"setup\(\) must run before arrays"):
        datamodule.arrays("train")
    with pytest.raises(DatasetSchemaError, match="missing.zarr: dataset does not exist"):
        datamodule.setup("fit")


def test_unknown_system_raises(dataset_path):
    datamodule = SpectrumDataModule(dataset_path, _params(test_systems=("np_tiny_900K",)))
    with pytest.raises(UserError, match=r"'np_tiny_900K'.*available systems: amorphous_600K, bulk_fcc_300K"):
        datamodule.setup("fit")


# --- training and prediction ----------------------------------------------------------------------


def test_training_writes_outputs_and_beats_baseline(trained):
    params, out_dir, metrics = trained
    for name in ("model.ckpt", "metrics.json", "parity.png", "loss.png", "reliability.png", "comparison.csv"):
        assert (out_dir / name).is_file(), name
    assert (out_dir / "logs" / "metrics.csv").is_file()
    assert json.loads((out_dir / "metrics.json").read_text()) == metrics
    for key in (
        "architecture",
        "n_train",
        "n_val",
        "n_test",
        "train_systems",
        "val_systems",
        "test_systems",
        "test_coordination_number_mae",
        "test_coordination_number_r2",
        "test_rdf_mae",
        "baseline_test_coordination_number_mae",
        "baseline_test_coordination_number_r2",
        "baseline_test_rdf_mae",
        "targets",
        "winners",
        "epochs_run",
        "wall_seconds",
        "versions",
    ):
        assert key in metrics, key
    assert metrics["architecture"] == params.architecture
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (80, 20, 20)
    assert metrics["test_systems"] == list(TEST_SYSTEMS)
    assert metrics["epochs_run"] == params.max_epochs
    # a real check: a network that did not learn the white line scores about the baseline
    assert metrics["test_coordination_number_mae"] < 0.5 * metrics["baseline_test_coordination_number_mae"]
    assert metrics["test_coordination_number_r2"] > 0.5, metrics
    assert metrics["test_rdf_mae"] < metrics["baseline_test_rdf_mae"], metrics


def test_predictor_round_trip(trained, dataset_path):
    params, out_dir, metrics = trained
    predictor = load_predictor(out_dir / "model.ckpt")
    assert predictor.architecture == params.architecture
    assert predictor.energy.shape == (N_ENERGY,) and predictor.r.shape == (N_R,)

    # the module evaluated directly, with normalization recomputed from the data
    datamodule = SpectrumDataModule(dataset_path, params)
    datamodule.setup("test")
    checkpoint = torch.load(out_dir / "model.ckpt", map_location="cpu", weights_only=True)
    module = SpectrumRegressor(
        params,
        datamodule.energy,
        datamodule.r,
        datamodule.normalization,
        ood_reference_count=checkpoint["state_dict"]["ood_reference"].shape[0],
    )
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    test = datamodule.arrays("test")
    with torch.no_grad():
        direct = module(torch.from_numpy(datamodule.normalization.standardize_mu(test.mu)))
    scales = datamodule.normalization.targets
    direct_cn = scales["coordination_number"].decode(direct["coordination_number"].numpy()[0, :, 0])

    predicted = predictor.predict(test.mu)
    assert predicted["coordination_number"].shape == (20,) and predicted["rdf"].shape == (20, N_R)
    np.testing.assert_allclose(predicted["coordination_number"], direct_cn, atol=1e-5)
    direct_rdf = direct["rdf"].numpy()[0] + scales["rdf"].mean
    np.testing.assert_allclose(predicted["rdf"], direct_rdf, atol=1e-5)
    mae = float(np.mean(np.abs(predicted["coordination_number"] - test.targets["coordination_number"])))
    assert mae == pytest.approx(metrics["test_coordination_number_mae"], abs=1e-5)


def test_predictor_rejects_wrong_energy_length(trained):
    predictor = load_predictor(trained[1] / "model.ckpt")
    with pytest.raises(ValueError, match=f"expects \\(n_spectra, {N_ENERGY}\\)"):
        predictor.predict(np.zeros((3, N_ENERGY - 1)))
    with pytest.raises(ValueError, match=f"{N_ENERGY}"):
        predictor.predict(np.zeros(N_ENERGY))


def test_load_predictor_missing_or_corrupt_file(tmp_path):
    with pytest.raises(UserError, match="absent.ckpt"):
        load_predictor(tmp_path / "absent.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt.ckpt"):
        load_predictor(corrupt)


def test_a_model_window_cuts_the_grid_after_calibration_and_augmentation(dataset_path):
    from xasflow.experiment.fidelity import CalibrationTransform
    from xasflow.models.augment import AugmentationParams

    params = _params(energy_min=-10.0, energy_max=20.0)
    calibration = CalibrationTransform(shift=0.5, stretch=0.05, fwhm=1.0)
    windowed = SpectrumDataModule(dataset_path, params, AugmentationParams(seed=1), calibration)
    windowed.setup("fit")
    whole = SpectrumDataModule(dataset_path, _params(), AugmentationParams(seed=1), calibration)
    whole.setup("fit")
    inside = (whole.energy >= -10.0) & (whole.energy <= 20.0)
    assert np.array_equal(windowed.energy, whole.energy[inside])
    # the calibration acted on the whole grid: the window holds exactly those values
    np.testing.assert_allclose(windowed.arrays("test").mu, whole.arrays("test").mu[:, inside])
    batch = next(iter(windowed.train_dataloader()))
    assert batch["mu"].shape[1] == inside.sum()
    with pytest.raises(UserError, match="energy_min"):
        _params(energy_min=20.0, energy_max=-10.0)
