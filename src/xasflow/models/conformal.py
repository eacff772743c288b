"""Calibrated uncertainty: split-conformal intervals for ensemble regressions, and calibrated
probabilities for classifiers.

Regression (coordination numbers, RDF curves). A deep ensemble gives, for each spectrum, the
mean of its members' predictions and their spread (standard deviation). The spread ranks
spectra by difficulty but is not, by itself, a calibrated interval: ensembles are usually
over- or under-dispersed. Split conformal prediction (Vovk et al. 2005, *Algorithmic Learning
in a Random World*; Lei et al. 2018, JASA 113, 1094) turns it into one. On a calibration set
the model never trained on, each point gets a score ``|truth - prediction| / spread``
(normalized, so the intervals widen where the ensemble disagrees: Papadopoulos et al. 2008)
or ``|truth - prediction|`` (plain, one width for all). The multiplier for level ``1 - alpha``
is the ``ceil((n + 1)(1 - alpha))``-th smallest of the ``n`` scores, and the interval for a new
point is ``prediction +- multiplier * spread``. If the new point and the calibration points are
exchangeable, the interval contains the truth with probability at least ``1 - alpha`` and, when
scores do not tie, at most ``1 - alpha + 1 / (n + 1)``. The guarantee is marginal (on average
over spectra like the calibration set), not for each spectrum; for a curve it holds at each
point of the curve separately, not for the whole curve at once.

Classification. A prediction set holds every class whose probability is high enough: the LAC
score ``1 - p(true class)`` (Sadinle, Lei and Wasserman 2019, JASA 114, 223) with the same
conformal quantile gives sets that contain the true class at the requested rate. For binary
probabilities, :func:`fit_temperature` rescales logits by one temperature (Guo et al. 2017,
ICML, "On calibration of modern neural networks") and :func:`binary_reliability` measures the
expected calibration error (Naeini et al. 2015, AAAI).

Shapes: ``n`` samples on axis 0; a target is a scalar per sample, shape (n,), or a curve of
``m`` points, shape (n, m) (any trailing shape works the same way, point by point).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.optimize import minimize_scalar

from xasflow.errors import UserError
from xasflow.fileio import atomic_path

logger = logging.getLogger(__name__)

#: Default coverage levels: one standard deviation, and the usual 90 % and 95 %.
LEVELS = (0.68, 0.90, 0.95)
#: Every calibration xasflow fits (split on the validation systems, and ``conformal:
#: cross_system``) uses the plain score |truth - prediction|, one width per target, not the score
#: divided by the ensemble spread. Across systems the error is mostly the shift of a new system,
#: which the members share, so their spread does not rank it: in the nested checks of the
#: examples (``benchmarks/conformal_methods.py``) the plain score covered 66.0-70.0 % at 68 % and
#: 89.3-93.2 % at 90 % (Pt-Cu Pt-Pt and Pt-Cu, SiOx valence, Al-Cu local Cu), with narrower 90 %
#: intervals on all four, where the normalized one covered 60.5-67.5 % and 85.2-92.1 %. On the
#: default Cu study's two validation systems the normalized score put the 95 % multiplier at 110
#: spreads (16 CN wide intervals on the CNN, -6.6..29.1 on a Cu foil for the MLP at 90 %), where
#: the plain one gives a 90 % half-width of 2.5-2.9 CN. Spectra far from the training set are
#: caught by the out-of-distribution flag, not by a wider interval. The normalized score stays
#: available (``fit_conformal(normalized=True)``) for comparison.
NORMALIZED_SCORE = False
#: Nominal levels of a reliability curve (:func:`coverage_curve`).
CURVE_LEVELS = tuple(round(0.05 * step, 2) for step in range(1, 20))
#: The spread floor is this fraction of the median calibration spread at each output point ...
FLOOR_FRACTION = 0.1
#: ... and never below this (in the target's units), so that a zero spread never divides.
FLOOR_ABSOLUTE = 1e-6
#: Bounds on the fitted temperature: beyond them the data say "no information" or "separable".
TEMPERATURE_BOUNDS = (1e-2, 1e2)
#: How an infinite multiplier is written by :meth:`ConformalCalibration.to_dict` (JSON has no inf).
INFINITY = "inf"


# --- checks ------------------------------------------------------------------------------------


def _finite(name: str, values: Any) -> np.ndarray:
    """``values`` as float64, refused if any entry is NaN or infinite."""
    array = np.asarray(values, dtype=np.float64)
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise UserError(f"{name}: {bad} of {array.size} values are NaN or infinite; only finite numbers")
    return array


def _same_shape(name: str, array: np.ndarray, reference_name: str, reference: np.ndarray) -> None:
    if array.shape != reference.shape:
        raise UserError(
            f"{name} has shape {array.shape} but {reference_name} has {reference.shape}; they must match"
        )


def _checked_levels(levels: Sequence[float]) -> tuple[float, ...]:
    checked = tuple(float(level) for level in levels)
    if not checked:
        raise UserError("levels is empty; give at least one coverage level in (0, 1)")
    outside = [level for level in checked if not 0.0 < level < 1.0]
    if outside:
        raise UserError(f"coverage levels {outside} are outside (0, 1); use e.g. 0.9 for 90 %")
    if len(set(checked)) != len(checked):
        raise UserError(f"coverage levels {list(checked)} repeat a level; give each once")
    return checked


def _checked_spread(spread: Any, prediction: np.ndarray) -> np.ndarray:
    spread = _finite("spread", spread)
    _same_shape("spread", spread, "prediction", prediction)
    if np.any(spread < 0):
        raise UserError(
            f"spread has negative values (smallest {spread.min():.3g}); it is a standard deviation"
        )
    return spread


def _sample_count(array: np.ndarray) -> int:
    if array.ndim == 0 or array.shape[0] < 2:
        raise UserError(f"conformal calibration needs at least 2 samples on axis 0; got shape {array.shape}")
    return array.shape[0]


# --- ensembles and quantiles ------------------------------------------------------------------


def ensemble_statistics(member_predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of an ensemble's predictions.

    Parameters
    ----------
    member_predictions
        (members, n, ...) predictions of each member.

    Returns
    -------
    mean, spread
        (n, ...) mean over members and population standard deviation (ddof=0); a single member
        gives a spread of zeros.
    """
    members = _finite("member predictions", member_predictions)
    if members.ndim < 2 or members.shape[0] < 1:
        raise UserError(f"member predictions need shape (members, n, ...); got {members.shape}")
    return members.mean(axis=0), members.std(axis=0, ddof=0)


