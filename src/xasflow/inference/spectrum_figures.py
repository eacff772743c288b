"""One figure per measured spectrum: what each model read, what it resembles, what it predicted.

Each model that predicted the spectrum gets a row of two panels:

* left, the spectrum as the model reads it (normalized mu on the model's energy grid, eV from
  E0, or k-weighted chi(k) for a chi model) beside its nearest training inputs, with their
  distances and the model's out-of-distribution threshold in the legend;
* right, the predicted g(r) (ensemble mean) with its calibrated 68 % and 90 % bands, the number
  targets written beside it; a model without a curve target shows its number targets instead,
  each with its 68 % and 90 % intervals.

The nearest training inputs come from the checkpoint itself: the out-of-distribution reference
(``SpectrumRegressor.ood_reference``: the training spectra and their averages per system and per
MD frame, standardized with the training statistics), un-standardized with the model's
:class:`~xasflow.models.data.Normalization`. That is the set, and the distance, behind the
``input_distance`` column of predictions.csv, so the first neighbour's distance is that column's
value; it needs no dataset beside the model (which may have been rebuilt since training) and no
new autobk of every training spectrum for a chi model. What it cannot say is which system, frame
or site a reference was: the checkpoint stores the arrays only.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xasflow.experiment.readers import split_group_selection
from xasflow.fileio import atomic_path
from xasflow.models.ood import nearest_references

logger = logging.getLogger(__name__)

#: How many nearest training inputs each figure shows.
NEAREST_COUNT = 3
#: The calibrated intervals drawn, in %, narrowest first.
BAND_LEVELS = (68, 90)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LONGEST_NAME = 120  # characters of a figure's file name before ".png"
_SUPERSCRIPTS = dict(enumerate("⁰¹²³"))  # k weights 0..3


@dataclass(frozen=True, eq=False)  # arrays: no field-wise ==
class Neighbours:
    """The training inputs nearest to one model input.

    index:     (count,) rows of the model's ``ood_reference``, nearest first.
    distance:  (count,) largest absolute difference over the input axis, in units of the
               training spread at each point (:func:`~xasflow.models.ood.nearest_distance`).
    spectra:   (count, n_input) the references un-standardized: normalized mu, or k-weighted
               chi(k), on the model's input axis.
    """

    index: np.ndarray
    distance: np.ndarray
    spectra: np.ndarray


@dataclass(frozen=True, eq=False)
class Estimate:
    """One predicted quantity: ``value`` (a number, or (n_r,) for a curve) and its calibrated
    intervals ``bands`` (level in % -> (low, high), same shape as ``value``), in ``units``."""

    value: float | np.ndarray
    bands: dict[int, tuple]
    units: str


@dataclass(frozen=True, eq=False)
class ModelReading:
    """What one model made of one spectrum.

    axis:         (n_input,) the model's input axis: eV from E0, or k in 1/Angstrom (chi model).
    model_input:  (n_input,) the measured spectrum on ``axis``, as the model reads it.
    r:            (n_r,) r grid of the curves, Angstrom.
    curves, numbers:  target name -> :class:`Estimate`, in the model's target order.
    """

    model_name: str
    representation: str
    k_weight: int
    axis: np.ndarray
    model_input: np.ndarray
    neighbours: Neighbours | None
    threshold: float | None
    out_of_distribution: bool
    r: np.ndarray
    curves: dict[str, Estimate]
    numbers: dict[str, Estimate]


def nearest_training_spectra(model, model_input: np.ndarray, count: int = NEAREST_COUNT) -> Neighbours | None:
    """The ``count`` training inputs of ``model`` (a ``SpectrumRegressor``) nearest to
    ``model_input`` (n_input,) in its standardized input space; None for a checkpoint without an
    out-of-distribution reference (one trained before references were stored)."""
    references = model.ood_reference.detach().cpu().numpy()
    if references.shape[0] == 0:
        return None
    query = model.normalization.standardize_mu(np.asarray(model_input)[None, :])[0]
    index, distance = nearest_references(references, query, count)
    return Neighbours(
        index=index, distance=distance, spectra=model.normalization.unstandardize_mu(references[index])
    )


def model_reading(
    predictor, model_name: str, model_input: np.ndarray, predictions: dict, index: int
) -> ModelReading:
    """Spectrum ``index`` of ``predictions`` (:meth:`~xasflow.inference.predict.Predictor.predict`
    of inputs whose row ``index`` is ``model_input``) as a :class:`ModelReading`."""
    model = predictor.model
    curves, numbers = {}, {}
    for spec in model.params.targets:
        bands = {
            level: (
                predictions[f"{spec.name}_low_{level}"][index],
                predictions[f"{spec.name}_high_{level}"][index],
            )
            for level in BAND_LEVELS
            if f"{spec.name}_low_{level}" in predictions
        }
        estimate = Estimate(value=predictions[spec.name][index], bands=bands, units=spec.units)
        (curves if spec.kind == "curve" else numbers)[spec.name] = estimate
    flags = predictions.get("out_of_distribution")
    return ModelReading(
        model_name=model_name,
        representation=model.params.representation,
        k_weight=int(model.params.k_weight),
        axis=np.asarray(predictor.energy),
        model_input=np.asarray(model_input, dtype=np.float64),
        neighbours=nearest_training_spectra(model, model_input),
        threshold=model.ood_threshold,
        out_of_distribution=bool(flags[index]) if flags is not None else False,
        r=np.asarray(predictor.r),
        curves=curves,
        numbers=numbers,
    )


def model_readings(predictor, model_name: str, inputs: np.ndarray, predictions: dict) -> list[ModelReading]:
    """A :func:`model_reading` per row of ``inputs`` (n, n_input) and of its ``predictions``."""
    return [
        model_reading(predictor, model_name, model_input, predictions, index)
        for index, model_input in enumerate(np.asarray(inputs))
    ]


def figure_names(labels: Sequence[str]) -> list[str]:
    """A PNG file name per spectrum label, safe on any file system and unique (case-insensitively):
    the file's name (``cu_metal_rt.xdi`` -> ``cu_metal_rt.xdi.png``; a project group
    ``PtData.prj:10wt% 20K`` -> ``PtData.prj_10wt_20K.png``), characters other than letters,
    digits, ``.``, ``_`` and ``-`` replaced by ``_``, and ``_2``, ``_3``, ... after a repeat."""
    names, used = [], set()
    for label in labels:
        path, group = split_group_selection(label)
        text = f"{path.name}_{group}" if group else path.name
        stem = _UNSAFE.sub("_", text).strip("._-")[:_LONGEST_NAME] or "spectrum"
        name, number = stem, 2
        while name.lower() in used:
            name, number = f"{stem}_{number}", number + 1
        used.add(name.lower())
        names.append(f"{name}.png")
    return names


def write_spectrum_figures(
    folder: str | Path, spectra: Sequence[tuple[str, list[ModelReading]]]
) -> list[Path]:
    """One PNG per ``(label, readings)`` in ``folder`` (created), named by :func:`figure_names`;
    spectra no model read (no readings) get none. Returns the paths written, in order."""
    spectra = [(label, readings) for label, readings in spectra if readings]
    folder = Path(folder)
    paths = [folder / name for name in figure_names([label for label, _ in spectra])]
    for (label, readings), path in zip(spectra, paths, strict=True):
        plot_spectrum_figure(label, readings, path)
    logger.info("wrote %d spectrum figures to %s", len(paths), folder)
    return paths


def plot_spectrum_figure(label: str, readings: Sequence[ModelReading], path: str | Path) -> None:
    """The figure of one spectrum (module docstring): a row of two panels per model, PNG at
    100 dpi, 10 inches wide and 3.4 inches per model."""
    figure = Figure(figsize=(10.0, 0.6 + 3.4 * len(readings)), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(readings), 2)
    for row, reading in enumerate(readings):
        _draw_input(figure.add_subplot(grid[row, 0]), reading)
        if reading.curves:
            _draw_curves(figure.add_subplot(grid[row, 1]), reading)
        elif reading.numbers:
            _draw_numbers(figure, grid[row, 1], reading)
    figure.suptitle(label, fontsize=10)
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=100, format="png")


def _draw_input(axes, reading: ModelReading) -> None:
    """The measured input, its nearest training inputs (dashed) and the threshold, in the legend."""
    measured = "measured" + (" (out of distribution)" if reading.out_of_distribution else "")
    axes.plot(reading.axis, reading.model_input, color="k", linewidth=1.8, label=measured)
    if reading.neighbours is None:
        axes.plot([], [], " ", label="no training inputs stored in this checkpoint")
    else:
        neighbours = reading.neighbours
        for order, (row, distance) in enumerate(zip(neighbours.index, neighbours.distance, strict=True)):
            axes.plot(
                reading.axis,
                neighbours.spectra[order],
                color=f"C{order}",
                linewidth=1.0,
                linestyle="--",
                label=f"training input {row}: distance {distance:.2f}",
            )
    if reading.threshold is not None:
        axes.plot([], [], " ", label=f"out-of-distribution threshold {reading.threshold:.2f}")
    if reading.representation == "chi":
        axes.set_xlabel("k (1/Å)")
        axes.set_ylabel(f"k{_SUPERSCRIPTS[reading.k_weight]} χ(k)")  # no mathtext: it hunts for TeX fonts
    else:
        axes.set_xlabel("energy − E0 (eV)")
        axes.set_ylabel("normalized μ(E)")
    axes.set_title(f"{reading.model_name}: input and nearest training inputs", fontsize=9)
    axes.legend(fontsize=7, title="distance: largest |difference| / training spread", title_fontsize=7)
    axes.grid(alpha=0.3)


def _draw_curves(axes, reading: ModelReading) -> None:
    """Every curve target's mean with its calibrated bands; the number targets as text."""
    for order, (name, estimate) in enumerate(reading.curves.items()):
        color = f"C{order}"
        axes.plot(reading.r, estimate.value, color=color, linewidth=1.5, label=f"{name} (ensemble mean)")
        for level in sorted(estimate.bands, reverse=True):  # the wide band first, the narrow on top
            low, high = (np.asarray(bound, dtype=np.float64) for bound in estimate.bands[level])
            if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
                alpha = 0.18 if level == max(BAND_LEVELS) else 0.35
                axes.fill_between(
                    reading.r, low, high, color=color, alpha=alpha, linewidth=0, label=f"{level} %"
                )
    if not any(estimate.bands for estimate in reading.curves.values()):
        axes.plot([], [], " ", label="no calibrated bands in this checkpoint")
    if reading.numbers:
        text = "\n".join(_number_text(name, estimate) for name, estimate in reading.numbers.items())
        axes.text(0.98, 0.97, text, transform=axes.transAxes, ha="right", va="top", fontsize=7)
    axes.set_xlabel("r (Å)")
    axes.set_ylabel("g(r)")
    axes.set_title(f"{reading.model_name}: predicted g(r)", fontsize=9)
    axes.legend(fontsize=7, loc="center right")
    axes.grid(alpha=0.3)


