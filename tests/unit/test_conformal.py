"""Conformal intervals and calibrated probabilities on synthetic data with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xasflow.errors import UserError
from xasflow.models.conformal import (
    LEVELS,
    ConformalCalibration,
    binary_reliability,
    coverage,
    coverage_curve,
    coverage_report,
    ensemble_statistics,
    fit_class_threshold,
    fit_conformal,
    fit_temperature,
    plot_reliability,
    prediction_sets,
    scaled_probability,
)

N_CALIBRATION = 2000
N_TEST = 20000
TOLERANCE = 0.02


def heteroscedastic(rng: np.random.Generator, n: int, spread_noise: float = 0.15):
    """y = x + noise with sd 0.1 + 0.5 |x|; prediction x; an ensemble spread proportional to
    the true sd with lognormal multiplicative noise. Returns (truth, prediction, spread, sd)."""
    x = rng.uniform(-3.0, 3.0, n)
    sd = 0.1 + 0.5 * np.abs(x)
    truth = x + rng.normal(0.0, sd)
    spread = 0.7 * sd * np.exp(rng.normal(0.0, spread_noise, n))  # under-dispersed ensemble
    return truth, x, spread, sd


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(11)
    return heteroscedastic(rng, N_CALIBRATION), heteroscedastic(rng, N_TEST)


@pytest.mark.parametrize("normalized", [True, False])
def test_coverage_is_nominal_on_heteroscedastic_data(regression, normalized):
    (cal_truth, cal_prediction, cal_spread, _), (truth, prediction, spread, _) = regression
    calibration = fit_conformal(cal_truth, cal_prediction, cal_spread, normalized=normalized)
    report = coverage_report(truth, prediction, spread, calibration)
    for level in LEVELS:
        observed = report[f"coverage_{round(level * 100)}"]
        assert abs(observed - level) < TOLERANCE, (level, observed)
    assert report["mean_width_68"] < report["mean_width_90"] < report["mean_width_95"]


def test_the_raw_spread_is_not_calibrated_but_the_conformal_interval_is(regression):
    """The ensemble is under-dispersed: +-1 spread covers well under 68 %."""
    (cal_truth, cal_prediction, cal_spread, _), (truth, prediction, spread, _) = regression
    raw = coverage(truth, prediction - spread, prediction + spread)
    assert raw < 0.6
    calibration = fit_conformal(cal_truth, cal_prediction, cal_spread)
    assert calibration.quantiles[0] > 1.2  # the 68 % multiplier widens the raw spread
    assert abs(coverage(truth, *calibration.interval(prediction, spread, 0.68)) - 0.68) < TOLERANCE


def test_normalized_intervals_adapt_to_the_spread(regression):
    (cal_truth, cal_prediction, cal_spread, _), (truth, prediction, spread, sd) = regression
    normalized = fit_conformal(cal_truth, cal_prediction, cal_spread)
    plain = fit_conformal(cal_truth, cal_prediction, cal_spread, normalized=False)
    low, high = normalized.interval(prediction, spread, 0.9)
    width = high - low
    assert np.corrcoef(width, sd)[0, 1] > 0.8
    plain_low, plain_high = plain.interval(prediction, None, 0.9)
    plain_width = plain_high - plain_low
    assert np.ptp(plain_width) < 1e-12  # one width for every sample
    easy = sd < 0.3
    assert width[easy].mean() < 0.5 * plain_width[0]
    # adaptive intervals are also nominal where the problem is easy; plain ones over-cover there
    assert abs(coverage(truth[easy], low[easy], high[easy]) - 0.9) < 0.03
    assert coverage(truth[easy], plain_low[easy], plain_high[easy]) > 0.99


def test_constant_spread_still_gives_marginal_coverage(regression):
    (cal_truth, cal_prediction, _, _), (truth, prediction, _, _) = regression
    calibration = fit_conformal(cal_truth, cal_prediction, np.full(N_CALIBRATION, 0.3))
    report = coverage_report(truth, prediction, np.full(N_TEST, 0.3), calibration)
    for level in LEVELS:
        assert abs(report[f"coverage_{round(level * 100)}"] - level) < TOLERANCE


def test_finite_sample_rank_gives_inf_or_the_largest_score():
    rng = np.random.default_rng(3)
    residual_nine = rng.normal(size=9)
    small = fit_conformal(residual_nine, np.zeros(9), normalized=False)
    assert small.quantiles[LEVELS.index(0.95)] == np.inf
    low, high = small.interval(np.array([0.0, 1.0]), None, 0.95)
    assert np.all(low == -np.inf) and np.all(high == np.inf)
    assert coverage(np.array([5.0, -7.0]), low, high) == 1.0

    residual = rng.normal(size=19)
    calibration = fit_conformal(residual, np.zeros(19), normalized=False)
    assert calibration.quantiles[LEVELS.index(0.95)] == np.abs(residual).max()
    # 90 %: ceil(20 x 0.9) = 18th smallest of 19
    assert calibration.quantiles[LEVELS.index(0.9)] == np.sort(np.abs(residual))[17]


def test_zero_spread_is_floored_and_never_divides():
    truth = np.array([0.0, 1.0, 2.0, 3.0])
    spread = np.array([0.0, 1.0, 1.0, 2.0])
    calibration = fit_conformal(truth, truth + 0.5, spread, levels=(0.5,))
    assert calibration.scale_floor == pytest.approx(0.1)  # 0.1 x median spread 1.0
    assert np.all(np.isfinite(calibration.quantiles))
    all_zero = fit_conformal(truth, truth + 0.5, np.zeros(4), levels=(0.5,))
    assert all_zero.scale_floor == 1e-6
    assert all_zero.quantiles[0] == pytest.approx(0.5 / 1e-6)


def test_curves_are_calibrated_point_by_point():
    rng = np.random.default_rng(5)
    points = 20
    scale = np.linspace(0.05, 1.0, points)  # each point of the curve has its own noise level

    def curves(n):
        prediction = rng.normal(size=(n, 1)) * np.ones(points)
        sd = scale * rng.uniform(0.5, 2.0, size=(n, 1))
        truth = prediction + rng.normal(0.0, sd)
        return truth, prediction, sd * np.exp(rng.normal(0.0, 0.1, size=(n, points)))

    cal_truth, cal_prediction, cal_spread = curves(N_CALIBRATION)
    truth, prediction, spread = curves(N_TEST)
    calibration = fit_conformal(cal_truth, cal_prediction, cal_spread)
    assert calibration.quantiles.shape == (len(LEVELS), points)
    assert np.shape(calibration.scale_floor) == (points,)
    for level in LEVELS:
        low, high = calibration.interval(prediction, spread, level)
        inside = (truth >= low) & (truth <= high)
        per_point = inside.mean(axis=0)
        assert np.max(np.abs(per_point - level)) < 0.04, (level, per_point)
        assert abs(per_point.mean() - level) < TOLERANCE
        assert coverage(truth, low, high) == pytest.approx(per_point.mean())


def test_to_dict_round_trips_through_json_with_inf():
    rng = np.random.default_rng(7)
    scalar = fit_conformal(rng.normal(size=9), np.zeros(9), np.ones(9))  # 95 % is inf
    curve = fit_conformal(rng.normal(size=(30, 4)), np.zeros((30, 4)), rng.uniform(0.5, 1.5, (30, 4)))
    for calibration in (scalar, curve):
        text = json.dumps(calibration.to_dict(), allow_nan=False)
        restored = ConformalCalibration.from_dict(json.loads(text))
        assert restored == calibration
        assert restored.levels == LEVELS and all(type(level) is float for level in restored.levels)
    assert scalar.to_dict()["quantiles"][2] == "inf"
    assert ConformalCalibration.from_dict(json.loads(json.dumps(scalar.to_dict()))).quantiles[2] == np.inf


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((np.array([0.0, np.nan, 1.0]), np.zeros(3), np.ones(3)), "truth: 1 of 3 values are NaN"),
        ((np.zeros(3), np.zeros(4), np.ones(3)), "shape"),
        ((np.zeros(3), np.zeros(3), np.ones((3, 2))), "spread has shape"),
        ((np.zeros(1), np.zeros(1), np.ones(1)), "at least 2 samples"),
        ((np.zeros(3), np.zeros(3), -np.ones(3)), "negative"),
        ((np.zeros(3), np.zeros(3), None), "need the ensemble spread"),
    ],
)
def test_fit_conformal_refuses_bad_inputs(arguments, message):
    with pytest.raises(UserError, match=message) as raised:
        fit_conformal(*arguments)
    assert "\n" not in str(raised.value)


def test_levels_outside_the_unit_interval_are_refused():
    with pytest.raises(UserError, match=r"\[1\.2\] are outside \(0, 1\)"):
        fit_conformal(np.zeros(5), np.zeros(5), np.ones(5), levels=(0.9, 1.2))
    calibration = fit_conformal(np.arange(5.0), np.zeros(5), np.ones(5))
    with pytest.raises(UserError, match="0.5 was not calibrated"):
        calibration.interval(np.zeros(2), np.ones(2), 0.5)
    with pytest.raises(UserError, match="pass the spread"):
        calibration.interval(np.zeros(2), None, 0.9)


def test_ensemble_statistics():
    members = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    mean, spread = ensemble_statistics(members)
    np.testing.assert_allclose(mean, [3.0, 2.0])
    np.testing.assert_allclose(spread, [np.sqrt(8.0 / 3.0), 0.0])
    mean, spread = ensemble_statistics(members[:1])
    np.testing.assert_array_equal(spread, [0.0, 0.0])
    with pytest.raises(UserError, match="members, n"):
        ensemble_statistics(np.zeros(3))


def test_class_sets_cover_the_true_class_at_the_level():
    rng = np.random.default_rng(13)
    classes = 5

    def sample(n):
        probabilities = rng.dirichlet(np.full(classes, 0.7), size=n)
        labels = (rng.random((n, 1)) > probabilities.cumsum(axis=1)).sum(axis=1)  # draw from p
        return probabilities, np.minimum(labels, classes - 1)

    cal_probabilities, cal_labels = sample(N_CALIBRATION)
    probabilities, labels = sample(N_TEST)
    threshold = fit_class_threshold(cal_probabilities, cal_labels, 0.9)
    sets = prediction_sets(probabilities, threshold)
    assert sets.shape == (N_TEST, classes)
    observed = sets[np.arange(N_TEST), labels].mean()
    assert abs(observed - 0.9) < TOLERANCE
    assert 1.0 < sets.sum(axis=1).mean() < classes  # informative: smaller than every class
    with pytest.raises(UserError, match="class indices"):
        fit_class_threshold(cal_probabilities, cal_labels + classes, 0.9)


def test_temperature_scaling_recovers_an_overconfident_model():
    rng = np.random.default_rng(17)
    true_logits = rng.normal(0.0, 2.0, 20000)
    outcome = (rng.random(true_logits.size) < 1.0 / (1.0 + np.exp(-true_logits))).astype(int)
    overconfident = 2.0 * true_logits
    temperature = fit_temperature(overconfident, outcome)
    assert temperature == pytest.approx(2.0, rel=0.1)
    before = binary_reliability(scaled_probability(overconfident, 1.0), outcome)
    after = binary_reliability(scaled_probability(overconfident, temperature), outcome)
    assert after["ece"] < before["ece"]
    assert after["ece"] < 0.02 < before["ece"]
    assert before["counts"].sum() == outcome.size and before["bin_edges"].shape == (11,)


def test_binary_reliability_numbers():
    probability = np.array([0.05, 0.05, 0.95, 0.95, 1.0])
    outcome = np.array([0, 1, 1, 1, 1])
    result = binary_reliability(probability, outcome, n_bins=2)
    np.testing.assert_array_equal(result["counts"], [2, 3])
    np.testing.assert_allclose(result["mean_predicted"], [0.05, (0.95 + 0.95 + 1.0) / 3])
    np.testing.assert_allclose(result["observed_frequency"], [0.5, 1.0])
    expected = (2 * 0.45 + 3 * (1.0 - 2.9 / 3)) / 5
    assert result["ece"] == pytest.approx(expected)
    with pytest.raises(UserError, match="0 or 1"):
        binary_reliability(probability, np.array([0, 2, 1, 1, 1]))


def test_reliability_plot_is_a_png(tmp_path, regression):
    (cal_truth, cal_prediction, cal_spread, _), (truth, prediction, spread, _) = regression
    nominal = np.linspace(0.05, 0.95, 19)
    observed = coverage_curve(truth, prediction, spread, cal_truth, cal_prediction, cal_spread, nominal)
    assert np.max(np.abs(observed - nominal)) < 0.03
    path = tmp_path / "figures" / "reliability.png"
    plot_reliability(path, {"CN": (nominal, observed), "raw spread": (nominal, nominal * 0.8)}, "Fe CN")
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert [child.name for child in path.parent.iterdir()] == ["reliability.png"]  # no temporary left
