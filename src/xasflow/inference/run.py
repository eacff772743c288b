"""Predict structure from measured spectrum files with one or more trained models."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xasflow.experiment import NormalizedSpectrum, read_spectra
from xasflow.experiment.alignment import normalize_xanes
from xasflow.experiment.calibration import (
    PREPARATION_COLUMNS,
    Preparation,
    preparation_columns,
    prepare_spectra,
)
from xasflow.fileio import atomic_open
from xasflow.inference.compatibility import check_compatible
from xasflow.models.data import measured_input

logger = logging.getLogger(__name__)

# first and last columns of predictions.csv; between them, per number target NAME of the models:
# predicted_NAME, NAME_spread, NAME_low_68 .. NAME_high_95 (calibrated intervals), true_NAME
# (PREPARATION_COLUMNS: energy_shift_eV, merged_scans, merged_spread of calibration and merging)
LEADING_COLUMNS = ("spectrum", "model", "architecture", "e0_eV", "edge_step", *PREPARATION_COLUMNS)
TRAILING_COLUMNS = ("input_distance", "distance_threshold", "out_of_distribution")
INTERVAL_LEVELS = (68, 90, 95)


def target_columns(name: str) -> tuple[str, ...]:
    """The predictions.csv columns of one number target."""
    bounds = tuple(f"{name}_{side}_{level}" for level in INTERVAL_LEVELS for side in ("low", "high"))
    return (f"predicted_{name}", f"{name}_spread", *bounds, f"true_{name}")


def truths_by_stem(truth_paths: list[str | Path]) -> dict[str, dict]:
    """Truth JSONs named ``NAME.truth.json`` belong to the spectrum file with stem ``NAME``."""
    truths = {}
    for path in truth_paths:
        path = Path(path)
        truths[path.name.removesuffix(".truth.json")] = json.loads(path.read_text())
    return truths


def rdf_table_path(out_path: str | Path) -> Path:
    """Where :func:`predict_files` writes the g(r) table beside ``out_path``: ``<stem>_rdf.csv``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + "_rdf.csv")


def model_names(checkpoints: list[str | Path]) -> list[str]:
    """A name per checkpoint for the ``model`` column, never empty.

    ``models/cnn/model.ckpt`` (the workflow's layout) is ``cnn``; any other file is its stem
    (``cu_foil_cnn.ckpt`` -> ``cu_foil_cnn``, ``./model.ckpt`` -> ``model``). Names that would
    repeat fall back to the checkpoint path as given.
    """
    from xasflow.models.module import CHECKPOINT_NAME

    names = []
    for checkpoint in map(Path, checkpoints):
        folder = checkpoint.parent.name
        names.append(
            folder
            if checkpoint.name == CHECKPOINT_NAME and folder not in ("", ".", "..")
            else checkpoint.stem
        )
    return [
        str(path) if names.count(name) > 1 else name for name, path in zip(names, checkpoints, strict=True)
    ]


def predict_files(
    checkpoints: list[str | Path],
    spectrum_paths: list[str | Path],
    out_path: str | Path,
    truth_paths: list[str | Path] = (),
    rdf_path: str | Path | None = None,
    preparation: Preparation | None = None,
    figure_dir: str | Path | None = None,
) -> list[dict]:
    """Read, normalize (Larch ``pre_edge``), regrid and predict every spectrum with every model.

    ``spectrum_paths`` are XDI or column files, Athena projects (``PtData.prj``: every group, one
    row each) or single groups of a project (``PtData.prj:10wt% 20K``); a group's ``spectrum``
    column reads ``<project>:<label>`` (:func:`~xasflow.experiment.readers.read_spectra`).

    ``preparation`` calibrates the energies against a reference foil and/or merges all spectra
    into one before normalization (:func:`~xasflow.experiment.calibration.prepare_spectra`).

    A chi model reads each normalized spectrum as the training spectra were read: mu on a
    <= 1 eV grid up to E0 + 3.81 k_max^2 eV, then k-weighted chi(k) from Larch ``autobk``
    (:func:`~xasflow.models.data.measured_input`).

    Writes ``out_path`` (one row per spectrum and model: every number target's prediction,
    ensemble spread, calibrated 68/90/95 % intervals and, where a truth file gives it, the true
    value) and :func:`rdf_table_path` (every curve target's predicted g(r) per r point with its
    90 % band and, where known, the true g(r)). Raises ``SpectrumReadError`` for an unreadable file,
    ``UserError`` for scans that cannot be merged, ``CheckpointError`` for a damaged model,
    ``IncompatibleSpectrumError`` for a spectrum of
    another element or edge than a model's card, or one that does not cover its energy grid
    (:func:`~xasflow.inference.compatibility.check_compatible`), and ``PredictionError`` for a
    prediction that is not a number, all before anything is written. With ``figure_dir``, also
    one figure per spectrum there (:mod:`xasflow.inference.spectrum_figures`).
    """
    from xasflow.inference.predict import load_predictor

    normalized, prepared = _read_prepared(spectrum_paths, preparation)
    truths = truths_by_stem(list(truth_paths))
    predictors = [load_predictor(checkpoint) for checkpoint in checkpoints]
    names = model_names(checkpoints)
    # every pair is checked before the first prediction: a refused file leaves no partial output
    for predictor, model_name in zip(predictors, names, strict=True):
        for spectrum in normalized:
            check_compatible(spectrum, predictor.model.model_card, predictor.energy, model_name)
    results = []
    for predictor, model_name in zip(predictors, names, strict=True):
        params = predictor.model.params
        inputs = np.array([measured_input(spectrum, params, predictor.energy) for spectrum in normalized])
        predictions = predictor.predict(inputs, names=[str(spectrum.path) for spectrum in normalized])
        results.append(ModelPredictions(predictor, model_name, normalized, inputs, predictions))
    columns = {id(spectrum): extra for spectrum, extra in zip(normalized, prepared, strict=True)}
    rows, _ = write_outputs(predictors, results, normalized, truths, out_path, rdf_path, figure_dir, columns)
    return rows


