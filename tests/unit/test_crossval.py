"""Leave-one-system-out cross-validation and intervals calibrated across systems.

The synthetic spectra of test_targets carry the Pt partial CN in the white line and the
grain-boundary flag in a post-edge bump; every system is drawn from the same distribution, so
out-of-system intervals should cover at their nominal rate.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from test_targets import _dataset, _params

from xasflow.dataset.schema import write_dataset
from xasflow.errors import UserError
from xasflow.models.conformal import fit_conformal
from xasflow.models.crossval import (
    CROSSVAL_CSV,
    CROSSVAL_JSON,
    cross_system_coverage,
    cross_validate,
    fold_params,
)


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _shifted_systems(n_systems: int = 40, per_system: int = 40, seed: int = 5):
    """Predictions whose error is a bias per system (sd 1) plus scatter (sd 0.3); the spread
    sees only the scatter, as an ensemble trained on other systems would."""
    rng = np.random.default_rng(seed)
    system = np.repeat([f"s{index}" for index in range(n_systems)], per_system)
    bias = np.repeat(rng.normal(0.0, 1.0, n_systems), per_system)
    truth = rng.uniform(0.0, 12.0, system.size)
    spread = rng.uniform(0.2, 0.4, system.size)
    prediction = truth + bias + rng.normal(0.0, 1.0, system.size) * spread
    return system, truth, prediction, spread


def test_cross_system_intervals_cover_a_new_system_where_one_system_does_not():
    system, truth, prediction, spread = _shifted_systems()
    report = cross_system_coverage(system, truth, prediction, spread)
    assert report["n"] == system.size
    assert set(report["per_system"]) == set(system.tolist())
    for level, nominal in (("68", 0.68), ("90", 0.90), ("95", 0.95)):
        assert abs(report["overall"][level] - nominal) < 0.05, (level, report["overall"])
    # calibrated on one system, the intervals know only that system's bias: their coverage of
    # the others is a lottery over which system calibrated them
    single = []
    for name in sorted(set(system.tolist())):
        one = system == name
        calibration = fit_conformal(truth[one], prediction[one], spread[one])
        low, high = calibration.interval(prediction[~one], spread[~one], 0.9)
        single.append(np.mean((truth[~one] >= low) & (truth[~one] <= high)))
    assert min(single) < 0.5 and max(single) > 0.97
    assert np.mean(np.abs(np.array(single) - 0.9) > 0.1) > 0.4
    # the same cross-system fit without the spread: one width for all, also calibrated
    plain = cross_system_coverage(system, truth, prediction, spread, normalized=False)
    assert abs(plain["overall"]["90"] - 0.9) < 0.05


def test_a_system_with_too_few_other_scores_is_left_out():
    report = cross_system_coverage(np.array(["a", "b"]), np.zeros(2), np.ones(2), np.ones(2))
    assert report["per_system"] == {} and report["n"] == 0 and report["overall"]["90"] is None


def test_each_fold_keeps_the_split_size():
    params = _params(val_systems=("s1", "s2"), test_systems=("s6",), conformal="cross_system")
    regular = fold_params(params, "s3", ("s6", "s0"))
    assert regular.test_systems == ("s3",) and regular.val_systems == ("s1", "s2")
    assert regular.conformal == "split"  # a fold is never cross-calibrated itself
    validation = fold_params(params, "s1", ("s6", "s0"))
    assert validation.test_systems == ("s1",) and validation.val_systems == ("s2", "s6")
    assert fold_params(params, "s6", ("s6", "s0")).val_systems == ("s1", "s2")
    with pytest.raises(UserError, match="no validation system is left"):
        fold_params(_params(val_systems=("s1",)), "s1", ())


def test_every_spectrum_is_predicted_once_by_a_model_that_never_saw_its_system(tmp_path, caplog):
    path = write_dataset(_dataset(), tmp_path / "d.zarr")
    params = _params(
        architecture="mlp",
        targets=({"variable": "partial_cn", "element": "Pt"}, "grain_boundary"),
        ensemble=3,
        max_epochs=30,
        hidden_sizes=(32,),
        val_systems=("s1",),
        test_systems=("s2",),
        exclude_systems=("s4", "s5", "s6", "s7"),
    )
    out = tmp_path / "cv"
    summary = cross_validate(path, params, out)
    assert summary["systems"] == ["s0", "s1", "s2", "s3"]
    assert summary["folds"]["s1"]["val_systems"] == ["s2"]
    with open(out / CROSSVAL_CSV, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["target"] == "partial_cn_Pt"]
    assert len(rows) == 4 * 40
    assert {row["system"] for row in rows} == {"s0", "s1", "s2", "s3"}
    # the pooled network MAE is the mean error over every out-of-system prediction
    errors = [abs(float(row["truth"]) - float(row["predicted"])) for row in rows]
    entry = summary["targets"]["partial_cn_Pt"]
    assert entry["models"]["network"]["mae"] == pytest.approx(np.mean(errors), rel=1e-4)
    assert entry["models"]["network"]["n"] == 160
    # the relation is learned (the mean baseline knows nothing of the spectrum) ...
    assert entry["models"]["network"]["mae"] < 0.5 * entry["models"]["mean"]["mae"]
    assert entry["best_baseline"] in ("ridge", "pls", "knn", "trees")
    # ... and the systems are alike, so the intervals cover near their nominal rate
    overall = entry["coverage"]["cross_system"]["overall"]
    assert 0.8 <= overall["90"] <= 0.98 and 0.55 <= overall["68"] <= 0.8
    assert "accuracy" in summary["targets"]["grain_boundary"]["models"]["network"]
    assert json.loads((out / CROSSVAL_JSON).read_text())["targets"].keys() == summary["targets"].keys()
    assert (out / "reliability.png").stat().st_size > 1000
    # a rerun with the same parameters trains nothing again
    checkpoint = out / "folds" / "s0" / "model.ckpt"
    stamp = checkpoint.stat().st_mtime_ns
    caplog.set_level("INFO", logger="xasflow")
    again = cross_validate(path, params, out)
    assert checkpoint.stat().st_mtime_ns == stamp
    assert "already trained" in caplog.text
    assert again["targets"]["partial_cn_Pt"]["models"] == entry["models"]
    # another dataset (its config hash) under the same folder trains the folds again
    other = _dataset(seed=4)
    other.attrs["config_hash"] = "2" * 16
    cross_validate(write_dataset(other, tmp_path / "other.zarr"), params, out)
    assert checkpoint.stat().st_mtime_ns != stamp


def test_a_cross_system_calibrated_model_never_trains_on_its_test_systems(tmp_path):
    from xasflow.models.module import model_from_checkpoint, read_checkpoint
    from xasflow.models.train import train_model

    path = write_dataset(_dataset(), tmp_path / "d.zarr")
    params = _params(
        architecture="mlp",
        targets=({"variable": "partial_cn", "element": "Pt"},),
        ensemble=2,
        max_epochs=20,
        hidden_sizes=(32,),
        val_systems=("s1",),
        test_systems=("s2",),
        exclude_systems=("s5", "s6", "s7"),
        conformal="cross_system",
    )
    out = tmp_path / "model"
    metrics = train_model(path, params, out)
    folds = sorted(child.name for child in (out / "crossval" / "folds").iterdir())
    assert folds == ["s0", "s1", "s3", "s4"]  # the development systems; not s2, not excluded ones
    for fold in folds:
        fold_metrics = json.loads((out / "crossval" / "folds" / fold / "metrics.json").read_text())
        assert "s2" not in fold_metrics["train_systems"] + fold_metrics["val_systems"]
        assert fold_metrics["test_systems"] == [fold] and fold_metrics["params"]["conformal"] == "split"
    # the held-out validation system's fold validates on a training system instead
    assert json.loads((out / "crossval" / "folds" / "s1" / "metrics.json").read_text())["val_systems"] == [
        "s0"
    ]
    # the checkpoint's multipliers are those of the pooled out-of-system scores
    summary = json.loads((out / "crossval" / "crossval.json").read_text())
    assert summary["systems"] == folds
    model = model_from_checkpoint(read_checkpoint(out / "model.ckpt"), out / "model.ckpt")
    calibration = model.conformal["partial_cn_Pt"]
    assert calibration.n_calibration == 4 * 40 and not calibration.normalized  # plain score across systems
    assert model.model_card["intervals"] == {
        "method": "cross_system",
        "calibration_systems": folds,
        "spectra": {"partial_cn_Pt": 160},
    }
    coverage = metrics["targets"]["partial_cn_Pt"]["coverage"]
    assert 0.75 <= coverage["coverage_90"] <= 1.0
    assert (out / "reliability.png").stat().st_size > 1000


def test_nested_folds_calibrate_without_their_held_out_system(tmp_path):
    path = write_dataset(_dataset(), tmp_path / "d.zarr")
    params = _params(
        architecture="mlp",
        targets=({"variable": "partial_cn", "element": "Pt"},),
        ensemble=2,
        max_epochs=5,
        hidden_sizes=(16,),
        val_systems=("s1",),
        test_systems=("s2",),
        exclude_systems=("s4", "s5", "s6", "s7"),
        conformal="cross_system",
    )
    out = tmp_path / "nested"
    summary = cross_validate(path, params, out, nested=True)
    assert summary["nested"] is True
    coverage = summary["targets"]["partial_cn_Pt"]["coverage"]
    assert set(coverage) == {"nested_cross_system", "cross_system", "cross_system_normalized"}
    assert all(0.0 <= coverage["nested_cross_system"][level] <= 1.0 for level in ("68", "90", "95"))
    for held_out in ("s0", "s1", "s2", "s3"):
        fold = out / "folds" / held_out
        assert json.loads((fold / "metrics.json").read_text())["params"]["conformal"] == "cross_system"
        inner = sorted(child.name for child in (fold / "crossval" / "folds").iterdir())
        assert held_out not in inner and len(inner) == 3
