"""Evaluate a trained model on its test systems: every target, every baseline, calibrated intervals.

The neural model is compared with scikit-learn baselines (:mod:`xasflow.models.baselines`)
fitted on the same training spectra (not augmented), chosen on the same validation systems and
scored on the same test systems, inside the same energy window. The ensemble's spread is turned
into intervals by split-conformal calibration on the validation systems
(:mod:`xasflow.models.conformal`); their coverage is measured on the test systems.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xasflow.models.baselines import MIN_TRAIN, compare_baselines, comparison_table, winners
from xasflow.models.conformal import (
    LEVELS,
    NORMALIZED_SCORE,
    ConformalCalibration,
    binary_reliability,
    coverage_curve,
    coverage_report,
    fit_conformal,
    fit_temperature,
    plot_reliability,
)
from xasflow.models.data import SpectrumArrays
from xasflow.models.metrics import target_metrics
from xasflow.models.targets import TargetSpec

logger = logging.getLogger(__name__)


def defined_rows(values: np.ndarray) -> np.ndarray:
    """Mask of the spectra whose target value is defined (no NaN)."""
    values = np.asarray(values, dtype=np.float64)
    return (
        np.isfinite(values).all(axis=tuple(range(1, values.ndim))) if values.ndim > 1 else np.isfinite(values)
    )


def _scored(spec: TargetSpec, truth: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """Metrics of one target on the spectra where it is defined."""
    keep = defined_rows(truth)
    truth, predicted = truth[keep], predicted[keep]
    if spec.kind == "classification":
        truth = np.rint(truth).astype(int)
    return target_metrics(spec.kind, truth, predicted)


def fit_calibration(
    specs: tuple[TargetSpec, ...], predicted: dict[str, np.ndarray], truth: SpectrumArrays
) -> dict[str, ConformalCalibration]:
    """Split-conformal calibration of every number and curve target on the validation split
    (``predicted`` on ``truth``); none for a target with fewer than 2 defined values."""
    calibration = {}
    for spec in specs:
        if spec.kind not in ("regression", "curve"):
            continue
        keep = defined_rows(truth.targets[spec.name])
        if keep.sum() < 2:
            logger.warning("target %s: fewer than 2 validation values, no calibrated intervals", spec.name)
            continue
        calibration[spec.name] = fit_conformal(
            truth.targets[spec.name][keep],
            predicted[spec.name][keep],
            predicted[f"{spec.name}_spread"][keep],
            levels=LEVELS,
            normalized=NORMALIZED_SCORE,
        )
    return calibration


def fit_temperatures(specs: tuple[TargetSpec, ...], model, truth: SpectrumArrays) -> dict[str, float]:
    """Temperature scaling of every probability target on the validation split: the T that
    makes ``sigmoid(mean member logit / T)`` fit the validation outcomes best (1 when the split
    has fewer than 2 defined outcomes or only one class)."""
    temperatures = {}
    probability = [spec for spec in specs if spec.kind == "probability"]
    if not probability or not len(truth):
        return temperatures
    outputs = model.member_outputs(truth.mu)
    for spec in probability:
        keep = defined_rows(truth.targets[spec.name])
        outcome = truth.targets[spec.name][keep]
        if keep.sum() < 2 or len(np.unique(outcome)) < 2:
            logger.warning("target %s: validation outcomes of one class, no temperature scaling", spec.name)
            continue
        logits = outputs[spec.name][:, keep, 0].mean(axis=0)
        temperatures[spec.name] = fit_temperature(logits, outcome)
        logger.info(
            "target %s: probability temperature %.3f (validation)", spec.name, temperatures[spec.name]
        )
    return temperatures


@dataclass(frozen=True)
class Evaluation:
    """Per target: the model's and the baselines' test metrics, interval coverage; the table."""

    targets: dict[str, dict[str, Any]]
    comparison: list[dict[str, Any]]
    winners: dict[str, str]


def evaluate_targets(
    model_name: str,
    specs: tuple[TargetSpec, ...],
    predicted: dict[str, dict[str, np.ndarray]],
    arrays: dict[str, SpectrumArrays],
    calibration: dict[str, ConformalCalibration],
    inputs: dict[str, np.ndarray],
    seed: int = 0,
) -> Evaluation:
    """Score the model (``predicted[split]``) and the baselines on the test split of ``arrays``.

    ``inputs`` are the (standardized) spectra of each split that the baselines read.
    """
    results: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for spec in specs:
        test = arrays["test"].targets[spec.name]
        model_metrics = _scored(spec, test, predicted["test"][spec.name])
        entry: dict[str, Any] = {"kind": spec.kind, "units": spec.units, "test": model_metrics}
        if spec.name in calibration and len(test):
            keep = defined_rows(test)
            entry["coverage"] = coverage_report(
                test[keep],
                predicted["test"][spec.name][keep],
                predicted["test"][f"{spec.name}_spread"][keep],
                calibration[spec.name],
            )
        if spec.kind == "probability" and len(test):
            keep = defined_rows(test)
            reliability = binary_reliability(predicted["test"][spec.name][keep], test[keep])
            entry["expected_calibration_error"] = reliability["ece"]
        baseline_rows = _baseline_rows(spec, arrays, inputs, seed)
        entry["baselines"] = {row["model"]: _metric_part(row) for row in baseline_rows}
        results[spec.name] = entry
        rows.extend(baseline_rows)
        rows.append(
            {
                "target": spec.name,
                "kind": spec.kind,
                "model": model_name,
                "description": "neural",
                "n_test": int(defined_rows(test).sum()),
                **model_metrics,
            }
        )
    table = comparison_table(rows)
    return Evaluation(results, table, winners(table))


def _metric_part(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in ("target", "kind", "model", "best")}


def _baseline_rows(
    spec: TargetSpec, arrays: dict[str, SpectrumArrays], inputs: dict[str, np.ndarray], seed: int
) -> list[dict[str, Any]]:
    """Every scikit-learn baseline on one target, on the spectra where it is defined."""
    masks = {split: defined_rows(arrays[split].targets[spec.name]) for split in arrays}
    values = {split: arrays[split].targets[spec.name][mask] for split, mask in masks.items()}
    if spec.kind == "classification":
        values = {split: np.rint(value).astype(int) for split, value in values.items()}
    x = {split: inputs[split][mask] for split, mask in masks.items()}
    if len(values["train"]) < MIN_TRAIN:
        logger.warning(
            "target %s: %d training values, fewer than the %d the baselines need: no baselines",
            spec.name,
            len(values["train"]),
            MIN_TRAIN,
        )
        return []
    return compare_baselines(x, {spec.name: (spec.kind, values)}, splits=tuple(arrays), seed=seed)


def write_reliability(
    path: Path,
    specs: tuple[TargetSpec, ...],
    predicted: dict[str, dict[str, np.ndarray]],
    arrays: dict[str, SpectrumArrays],
    calibration_sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> None:
    """Nominal against observed test coverage of conformal intervals for every number target:
    fitted on ``calibration_sets[name]`` (truth, prediction, spread: the out-of-system
    predictions of a cross-system calibration) where given, else on the validation split."""
    curves = {}
    nominal = np.linspace(0.05, 0.95, 19)
    for spec in specs:
        if spec.kind != "regression":
            continue
        test_keep = defined_rows(arrays["test"].targets[spec.name])
        if calibration_sets is not None:
            if spec.name not in calibration_sets:
                continue
            reference = calibration_sets[spec.name]
        else:
            val_keep = defined_rows(arrays["val"].targets[spec.name])
            if val_keep.sum() < 2:
                continue
            reference = (
                arrays["val"].targets[spec.name][val_keep],
                predicted["val"][spec.name][val_keep],
                predicted["val"][f"{spec.name}_spread"][val_keep],
            )
        if not test_keep.any():
            continue
        observed = coverage_curve(
            arrays["test"].targets[spec.name][test_keep],
            predicted["test"][spec.name][test_keep],
            predicted["test"][f"{spec.name}_spread"][test_keep],
            *reference,
            nominal=nominal,
        )
        curves[spec.name] = (nominal, observed)
    method = "cross-system" if calibration_sets is not None else "split"
    plot_reliability(path, curves, f"{method}-conformal intervals: test coverage")
