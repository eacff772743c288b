"""Validation of the imaging maps on synthetic stacks whose truth is known.

Stacks are built from the study's own reference spectra (:mod:`.imaging_synthetic`: smooth
known fraction maps, a smooth edge step, a sloping support background, Poisson transmission
noise at each dose), then mapped with every denoising method asked for, and the fraction maps
are compared with the truth over the sample pixels that were mapped. The table answers: at
which dose does a method's map become unusable, and does denoising help or hurt?

Outputs in ``out_dir``: ``validation.csv`` (one row per dose, seed and method: RMSE, share of
the sample mapped, seconds), ``validation.json`` (mean RMSE per dose and method, ratios to the
raw per-pixel fit), ``validation.md`` (the table) and ``validation.png`` (RMSE against dose).
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xasflow import __version__
from xasflow.errors import UserError
from xasflow.experiment.readers import read_spectrum
from xasflow.fileio import atomic_open, atomic_path, atomic_write_text
from xasflow.inference.imaging import DENOISE_METHODS, ImagingParams, map_stack, open_maps, prepare_references
from xasflow.inference.imaging_io import open_stack, write_stack
from xasflow.inference.imaging_synthetic import fraction_errors, synthetic_stack

logger = logging.getLogger(__name__)

#: The method the others are compared with: per-pixel fits of the raw (noisy) spectra.
RAW = "none"


def validate_imaging(
    references: Mapping[str, str | Path],
    energy: Sequence[float],
    out_dir: str | Path,
    params: ImagingParams | None = None,
    size: int = 64,
    doses: Sequence[float] = (1e2, 1e3, 1e4, 1e5),
    seeds: int = 1,
    methods: Sequence[str] = DENOISE_METHODS,
) -> dict:
    """Map synthetic stacks of ``references`` at every dose with every method; write the tables.

    Args:
        references: name -> measured or computed reference spectrum file.
        energy: the stack energies, eV (increasing).
        out_dir: output folder.
        params: mapping settings (default :class:`ImagingParams`); ``denoise`` is replaced by each
            method in turn.
        size: image edge in pixels.
        doses: incident photons per pixel per energy.
        seeds: stacks per dose (different maps and noise).
        methods: denoising methods compared (``none`` is always included).

    Returns:
        The summary written to ``validation.json``.
    """
    params = params or ImagingParams()
    unknown = sorted(set(methods) - set(DENOISE_METHODS))
    if unknown:
        raise UserError(f"imaging validation: unknown methods {unknown}; valid: {', '.join(DENOISE_METHODS)}")
    if len(references) < 1 or size < 4 or seeds < 1 or not doses:
        raise UserError("imaging validation needs references, size >= 4, seeds >= 1 and at least one dose")
    methods = [RAW, *[method for method in methods if method != RAW]]
    energy = np.asarray(energy, dtype=float)
    names = list(references)
    spectra = [read_spectrum(path) for path in references.values()]
    normalized, normalization = prepare_references(spectra, energy)
    out_dir = Path(out_dir)
    work = out_dir / "work"
    rows: list[dict] = []
    try:
        for dose in doses:
            for seed in range(seeds):
                stack, truth = synthetic_stack(
                    normalized, names, normalization, energy, (size, size), float(dose), seed
                )
                path = write_stack(work / "stack.zarr", truth.energy, stack, chunk=params.tile_size)
                for method in methods:
                    start = time.perf_counter()
                    with open_stack(path) as opened:
                        maps_path = map_stack(
                            opened,
                            normalized,
                            names,
                            normalization,
                            work / method,
                            replace(params, denoise=method),
                        )
                    rmse, mapped = fraction_errors(open_maps(maps_path)["fraction"].values, truth)
                    rows.append(
                        {
                            "dose": float(dose),
                            "seed": seed,
                            "method": method,
                            "rmse": rmse,
                            "mapped": mapped,
                            "seconds": time.perf_counter() - start,
                        }
                    )
                    logger.info("dose %.0e seed %d %s: fraction RMSE %.4f", dose, seed, method, rmse)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = _summary(rows, methods, names, size, seeds, params)
    _write(out_dir, rows, summary)
    return summary


def _summary(rows, methods, names, size, seeds, params) -> dict:
    doses = sorted({row["dose"] for row in rows})
    mean = {
        method: {
            f"{dose:g}": float(
                np.mean([row["rmse"] for row in rows if row["method"] == method and row["dose"] == dose])
            )
            for dose in doses
        }
        for method in methods
    }
    ratio = {
        method: {dose: mean[method][dose] / mean[RAW][dose] for dose in mean[RAW]}
        for method in methods
        if method != RAW
    }
    return {
        "xasflow_version": __version__,
        "references": names,
        "image_size": size,
        "seeds": seeds,
        "methods": list(methods),
        "doses": doses,
        "rmse": mean,
        "ratio_to_raw": ratio,
        "params": json.loads(json.dumps(params.__dict__, default=str)),
    }


def markdown(summary: Mapping) -> str:
    methods = summary["methods"]
    lines = [
        f"Fraction-map RMSE against the truth ({summary['image_size']} x {summary['image_size']} px, "
        f"{summary['seeds']} stack(s) per dose; references {', '.join(summary['references'])})",
        "",
        "| photons / pixel / energy | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for dose in summary["rmse"][RAW]:
        cells = []
        for method in methods:
            value = summary["rmse"][method][dose]
            ratio = "" if method == RAW else f" ({summary['ratio_to_raw'][method][dose]:.2f} x raw)"
            cells.append(f"{value:.4f}{ratio}")
        lines.append(f"| {float(dose):.0e} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write(out_dir: Path, rows: list[dict], summary: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_dir / "validation.csv") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out_dir / "validation.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out_dir / "validation.md", markdown(summary))
    figure = Figure(figsize=(5, 3.6))
    axes = figure.add_subplot()
    for method in summary["methods"]:
        doses = [float(dose) for dose in summary["rmse"][method]]
        axes.loglog(doses, list(summary["rmse"][method].values()), "o-", label=method)
    axes.set_xlabel("photons per pixel per energy")
    axes.set_ylabel("fraction RMSE")
    axes.legend()
    figure.tight_layout()
    with atomic_path(out_dir / "validation.png") as path:
        FigureCanvasAgg(figure).print_png(path)