def _read_prepared(
    spectrum_paths: list[str | Path], preparation: Preparation | None
) -> tuple[list[NormalizedSpectrum], list[dict[str, str]]]:
    """Every named spectrum read, calibrated and/or merged (``preparation``), then normalized as
    the simulated training spectra were; with each its predictions.csv preparation columns."""
    spectra = [spectrum for path in spectrum_paths for spectrum in read_spectra(path)]
    spectra = prepare_spectra(spectra, preparation)
    normalized = [normalize_xanes(spectrum) for spectrum in spectra]
    prepared = [
        preparation_columns(raw, item.edge_step) for raw, item in zip(spectra, normalized, strict=True)
    ]
    return normalized, prepared


def read_normalized(path: str | Path) -> list[NormalizedSpectrum]:
    """Every spectrum ``path`` names (:func:`~xasflow.experiment.readers.read_spectra`), normalized
    as the simulated training spectra were (Larch ``pre_edge``, edge-level E0). Raises
    ``SpectrumReadError`` naming the file (or group) that cannot be read or normalized."""
    return [normalize_xanes(spectrum) for spectrum in read_spectra(path)]


def prediction_tables(
    predictor, model_name: str, spectra: list, predictions: dict, truths: dict[str, dict]
) -> tuple[list[dict], list[dict]]:
    """The predictions.csv rows and g(r) table rows of ``spectra`` (normalized, in the order of
    ``predictions``, which :meth:`~xasflow.inference.predict.Predictor.predict` made from them)
    with one model; ``truths`` as :func:`truths_by_stem`. Logs each prediction."""
    rows, rdf_rows = [], []
    for index, spectrum in enumerate(spectra):
        truth = truths.get(Path(spectrum.path).stem)
        row, rdf_table = _prediction_rows(spectrum, model_name, predictor, predictions, index, truth)
        rows.append(row)
        rdf_rows.extend(rdf_table)
        _log_prediction(spectrum.path, model_name, predictor, predictions, index)
    return rows, rdf_rows


@dataclass(frozen=True, eq=False)
class ModelPredictions:
    """One model's predictions of the spectra it read: ``spectra`` (normalized) in the order of
    ``inputs`` (n, n_input) and of ``predictions`` (:meth:`~xasflow.inference.predict.Predictor.predict`)."""

    predictor: Any
    name: str
    spectra: list[NormalizedSpectrum]
    inputs: np.ndarray
    predictions: dict


def write_outputs(
    predictors: list,
    results: list[ModelPredictions],
    spectra: list[NormalizedSpectrum],
    truths: dict[str, dict],
    out_path: str | Path,
    rdf_path: str | Path | None = None,
    figure_dir: str | Path | None = None,
    columns: dict[int, dict[str, str]] | None = None,
) -> tuple[list[dict], list[Path]]:
    """Write predictions.csv and the g(r) table (:func:`write_predictions`, columns of every one of
    ``predictors``) from ``results``, and with ``figure_dir`` one figure per spectrum of
    ``spectra`` that a model read. ``columns`` adds fixed columns to the rows of a spectrum (by
    ``id``). Returns the rows and the figure paths."""
    from xasflow.inference.spectrum_figures import model_readings, write_spectrum_figures

    rows, rdf_rows = [], []
    readings = {id(spectrum): [] for spectrum in spectra}  # per spectrum, one per model that read it
    for result in results:
        model_rows, model_rdf_rows = prediction_tables(
            result.predictor, result.name, result.spectra, result.predictions, truths
        )
        for row, spectrum in zip(model_rows, result.spectra, strict=True):
            row.update((columns or {}).get(id(spectrum), {}))
        rows += model_rows
        rdf_rows += model_rdf_rows
        if figure_dir is not None:
            found = model_readings(result.predictor, result.name, result.inputs, result.predictions)
            for spectrum, reading in zip(result.spectra, found, strict=True):
                readings[id(spectrum)].append(reading)
    write_predictions(predictors, rows, rdf_rows, out_path, rdf_path)
    figures = []
    if figure_dir is not None:
        labelled = [(str(item.path), readings[id(item)]) for item in spectra]
        figures = write_spectrum_figures(figure_dir, labelled)
    return rows, figures


