"""Maps of trained xasflow models over an energy stack: each mapped pixel read as one spectrum.

Every mapped pixel's spectrum is normalized and aligned as ``xasflow predict`` prepares one
measured spectrum (:class:`~xasflow.inference.imaging_normalize.XanesAlignment`, the vectorized
``normalize_xanes``), put on each model's energy grid relative to its own E0, and predicted in
batches. A model must be able to read the stack at all: its model card's element and edge are
checked against the stack's edge energy and energy range
(:func:`~xasflow.inference.compatibility.check_compatible`) before anything is mapped.

Per model, every target that is a number becomes maps (:class:`MapQuantity`): a regression
target its ensemble mean and the width of its calibrated 90 % interval (split-conformal, as the
``_low_90`` / ``_high_90`` columns of ``xasflow predict``); a probability target its
(temperature-scaled) probability; a class target the probability of each class and the
expected class value (e.g. the mean valence). Curves (g(r)) are not mapped. Each model also
gives a map of the input distance to its training spectra and of its out-of-distribution flag
(:mod:`xasflow.models.ood`).

Map variables (:data:`MODEL_MAP_VARIABLES`, in the same ``maps.zarr`` as the fraction maps):
``spectra`` is ``raw`` and, when a denoiser ran, ``denoised``; ``quantity`` and ``model`` are
labelled in the store's attributes ``model_quantities`` and ``models``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xasflow.experiment.alignment import XanesNormalization, normalize_xanes
from xasflow.inference.compatibility import check_compatible
from xasflow.inference.imaging_io import StackError
from xasflow.inference.imaging_normalize import XanesAlignment, resolve_normalization
from xasflow.spectrum import Spectrum

logger = logging.getLogger(__name__)

#: Pixels predicted per model call (bounds the network's activations: a CNN ensemble of five
#: members with 32 channels on 100 energies holds ~60 MB of float32 per 1024 pixels).
BATCH_PIXELS = 4096
#: The interval level mapped, percent (a level every calibrated xasflow model has).
INTERVAL_LEVEL = 90

#: name -> (dims, units, description) of the model maps.
MODEL_MAP_VARIABLES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "model_prediction": (
        ("spectra", "quantity", "y", "x"),
        "the quantity's units (attribute model_quantities)",
        "ensemble-mean prediction; NaN where the pixel is masked or could not be aligned",
    ),
    "model_interval_90": (
        ("spectra", "quantity", "y", "x"),
        "the quantity's units",
        "width of the calibrated 90 % interval (high_90 - low_90); NaN where not calibrated "
        "(probabilities, classes) or not predicted",
    ),
    "model_input_distance": (
        ("spectra", "model", "y", "x"),
        "training spread",
        "largest standardized difference to the nearest training spectrum (xasflow.models.ood)",
    ),
    "model_out_of_distribution": (
        ("spectra", "model", "y", "x"),
        "1",
        "1 where the input distance exceeds the model's threshold, 0 where not, NaN not predicted",
    ),
    "model_e0": (
        ("spectra", "y", "x"),
        "eV",
        "E0 the pixel was aligned on: where its XANES-normalized mu first reaches 0.3 of the step",
    ),
}


@dataclass(frozen=True)
class MapQuantity:
    """One mapped number of one model.

    Attributes:
        model: the model's name (``mlp``).
        target: the target's name (``coordination_number``, ``valence``).
        kind: ``regression``, ``probability``, ``class_probability`` (of ``class_value``) or
            ``expected`` (the probability-weighted mean class value of a class target).
        units: the target's units (``probability`` for class probabilities).
        class_value: the class of a ``class_probability``.
        classes: the class target's classes, in the order of its probabilities.
    """

    model: str
    target: str
    kind: str
    units: str
    class_value: int | None = None
    classes: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        """``mlp:coordination_number``, ``mlp:valence`` (expected), ``mlp:P(valence=2)``."""
        if self.kind == "class_probability":
            return f"{self.model}:P({self.target}={self.class_value})"
        return f"{self.model}:{self.target}"

    def values(self, prediction: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(value (n,), interval width (n,), NaN where not calibrated) from a prediction dict
        of :meth:`~xasflow.inference.predict.Predictor.predict`."""
        if self.kind in ("class_probability", "expected"):
            probabilities = prediction[f"{self.target}_probabilities"]
            value = (
                probabilities[:, self.classes.index(self.class_value)]
                if self.kind == "class_probability"
                else probabilities @ np.asarray(self.classes, dtype=float)
            )
            return value, np.full(len(value), np.nan)
        value = np.asarray(prediction[self.target], dtype=float)
        low, high = (prediction.get(f"{self.target}_{side}_{INTERVAL_LEVEL}") for side in ("low", "high"))
        width = high - low if low is not None and high is not None else np.full(len(value), np.nan)
        return value, width


