"""Leave-one-system-out cross-validation, with intervals calibrated across systems.

A study's fixed split tests a model on one or two systems of 16-40 spectra. Two things follow:
the test metrics describe those systems, not the method; and split-conformal intervals fitted
on one validation system are calibrated for *that* system's shift from training, which the test
system does not share. With three or four systems a split, a coverage of 90 % cannot even be
measured to better than about +-5 % (binomial, n = 40), before the shift between systems.

This module trains the model once per system ``t`` of the dataset, with ``t`` as the only test
system (the validation systems stay those of the study; where ``t`` is one of them, the study's
test systems take its place, so every fold trains on as many systems as the study's own model).
Every spectrum is then predicted once by a model that never saw its system, and:

- **metrics** of the network and of every baseline (:mod:`xasflow.models.baselines`, fitted per
  fold on the same split) are pooled over all spectra: the weighted mean of the per-fold MAE,
  accuracy and Brier score, so each spectrum counts once;
- **cross-system conformal intervals**: for system ``t`` the multipliers are fitted on the
  out-of-system scores of all *other* systems (each from the fold that held it out) and the
  coverage is measured on ``t``. Pooling the scores of many held-out systems calibrates the
  intervals for the shift between systems, which is what a new measured sample brings. The
  coverage over all spectra is reported beside the split-conformal coverage each fold got from
  its single validation system (what ``xasflow train`` does).

The scores of a system ``g`` come from the fold that held out ``g``, which trained on ``t``: a
shortcut. The clean scheme (``nested``) calibrates each fold across its own systems only, one
training per pair of systems. The two can differ either way: seeing ``t`` makes the other
systems' scores smaller, but the nested calibration folds also train on one system fewer than
the model they calibrate. With the score normalized by the ensemble spread (used until
2026-11), the nested coverage at 68 / 90 % was 67.5 / 92.1 % against 67.5 / 89.6 % with the
shortcut (Al-Cu MLP), and 60.5 / 87.0 % against 67.9 / 90.1 % (Pt-Cu MLP); the plain score now
used is argued at :data:`NORMALIZED_SCORE`. Report the nested numbers where the cost
allows.

Outputs in ``out_dir``: ``folds/<system>/`` (each fold's full training output), ``crossval.csv``
(one row per spectrum and number target), ``crossval.json`` (the summary), ``crossval.md`` (the
tables) and ``reliability.png`` (nominal against observed cross-system coverage).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from xasflow.errors import UserError
from xasflow.fileio import atomic_open, atomic_write_text
from xasflow.models.augment import AugmentationParams
from xasflow.models.conformal import (
    CURVE_LEVELS,
    LEVELS,
    NORMALIZED_SCORE,
    ConformalCalibration,
    coverage,
    fit_conformal,
    level_name,
    plot_reliability,
)
from xasflow.models.evaluate import defined_rows
from xasflow.models.params import TrainParams

logger = logging.getLogger(__name__)

CROSSVAL_CSV = "crossval.csv"
CROSSVAL_JSON = "crossval.json"
CROSSVAL_MD = "crossval.md"
RELIABILITY_PNG = "reliability.png"
FOLDS_DIR = "folds"
#: Metrics that are means over spectra, so that the pooled value is the count-weighted mean.
POOLED_METRICS = ("mae", "accuracy", "brier")


def fold_params(
    params: TrainParams, held_out: str, substitutes: Sequence[str] = (), conformal: str = "split"
) -> TrainParams:
    """``params`` with ``held_out`` the only test system and the fold's own interval
    calibration ``conformal`` ("split" unless the cross-validation is nested). The validation
    systems stay ``params``'; where ``held_out`` is one of them, the first of ``substitutes``
    not held out takes its place."""
    val = tuple(system for system in params.val_systems if system != held_out)
    missing = len(params.val_systems) - len(val)
    val = val + tuple(system for system in substitutes if system != held_out and system not in val)[:missing]
    if not val:
        raise UserError(f"no validation system is left for the fold that holds out {held_out!r}")
    return replace(params, val_systems=val, test_systems=(held_out,), conformal=conformal)


@dataclass
class _Pooled:
    """Out-of-system predictions of one number or curve target over all folds."""

    kind: str
    system: list[np.ndarray] = field(default_factory=list)
    truth: list[np.ndarray] = field(default_factory=list)
    prediction: list[np.ndarray] = field(default_factory=list)
    spread: list[np.ndarray] = field(default_factory=list)

    def add(self, system: np.ndarray, truth: np.ndarray, prediction: np.ndarray, spread: np.ndarray) -> None:
        keep = defined_rows(truth)
        self.system.append(np.asarray(system)[keep])
        self.truth.append(np.asarray(truth, dtype=np.float64)[keep])
        self.prediction.append(np.asarray(prediction, dtype=np.float64)[keep])
        self.spread.append(np.asarray(spread, dtype=np.float64)[keep])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return tuple(np.concatenate(part) for part in (self.system, self.truth, self.prediction, self.spread))


def cross_system_coverage(
    system: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    spread: np.ndarray,
    levels: Sequence[float] = LEVELS,
    normalized: bool = True,
) -> dict[str, Any]:
    """Coverage of intervals for each system fitted on the other systems' scores.

    Arrays hold one out-of-system prediction per spectrum (axis 0); ``system`` names each
    spectrum's system. Returns ``overall`` (level name -> coverage over all spectra, each
    counted once) and ``per_system`` (system -> level name -> coverage, plus ``n``). A system
    is left out where the others hold fewer than 2 scores.
    """
    system = np.asarray(system).astype(str)
    covered = {level: 0.0 for level in levels}
    counted = 0
    per_system: dict[str, dict[str, float]] = {}
    for name in sorted(set(system.tolist())):
        inside, others = system == name, system != name
        if others.sum() < 2:
            continue
        calibration = fit_conformal(truth[others], prediction[others], spread[others], levels, normalized)
        entry: dict[str, float] = {"n": int(inside.sum())}
        for level in levels:
            low, high = calibration.interval(prediction[inside], spread[inside], level)
            value = coverage(truth[inside], low, high)
            entry[level_name(level)] = value
            covered[level] += value * inside.sum()
        counted += int(inside.sum())
        per_system[name] = entry
    overall = {level_name(level): (covered[level] / counted if counted else None) for level in levels}
    return {"overall": overall, "per_system": per_system, "n": counted}


def _fold_done(fold_dir: Path, params: TrainParams, dataset_hash: str | None) -> dict[str, Any] | None:
    """The fold's metrics if it finished with these parameters on this dataset (its config
    hash), else None: a rerun resumes. Parameters are compared after both are read back, so a
    key added later with its default does not force a retraining."""
    metrics_path = fold_dir / "metrics.json"
    if not (metrics_path.exists() and (fold_dir / "model.ckpt").exists()):
        return None
    try:
        metrics = json.loads(metrics_path.read_text())
        done = TrainParams.from_dict(metrics["params"])
    except (OSError, KeyError, TypeError, UserError, json.JSONDecodeError):
        return None
    return metrics if done == params and metrics.get("dataset_config_hash") == dataset_hash else None


@dataclass
class _Folds:
    """What the folds leave: per fold its metrics, per number/curve target the pooled
    out-of-system predictions, and one table row per spectrum and number target."""

    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    pooled: dict[str, _Pooled] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


def _run_folds(
    dataset_path: str | Path,
    params: TrainParams,
    systems: Sequence[str],
    substitutes: Sequence[str],
    folds_dir: Path,
    augmentation: AugmentationParams | None,
    calibration: dict | None,
    conformal: str = "split",
) -> _Folds:
    """Train (or reuse) one fold per system in ``systems`` and predict the held-out system."""
    from xasflow.dataset.schema import open_dataset
    from xasflow.models.train import split_predictions, train_model

    dataset_hash = open_dataset(dataset_path).attrs.get("config_hash")
    folds = _Folds()
    for position, held_out in enumerate(systems, start=1):
        fold = fold_params(params, held_out, substitutes, conformal)
        fold_dir = folds_dir / held_out
        metrics = _fold_done(fold_dir, fold, dataset_hash)
        if metrics is None:
            logger.info("fold %d/%d: %s held out", position, len(systems), held_out)
            metrics = train_model(dataset_path, fold, fold_dir, augmentation, calibration)
        else:
            logger.info("fold %d/%d: %s held out, already trained", position, len(systems), held_out)
        folds.metrics[held_out] = metrics
        arrays, predicted = split_predictions(
            dataset_path, fold, fold_dir / "model.ckpt", calibration, "test"
        )
        for spec in fold.targets:
            if spec.kind not in ("regression", "curve"):
                continue
            truth = arrays.targets[spec.name]
            folds.pooled.setdefault(spec.name, _Pooled(spec.kind)).add(
                arrays.system, truth, predicted[spec.name], predicted[f"{spec.name}_spread"]
            )
            if spec.kind == "regression":
                folds.rows.extend(
                    _spectrum_rows(
                        spec.name, held_out, arrays, truth, predicted, spec.name, metrics.get("ood_threshold")
                    )
                )
    return folds


def _resolved(dataset_path: str | Path, params: TrainParams):
    """``params`` with its validation and test systems named (as the study's own model resolves
    them) and the split."""
    from xasflow.dataset.schema import open_dataset

    dataset = open_dataset(dataset_path)
    try:
        split = params.resolve_splits(dataset["system"].values.tolist())
    except UserError as error:
        raise UserError(f"{dataset_path}: {error}") from error
    return replace(params, val_systems=split.val, test_systems=split.test), split


def cross_validate(
    dataset_path: str | Path,
    params: TrainParams,
    out_dir: str | Path,
    augmentation: AugmentationParams | None = None,
    calibration: dict | None = None,
    nested: bool = False,
) -> dict[str, Any]:
    """Leave-one-system-out over every system of the dataset not excluded (module docstring).

    ``nested``: every fold is itself calibrated across systems (``conformal: cross_system``,
    one training per system it trains and validates on), so the intervals for a held-out system
    come from folds that never saw it: the coverage ``nested_cross_system`` has no shortcut, at
    about (number of systems) times the cost.

    A fold whose ``metrics.json`` and checkpoint exist with the same parameters is not trained
    again. Returns the summary written to ``crossval.json``.
    """
    out_dir = Path(out_dir)
    params, split = _resolved(dataset_path, params)
    systems = sorted(split.train + split.val + split.test)
    if len(systems) < 3:
        raise UserError(
            f"{dataset_path}: cross-validation by system needs at least 3 systems, found {len(systems)}"
        )
    folds = _run_folds(
        dataset_path,
        params,
        systems,
        split.test + split.train,
        out_dir / FOLDS_DIR,
        augmentation,
        calibration,
        "cross_system" if nested else "split",
    )
    summary = _summary(params, systems, folds.metrics, folds.pooled, nested)
    _write_outputs(out_dir, summary, folds.rows, folds.pooled)
    return summary


def development_calibration(
    dataset_path: str | Path,
    params: TrainParams,
    out_dir: str | Path,
    augmentation: AugmentationParams | None = None,
    calibration: dict | None = None,
) -> tuple[dict[str, ConformalCalibration], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Cross-system conformal calibration of a model from its training and validation systems
    only (the test systems are never trained on, predicted or scored here).

    One fold per development system, trained on the other development systems; the pooled
    out-of-system scores give the multipliers of every number and curve target. Returns the
    calibrations and, per target, the pooled (truth, prediction, spread) they were fitted on.
    The folds and their ``crossval.*`` summary are written under ``out_dir``.
    """
    params, split = _resolved(dataset_path, params)
    systems = sorted(split.train + split.val)
    if len(systems) < 3:
        raise UserError(
            f"{dataset_path}: cross-system calibration needs at least 3 training and validation "
            f"systems, found {len(systems)}; use conformal: split"
        )
    development = replace(params, exclude_systems=params.exclude_systems + split.test, test_systems=())
    out_dir = Path(out_dir)
    folds = _run_folds(
        dataset_path, development, systems, split.train, out_dir / FOLDS_DIR, augmentation, calibration
    )
    _write_outputs(
        out_dir, _summary(development, systems, folds.metrics, folds.pooled), folds.rows, folds.pooled
    )
    conformal, sets = {}, {}
    for name, pooled in folds.pooled.items():
        _, truth, prediction, spread = pooled.arrays()
        if len(truth) < 2:
            logger.warning("target %s: fewer than 2 out-of-system values, no calibrated intervals", name)
            continue
        conformal[name] = fit_conformal(truth, prediction, spread, LEVELS, normalized=NORMALIZED_SCORE)
        sets[name] = (truth, prediction, spread)
        logger.info(
            "target %s: cross-system multipliers %s from %d out-of-system predictions of %d systems",
            name,
            ", ".join(f"{value:.3g}" for value in np.ravel(conformal[name].quantiles)[: len(LEVELS)]),
            len(truth),
            len(systems),
        )
    return conformal, sets