def conformal_rank(n: int, level: float) -> int:
    """1-based rank ``ceil((n + 1) level)`` of the score taken as the conformal quantile.

    A relative tolerance of 1e-10 keeps ``(n + 1) level`` that is an integer in exact
    arithmetic (20 x 0.95) from being rounded up by floating point error.
    """
    return math.ceil((n + 1) * level * (1.0 - 1e-10))


def conformal_quantile(scores: np.ndarray, level: float) -> np.ndarray:
    """The finite-sample split-conformal quantile of ``scores`` (n, ...) along axis 0.

    It is the ``ceil((n + 1) level)``-th smallest score at each output point, or ``inf`` when that
    rank exceeds ``n`` (too few calibration points for the level: with n = 9, no finite
    multiplier guarantees 95 %, and the honest interval is unbounded).
    """
    n = scores.shape[0]
    rank = conformal_rank(n, level)
    if rank > n:
        return np.full(scores.shape[1:], np.inf)
    return np.partition(scores, rank - 1, axis=0)[rank - 1]


def _scale_floor(spread: np.ndarray) -> np.ndarray | float:
    """Per output point: FLOOR_FRACTION x the median spread, at least FLOOR_ABSOLUTE."""
    floor = np.maximum(FLOOR_FRACTION * np.median(spread, axis=0), FLOOR_ABSOLUTE)
    return float(floor) if floor.ndim == 0 else floor


