"""Test metrics for the four kinds of target a model of XAS spectra predicts.

- ``"regression"``: one number per spectrum (n,), e.g. a coordination number, a Cu fraction.
- ``"curve"``: one curve per spectrum (n, m), e.g. g(r) on m r points.
- ``"classification"``: an integer class label per spectrum (n,), e.g. a Si valence 0..4.
- ``"probability"``: a 0/1 outcome per spectrum (n,), predicted as a probability in [0, 1].

A metric that is undefined (no spectra; R2 of a constant truth; ROC AUC with one outcome only)
is ``None``, so results stay valid JSON and a table can leave the cell empty.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from xasflow.errors import UserError

TARGET_KINDS = ("regression", "curve", "classification", "probability")

#: The metrics :func:`target_metrics` returns for each kind, in table order.
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "regression": ("mae", "rmse", "r2"),
    "curve": ("mae", "r2"),
    "classification": ("accuracy", "mae"),
    "probability": ("accuracy", "brier", "log_loss", "roc_auc"),
}

_MAIN_METRIC = {
    "regression": ("mae", "min"),
    "curve": ("mae", "min"),
    "classification": ("accuracy", "max"),
    "probability": ("brier", "min"),
}

#: Probabilities are kept this far from 0 and 1 in the log loss, so one confident miss is a
#: large finite penalty rather than infinity.
PROBABILITY_CLIP = 1e-7
#: A predicted probability at or above this counts as outcome 1 for the accuracy.
PROBABILITY_THRESHOLD = 0.5


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is one of :data:`TARGET_KINDS`; otherwise raise ``UserError``."""
    if kind not in TARGET_KINDS:
        raise UserError(f"unknown target kind {kind!r}; valid: {', '.join(TARGET_KINDS)}")
    return kind


def main_metric(kind: str) -> tuple[str, str]:
    """The metric that ranks models of a ``kind`` and whether lower ("min") or higher ("max") wins:
    MAE for regression and curves, accuracy for classes, Brier score for probabilities."""
    return _MAIN_METRIC[check_kind(kind)]


def target_values(kind: str, values, what: str = "target") -> np.ndarray:
    """``values`` as an array checked against ``kind``; ``what`` names them in error messages.

    Regression and probability give float64 (n,), curves float64 (n, m), classes int64 (n,).
    Values must be finite; class labels whole numbers; probability outcomes 0 or 1.
    """
    check_kind(kind)
    array = np.asarray(values)
    if array.size == 0:
        width = array.shape[1:] if kind == "curve" and array.ndim == 2 else ()
        return np.zeros((0, *width), dtype=np.int64 if kind == "classification" else np.float64)
    _check_numeric(array, what)
    expected_ndim = 2 if kind == "curve" else 1
    if array.ndim != expected_ndim:
        shape = "(n, m)" if kind == "curve" else "(n,)"
        raise UserError(f"{what} of kind {kind!r} must have shape {shape}, got {array.shape}")
    array = array.astype(np.float64)
    if kind == "classification":
        if not np.all(array == np.round(array)):
            raise UserError(f"{what} of kind 'classification' must be whole-number class labels")
        return array.astype(np.int64)
    if kind == "probability" and not np.all((array == 0) | (array == 1)):
        raise UserError(f"{what} of kind 'probability' must be outcomes 0 or 1, got {np.unique(array)[:5]}")
    return array


def _check_numeric(array: np.ndarray, what: str) -> None:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise UserError(f"{what} must be numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array.astype(np.float64))):
        raise UserError(f"{what} contain NaN or infinite values")


def target_metrics(kind: str, truth, predicted) -> dict[str, float | None]:
    """Metrics of ``predicted`` against ``truth`` for a target of ``kind``.

    - regression (n,): ``mae``, ``rmse`` (target units) and ``r2``.
    - curve (n, m): ``mae`` (mean over spectra and points) and ``r2`` pooled over all spectra
      and points against the mean curve of the truth, so that predicting the mean curve scores
      0 (flattening first would credit any model with the shape every g(r) shares).
    - classification (n,) labels: ``accuracy`` and ``mae`` of the labels taken as numbers
      (a valence off by 2 is worse than one off by 1).
    - probability (n,) truth 0/1, predicted in [0, 1]: ``accuracy`` (predicted >= 0.5 is 1),
      ``brier`` (mean squared difference), ``log_loss`` (natural log, probabilities clipped to
      [1e-7, 1 - 1e-7]) and ``roc_auc`` (None unless both outcomes occur).

    Every metric is ``None`` when there are no spectra.
    """
    names = METRIC_NAMES[check_kind(kind)]
    truth_array = target_values(kind, truth, "truth")
    if len(truth_array) == 0 and np.size(predicted) == 0:
        return dict.fromkeys(names)
    predicted_array = _predicted_values(kind, predicted, truth_array.shape)
    if kind == "regression":
        return _regression_metrics(truth_array, predicted_array)
    if kind == "curve":
        return _curve_metrics(truth_array, predicted_array)
    if kind == "classification":
        return {
            "accuracy": float(np.mean(predicted_array == truth_array)),
            "mae": float(np.mean(np.abs(predicted_array - truth_array))),
        }
    return _probability_metrics(truth_array, predicted_array)


def _predicted_values(kind: str, predicted, shape: tuple[int, ...]) -> np.ndarray:
    """Predictions checked like targets; probabilities must lie in [0, 1]."""
    as_kind = "regression" if kind == "probability" else kind
    array = target_values(as_kind, predicted, "predictions")
    if array.shape != shape:
        raise UserError(f"predictions have shape {array.shape}, the truth has {shape}")
    if kind == "probability" and (array.min() < 0 or array.max() > 1):
        raise UserError(
            f"predicted probabilities must lie in [0, 1], got {array.min():.4g}..{array.max():.4g}"
        )
    return array


def _r2(residual: np.ndarray, deviation: np.ndarray) -> float | None:
    """1 - sum(residual^2) / sum(deviation^2); None when the truth does not vary."""
    total = float(np.sum(deviation**2))
    return 1.0 - float(np.sum(residual**2)) / total if total > 0 else None


def _regression_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    residual = predicted - truth
    return {
        "mae": float(np.mean(np.abs(residual))),
        "rmse": float(np.sqrt(np.mean(residual**2))),
        "r2": _r2(residual, truth - truth.mean()),
    }


def _curve_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    residual = predicted - truth
    return {
        "mae": float(np.mean(np.abs(residual))),
        "r2": _r2(residual, truth - truth.mean(axis=0)),
    }


def _probability_metrics(truth: np.ndarray, probability: np.ndarray) -> dict[str, float | None]:
    clipped = np.clip(probability, PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    log_likelihood = truth * np.log(clipped) + (1.0 - truth) * np.log(1.0 - clipped)
    both_outcomes = 0 < truth.sum() < len(truth)
    return {
        "accuracy": float(np.mean((probability >= PROBABILITY_THRESHOLD) == (truth == 1))),
        "brier": float(np.mean((probability - truth) ** 2)),
        "log_loss": float(-np.mean(log_likelihood)),
        "roc_auc": float(roc_auc_score(truth, probability)) if both_outcomes else None,
    }
