"""Baselines beside the neural models, on the same split: what a spectrum-to-structure model
must beat before its architecture means anything.

Five models (scikit-learn), each for the four kinds of target of :mod:`xasflow.models.metrics`:

- ``mean``: the training mean (regression, curve), the majority class (ties: the smallest
  label) or the training rate of outcome 1 (probability). No spectrum is read.
- ``ridge``: standardized spectra, then ridge regression (``RidgeClassifier`` for classes,
  L2 logistic regression for probabilities).
- ``pls``: standardized spectra, then partial least squares (classes: PLS on one-hot columns,
  the largest wins; probabilities: PLS on the 0/1 outcome, clipped to [0, 1]). Targets are not
  scaled, so every r point of a curve weighs in the fit as it does in the MAE.
- ``knn``: standardized spectra, then k nearest neighbours (Euclidean).
- ``trees``: extremely randomized trees on the raw inputs (scale does not matter to a tree).

Hyperparameters are chosen by the kind's main metric (:func:`~xasflow.models.metrics.main_metric`)
on the validation split, with the model fitted on the training split only, as the neural
models are: the validation split is the one that chose the hyperparameters, and the test split
stays unseen. When the validation split is empty, the grid is scored by k-fold
cross-validation on the training spectra (:data:`CV_FOLDS` shuffled folds, not grouped by
system, so those scores are optimistic) and the chosen model is refitted on all of them. Ties
go to the first candidate of the grid, ordered from the smoothest model to the most flexible.

Classifiers only predict classes they saw in training: a class that appears in validation or
test only is always counted wrong. With one class in the training split every baseline
predicts that class (probability: that outcome's rate, 0 or 1).
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.cross_decomposition import PLSRegression
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from xasflow.errors import UserError
from xasflow.fileio import atomic_open
from xasflow.models.metrics import check_kind, main_metric, target_metrics, target_values

logger = logging.getLogger(__name__)

BASELINES = ("mean", "ridge", "pls", "knn", "trees")
#: Split names of ``compare_baselines``' inputs: training, validation, test.
SPLITS = ("train", "val", "test")

#: Ridge penalties, strongest first (logistic regression uses C = 1 / alpha).
RIDGE_ALPHAS = tuple(float(alpha) for alpha in np.logspace(3, -3, 13))
PLS_MAX_COMPONENTS = 10
KNN_NEIGHBOURS = (20, 12, 8, 5, 3, 2, 1)
KNN_WEIGHTS = ("uniform", "distance")
TREE_COUNT = 300
TREE_MIN_SAMPLES_LEAF = (3, 1)
TREE_MAX_FEATURES = ("sqrt", 0.3, 1.0)
#: Folds of the cross-validation used when the validation split is empty.
CV_FOLDS = 5
#: Fewest training spectra a baseline is fitted on (cross-validation folds need two each).
MIN_TRAIN = 3
#: Iterations allowed to the logistic regression solver.
LOGISTIC_MAX_ITER = 2000

_METRIC_ORDER = ("mae", "rmse", "r2", "accuracy", "brier", "log_loss", "roc_auc")
_ROW_KEYS = ("target", "kind", "model", "description", "n_test")


class _Constant(BaseEstimator):
    """Predicts one value learnt from the targets alone: mean, majority class or rate."""

    def __init__(self, kind: str = "regression"):
        self.kind = kind

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Constant:
        if self.kind == "classification":
            labels, counts = np.unique(y, return_counts=True)
            self.value_ = labels[np.argmax(counts)]  # ties: the smallest label
        else:
            self.value_ = np.mean(y, axis=0)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.repeat(np.asarray(self.value_)[None, ...], len(x), axis=0)


class _Labels(BaseEstimator):
    """Class labels from a classifier, or from a regressor fitted on one-hot columns (the
    largest output wins). One class in the training labels: that class."""

    def __init__(self, estimator: Any = None, one_hot: bool = False):
        self.estimator = estimator
        self.one_hot = one_hot

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Labels:
        self.classes_ = np.unique(y)
        if len(self.classes_) > 1:
            target = (y[:, None] == self.classes_[None, :]).astype(np.float64) if self.one_hot else y
            self.estimator.fit(x, target)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if len(self.classes_) == 1:
            return np.full(len(x), self.classes_[0])
        if self.one_hot:
            return self.classes_[np.argmax(self.estimator.predict(x), axis=1)]
        return self.estimator.predict(x)


class _Probability(BaseEstimator):
    """Probability of outcome 1: a classifier's ``predict_proba``, or a regressor on the 0/1
    outcome clipped to [0, 1]. One outcome in the training split: that outcome (0 or 1)."""

    def __init__(self, estimator: Any = None, clipped: bool = False):
        self.estimator = estimator
        self.clipped = clipped

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Probability:
        self.outcomes_ = np.unique(y)
        if len(self.outcomes_) > 1:
            self.estimator.fit(x, y if self.clipped else y.astype(np.int64))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if len(self.outcomes_) == 1:
            return np.full(len(x), float(self.outcomes_[0]))
        if self.clipped:
            return np.clip(np.ravel(self.estimator.predict(x)), 0.0, 1.0)
        column = list(self.estimator.classes_).index(1)
        return self.estimator.predict_proba(x)[:, column]


@dataclass(frozen=True)
class _Candidate:
    """One point of a hyperparameter grid: its values, its description, an unfitted model."""

    params: dict[str, Any]
    description: str
    template: Any


@dataclass(frozen=True)
class FittedBaseline:
    """A baseline fitted on the training spectra, with the hyperparameters the selection chose.

    Attributes
    ----------
    name, kind:
        One of :data:`BASELINES`; one of :data:`~xasflow.models.metrics.TARGET_KINDS`.
    description:
        The model and its chosen hyperparameters, e.g. ``"ridge alpha=10"``.
    params:
        The chosen hyperparameters (empty for ``mean``).
    selection:
        ``"validation"``, ``"cross-validation"`` (empty validation split) or ``"none"`` (a
        grid of one).
    selection_score:
        The main metric of the chosen candidate on the validation split (or the mean over the
        cross-validation folds); ``None`` when there was nothing to choose.
    """

    name: str
    kind: str
    description: str
    params: dict[str, Any]
    selection: str
    selection_score: float | None
    n_features: int
    curve_width: int | None
    estimator: Any = field(repr=False)

    def predict(self, x) -> np.ndarray:
        """Predictions for spectra ``x`` (n, p) in the kind's format: (n,) values, (n, m) curves,
        (n,) class labels or (n,) probabilities of outcome 1."""
        spectra = _spectra(x, "spectra to predict", self.n_features)
        if len(spectra) == 0:
            width = () if self.curve_width is None else (self.curve_width,)
            return np.zeros((0, *width), dtype=np.int64 if self.kind == "classification" else np.float64)
        predicted = np.asarray(self.estimator.predict(spectra))
        if self.kind == "curve":
            return predicted.reshape(len(spectra), -1).astype(np.float64)
        predicted = np.ravel(predicted)
        return predicted.astype(np.int64) if self.kind == "classification" else predicted.astype(np.float64)


def _spectra(x, what: str, n_features: int | None = None) -> np.ndarray:
    """``x`` as a finite float64 (n, p) array; an empty one may come as shape (0,)."""
    array = np.asarray(x, dtype=np.float64)
    if array.size == 0 and n_features is not None:
        return array.reshape(0, n_features)
    if array.ndim != 2:
        raise UserError(f"{what} must have shape (n, p), got {array.shape}")
    if n_features is not None and array.shape[1] != n_features:
        raise UserError(f"{what} have {array.shape[1]} energy points, the training spectra {n_features}")
    if not np.all(np.isfinite(array)):
        raise UserError(f"{what} contain NaN or infinite values")
    return array


def _for_kind(kind: str, regressor: Any, classifier: Any = None, probability: Any = None) -> Any:
    """Wrap models for ``kind``: the regressor for regression and curves; the classifier for
    classes (or the regressor on one-hot columns); the probability classifier for outcomes
    (or the regressor clipped to [0, 1])."""
    if kind in ("regression", "curve"):
        return regressor
    if kind == "classification":
        return _Labels(classifier) if classifier is not None else _Labels(regressor, one_hot=True)
    return _Probability(probability) if probability is not None else _Probability(regressor, clipped=True)


def _mean_candidates(kind: str, n_fit: int, n_features: int, seed: int) -> list[_Candidate]:
    description = {
        "regression": "mean of train",
        "curve": "mean curve of train",
        "classification": "majority class of train",
        "probability": "rate in train",
    }[kind]
    return [_Candidate({}, description, _Constant(kind))]


def _ridge_candidates(kind: str, n_fit: int, n_features: int, seed: int) -> list[_Candidate]:
    candidates = []
    for alpha in RIDGE_ALPHAS:
        if kind == "probability":
            logistic = LogisticRegression(C=1.0 / alpha, max_iter=LOGISTIC_MAX_ITER)
            template = _Probability(make_pipeline(StandardScaler(), logistic))
            candidates.append(_Candidate({"C": 1.0 / alpha}, f"logistic C={1.0 / alpha:g}", template))
            continue
        template = _for_kind(
            kind,
            make_pipeline(StandardScaler(), Ridge(alpha=alpha)),
            classifier=make_pipeline(StandardScaler(), RidgeClassifier(alpha=alpha)),
        )
        label = "ridge classifier" if kind == "classification" else "ridge"
        candidates.append(_Candidate({"alpha": alpha}, f"{label} alpha={alpha:g}", template))
    return candidates


def _pls_candidates(kind: str, n_fit: int, n_features: int, seed: int) -> list[_Candidate]:
    largest = max(1, min(PLS_MAX_COMPONENTS, n_features, n_fit - 1))
    label = {"classification": "pls one-hot", "probability": "pls clipped"}.get(kind, "pls")
    return [
        _Candidate(
            {"n_components": components},
            f"{label} n_components={components}",
            _for_kind(kind, make_pipeline(StandardScaler(), PLSRegression(components, scale=False))),
        )
        for components in range(1, largest + 1)
    ]


def _knn_candidates(kind: str, n_fit: int, n_features: int, seed: int) -> list[_Candidate]:
    candidates = []
    for neighbours in (k for k in KNN_NEIGHBOURS if k <= n_fit):
        for weights in KNN_WEIGHTS if neighbours > 1 else KNN_WEIGHTS[:1]:  # one neighbour: no weights
            classifier = make_pipeline(StandardScaler(), KNeighborsClassifier(neighbours, weights=weights))
            template = _for_kind(
                kind,
                make_pipeline(StandardScaler(), KNeighborsRegressor(neighbours, weights=weights)),
                classifier=classifier,
                probability=classifier,
            )
            candidates.append(
                _Candidate(
                    {"n_neighbors": neighbours, "weights": weights},
                    f"knn k={neighbours} weights={weights}",
                    template,
                )
            )
    return candidates


def _trees_candidates(kind: str, n_fit: int, n_features: int, seed: int) -> list[_Candidate]:
    candidates = []
    for leaf in TREE_MIN_SAMPLES_LEAF:
        for max_features in TREE_MAX_FEATURES:
            options = {
                "n_estimators": TREE_COUNT,
                "max_features": max_features,
                "min_samples_leaf": leaf,
                "random_state": seed,
                "n_jobs": 1,
            }
            classifier = ExtraTreesClassifier(**options)
            template = _for_kind(
                kind, ExtraTreesRegressor(**options), classifier=classifier, probability=classifier
            )
            candidates.append(
                _Candidate(
                    {"max_features": max_features, "min_samples_leaf": leaf},
                    f"extra trees n={TREE_COUNT} max_features={max_features} min_samples_leaf={leaf}",
                    template,
                )
            )
    return candidates


_CANDIDATES = {
    "mean": _mean_candidates,
    "ridge": _ridge_candidates,
    "pls": _pls_candidates,
    "knn": _knn_candidates,
    "trees": _trees_candidates,
}


def _fit(template: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """A fitted copy of ``template``. Solvers that stop at their iteration limit are kept: the
    selection scores what they reached."""
    model = clone(template)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def _score(kind: str, model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """The main metric of a fitted model's predictions, signed so that lower is better."""
    metric, direction = main_metric(kind)
    predicted = np.asarray(model.predict(x))
    predicted = predicted.reshape(len(x), -1) if kind == "curve" else np.ravel(predicted)
    value = target_metrics(kind, y, predicted)[metric]
    return value if direction == "min" else -value


