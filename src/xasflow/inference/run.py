"""Predict structure from measured spectrum files with one or more trained models."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from xasflow.experiment import read_spectrum, to_relative_grid
from xasflow.experiment.alignment import normalize_xanes
from xasflow.fileio import atomic_open
from xasflow.inference.compatibility import check_compatible

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = (
    "spectrum",
    "model",
    "architecture",
    "e0_eV",
    "edge_step",
    "predicted_coordination_number",
    "true_coordination_number",
    "rdf_mae",
    "input_distance",
    "distance_threshold",
    "out_of_distribution",
)


def _truth_by_stem(truth_paths: list[str | Path]) -> dict[str, dict]:
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
) -> list[dict]:
    """Read, normalize (Larch ``pre_edge``), regrid and predict every spectrum with every model.

    Writes ``out_path`` (one row per spectrum and model) and :func:`rdf_table_path` (predicted,
    and where known true, g(r) per r point). Raises ``SpectrumReadError`` for an unreadable file,
    ``CheckpointError`` for a damaged model, ``IncompatibleSpectrumError`` for a spectrum of
    another element or edge than a model's card, or one that does not cover its energy grid
    (:func:`~xasflow.inference.compatibility.check_compatible`), and ``PredictionError`` for a
    prediction that is not a number, all before anything is written.
    """
    from xasflow.inference.predict import load_predictor

    # the same normalization and energy reference as the simulated training spectra
    normalized = [normalize_xanes(read_spectrum(path)) for path in spectrum_paths]
    truths = _truth_by_stem(list(truth_paths))
    predictors = [load_predictor(checkpoint) for checkpoint in checkpoints]
    names = model_names(checkpoints)
    # every pair is checked before the first prediction: a refused file leaves no partial output
    for predictor, model_name in zip(predictors, names, strict=True):
        for spectrum in normalized:
            check_compatible(spectrum, predictor.model.model_card, predictor.energy, model_name)
    rows, rdf_rows = [], []
    for predictor, model_name in zip(predictors, names, strict=True):
        inputs = np.array([to_relative_grid(spectrum, predictor.energy) for spectrum in normalized])
        predictions = predictor.predict(inputs, names=[str(spectrum.path) for spectrum in normalized])
        for index, spectrum in enumerate(normalized):
            truth = truths.get(Path(spectrum.path).stem)
            row, rdf_table = _prediction_rows(spectrum, model_name, predictor, predictions, index, truth)
            rows.append(row)
            rdf_rows.extend(rdf_table)
            _log_prediction(spectrum.path, model_name, predictions, index, predictor.model.ood_threshold)
    _write_csv(Path(out_path), PREDICTION_COLUMNS, rows)
    rdf_path = rdf_path or rdf_table_path(out_path)
    _write_csv(rdf_path, tuple(rdf_rows[0]) if rdf_rows else (), rdf_rows)
    return rows


def _prediction_rows(spectrum, model_name: str, predictor, predictions: dict, index: int, truth: dict | None):
    """The predictions.csv row and the g(r) table rows of spectrum ``index`` with one model."""
    predicted_rdf = predictions["rdf"][index]
    true_rdf = np.interp(predictor.r, truth["r"], truth["rdf"]) if truth else None
    row = {
        "spectrum": spectrum.path,
        "model": model_name,
        "architecture": predictor.architecture,
        "e0_eV": f"{spectrum.e0:.2f}",
        "edge_step": f"{spectrum.edge_step:.4g}",
        "predicted_coordination_number": f"{predictions['coordination_number'][index]:.3f}",
        "true_coordination_number": f"{truth['coordination_number']:.3f}" if truth else "",
        "rdf_mae": f"{np.abs(predicted_rdf - true_rdf).mean():.4f}" if truth else "",
        **_distance_columns(predictions, index, predictor.model.ood_threshold),
    }
    rdf_rows = [
        {
            "spectrum": spectrum.path,
            "model": model_name,
            "r_angstrom": f"{r:.3f}",
            "predicted_g": f"{predicted_rdf[point]:.4f}",
            "true_g": f"{true_rdf[point]:.4f}" if truth else "",
        }
        for point, r in enumerate(predictor.r)
    ]
    return row, rdf_rows


def _log_prediction(path, model_name: str, predictions: dict, index: int, threshold: float | None) -> None:
    logger.info("%s with %s: CN %.2f", Path(path).stem, model_name, predictions["coordination_number"][index])
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