def _spectrum_rows(
    name: str,
    held_out: str,
    arrays,
    truth: np.ndarray,
    predicted: Mapping[str, np.ndarray],
    key: str,
    threshold: float | None,
) -> list[dict[str, Any]]:
    """One row per spectrum with a defined value: truth, prediction, spread and the input's
    out-of-distribution distance with its fold's threshold."""
    return [
        {
            "target": name,
            "system": held_out,
            "frame": int(arrays.frame[index]),
            "truth": float(truth[index]),
            "predicted": float(predicted[key][index]),
            "spread": float(predicted[f"{key}_spread"][index]),
            "input_distance": float(predicted["input_distance"][index])
            if "input_distance" in predicted
            else "",
            "distance_threshold": threshold,
        }
        for index in range(len(truth))
        if np.isfinite(truth[index])
    ]


def _pooled_metrics(fold_metrics: Mapping[str, Mapping[str, Any]], target: str) -> dict[str, dict[str, Any]]:
    """Count-weighted means over folds of each model's test metrics on ``target``: the network
    (``network``) and every baseline."""
    sums: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    for metrics in fold_metrics.values():
        entry = metrics["targets"][target]
        n_test = _fold_count(metrics, target)
        candidates = {"network": entry["test"], **entry["baselines"]}
        for model, values in candidates.items():
            for metric in POOLED_METRICS:
                value = values.get(metric)
                if value is None or not n_test:
                    continue
                sums.setdefault(model, {}).setdefault(metric, 0.0)
                counts.setdefault(model, {}).setdefault(metric, 0)
                sums[model][metric] += value * n_test
                counts[model][metric] += n_test
    return {
        model: {metric: sums[model][metric] / counts[model][metric] for metric in sums[model]}
        | {"n": max(counts[model].values())}
        for model in sums
    }