def _cross_validated_score(kind: str, template: Any, x: np.ndarray, y: np.ndarray, seed: int) -> float:
    folds = KFold(n_splits=min(CV_FOLDS, len(x)), shuffle=True, random_state=seed)
    scores = [
        _score(kind, _fit(template, x[fit], y[fit]), x[held_out], y[held_out])
        for fit, held_out in folds.split(x)
    ]
    return float(np.mean(scores))


def _select(
    kind: str, candidates: list[_Candidate], train: tuple, val: tuple, seed: int
) -> tuple[_Candidate, Any, str, float | None]:
    """Choose among ``candidates`` (see the module docstring); return the candidate, its model
    fitted on the training split, how it was chosen and its score (in the metric's own sign)."""
    (x_train, y_train), (x_val, y_val) = train, val
    if len(candidates) == 1:
        return candidates[0], _fit(candidates[0].template, x_train, y_train), "none", None
    sign = 1.0 if main_metric(kind)[1] == "min" else -1.0
    if len(x_val):
        best = (math.inf, None, None)  # only the best model is kept: a forest is not small
        for candidate in candidates:
            model = _fit(candidate.template, x_train, y_train)
            score = _score(kind, model, x_val, y_val)
            if score < best[0]:  # the first of equals
                best = (score, candidate, model)
        return best[1], best[2], "validation", sign * best[0]
    scores = [
        _cross_validated_score(kind, candidate.template, x_train, y_train, seed) for candidate in candidates
    ]
    best = int(np.argmin(scores))
    return (
        candidates[best],
        _fit(candidates[best].template, x_train, y_train),
        "cross-validation",
        sign * scores[best],
    )