# --- the calibration --------------------------------------------------------------------------


def _encode(array: np.ndarray | float) -> Any:
    """Plain lists and floats for JSON, with +inf written as :data:`INFINITY`."""
    if np.ndim(array) == 0:
        value = float(array)
        return INFINITY if value == math.inf else value
    return [_encode(item) for item in array]


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return math.inf if value == INFINITY else float(value)


def _readonly(values: Any) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class ConformalCalibration:
    """Conformal multipliers fitted on a calibration set (see the module docstring).

    Attributes
    ----------
    levels
        Coverage levels in (0, 1), e.g. (0.68, 0.9, 0.95).
    quantiles
        (len(levels), *target_shape) multipliers: of the floored spread when ``normalized``,
        half-widths in the target's units otherwise; ``inf`` where the calibration set is too
        small for the level.
    scale_floor
        Smallest spread used per output point (float for scalar targets, (m,) for curves), in the
        target's units; 0.0 and unused when not ``normalized``.
    normalized
        Whether scores were divided by the ensemble spread.
    n_calibration
        Number of calibration samples.
    """

    levels: tuple[float, ...]
    quantiles: np.ndarray
    scale_floor: np.ndarray | float
    normalized: bool
    n_calibration: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", _checked_levels(self.levels))
        object.__setattr__(self, "quantiles", _readonly(self.quantiles))
        floor = self.scale_floor
        object.__setattr__(self, "scale_floor", float(floor) if np.ndim(floor) == 0 else _readonly(floor))
        if self.quantiles.ndim == 0 or self.quantiles.shape[0] != len(self.levels):
            raise UserError(
                f"conformal quantiles of shape {self.quantiles.shape} do not match {len(self.levels)} levels"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConformalCalibration):
            return NotImplemented
        return (
            self.levels == other.levels
            and np.array_equal(self.quantiles, other.quantiles)
            and np.array_equal(self.scale_floor, other.scale_floor)
            and self.normalized == other.normalized
            and self.n_calibration == other.n_calibration
        )

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Shape of one sample's target: () for a scalar, (m,) for a curve."""
        return self.quantiles.shape[1:]

    def _level_index(self, level: float) -> int:
        for index, known in enumerate(self.levels):
            if abs(known - level) < 1e-9:
                return index
        raise UserError(
            f"coverage level {level} was not calibrated; calibrated levels are {list(self.levels)}"
        )

    def interval(
        self, prediction: np.ndarray, spread: np.ndarray | None, level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) at ``level`` around ``prediction`` (k, *target_shape), each that shape.

        ``spread`` (same shape) is required when the calibration is normalized, ignored otherwise.
        """
        multiplier = self.quantiles[self._level_index(level)]
        prediction = _finite("prediction", prediction)
        if prediction.shape[prediction.ndim - len(self.target_shape) :] != self.target_shape:
            raise UserError(
                f"prediction has shape {prediction.shape}; the calibration is for targets of shape "
                f"{self.target_shape} on the last axes"
            )
        if not self.normalized:
            return prediction - multiplier, prediction + multiplier
        if spread is None:
            raise UserError("this calibration is normalized by the ensemble spread; pass the spread")
        half_width = multiplier * np.maximum(_checked_spread(spread, prediction), self.scale_floor)
        return prediction - half_width, prediction + half_width

    def intervals(
        self, prediction: np.ndarray, spread: np.ndarray | None
    ) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """{level: (low, high)} for every calibrated level."""
        return {level: self.interval(prediction, spread, level) for level in self.levels}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, floats, bool, int) for a checkpoint's hyperparameters.

        An infinite multiplier is written as the string :data:`INFINITY` ("inf") so that
        ``json.dumps`` gives standard JSON; :meth:`from_dict` reads it back exactly.
        """
        return {
            "levels": [float(level) for level in self.levels],
            "quantiles": _encode(self.quantiles),
            "scale_floor": _encode(self.scale_floor),
            "normalized": bool(self.normalized),
            "n_calibration": int(self.n_calibration),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConformalCalibration:
        """The calibration :meth:`to_dict` wrote."""
        missing = sorted({"levels", "quantiles", "scale_floor", "normalized", "n_calibration"} - set(data))
        if missing:
            raise UserError(f"conformal calibration is missing keys {missing}; was it written by to_dict?")
        return cls(
            levels=tuple(float(level) for level in data["levels"]),
            quantiles=np.array(_decode(data["quantiles"]), dtype=np.float64),
            scale_floor=_decode(data["scale_floor"]),
            normalized=bool(data["normalized"]),
            n_calibration=int(data["n_calibration"]),
        )


def conformity_scores(
    truth: np.ndarray,
    prediction: np.ndarray,
    spread: np.ndarray | None,
    scale_floor: np.ndarray | float | None,
) -> np.ndarray:
    """|truth - prediction|, divided by max(spread, scale_floor) when ``spread`` is given."""
    residual = np.abs(truth - prediction)
    if spread is None:
        return residual
    return residual / np.maximum(spread, scale_floor)


def fit_conformal(
    truth: np.ndarray,
    prediction: np.ndarray,
    spread: np.ndarray | None = None,
    levels: Sequence[float] = LEVELS,
    normalized: bool = True,
) -> ConformalCalibration:
    """Fit split-conformal multipliers on a calibration set.

    Parameters
    ----------
    truth, prediction
        (n, *target_shape) labels and ensemble means of calibration samples the ensemble never
        trained on; (n,) for a scalar target, (n, m) for a curve (each point calibrated on its own).
    spread
        Same shape: the ensemble's standard deviation. Required when ``normalized``.
    levels
        Coverage levels in (0, 1).
    normalized
        Scores ``|truth - prediction| / max(spread, floor)`` (intervals proportional to the
        spread), with floor = 0.1 x the median spread at each output point and at least 1e-6;
        otherwise ``|truth - prediction|`` (one width per output point).

    Returns
    -------
    ConformalCalibration
        Multipliers at the ``ceil((n + 1) level)``-th smallest score; ``inf`` where that rank
        exceeds n (e.g. 95 % with fewer than 19 calibration samples).
    """
    levels = _checked_levels(levels)
    truth = _finite("truth", truth)
    prediction = _finite("prediction", prediction)
    _same_shape("prediction", prediction, "truth", truth)
    n = _sample_count(truth)
    if normalized and spread is None:
        raise UserError(
            "normalized conformal scores need the ensemble spread; pass spread or normalized=False"
        )
    scale_floor: np.ndarray | float = 0.0
    checked_spread = None
    if normalized:
        checked_spread = _checked_spread(spread, prediction)
        scale_floor = _scale_floor(checked_spread)
    scores = conformity_scores(truth, prediction, checked_spread, scale_floor)
    quantiles = np.stack([conformal_quantile(scores, level) for level in levels])
    return ConformalCalibration(levels, quantiles, scale_floor, normalized, n)


# --- coverage ---------------------------------------------------------------------------------


def coverage(truth: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Fraction of ``truth`` values inside [low, high] (all of the same shape; over all points)."""
    truth = _finite("truth", truth)
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    _same_shape("low", low, "truth", truth)
    _same_shape("high", high, "truth", truth)
    if truth.size == 0:
        raise UserError("coverage of an empty set of points is undefined; give at least one")
    return float(np.mean((truth >= low) & (truth <= high)))


def level_name(level: float) -> str:
    """A level as percent for keys: 0.9 -> "90", 0.975 -> "97.5"."""
    return format(round(level * 100.0, 6), "g")


def coverage_report(
    truth: np.ndarray, prediction: np.ndarray, spread: np.ndarray | None, calibration: ConformalCalibration
) -> dict[str, float]:
    """Observed coverage and mean interval width (target units) at each calibrated level.

    Keys ``coverage_68``, ``mean_width_68``, ... (:func:`level_name`); a width is ``inf`` where
    the multiplier is.
    """
    report: dict[str, float] = {}
    for level, (low, high) in calibration.intervals(prediction, spread).items():
        report[f"coverage_{level_name(level)}"] = coverage(truth, low, high)
        report[f"mean_width_{level_name(level)}"] = float(np.mean(high - low))
    return report


def coverage_curve(
    truth: np.ndarray,
    prediction: np.ndarray,
    spread: np.ndarray | None,
    calibration_truth: np.ndarray,
    calibration_prediction: np.ndarray,
    calibration_spread: np.ndarray | None,
    nominal: Sequence[float] = CURVE_LEVELS,
    normalized: bool = True,
) -> np.ndarray:
    """Observed coverage (len(nominal),) on (truth, prediction, spread) of intervals fitted on
    the calibration set at each ``nominal`` level: the points of a reliability diagram."""
    calibration = fit_conformal(
        calibration_truth, calibration_prediction, calibration_spread, tuple(nominal), normalized
    )
    return np.array(
        [coverage(truth, *calibration.interval(prediction, spread, level)) for level in calibration.levels]
    )


# --- classification and probabilities ---------------------------------------------------------


def _checked_probabilities(probabilities: Any) -> np.ndarray:
    probabilities = _finite("probabilities", probabilities)
    if probabilities.ndim != 2:
        raise UserError(f"probabilities need shape (n, classes); got {probabilities.shape}")
    if np.any((probabilities < 0) | (probabilities > 1)):
        raise UserError("probabilities must lie in [0, 1]")
    return probabilities


def fit_class_threshold(probabilities: np.ndarray, labels: np.ndarray, level: float) -> float:
    """LAC score threshold for prediction sets that hold the true class at rate ``level``.

    Parameters
    ----------
    probabilities
        (n, k) class probabilities of calibration samples (e.g. a softmax).
    labels
        (n,) integer true classes in [0, k).
    level
        Coverage in (0, 1).

    Returns
    -------
    float
        The conformal quantile of ``1 - p(true class)``: class j joins a sample's set when
        ``1 - p_j <= threshold`` (:func:`prediction_sets`); ``inf`` (every class) when n is too
        small for the level.
    """
    (level,) = _checked_levels((level,))
    probabilities = _checked_probabilities(probabilities)
    labels = np.asarray(labels)
    if labels.shape != probabilities.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"labels need {probabilities.shape[0]} integers; got {labels.dtype} of shape {labels.shape}"
        )
    if np.any((labels < 0) | (labels >= probabilities.shape[1])):
        raise UserError(f"labels must be class indices in [0, {probabilities.shape[1]})")
    _sample_count(labels)
    scores = 1.0 - probabilities[np.arange(labels.size), labels]
    return float(conformal_quantile(scores, level))


def prediction_sets(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """(n, k) bool: class j is in sample i's set when ``1 - probabilities[i, j] <= threshold``."""
    return 1.0 - _checked_probabilities(probabilities) <= threshold


def _checked_outcome(outcome: Any, size: int) -> np.ndarray:
    outcome = np.asarray(outcome)
    if outcome.shape != (size,) or not np.all((outcome == 0) | (outcome == 1)):
        raise UserError(f"outcome needs {size} values of 0 or 1; got shape {outcome.shape}")
    return outcome.astype(np.float64)


def binary_reliability(probability: np.ndarray, outcome: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Reliability diagram and expected calibration error of binary probabilities.

    Parameters
    ----------
    probability
        (n,) predicted probability of outcome 1.
    outcome
        (n,) observed outcome, 0 or 1.
    n_bins
        Equal-width bins on [0, 1]; 1.0 falls in the last bin.

    Returns
    -------
    dict
        ``bin_edges`` (n_bins + 1,), ``mean_predicted`` and ``observed_frequency`` (n_bins,), NaN in
        empty bins, ``counts`` (n_bins,) int, and ``ece``: the count-weighted mean of
        ``|observed_frequency - mean_predicted|`` over non-empty bins.
    """
    probability = _finite("probability", probability)
    if probability.ndim != 1 or probability.size == 0 or np.any((probability < 0) | (probability > 1)):
        raise UserError(f"probability needs shape (n,) with values in [0, 1]; got shape {probability.shape}")
    outcome = _checked_outcome(outcome, probability.size)
    if n_bins < 1:
        raise UserError(f"n_bins is {n_bins}; use at least 1")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip((probability * n_bins).astype(int), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(bins, probability, minlength=n_bins) / counts
        observed = np.bincount(bins, outcome, minlength=n_bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] * np.abs(observed[filled] - mean_predicted[filled])) / probability.size)
    return {
        "bin_edges": edges,
        "mean_predicted": mean_predicted,
        "observed_frequency": observed,
        "counts": counts,
        "ece": ece,
    }


def _binary_nll(logits: np.ndarray, outcome: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of sigmoid(logits / temperature), computed without overflow."""
    scaled = logits / temperature
    return float(np.mean(np.logaddexp(0.0, scaled) - outcome * scaled))


def fit_temperature(logits: np.ndarray, outcome: np.ndarray) -> float:
    """Temperature T > 0 that minimizes the validation NLL of ``sigmoid(logits / T)``.

    T > 1 softens an overconfident model, T < 1 sharpens an underconfident one; the ranking of
    the samples is unchanged. Searched on log T within :data:`TEMPERATURE_BOUNDS`; a result at
    a bound is logged as a warning (no signal in the logits, or separable data).

    Parameters
    ----------
    logits
        (n,) validation logits of outcome 1.
    outcome
        (n,) observed outcome, 0 or 1.
    """
    logits = _finite("logits", logits)
    if logits.ndim != 1:
        raise UserError(f"logits need shape (n,); got {logits.shape}")
    outcome = _checked_outcome(outcome, logits.size)
    _sample_count(logits)
    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_temperature: _binary_nll(logits, outcome, math.exp(log_temperature)),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    temperature = math.exp(float(result.x))
    if min(abs(result.x - low), abs(result.x - high)) < 1e-3:
        logger.warning("fitted temperature %.3g is at the search bound %s", temperature, TEMPERATURE_BOUNDS)
    return temperature


def scaled_probability(logits: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logits / temperature), the calibrated probability of outcome 1."""
    if not temperature > 0:
        raise UserError(f"temperature is {temperature}; it must be positive")
    return 0.5 * (1.0 + np.tanh(0.5 * _finite("logits", logits) / temperature))


# --- figure -----------------------------------------------------------------------------------


def plot_reliability(path: str | Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> None:
    """PNG of observed against nominal coverage, one line per target, with the diagonal.

    ``curves`` maps a target's name to (nominal (k,), observed (k,)) coverage fractions; points
    below the diagonal are intervals that are too narrow.
    """
    figure = Figure(figsize=(4.5, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="ideal")
    for name, (nominal, observed) in curves.items():
        nominal, observed = np.asarray(nominal, dtype=np.float64), np.asarray(observed, dtype=np.float64)
        _same_shape(f"observed coverage of {name!r}", observed, "its nominal levels", nominal)
        axes.plot(nominal, observed, marker="o", markersize=3, label=name)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_aspect("equal")
    axes.set_xlabel("nominal coverage")
    axes.set_ylabel("observed coverage")
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize="small")
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=120, format="png")