def _draw_numbers(figure, cell, reading: ModelReading) -> None:
    """One strip per number target, each on its own scale: the value and its 68 % (thick) and
    90 % (thin) intervals."""
    grid = cell.subgridspec(len(reading.numbers), 1)
    for row, (name, estimate) in enumerate(reading.numbers.items()):
        axes = figure.add_subplot(grid[row, 0])
        value = float(estimate.value)
        for level, width in zip(BAND_LEVELS, (5, 1.5), strict=True):
            low, high = (float(bound) for bound in estimate.bands.get(level, (math.nan, math.nan)))
            if math.isfinite(low) and math.isfinite(high):
                axes.plot([low, high], [0, 0], color="C0", linewidth=width, solid_capstyle="butt")
        axes.plot(value, 0, "o", color="C0")
        axes.set_yticks([])
        axes.set_title(_number_text(name, estimate), fontsize=8)
        axes.set_xlabel(estimate.units, fontsize=7)
        axes.grid(axis="x", alpha=0.3)


def _number_text(name: str, estimate: Estimate) -> str:
    """``coordination_number 11.8 (68 %: 11.3..12.2, 90 %: 10.9..12.6)``; unbounded intervals
    (an ensemble of one) are left out."""
    intervals = []
    for level, (low, high) in estimate.bands.items():
        if math.isfinite(float(low)) and math.isfinite(float(high)):
            intervals.append(f"{level} %: {float(low):.3g}..{float(high):.3g}")
    return f"{name} {float(estimate.value):.3g}" + (f" ({', '.join(intervals)})" if intervals else "")