def write_predictions(
    predictors: list, rows: list[dict], rdf_rows: list[dict], out_path: str | Path, rdf_path=None
) -> None:
    """Write ``out_path`` (predictions.csv: the columns of every model's number targets) and the
    g(r) table (``rdf_path``, default :func:`rdf_table_path`)."""
    _write_csv(Path(out_path), _columns(predictors), rows)
    rdf_path = rdf_path or rdf_table_path(out_path)
    _write_csv(Path(rdf_path), tuple(rdf_rows[0]) if rdf_rows else (), rdf_rows)


def _columns(predictors) -> tuple[str, ...]:
    """predictions.csv columns: the number targets of every model, in order, between the fixed ones."""
    columns = [*LEADING_COLUMNS]
    for predictor in predictors:
        for spec in predictor.model.params.targets:
            if spec.kind != "curve":
                columns += [column for column in target_columns(spec.name) if column not in columns]
    return (*columns, *TRAILING_COLUMNS)


def _number(value: float, digits: str = ".3f") -> str:
    return format(float(value), digits) if np.isfinite(value) else str(float(value))


def _prediction_rows(spectrum, model_name: str, predictor, predictions: dict, index: int, truth: dict | None):
    """The predictions.csv row and the curve table rows (g(r) per r point, per curve target) of
    spectrum ``index`` with one model."""
    row = {
        "spectrum": spectrum.path,
        "model": model_name,
        "architecture": predictor.architecture,
        "e0_eV": f"{spectrum.e0:.2f}",
        "edge_step": f"{spectrum.edge_step:.4g}",
    }
    curve_rows = []
    for spec in predictor.model.params.targets:
        if spec.kind == "curve":
            curve_rows += _curve_rows(spectrum, model_name, predictor, predictions, index, spec.name, truth)
            continue
        values = {
            key: predictions[key][index] for key in target_columns(spec.name)[1:-1] if key in predictions
        }
        row[f"predicted_{spec.name}"] = _number(predictions[spec.name][index])
        row.update({key: _number(value) for key, value in values.items()})
        true = (truth or {}).get(spec.name)
        row[f"true_{spec.name}"] = _number(true) if isinstance(true, int | float) else ""
    row.update(_distance_columns(predictions, index, predictor.model.ood_threshold))
    return row, curve_rows


def _curve_rows(spectrum, model_name, predictor, predictions, index, name, truth) -> list[dict]:
    """g(r) of one curve target per r point, with its 90 % band and, where known, the truth."""
    predicted = predictions[name][index]
    true = (truth or {}).get(name)
    true_curve = np.interp(predictor.r, truth["r"], true) if true is not None and "r" in truth else None
    low, high = predictions.get(f"{name}_low_90"), predictions.get(f"{name}_high_90")
    return [
        {
            "spectrum": spectrum.path,
            "model": model_name,
            "target": name,
            "r_angstrom": f"{r:.3f}",
            "predicted_g": f"{predicted[point]:.4f}",
            "low_90": _number(low[index][point], ".4f") if low is not None else "",
            "high_90": _number(high[index][point], ".4f") if high is not None else "",
            "true_g": f"{true_curve[point]:.4f}" if true_curve is not None else "",
        }
        for point, r in enumerate(predictor.r)
    ]


def _log_prediction(path, model_name: str, predictor, predictions: dict, index: int) -> None:
    threshold = predictor.model.ood_threshold
    numbers = [spec.name for spec in predictor.model.params.targets if spec.kind != "curve"]
    logger.info(
        "%s with %s: %s",
        Path(path).name,
        model_name,
        ", ".join(f"{name} {predictions[name][index]:.3g}" for name in numbers) or "curves only",
    )
    if "out_of_distribution" in predictions and predictions["out_of_distribution"][index]:
        logger.warning(
            "%s is outside the training distribution of %s (distance %.3f > %.3f): do not trust "
            "this prediction",
            path,
            model_name,
            predictions["input_distance"][index],
            threshold,
        )


def _distance_columns(predictions: dict, index: int, threshold: float | None) -> dict[str, str]:
    """Distance to the training spectra and the out-of-distribution flag (empty for old models)."""
    if "input_distance" not in predictions:
        return {"input_distance": "", "distance_threshold": "", "out_of_distribution": ""}
    return {
        "input_distance": f"{predictions['input_distance'][index]:.4f}",
        "distance_threshold": f"{threshold:.4f}",
        "out_of_distribution": str(bool(predictions["out_of_distribution"][index])).lower(),
    }


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