def _fit_size(n_train: int, n_val: int) -> int:
    """Spectra each candidate is fitted on: the training split, or its smallest CV fold."""
    if n_val:
        return n_train
    folds = min(CV_FOLDS, n_train)
    return n_train - math.ceil(n_train / folds)


def _checked_split(kind: str, x, y, what: str, n_features: int | None) -> tuple[np.ndarray, np.ndarray]:
    spectra = _spectra(x, f"{what} spectra", n_features)
    values = target_values(kind, y, f"{what} targets")
    if len(values) != len(spectra):
        raise UserError(f"{what} split has {len(spectra)} spectra but {len(values)} target values")
    return spectra, values


def fit_baseline(name: str, kind: str, x_train, y_train, x_val, y_val, seed: int = 0) -> FittedBaseline:
    """Fit baseline ``name`` for a target of ``kind``, choosing its hyperparameters on the
    validation split (cross-validation on train when that split is empty).

    Parameters
    ----------
    name:
        One of :data:`BASELINES`.
    kind:
        One of :data:`~xasflow.models.metrics.TARGET_KINDS`.
    x_train, x_val:
        Normalized spectra (n, p) on one energy grid; ``x_val`` may be empty.
    y_train, y_val:
        Targets: (n,) values, (n, m) curves, (n,) integer labels or (n,) 0/1 outcomes.
    seed:
        Seeds the trees and the cross-validation folds.
    """
    if name not in BASELINES:
        raise UserError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)}")
    check_kind(kind)
    x_train, y_train = _checked_split(kind, x_train, y_train, "training", None)
    if len(x_train) < MIN_TRAIN:
        raise UserError(f"baselines need at least {MIN_TRAIN} training spectra, got {len(x_train)}")
    x_val, y_val = _checked_split(kind, x_val, y_val, "validation", x_train.shape[1])
    if kind == "curve" and len(y_val) and y_val.shape[1] != y_train.shape[1]:
        raise UserError(
            f"validation curves have {y_val.shape[1]} points, the training curves {y_train.shape[1]}"
        )
    single_class = kind in ("classification", "probability") and len(np.unique(y_train)) == 1
    if single_class:
        label = y_train[0].item()
        candidates = [_Candidate({}, f"{name}: one class in train ({label:g}), predicts it", _Constant(kind))]
    else:
        candidates = _CANDIDATES[name](kind, _fit_size(len(x_train), len(x_val)), x_train.shape[1], seed)
    chosen, model, selection, score = _select(kind, candidates, (x_train, y_train), (x_val, y_val), seed)
    logger.debug(
        "%s for a %s target: %s (selection %s, score %s)", name, kind, chosen.description, selection, score
    )
    return FittedBaseline(
        name=name,
        kind=kind,
        description=chosen.description,
        params=dict(chosen.params),
        selection=selection,
        selection_score=score,
        n_features=x_train.shape[1],
        curve_width=y_train.shape[1] if kind == "curve" else None,
        estimator=model,
    )


