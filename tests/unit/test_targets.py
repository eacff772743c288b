"""Targets from config: every head type learns a constructed relation, cascades, ensembles,
calibrated intervals, the comparison with baselines and the model card in the checkpoint.

The synthetic spectra encode each label in its own feature: the white-line height grows with
the Pt neighbours, its position with the Cu neighbours, a pre-edge peak with the valence, and a
post-edge bump marks grain-boundary sites; a network that does not read them scores like the
mean (or majority) baseline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xasflow.dataset.schema import build_dataset, write_dataset
from xasflow.errors import UserError
from xasflow.inference.predict import load_predictor
from xasflow.models import TrainParams, parse_targets, train_model
from xasflow.models.module import read_checkpoint
from xasflow.models.targets import TargetScale

N_ENERGY = 72
N_R = 40
SYSTEMS = ("s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7")
SPECTRA_PER_SYSTEM = 40


def _dataset(seed: int = 3, undefined_valence_system: str | None = None):
    rng = np.random.default_rng(seed)
    energy = np.linspace(-20.0, 50.0, N_ENERGY)
    r = np.linspace(1.5, 5.5, N_R)
    rows: dict[str, list] = {key: [] for key in ("mu", "pt", "cu", "valence", "gb", "rdf", "system")}
    for system in SYSTEMS:
        for _ in range(SPECTRA_PER_SYSTEM):
            pt, cu = int(rng.integers(0, 9)), int(rng.integers(0, 5))
            valence, gb = int(rng.integers(0, 5)), int(rng.random() < 0.4)
            edge = 1.0 / (1.0 + np.exp(-energy / 1.5))
            white_line = (0.1 + 0.08 * pt) * np.exp(-(((energy - (3.0 + 1.2 * cu)) / 3.0) ** 2))
            pre_edge = 0.06 * valence * np.exp(-(((energy + 8.0) / 1.2) ** 2))
            bump = 0.15 * gb * np.exp(-(((energy - 35.0) / 4.0) ** 2))
            rows["mu"].append(edge + white_line + pre_edge + bump + rng.normal(0.0, 0.005, N_ENERGY))
            rows["rdf"].append(0.3 * (pt + cu) * np.exp(-(((r - 2.7) / 0.15) ** 2)))
            if system == undefined_valence_system:
                valence = -1
            for key, value in (("pt", pt), ("cu", cu), ("valence", valence), ("gb", gb), ("system", system)):
                rows[key].append(value)
    n = len(rows["pt"])
    partial = np.stack([rows["cu"], rows["pt"]], axis=1).astype(float)
    total = partial.sum(axis=1)
    composition = partial / np.maximum(total, 1)[:, None]
    return build_dataset(
        energy=energy,
        r=r,
        mu=np.asarray(rows["mu"]),
        e0=np.full(n, 11564.0),
        coordination_number=total,
        rdf=np.asarray(rows["rdf"]),
        surface=np.zeros(n, dtype=int),
        system=rows["system"],
        frame=np.zeros(n, dtype=int),
        site=np.arange(n),
        absorber=["Pt"] * n,
        attrs={"xasflow_version": "test", "config_hash": "1" * 16, "provenance": {"source": "synthetic"}},
        element=["Cu", "Pt"],
        optional={
            "partial_cn": partial,
            "local_composition": composition,
            "partial_rdf": np.stack([np.asarray(rows["rdf"]) * 0.5] * 2, axis=1),
            "shell_cn": np.stack([total, total * 0.5], axis=1),
            "valence": np.asarray(rows["valence"]),
            "grain_boundary": np.asarray(rows["gb"]),
        },
    )


TARGETS = (
    {"variable": "coordination_number"},
    {"variable": "partial_cn", "element": "Pt"},
    {"variable": "partial_cn", "element": "Cu"},
    {"variable": "valence", "kind": "classification"},
    {"variable": "grain_boundary"},
    {"variable": "rdf", "weight": 0.5},
)


def _params(**overrides) -> TrainParams:
    values = dict(
        architecture="multiscale",
        targets=TARGETS,
        ensemble=3,
        max_epochs=60,
        batch_size=32,
        learning_rate=3e-3,
        hidden_sizes=(64,),
        channels=(8, 16),
        kernel_sizes=(3, 9),
        dropout=0.0,
        val_systems=("s1", "s2"),
        test_systems=("s6", "s7"),
        seed=2,
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
def trained(tmp_path_factory):
    """A cascade multiscale CNN ensemble trained on all target kinds; one system lacks valence."""
    path = write_dataset(_dataset(undefined_valence_system="s3"), tmp_path_factory.mktemp("data") / "d.zarr")
    out_dir = tmp_path_factory.mktemp("multiscale")
    params = _params()
    return params, out_dir, train_model(path, params, out_dir), path


# --- parsing ---------------------------------------------------------------------------------------


def test_targets_parse_with_default_names_and_kinds():
    specs = parse_targets(
        [
            "rdf",
            {"variable": "partial_cn", "element": "Pt"},
            {"variable": "shell_cn", "shell": 2},
            {"variable": "valence", "kind": "regression"},
            "grain_boundary",
        ]
    )
    assert [(spec.name, spec.kind) for spec in specs] == [
        ("rdf", "curve"),
        ("partial_cn_Pt", "regression"),
        ("shell_cn_2", "regression"),
        ("valence_regression", "regression"),
        ("grain_boundary", "probability"),
    ]
    assert [spec.name for spec in parse_targets(None)] == ["coordination_number", "rdf"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"variable": "partial_cn"}, "needs element"),
        ({"variable": "rdf", "kind": "classification"}, "cannot be read as 'classification'"),
        ({"variable": "bond_angle"}, "not a label"),
        ({"variable": "shell_cn", "shell": 0}, "shell is 0"),
        ({"variable": "coordination_number", "weight": -1}, "weight is -1"),
        ({"variable": "coordination_number", "colour": "red"}, "unknown key"),
    ],
)
def test_invalid_targets_are_refused(entry, message):
    with pytest.raises(UserError, match=message):
        parse_targets([entry])


def test_repeated_target_names_are_refused():
    with pytest.raises(UserError, match="repeated"):
        parse_targets(["rdf", "rdf"])


def test_target_scale_round_trips_and_encodes_classes():
    scale = TargetScale.fit("classification", np.array([4.0, 2.0, np.nan, 3.0, 2.0]))
    assert scale.classes == (2, 3, 4)
    assert scale.encode(np.array([3.0, np.nan, 7.0])).tolist() == [1.0, -1.0, -1.0]
    assert TargetScale.from_dict(json.loads(json.dumps(scale.to_dict()))).classes == scale.classes


def test_a_missing_element_or_label_is_named(tmp_path):
    path = write_dataset(_dataset(), tmp_path / "d.zarr")
    for entry, message in (
        ({"variable": "partial_cn", "element": "Ru"}, "names element 'Ru'; the dataset has Cu, Pt"),
        ({"variable": "shell_cn", "shell": 3}, "names shell 3; the dataset has 2"),
    ):
        with pytest.raises(UserError, match=message):
            train_model(path, _params(targets=(entry,), max_epochs=1, ensemble=1), tmp_path / "m")


# --- training on every head type -------------------------------------------------------------------


def test_every_head_type_learns_its_relation(trained):
    _, out_dir, metrics, _ = trained
    targets = metrics["targets"]
    for name in ("coordination_number", "partial_cn_Pt", "partial_cn_Cu"):
        assert targets[name]["test"]["mae"] < 0.5 * targets[name]["baselines"]["mean"]["mae"], name
        assert targets[name]["test"]["r2"] > 0.8, name
    valence = targets["valence"]
    assert valence["test"]["accuracy"] > 0.8
    assert valence["test"]["accuracy"] > valence["baselines"]["mean"]["accuracy"] + 0.4
    gb = targets["grain_boundary"]
    assert gb["test"]["brier"] < 0.5 * gb["baselines"]["mean"]["brier"]
    assert targets["rdf"]["test"]["mae"] < 0.5 * targets["rdf"]["baselines"]["mean"]["mae"]
    # every baseline scored every target on the same test spectra
    for name, entry in targets.items():
        assert set(entry["baselines"]) == {"mean", "ridge", "pls", "knn", "trees"}, name
    assert set(metrics["winners"]) == {spec["name"] for spec in metrics["params"]["targets"]}
    table = (out_dir / "comparison.csv").read_text().splitlines()
    assert len(table) == 1 + 6 * len(targets)  # header + (5 baselines + the network) per target


def test_undefined_values_are_left_out(trained):
    _, _, metrics, path = trained
    # s3 (training) has no valence; the test systems do: all 80 test valences are scored
    valence_rows = [row for row in metrics["targets"]["valence"]["baselines"].values()]
    assert all(row["n_test"] == 80 for row in valence_rows)


def test_intervals_are_calibrated_and_stored(trained):
    _, out_dir, metrics, _ = trained
    coverage = metrics["targets"]["partial_cn_Pt"]["coverage"]
    # validation and test systems are drawn alike: 80 test points, binomial sd about 3-5 %
    assert 0.78 <= coverage["coverage_90"] <= 1.0
    assert 0.5 <= coverage["coverage_68"] <= 0.86
    assert coverage["coverage_68"] <= coverage["coverage_90"] <= coverage["coverage_95"]
    hyper = read_checkpoint(out_dir / "model.ckpt")["hyper_parameters"]
    assert set(hyper["conformal"]) == {"coordination_number", "partial_cn_Pt", "partial_cn_Cu", "rdf"}
    # probabilities are temperature-scaled on the validation systems, and their calibration reported
    assert (
        set(hyper["temperatures"]) == {"grain_boundary"}
        and 0.01 < hyper["temperatures"]["grain_boundary"] < 100
    )
    assert 0 <= metrics["targets"]["grain_boundary"]["expected_calibration_error"] < 0.2
    assert (out_dir / "reliability.png").stat().st_size > 1000


def test_predictions_carry_spread_intervals_and_classes(trained):
    params, out_dir, metrics, path = trained
    from xasflow.dataset.schema import open_dataset

    dataset = open_dataset(path)
    mu = dataset["mu"].values[:10]
    predicted = load_predictor(out_dir / "model.ckpt").predict(mu)
    cn, spread = predicted["partial_cn_Pt"], predicted["partial_cn_Pt_spread"]
    assert cn.shape == spread.shape == (10,) and np.all(spread > 0)  # three members disagree a little
    low, high = predicted["partial_cn_Pt_low_90"], predicted["partial_cn_Pt_high_90"]
    assert np.all(low < cn) and np.all(cn < high)
    assert np.all(predicted["partial_cn_Pt_high_95"] - predicted["partial_cn_Pt_low_95"] >= high - low)
    assert set(np.unique(predicted["valence"])) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    np.testing.assert_allclose(predicted["valence_probabilities"].sum(axis=1), 1.0, atol=1e-6)
    assert np.all((predicted["grain_boundary"] >= 0) & (predicted["grain_boundary"] <= 1))
    assert predicted["rdf"].shape == (10, N_R) and predicted["rdf_low_68"].shape == (10, N_R)


def test_model_card_round_trips(trained):
    params, out_dir, _, _ = trained
    predictor = load_predictor(out_dir / "model.ckpt")
    card = predictor.model_card
    assert card["absorber"] == "Pt"
    assert list(card["targets"]) == list(params.target_names())
    assert card["targets"]["partial_cn_Pt"]["element"] == "Pt"
    assert card["targets"]["valence"]["classes"] == [0, 1, 2, 3, 4]
    assert card["split"]["test"] == ["s6", "s7"]
    assert card["intervals"]["method"] == "split"
    assert card["intervals"]["calibration_systems"] == ["s1", "s2"]
    assert card["intervals"]["spectra"]["coordination_number"] == 80
    assert predictor.targets == params.target_names()
    assert (
        TrainParams.from_dict(read_checkpoint(out_dir / "model.ckpt")["hyper_parameters"]["params"]) == params
    )


def test_cascade_feeds_the_first_target_to_later_heads():
    from xasflow.models.networks import MultiscaleCNN

    heads = {"coordination_number": 1, "partial_cn_Pt": 1, "rdf": N_R}
    cascaded = MultiscaleCNN(N_ENERGY, heads, channels=(4,), kernel_sizes=(3, 7), hidden_sizes=(8,))
    independent = MultiscaleCNN(
        N_ENERGY, heads, channels=(4,), kernel_sizes=(3, 7), hidden_sizes=(8,), cascade=False
    )
    first = cascaded.heads.heads["coordination_number"].in_features
    assert cascaded.heads.heads["partial_cn_Pt"].in_features == first + 1
    assert cascaded.heads.heads["rdf"].in_features == first + 1
    assert independent.heads.heads["rdf"].in_features == first
    # a change of the first head's output reaches the later heads
    torch.manual_seed(0)
    for head in cascaded.heads.heads.values():
        torch.nn.init.normal_(head.weight)
    mu = torch.randn(4, N_ENERGY)
    before = cascaded(mu)["partial_cn_Pt"].detach().clone()
    with torch.no_grad():
        cascaded.heads.heads["coordination_number"].bias += 5.0
    assert not torch.allclose(cascaded(mu)["partial_cn_Pt"], before)


def test_ensemble_members_differ_and_training_is_reproducible(tmp_path):
    path = write_dataset(_dataset(), tmp_path / "d.zarr")
    params = _params(targets=("coordination_number",), ensemble=2, max_epochs=3, architecture="mlp")
    first = train_model(path, params, tmp_path / "a")
    second = train_model(path, params, tmp_path / "b")
    assert first["test_coordination_number_mae"] == second["test_coordination_number_mae"]
    state = read_checkpoint(tmp_path / "a" / "model.ckpt")["state_dict"]
    weights = [name for name in state if name.endswith("trunk.0.weight")]
    assert len(weights) == 2 and not torch.equal(state[weights[0]], state[weights[1]])


def test_too_few_training_spectra_train_without_baselines(tmp_path, caplog):
    dataset = _dataset()
    systems = np.asarray(dataset["system"].values.tolist())
    keep = np.concatenate([np.flatnonzero(systems == name)[:2] for name in ("s0", "s1", "s6")])
    path = write_dataset(dataset.isel(spectrum=keep), tmp_path / "tiny.zarr")
    params = _params(
        targets=("coordination_number", "grain_boundary"),
        ensemble=1,
        max_epochs=2,
        val_systems=("s1",),
        test_systems=("s6",),
    )
    with caplog.at_level("WARNING", logger="xasflow.models.evaluate"):
        metrics = train_model(path, params, tmp_path / "model")
    assert metrics["n_train"] == 2 and metrics["targets"]["coordination_number"]["baselines"] == {}
    assert "fewer than the 3 the baselines need" in caplog.text
    assert (tmp_path / "model" / "comparison.csv").is_file()
