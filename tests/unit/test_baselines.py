"""Baselines and test metrics: hand-computed metrics, each baseline on data whose answer is
known (a linear relation, a sine, a step, two latent factors, separable classes), the
validation split choosing the hyperparameters, and the comparison table and its files."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from xasflow.errors import UserError
from xasflow.models import baselines
from xasflow.models.baselines import (
    BASELINES,
    compare_baselines,
    comparison_table,
    fit_baseline,
    winners,
    write_comparison,
)
from xasflow.models.metrics import TARGET_KINDS, main_metric, target_metrics

# ---------------------------------------------------------------- metrics, by hand


def test_regression_metrics_by_hand():
    metrics = target_metrics("regression", [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 6.0])
    # residuals 0, 0, 0, 2; deviations from the mean 2.5: sum of squares 5
    assert metrics == pytest.approx({"mae": 0.5, "rmse": 1.0, "r2": 1.0 - 4.0 / 5.0})


def test_r2_is_none_for_a_constant_truth_and_one_spectrum():
    assert target_metrics("regression", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])["r2"] is None
    assert target_metrics("regression", [2.0], [2.5]) == pytest.approx({"mae": 0.5, "rmse": 0.5, "r2": None})
    assert target_metrics("curve", [[0.0, 1.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 2.0]])["r2"] is None


def test_curve_metrics_by_hand_and_the_mean_curve_scores_zero():
    truth = [[0.0, 1.0], [2.0, 3.0]]  # mean curve (1, 2); deviations +-1 at every point: 4
    one_off = [[0.0, 1.0], [2.0, 4.0]]
    assert target_metrics("curve", truth, one_off) == pytest.approx({"mae": 0.25, "r2": 0.75})
    mean_curve = [[1.0, 2.0], [1.0, 2.0]]
    assert target_metrics("curve", truth, mean_curve) == pytest.approx({"mae": 1.0, "r2": 0.0})


def test_classification_metrics_by_hand():
    metrics = target_metrics("classification", [0, 1, 2, 3], [0, 1, 1, 1])
    assert metrics == pytest.approx({"accuracy": 0.5, "mae": 0.75})


def test_probability_metrics_by_hand():
    truth, probability = [0, 0, 1, 1], [0.1, 0.6, 0.8, 0.4]
    metrics = target_metrics("probability", truth, probability)
    assert metrics["accuracy"] == pytest.approx(0.5)  # 0.6 and 0.4 on the wrong side of 0.5
    assert metrics["brier"] == pytest.approx((0.01 + 0.36 + 0.04 + 0.36) / 4)
    expected_log_loss = -(math.log(0.9) + math.log(0.4) + math.log(0.8) + math.log(0.4)) / 4
    assert metrics["log_loss"] == pytest.approx(expected_log_loss)
    assert metrics["roc_auc"] == pytest.approx(0.75)  # 3 of the 4 (negative, positive) pairs ordered


def test_probability_log_loss_is_clipped_and_auc_needs_both_outcomes():
    metrics = target_metrics("probability", [1, 1], [0.0, 1.0])
    assert metrics["log_loss"] == pytest.approx(-math.log(1e-7) / 2)
    assert metrics["roc_auc"] is None
    assert metrics["accuracy"] == 0.5


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_every_metric_is_none_without_spectra(kind):
    metrics = target_metrics(kind, np.zeros(0), np.zeros(0))
    assert metrics and all(value is None for value in metrics.values())


def test_main_metrics_and_refused_inputs():
    assert [main_metric(kind) for kind in TARGET_KINDS] == [
        ("mae", "min"),
        ("mae", "min"),
        ("accuracy", "max"),
        ("brier", "min"),
    ]
    with pytest.raises(UserError, match="unknown target kind 'valence'"):
        main_metric("valence")
    with pytest.raises(UserError, match=r"must lie in \[0, 1\]"):
        target_metrics("probability", [0, 1], [0.2, 1.3])
    with pytest.raises(UserError, match="outcomes 0 or 1"):
        target_metrics("probability", [0, 2], [0.2, 0.3])
    with pytest.raises(UserError, match="shape"):
        target_metrics("regression", [1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(UserError, match="whole-number class labels"):
        target_metrics("classification", [0.5, 1.0], [0, 1])


# ---------------------------------------------------------------- baselines on known answers


def _splits(x: np.ndarray, y: np.ndarray, n_train: int, n_val: int):
    """(x_train, y_train, x_val, y_val), (x_test, y_test) in order."""
    end = n_train + n_val
    return (x[:n_train], y[:n_train], x[n_train:end], y[n_train:end]), (x[end:], y[end:])


def _test_metrics(name: str, kind: str, fit_arguments, test, **options) -> dict:
    fitted = fit_baseline(name, kind, *fit_arguments, **options)
    return target_metrics(kind, test[1], fitted.predict(test[0]))


def test_ridge_recovers_a_linear_relation_and_the_mean_does_not():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(160, 10))
    y = x @ rng.normal(size=10) + 0.05 * rng.normal(size=160)
    fit_arguments, test = _splits(x, y, 80, 40)
    assert _test_metrics("ridge", "regression", fit_arguments, test)["r2"] > 0.99
    assert _test_metrics("mean", "regression", fit_arguments, test)["r2"] <= 0.0


def test_knn_beats_ridge_on_a_sine():
    rng = np.random.default_rng(2)
    x = rng.uniform(-2.0, 2.0, size=(400, 2))
    y = np.sin(3.0 * x[:, 0])
    fit_arguments, test = _splits(x, y, 250, 75)
    knn = _test_metrics("knn", "regression", fit_arguments, test)
    ridge = _test_metrics("ridge", "regression", fit_arguments, test)
    assert knn["r2"] > 0.9
    assert ridge["r2"] < 0.3  # a straight line through sin(3 x) explains little
    assert knn["mae"] < 0.5 * ridge["mae"]


def test_trees_follow_a_step():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1.0, 1.0, size=(140, 3))
    y = np.where(x[:, 0] > 0.2, 3.0, 1.0)
    fit_arguments, test = _splits(x, y, 80, 30)
    trees = _test_metrics("trees", "regression", fit_arguments, test)
    ridge = _test_metrics("ridge", "regression", fit_arguments, test)
    assert trees["r2"] > 0.9
    assert trees["mae"] < 0.5 * ridge["mae"]


def test_pls_finds_two_latent_factors():
    rng = np.random.default_rng(4)
    factors = rng.normal(size=(150, 2)) * np.array([3.0, 1.0])  # unequal spread: one component is not enough
    x = factors @ rng.normal(size=(2, 30)) + 0.05 * rng.normal(size=(150, 30))
    y = factors @ np.array([0.5, 2.0])
    fit_arguments, test = _splits(x, y, 80, 30)
    fitted = fit_baseline("pls", "regression", *fit_arguments)
    assert fitted.params["n_components"] >= 2
    assert target_metrics("regression", test[1], fitted.predict(test[0]))["r2"] > 0.95


def _three_blobs(rng: np.random.Generator, sizes: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Three classes around corners of a triangle in the first two of 6 features."""
    centres = np.array([[3.0, 0.0], [-1.5, 2.6], [-1.5, -2.6]])
    labels = np.repeat(np.arange(3), sizes)
    x = rng.normal(size=(len(labels), 6))
    x[:, :2] += centres[labels]
    order = rng.permutation(len(labels))
    return x[order], labels[order]