def _split_arrays(arrays: Mapping[str, Any], split: str, what: str) -> Any:
    if split not in arrays:
        raise UserError(f"{what} has no split {split!r}; it has: {', '.join(map(str, arrays)) or 'none'}")
    return arrays[split]


def compare_baselines(
    x: Mapping[str, Any],
    targets: Mapping[str, tuple[str, Mapping[str, Any]]],
    splits: Sequence[str] = SPLITS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Fit every baseline for every target and score it on the test split.

    Parameters
    ----------
    x:
        Split name -> normalized spectra (n, p).
    targets:
        Target name -> (kind, split name -> values in the kind's format, aligned with ``x``).
    splits:
        The names of the training, validation and test splits in ``x`` and ``targets``.
    seed:
        Passed to :func:`fit_baseline`.

    Returns
    -------
    One row per target and baseline: ``target``, ``kind``, ``model``, ``description``,
    ``n_test`` and the test metrics of :func:`~xasflow.models.metrics.target_metrics`.
    """
    if len(splits) != 3:
        raise UserError(f"splits must name the training, validation and test splits, got {list(splits)}")
    rows = []
    for target, (kind, arrays) in targets.items():
        check_kind(kind)
        train, val, test = (
            (_split_arrays(x, split, "the spectra"), _split_arrays(arrays, split, f"target {target!r}"))
            for split in splits
        )
        n_features = _spectra(train[0], "training spectra").shape[1]
        x_test, y_test = _checked_split(kind, *test, f"{target!r} test", n_features)
        for name in BASELINES:
            fitted = fit_baseline(name, kind, *train, *val, seed=seed)
            metrics = target_metrics(kind, y_test, fitted.predict(x_test))
            rows.append(
                {
                    "target": target,
                    "kind": kind,
                    "model": name,
                    "description": fitted.description,
                    "n_test": len(y_test),
                    **metrics,
                }
            )
            logger.info("%s, %s (%s): test %s", target, name, fitted.description, metrics)
    return rows


def _best_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, int | None]:
    """Target -> index of its best row by the main metric (first of equals); None when no row
    of that target has the metric."""
    kinds: dict[str, str] = {}
    best: dict[str, int | None] = {}
    for index, row in enumerate(rows):
        missing = [key for key in ("target", "kind", "model") if key not in row]
        if missing:
            raise UserError(
                f"comparison row {index} lacks {', '.join(missing)}; every row needs target, kind, model"
            )
        target, kind = row["target"], check_kind(row["kind"])
        if kinds.setdefault(target, kind) != kind:
            raise UserError(f"target {target!r} appears as kind {kinds[target]!r} and as {kind!r}")
        metric, direction = main_metric(kind)
        value = row.get(metric)
        best.setdefault(target, None)
        if value is None or not math.isfinite(value):
            continue
        current = best[target]
        sign = 1.0 if direction == "min" else -1.0
        if current is None or sign * value < sign * rows[current][metric]:
            best[target] = index
    return best


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``rows`` (baselines and any neural-model rows with the same keys) with
    ``"best"``: True for the one row per target with the best main metric (lowest MAE or Brier
    score, highest accuracy; the first of equals, so a tie goes to the simpler model when the
    baselines come first). A target whose rows all lack that metric has no best row."""
    best = set(_best_rows(rows).values())
    return [{**row, "best": index in best} for index, row in enumerate(rows)]


def winners(rows: Sequence[Mapping[str, Any]]) -> dict[str, str | None]:
    """Target -> the model of its best row (see :func:`comparison_table`), None if none."""
    return {
        target: None if index is None else rows[index]["model"] for target, index in _best_rows(rows).items()
    }


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Row keys, then the metrics in a fixed order, then any other keys as they first appear."""
    present = {key for row in rows for key in row}
    columns = [key for key in _ROW_KEYS if key in present]
    columns += [metric for metric in _METRIC_ORDER if metric in present]
    for row in rows:
        columns += [key for key in row if key not in columns and key != "best"]
    return [*columns, "best"]


def _markdown_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _markdown(table: list[dict[str, Any]], columns: list[str]) -> str:
    shown = [column for column in columns if column != "best"]
    lines = [
        "# Models and baselines on the test split",
        "",
        "Bold: the best model of each target (lowest MAE for regression and curve targets, highest",
        "accuracy for classes, lowest Brier score for probabilities).",
        "",
        "| " + " | ".join(shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
    ]
    for row in table:
        metric = main_metric(row["kind"])[0]
        cells = []
        for column in shown:
            cell = _markdown_cell(row.get(column))
            bold = row["best"] and column in ("model", metric) and cell
            cells.append(f"**{cell}**" if bold else cell)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Winners", ""]
    for row in (row for row in table if row["best"]):
        metric = main_metric(row["kind"])[0]
        lines.append(
            f"- {row['target']} ({row['kind']}): {row['model']}, {metric} {_markdown_cell(row[metric])}"
        )
    return "\n".join(lines) + "\n"


def write_comparison(
    rows: Sequence[Mapping[str, Any]], csv_path: str | Path, markdown_path: str | Path
) -> None:
    """Write the comparison (with ``best`` recomputed) as a CSV (empty cell: undefined metric)
    and a Markdown table with the best model of each target in bold; both atomically."""
    table = comparison_table(rows)
    columns = _columns(table)
    with atomic_open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in table:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
    with atomic_open(markdown_path, "w") as handle:
        handle.write(_markdown(table, columns))