def _fold_count(metrics: Mapping[str, Any], target: str) -> int:
    """Test spectra of a fold where ``target`` is defined (the comparison's ``n_test``)."""
    for baseline in metrics["targets"][target]["baselines"].values():
        if baseline.get("n_test"):
            return int(baseline["n_test"])
    return int(metrics.get("n_test", 0))


def _split_coverage(fold_metrics: Mapping[str, Mapping[str, Any]], target: str) -> dict[str, float | None]:
    """Each fold's own intervals on its held-out system, pooled: calibrated on the fold's
    validation systems (split conformal) or, nested, across the fold's own systems."""
    pooled: dict[str, float | None] = {}
    for level in LEVELS:
        key = f"coverage_{level_name(level)}"
        covered = counted = 0.0
        for metrics in fold_metrics.values():
            value = metrics["targets"][target].get("coverage", {}).get(key)
            if value is None:
                continue
            n_test = _fold_count(metrics, target)
            covered += value * n_test
            counted += n_test
        pooled[level_name(level)] = covered / counted if counted else None
    return pooled


def _summary(
    params: TrainParams,
    systems: list[str],
    fold_metrics: Mapping[str, Mapping[str, Any]],
    pooled: Mapping[str, _Pooled],
    nested: bool = False,
) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    for spec in params.targets:
        entry: dict[str, Any] = {"kind": spec.kind, "models": _pooled_metrics(fold_metrics, spec.name)}
        models = {name: values for name, values in entry["models"].items() if name != "network"}
        key = (
            "accuracy" if spec.kind == "classification" else "brier" if spec.kind == "probability" else "mae"
        )
        better = max if key == "accuracy" else min
        ranked = [name for name in models if models[name].get(key) is not None]
        if ranked:
            best = better(ranked, key=lambda name: models[name][key])
            entry["best_baseline"] = best
            network = entry["models"].get("network", {}).get(key)
            entry["network_beats_best_baseline"] = (
                None if network is None else bool(better(network, models[best][key]) == network)
            )
        if spec.name in pooled:
            system, truth, prediction, spread = pooled[spec.name].arrays()
            entry["coverage"] = {
                # each fold's own intervals on its held-out system
                "nested_cross_system" if nested else "split_conformal": _split_coverage(
                    fold_metrics, spec.name
                ),
                # the score conformal: cross_system uses, and the normalized one beside it
                "cross_system": cross_system_coverage(
                    system, truth, prediction, spread, normalized=NORMALIZED_SCORE
                ),
                "cross_system_normalized": cross_system_coverage(
                    system, truth, prediction, spread, normalized=True
                ),
            }
        targets[spec.name] = entry
    return {
        "architecture": params.architecture,
        "ensemble": params.ensemble,
        "nested": nested,
        "systems": systems,
        "folds": {
            system: {
                "val_systems": metrics["val_systems"],
                "n_test": metrics["n_test"],
                "wall_seconds": metrics.get("wall_seconds"),
            }
            for system, metrics in fold_metrics.items()
        },
        "targets": targets,
        "params": params.to_dict(),
    }