def test_three_separable_classes():
    rng = np.random.default_rng(5)
    fit_x, fit_y = _three_blobs(rng, (50, 30, 20))  # class 0 is the majority
    test_x, test_y = _three_blobs(rng, (10, 15, 15))
    fit_arguments = (fit_x[:70], fit_y[:70], fit_x[70:], fit_y[70:])
    ridge = _test_metrics("ridge", "classification", fit_arguments, (test_x, test_y))
    mean = fit_baseline("mean", "classification", *fit_arguments)
    assert ridge["accuracy"] > 0.9
    assert np.all(mean.predict(test_x) == 0)
    majority_share = target_metrics("classification", test_y, mean.predict(test_x))["accuracy"]
    assert majority_share == pytest.approx(10 / 40)


def test_logistic_probability_beats_the_rate_and_every_baseline_gives_probabilities():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(240, 5))
    outcome = (rng.uniform(size=240) < 1.0 / (1.0 + np.exp(-3.0 * x[:, 0]))).astype(int)
    fit_arguments, test = _splits(x, outcome, 120, 60)
    logistic = fit_baseline("ridge", "probability", *fit_arguments)
    rate = fit_baseline("mean", "probability", *fit_arguments)
    assert logistic.description.startswith("logistic C=")
    assert np.allclose(rate.predict(test[0]), fit_arguments[1].mean())
    brier = {
        name: target_metrics("probability", test[1], model.predict(test[0]))["brier"]
        for name, model in (("logistic", logistic), ("rate", rate))
    }
    assert brier["logistic"] < 0.7 * brier["rate"]
    for name in ("pls", "knn"):
        probability = fit_baseline(name, "probability", *fit_arguments).predict(test[0])
        assert probability.shape == (60,)
        assert probability.min() >= 0.0 and probability.max() <= 1.0