def model_quantities(predictor, name: str) -> list[MapQuantity]:
    """The maps one model gives: its number targets, class targets as class probabilities and
    expected value; curves left out."""
    units = {
        key: str(value.get("units", ""))
        for key, value in dict(predictor.model_card.get("targets") or {}).items()
    }
    quantities = []
    for spec in predictor.model.params.targets:
        scale = predictor.model.normalization.targets[spec.name]
        if spec.kind in ("regression", "probability"):
            quantities.append(MapQuantity(name, spec.name, spec.kind, units.get(spec.name, "")))
        elif spec.kind == "classification":
            classes = tuple(int(value) for value in scale.classes)
            quantities.append(
                MapQuantity(name, spec.name, "expected", units.get(spec.name, ""), None, classes)
            )
            quantities += [
                MapQuantity(name, spec.name, "class_probability", "probability", value, classes)
                for value in classes
            ]
    return quantities


class ModelMaps:
    """Trained models and the pixel alignment: spectra of pixels in, maps of their predictions out.

    Build with :func:`load_model_maps`. Thread-safe for the tile workers (the models are in eval
    mode and are only read).
    """

    def __init__(self, predictors: Sequence, names: Sequence[str], alignment: XanesAlignment):
        self.predictors = list(predictors)
        self.names = list(names)
        self.alignment = alignment
        self.quantities = {
            name: model_quantities(p, name) for p, name in zip(self.predictors, self.names, strict=True)
        }

    @property
    def labels(self) -> list[str]:
        """One label per ``quantity`` of the maps, model by model."""
        return [quantity.label for name in self.names for quantity in self.quantities[name]]

    def describe(self) -> list[dict]:
        """The ``model_quantities`` attribute: label, model, target, kind, units, class."""
        return [
            {
                "label": quantity.label,
                "model": quantity.model,
                "target": quantity.target,
                "kind": quantity.kind,
                "units": quantity.units,
                "class_value": quantity.class_value,
            }
            for name in self.names
            for quantity in self.quantities[name]
        ]

    def predict(self, spectra: np.ndarray) -> dict[str, np.ndarray]:
        """Maps of pixel spectra.

        Args:
            spectra: raw absorbance (or spectra normalized by the stack's normalization) of n
                pixels on the stack's energies, shape (n, n_energy).

        Returns:
            ``model_prediction`` and ``model_interval_90`` (n_quantities, n),
            ``model_input_distance`` and ``model_out_of_distribution`` (n_models, n), ``model_e0``
            (n,), float32, NaN where a pixel could not be aligned, its E0 + a model's grid leaves
            the stack's energies, or the model has no out-of-distribution reference.
        """
        n = len(spectra)
        aligned = self.alignment(np.asarray(spectra).reshape(n, len(self.alignment.energy)))
        maps = {
            "model_prediction": np.full((len(self.labels), n), np.nan, np.float32),
            "model_interval_90": np.full((len(self.labels), n), np.nan, np.float32),
            "model_input_distance": np.full((len(self.names), n), np.nan, np.float32),
            "model_out_of_distribution": np.full((len(self.names), n), np.nan, np.float32),
            "model_e0": aligned.e0.astype(np.float32),
        }
        row = 0
        for index, (predictor, name) in enumerate(zip(self.predictors, self.names, strict=True)):
            inputs, usable = aligned.on_relative_grid(predictor.energy)
            quantities = self.quantities[name]
            if usable.any():
                prediction = _predict_in_batches(predictor, inputs[usable])
                for offset, quantity in enumerate(quantities):
                    value, width = quantity.values(prediction)
                    maps["model_prediction"][row + offset, usable] = value
                    maps["model_interval_90"][row + offset, usable] = width
                if "input_distance" in prediction:
                    maps["model_input_distance"][index, usable] = prediction["input_distance"]
                    maps["model_out_of_distribution"][index, usable] = prediction["out_of_distribution"]
            row += len(quantities)
        return maps


