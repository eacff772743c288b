"""Which part of the spectrum carries which target: retrain and evaluate on energy windows.

For each window (eV relative to E0) the model is trained again with the same parameters, seeds
and split but reading only that window (``energy_min``/``energy_max``); the baselines are fitted
on the same window by :func:`~xasflow.models.train.train_model`. The skill of each target is
the fraction of the mean (or majority) baseline's error the model removes:

- numbers and curves: 1 - MAE / MAE of the training mean
- classes: (accuracy - majority accuracy) / (1 - majority accuracy)
- probabilities: 1 - Brier score / Brier score of the training rate

1 is perfect, 0 is no better than knowing nothing of the spectrum, below 0 is worse.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xasflow.errors import UserError
from xasflow.fileio import atomic_open, atomic_path
from xasflow.models.augment import AugmentationParams
from xasflow.models.params import TrainParams

logger = logging.getLogger(__name__)

#: Regions of a XANES spectrum on the dataset grid (-16..+55 eV about E0), eV relative to E0.
DEFAULT_WINDOWS: dict[str, tuple[float, float]] = {
    "pre_edge": (-16.0, -3.0),
    "edge": (-3.0, 5.0),
    "white_line": (5.0, 15.0),
    "post_edge": (15.0, 35.0),
    "exafs_onset": (35.0, 55.0),
    "whole": (-16.0, 55.0),
}

WINDOWS_CSV = "windows.csv"
WINDOWS_PNG = "windows.png"


def skill(kind: str, model: Mapping[str, Any], baseline: Mapping[str, Any]) -> float | None:
    """Skill of ``model`` metrics against the ``baseline`` (mean) metrics of one target."""
    if kind in ("regression", "curve"):
        model_error, base_error = model.get("mae"), baseline.get("mae")
        return None if model_error is None or not base_error else 1.0 - model_error / base_error
    if kind == "classification":
        accuracy, majority = model.get("accuracy"), baseline.get("accuracy")
        if accuracy is None or majority is None or majority >= 1.0:
            return None
        return (accuracy - majority) / (1.0 - majority)
    brier, base_brier = model.get("brier"), baseline.get("brier")
    return None if brier is None or not base_brier else 1.0 - brier / base_brier


def parse_windows(entries: list[str] | None) -> dict[str, tuple[float, float]]:
    """``["name:low:high", ...]`` (eV) -> windows; :data:`DEFAULT_WINDOWS` when empty."""
    if not entries:
        return dict(DEFAULT_WINDOWS)
    windows = {}
    for entry in entries:
        parts = entry.split(":")
        try:
            name, low, high = parts[0], float(parts[1]), float(parts[2])
        except (IndexError, ValueError) as error:
            raise UserError(f"window {entry!r}: expected NAME:LOW:HIGH in eV, e.g. edge:-3:5") from error
        if len(parts) != 3 or not name or not low < high:
            raise UserError(f"window {entry!r}: expected NAME:LOW:HIGH with LOW < HIGH (eV)")
        windows[name] = (low, high)
    return windows


def window_study(
    dataset_path: str | Path,
    params: TrainParams,
    windows: Mapping[str, tuple[float, float]],
    out_dir: str | Path,
    augmentation: AugmentationParams | None = None,
    calibration: dict | None = None,
) -> list[dict[str, Any]]:
    """Train ``params`` once per window (into ``out_dir/<window>``) and tabulate each target's
    metrics and skill for the network and every baseline; writes ``windows.csv`` and the
    heat map ``windows.png`` in ``out_dir``; returns the table's rows."""
    from xasflow.models.train import train_model

    out_dir = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for name, (low, high) in windows.items():
        logger.info("window %s: %g..%g eV", name, low, high)
        windowed = replace(params, energy_min=low, energy_max=high)
        metrics = train_model(dataset_path, windowed, out_dir / name, augmentation, calibration)
        rows.extend(_window_rows(name, low, high, metrics))
    _write_rows(out_dir / WINDOWS_CSV, rows)
    plot_windows(out_dir / WINDOWS_PNG, rows, list(windows))
    return rows


def _window_rows(name: str, low: float, high: float, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for target, entry in metrics["targets"].items():
        baseline = entry["baselines"].get("mean", {})
        candidates = {"network": entry["test"], **entry["baselines"]}
        for model, values in candidates.items():
            rows.append(
                {
                    "window": name,
                    "energy_min": low,
                    "energy_max": high,
                    "target": target,
                    "kind": entry["kind"],
                    "model": model,
                    "skill": skill(entry["kind"], values, baseline),
                    **{key: values.get(key) for key in ("mae", "r2", "accuracy", "brier")},
                }
            )
    return rows


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = (
        "window",
        "energy_min",
        "energy_max",
        "target",
        "kind",
        "model",
        "skill",
        "mae",
        "r2",
        "accuracy",
        "brier",
    )
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})


def plot_windows(path: Path, rows: list[dict[str, Any]], window_names: list[str]) -> None:
    """Heat map of the best skill (network or baseline) per target and window."""
    targets = list(dict.fromkeys(row["target"] for row in rows))
    grid = np.full((len(targets), len(window_names)), np.nan)
    for row in rows:
        if row["skill"] is None or row["model"] == "mean":
            continue
        position = (targets.index(row["target"]), window_names.index(row["window"]))
        grid[position] = np.nanmax([grid[position], row["skill"]])
    figure = Figure(figsize=(1.3 * len(window_names) + 3, 0.6 * len(targets) + 2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(np.clip(grid, -0.2, 1.0), cmap="viridis", vmin=-0.2, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            axes.text(
                j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.5 else "black"
            )
    axes.set_xticks(range(len(window_names)), window_names, rotation=30, ha="right")
    axes.set_yticks(range(len(targets)), targets)
    axes.set_title("best test skill per energy window (1 - error / mean-baseline error)")
    figure.colorbar(image, ax=axes, label="skill")
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=120, format="png")