def test_curve_targets_keep_their_shape_and_ridge_beats_the_mean_curve():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(130, 8))
    r = np.linspace(1.5, 6.0, 20)
    amplitude = x @ rng.normal(size=8)
    curves = 1.0 + np.outer(amplitude, np.sin(2.0 * r)) + 0.05 * rng.normal(size=(130, 20))
    fit_arguments, test = _splits(x, curves, 70, 30)
    metrics = {}
    for name in ("mean", "ridge", "pls", "knn"):
        predicted = fit_baseline(name, "curve", *fit_arguments).predict(test[0])
        assert predicted.shape == (30, 20)
        metrics[name] = target_metrics("curve", test[1], predicted)
    assert metrics["ridge"]["mae"] < 0.2 * metrics["mean"]["mae"]
    assert metrics["ridge"]["r2"] > 0.95
    assert abs(metrics["mean"]["r2"]) < 0.2


def test_the_validation_split_chooses_the_penalty():
    rng = np.random.default_rng(8)
    weights = rng.normal(size=40)
    x_train, x_val = rng.normal(size=(15, 40)), rng.normal(size=(200, 40))
    # few noisy training spectra, a weak signal: only a strong penalty keeps the fit from the noise
    noisy = fit_baseline(
        "ridge",
        "regression",
        x_train,
        0.05 * x_train @ weights + rng.normal(size=15),
        x_val,
        0.05 * x_val @ weights + rng.normal(size=200),
    )
    assert noisy.selection == "validation"
    assert noisy.params["alpha"] >= 10.0
    # many training spectra and an exact relation: the validation split asks for almost no penalty
    x_many = rng.normal(size=(120, 40))
    clean = fit_baseline("ridge", "regression", x_many, x_many @ weights, x_val, x_val @ weights)
    assert clean.params["alpha"] <= 1.0


def test_an_empty_validation_split_selects_by_cross_validation():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(60, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0])
    fitted = fit_baseline("ridge", "regression", x, y, np.zeros((0, 4)), np.zeros(0))
    assert fitted.selection == "cross-validation"
    assert fitted.params["alpha"] <= 0.1
    assert target_metrics("regression", y, fitted.predict(x))["r2"] > 0.999


def test_classes_outside_the_training_split_do_not_crash(monkeypatch):
    monkeypatch.setattr(baselines, "TREE_COUNT", 30)  # the number of trees is not what is tested
    rng = np.random.default_rng(10)
    x, labels = _three_blobs(rng, (30, 30, 30))
    train = labels < 2  # class 2 only in validation and test
    test_x = np.vstack([x[~train], x[train][:5]])
    test_y = np.concatenate([labels[~train], labels[train][:5]])
    for name in BASELINES:
        validation = (x[~train][:10], labels[~train][:10])
        fitted = fit_baseline(name, "classification", x[train], labels[train], *validation)
        predicted = fitted.predict(test_x)
        assert set(np.unique(predicted)) <= {0, 1}
        assert target_metrics("classification", test_y, predicted)["accuracy"] <= 5 / 35


@pytest.mark.parametrize("kind", ["classification", "probability"])
def test_one_class_in_train_is_predicted(kind):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(20, 3))
    for name in BASELINES:
        fitted = fit_baseline(name, kind, x[:10], np.ones(10), x[10:15], np.array([0, 1, 1, 0, 1]))
        assert np.all(fitted.predict(x[15:]) == 1)
        assert "one class in train" in fitted.description or name == "mean"