def _predict_in_batches(predictor, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """``predictor.predict`` over batches of :data:`BATCH_PIXELS` rows, joined."""
    parts = [
        predictor.predict(inputs[start : start + BATCH_PIXELS])
        for start in range(0, len(inputs), BATCH_PIXELS)
    ]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def load_model_maps(
    checkpoints: Sequence[str | Path],
    energy: np.ndarray,
    representative: Spectrum,
    ranges: XanesNormalization | None = None,
) -> ModelMaps:
    """Load the models and check that each can read the stack; build the pixel alignment.

    Args:
        checkpoints: model checkpoints (``models/cnn/model.ckpt`` is named ``cnn``,
            :func:`~xasflow.inference.run.model_names`).
        energy: the stack's energies, eV, shape (n_energy,).
        representative: a raw spectrum on ``energy`` standing for the stack (the mean of the
            references on the stack's grid), its ``source`` the stack's path; its
            ``normalize_xanes`` E0 starts every pixel's alignment and is what the models check.
        ranges: the XANES normalization of the models' training spectra (default: that of
            ``xasflow predict``).

    Raises:
        IncompatibleSpectrumError: a model of another element or edge, or one whose grid the
            stack's energies do not cover (one line naming the stack and the model).
        StackError: a chi(k) model (imaging stacks are XANES), or a stack grid too short for the
            XANES normalization.
        CheckpointError: a damaged checkpoint.
    """
    from xasflow.inference.predict import load_predictor
    from xasflow.inference.run import model_names

    ranges = ranges or XanesNormalization()
    predictors = [load_predictor(path) for path in checkpoints]
    names = model_names(list(checkpoints))
    stack_spectrum = normalize_xanes(representative, ranges)
    for predictor, name in zip(predictors, names, strict=True):
        if predictor.model.params.representation == "chi":
            raise StackError(
                representative.source,
                f"model {name} reads chi(k) (EXAFS); imaging maps need a model that reads mu(E)",
            )
        check_compatible(stack_spectrum, predictor.model.model_card, predictor.energy, name)
    normalization = resolve_normalization(
        np.asarray(energy, dtype=float),
        representative.mu,
        representative.source,
        stack_spectrum.e0,
        (ranges.pre1, ranges.pre2),
        (ranges.norm1, ranges.norm2),
    )
    logger.info(
        "model maps of %s; pixels aligned from E0 %.2f eV, ranges %s / %s eV",
        ", ".join(names),
        stack_spectrum.e0,
        normalization.pre_edge_range,
        normalization.norm_range,
    )
    return ModelMaps(predictors, names, XanesAlignment(energy, normalization, ranges.edge_level))


@dataclass(frozen=True)
class RegionPrediction:
    """Mean model maps of one region (pixels where the model predicted).

    Attributes:
        label: the region label.
        n_pixels: pixels of the region.
        spectra: ``raw`` or ``denoised``.
        quantity: the quantity's label (:attr:`MapQuantity.label`).
        n_predicted: pixels of the region with a prediction.
        mean: mean prediction over them.
        pixel_std: standard deviation of the prediction over them (the map's scatter).
        mean_interval_90: mean width of the calibrated 90 % interval (NaN: not calibrated).
        out_of_distribution_share: share of them the model flagged (NaN: no reference set).
    """

    label: int
    n_pixels: int
    spectra: str
    quantity: str
    n_predicted: int
    mean: float
    pixel_std: float
    mean_interval_90: float
    out_of_distribution_share: float


class _Sums:
    """Per-label running count, sum and sum of squares of finite values."""

    def __init__(self, size: int):
        self.count, self.total, self.squares = np.zeros(size), np.zeros(size), np.zeros(size)

    def add(self, labels: np.ndarray, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        size = len(self.count)
        self.count += np.bincount(labels[finite], minlength=size)[:size]
        self.total += np.bincount(labels[finite], values[finite], minlength=size)[:size]
        self.squares += np.bincount(labels[finite], values[finite] ** 2, minlength=size)[:size]

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.total / self.count

    def std(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(np.maximum(self.squares / self.count - self.mean() ** 2, 0.0))


def model_region_means(maps, labels: np.ndarray, rows_per_strip: int = 256) -> list[RegionPrediction]:
    """Mean model maps per region, strip by strip (bounded memory).

    Args:
        maps: the opened map store (``xarray.Dataset``) holding model maps.
        labels: region labels, int (ny, nx), 0 outside any region.
    """
    spectra, quantities = maps.attrs["model_spectra"], maps.attrs["model_quantities"]
    models = list(maps.attrs["models"])
    size = int(labels.max()) + 1
    # per spectra: sums of each quantity's value and interval width, and of each model's flag
    values = [[_Sums(size) for _ in quantities] for _ in spectra]
    widths = [[_Sums(size) for _ in quantities] for _ in spectra]
    flags = [[_Sums(size) for _ in models] for _ in spectra]
    for y0 in range(0, labels.shape[0], rows_per_strip):
        strip = slice(y0, y0 + rows_per_strip)
        strip_labels = labels[strip].ravel()
        for name, sums in (
            ("model_prediction", values),
            ("model_interval_90", widths),
            ("model_out_of_distribution", flags),
        ):
            block = maps[name][:, :, strip].values
            for source, per_source in enumerate(sums):
                for index, accumulator in enumerate(per_source):
                    accumulator.add(strip_labels, block[source, index].ravel())
    n_pixels = np.bincount(labels.ravel(), minlength=size)
    return [
        RegionPrediction(
            label=label,
            n_pixels=int(n_pixels[label]),
            spectra=source_name,
            quantity=quantity["label"],
            n_predicted=int(values[source][index].count[label]),
            mean=float(values[source][index].mean()[label]),
            pixel_std=float(values[source][index].std()[label]),
            mean_interval_90=float(widths[source][index].mean()[label]),
            out_of_distribution_share=float(flags[source][models.index(quantity["model"])].mean()[label]),
        )
        for label in range(1, size)
        if n_pixels[label]
        for source, source_name in enumerate(spectra)
        for index, quantity in enumerate(quantities)
    ]


def write_model_regions_csv(path: str | Path, regions: Sequence[RegionPrediction]) -> Path:
    """``model_regions.csv``: one row per region, spectra and quantity."""
    from xasflow.fileio import atomic_write_text

    columns = list(RegionPrediction.__dataclass_fields__)
    lines = [",".join(columns)]
    for region in regions:
        lines.append(
            ",".join(
                f"{value:.5g}" if isinstance(value, float) else str(value)
                for value in (getattr(region, column) for column in columns)
            )
        )
    return atomic_write_text(path, "\n".join(lines) + "\n")


def model_figure_panels(view) -> dict[str, list[list[tuple | None]]]:
    """Figure file name -> rows of panels ``(title, values (ny, nx), limits or None)`` (None: an
    empty panel) of the model maps in ``view`` (the map store, possibly subsampled): per model
    one row per quantity (prediction and 90 % interval width of each spectra), then the input
    distance and the out-of-distribution flag."""
    spectra, quantities = view.attrs["model_spectra"], view.attrs["model_quantities"]
    figures = {}
    for model_index, model in enumerate(view.attrs["models"]):
        rows = []
        for index, quantity in enumerate(quantities):
            if quantity["model"] != model:
                continue
            limits = (0, 1) if quantity["units"] == "probability" else None
            row = []
            for source, name in enumerate(spectra):
                width = view["model_interval_90"][source, index]
                row.append((f"{quantity['label']} ({name})", view["model_prediction"][source, index], limits))
                row.append((f"90 % width ({name})", width, None) if np.isfinite(width.values).any() else None)
            rows.append(row)
        last = []
        for source, name in enumerate(spectra):
            last.append(
                (f"{model} input distance ({name})", view["model_input_distance"][source, model_index], None)
            )
            last.append(
                (
                    f"{model} out of distribution ({name})",
                    view["model_out_of_distribution"][source, model_index],
                    (0, 1),
                )
            )
        rows.append(last)
        safe = "".join(character if character.isalnum() or character in "-_" else "_" for character in model)
        figures[f"model_{safe}.png"] = rows
    return figures