def _write_outputs(out_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]], pooled) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / CROSSVAL_JSON, json.dumps(summary, indent=2, default=_json_default) + "\n")
    columns = (
        "target",
        "system",
        "frame",
        "truth",
        "predicted",
        "spread",
        "input_distance",
        "distance_threshold",
    )
    with atomic_open(out_dir / CROSSVAL_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out_dir / CROSSVAL_MD, markdown(summary))
    curves = {}
    for name, entry in pooled.items():
        if entry.kind != "regression":
            continue
        system, truth, prediction, spread = entry.arrays()
        report = cross_system_coverage(
            system, truth, prediction, spread, levels=CURVE_LEVELS, normalized=NORMALIZED_SCORE
        )
        curves[name] = (
            np.array(CURVE_LEVELS),
            np.array([report["overall"][level_name(level)] for level in CURVE_LEVELS], dtype=float),
        )
    plot_reliability(
        out_dir / RELIABILITY_PNG, curves, "cross-system conformal: leave-one-system-out coverage"
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _format(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(summary: Mapping[str, Any]) -> str:
    """The pooled metrics and coverages as Markdown tables."""
    lines = [
        f"# Leave-one-system-out: {summary['architecture']} (ensemble {summary['ensemble']}), "
        f"{len(summary['systems'])} systems",
        "",
    ]
    for name, entry in summary["targets"].items():
        lines += [f"## {name} ({entry['kind']})", "", "| model | " + " | ".join(POOLED_METRICS) + " | n |"]
        lines.append("|---" * (len(POOLED_METRICS) + 2) + "|")
        for model, values in entry["models"].items():
            marker = " (best baseline)" if model == entry.get("best_baseline") else ""
            cells = " | ".join(_format(values.get(metric)) for metric in POOLED_METRICS)
            lines.append(f"| {model}{marker} | {cells} | {values.get('n', '')} |")
        if "coverage" in entry:
            lines += ["", "| intervals | " + " | ".join(f"{level_name(level)} %" for level in LEVELS) + " |"]
            lines.append("|---" * (len(LEVELS) + 1) + "|")
            for method, report in entry["coverage"].items():
                overall = report.get("overall", report)
                cells = " | ".join(_format(overall.get(level_name(level))) for level in LEVELS)
                lines.append(f"| {method} | {cells} |")
        lines.append("")
    return "\n".join(lines)