def test_refused_baseline_inputs():
    x = np.zeros((5, 3))
    with pytest.raises(UserError, match="unknown baseline 'lasso'"):
        fit_baseline("lasso", "regression", x, np.zeros(5), x, np.zeros(5))
    with pytest.raises(UserError, match="5 spectra but 4 target values"):
        fit_baseline("ridge", "regression", x, np.zeros(4), x, np.zeros(5))
    with pytest.raises(UserError, match="2 energy points, the training spectra 3"):
        fit_baseline("ridge", "regression", x, np.zeros(5), np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(UserError, match="at least 3 training spectra"):
        fit_baseline("ridge", "regression", x[:2], np.zeros(2), x, np.zeros(5))


# ---------------------------------------------------------------- comparison table and files


@pytest.fixture
def comparison_rows(monkeypatch):
    """Baseline rows for a regression and a classification target (30 trees keep it fast)."""
    monkeypatch.setattr(baselines, "TREE_COUNT", 30)
    rng = np.random.default_rng(12)
    x = rng.normal(size=(90, 6))
    coordination = 8.0 + x[:, 0] + 0.1 * rng.normal(size=90)
    valence = (x[:, 1] > 0).astype(int) + (x[:, 1] > 1).astype(int)
    split_of = {"train": slice(0, 50), "val": slice(50, 70), "test": slice(70, 90)}
    spectra = {split: x[part] for split, part in split_of.items()}
    targets = {
        name: (kind, {split: values[part] for split, part in split_of.items()})
        for name, kind, values in (
            ("coordination_number", "regression", coordination),
            ("valence", "classification", valence),
        )
    }
    return compare_baselines(spectra, targets, ("train", "val", "test"))


def test_compare_baselines_gives_one_row_per_target_and_baseline(comparison_rows):
    assert [(row["target"], row["model"]) for row in comparison_rows] == [
        (target, name) for target in ("coordination_number", "valence") for name in BASELINES
    ]
    assert all(row["n_test"] == 20 for row in comparison_rows)
    ridge = comparison_rows[BASELINES.index("ridge")]
    assert ridge["r2"] > 0.95 and ridge["description"].startswith("ridge alpha=")
    assert set(comparison_rows[-1]) == {"target", "kind", "model", "description", "n_test", "accuracy", "mae"}


def test_comparison_table_marks_one_best_per_target_and_winners_agree(comparison_rows):
    best_baseline_mae = min(row["mae"] for row in comparison_rows if row["target"] == "coordination_number")
    neural = {"target": "coordination_number", "kind": "regression", "model": "cnn", "description": "CNN"}
    neural |= {"n_test": 20, "mae": 0.5 * best_baseline_mae, "rmse": 0.1, "r2": 0.99}
    rows = [*comparison_rows, neural]
    table = comparison_table(rows)
    for target in ("coordination_number", "valence"):
        assert sum(row["best"] for row in table if row["target"] == target) == 1
    chosen = winners(rows)
    assert chosen["coordination_number"] == "cnn"
    assert chosen == {row["target"]: row["model"] for row in table if row["best"]}
    best_valence = max(row["accuracy"] for row in comparison_rows if row["target"] == "valence")
    first_best = next(row for row in table if row["target"] == "valence" and row["accuracy"] == best_valence)
    assert first_best["best"]  # among equals, the first row wins
    assert "best" not in rows[0]  # the rows given are not modified


def test_a_target_without_its_metric_has_no_winner():
    rows = [{"target": "gb", "kind": "probability", "model": "mean", "brier": None}]
    assert comparison_table(rows)[0]["best"] is False
    assert winners(rows) == {"gb": None}
    with pytest.raises(UserError, match="kind 'probability' and as 'regression'"):
        comparison_table([*rows, {"target": "gb", "kind": "regression", "model": "cnn"}])


def test_write_comparison_writes_every_row(comparison_rows, tmp_path):
    write_comparison(comparison_rows, tmp_path / "out" / "comparison.csv", tmp_path / "out" / "comparison.md")
    with (tmp_path / "out" / "comparison.csv").open(newline="") as handle:
        read = list(csv.DictReader(handle))
    assert [(row["target"], row["model"]) for row in read] == [
        (row["target"], row["model"]) for row in comparison_rows
    ]
    assert sum(row["best"] == "True" for row in read) == 2
    assert read[-1]["rmse"] == ""  # a classification row has no RMSE
    markdown = (tmp_path / "out" / "comparison.md").read_text()
    table_lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 1 + len(comparison_rows)  # header and one line per row
    header = "| target | kind | model | description | n_test | mae | rmse | r2 | accuracy | best |"
    assert table_lines[0] == header.replace(" best |", "")
    for target, model in winners(comparison_rows).items():
        assert f"- {target} " in markdown and f"**{model}**" in markdown
