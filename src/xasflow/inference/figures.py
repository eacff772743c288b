"""Figures of written predictions: read back from ``predictions.csv``, so any table can be drawn."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xasflow.fileio import atomic_path

PREDICTED_PREFIX = "predicted_"
FIGURE_LEVEL = 90  # the interval drawn as an error bar, in %


def _float(text: str | None) -> float:
    """A CSV cell as a number; empty cells (no truth, no interval) are NaN."""
    return float(text) if text not in (None, "") else math.nan


def number_targets(columns: list[str]) -> list[str]:
    """The number targets of a predictions table, in column order (``predicted_NAME`` columns)."""
    return [column[len(PREDICTED_PREFIX) :] for column in columns if column.startswith(PREDICTED_PREFIX)]


def plot_predictions(predictions_csv: str | Path, path: str | Path) -> None:
    """One panel per number target: every spectrum (rows) predicted by every model (markers)
    with its calibrated 90 % interval, the truth where known (black cross); a prediction flagged
    out of distribution is drawn hollow, since its interval is not calibrated. PNG at 120 dpi.
    """
    with open(predictions_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        targets = number_targets(list(reader.fieldnames or []))
    spectra = list(dict.fromkeys(row["spectrum"] for row in rows))
    models = list(dict.fromkeys(row["model"] for row in rows))
    height = 1.8 + 0.35 * max(len(spectra), 1) * max(len(models), 1) ** 0.5
    figure = Figure(figsize=(5.0 * max(len(targets), 1), height), layout="constrained")
    FigureCanvasAgg(figure)
    if not targets or not rows:
        figure.add_subplot().set_title("no number predictions")
    for panel, target in enumerate(targets):
        axes = figure.add_subplot(1, len(targets), panel + 1)
        unbounded = _draw_target(axes, rows, spectra, models, target)
        axes.set_yticks(range(len(spectra)))
        axes.set_yticklabels([Path(spectrum).name for spectrum in spectra] if panel == 0 else [])
        axes.invert_yaxis()
        axes.set_xlabel(f"predicted {target} ({FIGURE_LEVEL} % interval)")
        axes.grid(axis="x", alpha=0.3)
        if unbounded:
            axes.set_title("intervals without finite bounds not drawn", fontsize=8)
        if panel == 0:
            figure.legend(
                title="model (hollow: out of distribution; x: truth)",
                loc="outside lower center",
                ncols=max(len(models), 1),
                fontsize=8,
                title_fontsize=8,
            )
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=120, format="png")


def _draw_target(axes, rows: list[dict], spectra: list[str], models: list[str], target: str) -> bool:
    """Every model's predictions of ``target`` with their intervals and the truth; returns whether
    an interval with an infinite end (e.g. an ensemble of one) was left out."""
    unbounded = False
    for model_index, model in enumerate(models):
        offset = (model_index - (len(models) - 1) / 2) * 0.6 / max(len(models), 1)
        for row in (row for row in rows if row["model"] == model):
            position = spectra.index(row["spectrum"]) + offset
            value = _float(row[PREDICTED_PREFIX + target])
            low = _float(row.get(f"{target}_low_{FIGURE_LEVEL}"))
            high = _float(row.get(f"{target}_high_{FIGURE_LEVEL}"))
            error = [[value - low], [high - value]] if math.isfinite(low + high) else None
            unbounded |= math.isinf(low) or math.isinf(high)
            axes.errorbar(
                value,
                position,
                xerr=error,
                fmt="o",
                color=f"C{model_index}",
                markerfacecolor="none" if row["out_of_distribution"] == "true" else f"C{model_index}",
                capsize=2,
                label=model if spectra.index(row["spectrum"]) == 0 else None,
            )
            truth = _float(row.get(f"true_{target}"))
            if math.isfinite(truth):
                axes.plot(truth, position, "kx", markersize=7)
    return unbounded
