"""``xasflow predict`` over many files: refuse what cannot be read, predict the rest.

A batch (a folder among the arguments, or ``--keep-going``) reads every spectrum on its own. A
file that cannot be read or normalized, a project group that cannot, or a spectrum a model
cannot read (another element or edge, a scan too short for its grid, a prediction that is not a
number) becomes a row of the refused table, ``<out stem>_refused.csv`` (file, model, reason; an
empty model when no model could read the file), and one logged warning; the other spectra are
predicted and written as :func:`~xasflow.inference.run.predict_files` writes them. The caller
turns any refusal into a non-zero exit code, so that a batch with refusals is noticed.

``predict_files`` stays the strict form (named files: the first refusal ends the run before
anything is written); both share reading (:func:`~xasflow.inference.run.read_normalized`), the
tables and the figures.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xasflow.errors import FileProblem, SpectrumReadError, UserError
from xasflow.experiment.folders import project_groups
from xasflow.fileio import atomic_open
from xasflow.inference.compatibility import check_compatible
from xasflow.inference.predict import PredictionError, load_predictor
from xasflow.inference.run import (
    ModelPredictions,
    model_names,
    read_normalized,
    truths_by_stem,
    write_outputs,
)
from xasflow.models.data import measured_input

logger = logging.getLogger(__name__)

REFUSED_COLUMNS = ("file", "model", "reason")


@dataclass(frozen=True)
class Refusal:
    """A spectrum left out of a batch: ``file`` (path, or ``<project>:<label>`` for a group),
    ``model`` (empty when the file itself cannot be read) and the one-line ``reason``."""

    file: str
    model: str
    reason: str

    @classmethod
    def of(cls, file: str | Path, model: str, error: UserError) -> Refusal:
        reason = error.problem if isinstance(error, FileProblem) else str(error)
        return cls(file=str(file), model=model, reason=" ".join(reason.split()))


@dataclass(frozen=True, eq=False)
class BatchResult:
    """What a batch wrote: the predictions.csv rows, the refusals, and the spectrum figures."""

    rows: list[dict]
    refusals: list[Refusal]
    figures: list[Path] = field(default_factory=list)


def refused_table_path(out_path: str | Path) -> Path:
    """Where a batch writes its refused table beside ``out_path``: ``<stem>_refused.csv``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + "_refused.csv")


def _refuse(refusals: list[Refusal], file: str | Path, model: str, error: UserError) -> None:
    refusal = Refusal.of(file, model, error)
    refusals.append(refusal)
    by_model = f" for model {model}" if model else ""
    logger.warning("refused %s%s: %s", refusal.file, by_model, refusal.reason)


def read_batch(references: Sequence[str | Path], refusals: list[Refusal]) -> list:
    """Every spectrum the references name that can be read, normalized
    (:func:`~xasflow.inference.run.read_normalized`); the others are appended to ``refusals``.

    A whole Athena project refused because of one group (``read_spectra`` refuses half a project)
    is read again group by group, so that only its bad groups are refused.
    """
    spectra = []
    for reference in references:
        try:
            spectra += read_normalized(reference)
        except SpectrumReadError as error:
            groups = project_groups(reference)
            if len(groups) < 2:
                _refuse(refusals, reference, "", error)
                continue
            spectra += read_batch(groups, refusals)
    return spectra


def predict_batch(
    checkpoints: Sequence[str | Path],
    references: Sequence[str | Path],
    out_path: str | Path,
    *,
    truth_paths: Sequence[str | Path] = (),
    rdf_path: str | Path | None = None,
    refused_path: str | Path | None = None,
    figure_dir: str | Path | None = None,
) -> BatchResult:
    """Predict every spectrum ``references`` name (files, projects, ``<project>:<label>``) that
    can be read with every checkpoint that can read it, and write what
    :func:`~xasflow.inference.run.predict_files` writes, plus the refused table at
    ``refused_path`` (default :func:`refused_table_path`; header only when nothing was refused).
    With ``figure_dir``, one figure per predicted spectrum
    (:mod:`xasflow.inference.spectrum_figures`). A damaged checkpoint still raises
    ``CheckpointError`` before anything is written: it is no property of a spectrum.
    """
    refusals: list[Refusal] = []
    spectra = read_batch(references, refusals)
    predictors = [load_predictor(checkpoint) for checkpoint in checkpoints]
    truths = truths_by_stem(list(truth_paths))
    results = []
    for predictor, model_name in zip(predictors, model_names(list(checkpoints)), strict=True):
        accepted, inputs = _model_inputs(predictor, model_name, spectra, refusals)
        accepted, inputs, predictions = _predict(predictor, model_name, accepted, inputs, refusals)
        if accepted:
            results.append(ModelPredictions(predictor, model_name, accepted, inputs, predictions))
    rows, figures = write_outputs(predictors, results, spectra, truths, out_path, rdf_path, figure_dir)
    write_refusals(refusals, refused_path or refused_table_path(out_path))
    return BatchResult(rows=rows, refusals=refusals, figures=figures)


def _model_inputs(predictor, model_name: str, spectra: list, refusals: list[Refusal]):
    """The spectra the model can read and their model inputs (n, n_input); the others refused."""
    accepted, inputs = [], []
    for spectrum in spectra:
        try:
            check_compatible(spectrum, predictor.model.model_card, predictor.energy, model_name)
            inputs.append(measured_input(spectrum, predictor.model.params, predictor.energy))
        except UserError as error:
            _refuse(refusals, spectrum.path, model_name, error)
            continue
        accepted.append(spectrum)
    return accepted, np.array(inputs).reshape(len(accepted), predictor.energy.size)


def _predict(predictor, model_name: str, spectra: list, inputs: np.ndarray, refusals: list[Refusal]):
    """The model's predictions of ``inputs``; a spectrum whose input or prediction is not a
    number is refused and the others predicted without it."""
    if not spectra:
        return spectra, inputs, {}
    names = [str(spectrum.path) for spectrum in spectra]
    try:
        return spectra, inputs, predictor.predict(inputs, names=names)
    except PredictionError:
        pass  # find which: one at a time
    kept = []
    for index, spectrum in enumerate(spectra):
        try:
            predictor.predict(inputs[index : index + 1], names=[names[index]])
        except PredictionError as error:
            _refuse(refusals, spectrum.path, model_name, error)
            continue
        kept.append(index)
    spectra, inputs = [spectra[index] for index in kept], inputs[kept]
    return spectra, inputs, predictor.predict(inputs, names=[names[index] for index in kept]) if kept else {}


def write_refusals(refusals: Sequence[Refusal], path: str | Path) -> None:
    """The refused table: one row per refusal, columns :data:`REFUSED_COLUMNS`."""
    with atomic_open(Path(path), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=REFUSED_COLUMNS)
        writer.writeheader()
        writer.writerows({"file": item.file, "model": item.model, "reason": item.reason} for item in refusals)
