"""The fidelity step: every measured reference of a study against its simulated spectrum.

For each entry of ``references`` the static lattice is computed with the study's engine settings
(:mod:`xasflow.spectra.reference`), measured and simulated spectra go through the same
normalization (:func:`~xasflow.experiment.alignment.normalize_xanes`), and the metrics and the
fitted calibration transform of :mod:`xasflow.experiment.fidelity` are written as a table, a JSON
record and one overlay plot per reference. The calibration reference's transform is written on
its own as ``calibration.json``, which training applies to simulated spectra.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from xasflow import __version__
from xasflow.errors import UserError
from xasflow.experiment.alignment import normalize_xanes
from xasflow.experiment.fidelity import ReferenceFidelity, assess_reference, plot_overlay
from xasflow.experiment.readers import read_spectrum
from xasflow.fileio import atomic_open, atomic_write_text
from xasflow.spectra.cache import SpectrumCache
from xasflow.spectra.engines import build_engine
from xasflow.spectra.reference import ReferenceSpec, compute_reference
from xasflow.spectrum import Spectrum, group_reference

logger = logging.getLogger(__name__)

TABLE_COLUMNS = (
    "reference",
    "element",
    "edge",
    "n_sites",
    "engine_seconds",
    "energy_offset_eV",
    "pearson_raw",
    "spearman_raw",
    "rmse_raw",
    "pearson_calibrated",
    "spearman_calibrated",
    "rmse_calibrated",
    "shift_eV",
    "stretch",
    "fwhm_eV",
    "fwhm_slope",
    "first_peaks_measured_eV",
    "first_peaks_simulated_eV",
)


def _reference_edge(config: dict, entry: dict) -> str:
    """A reference's own edge (a Pt L3 foil in a Cu K study), else the study's."""
    return entry.get("edge") or config["spectra"]["edge"]


def _measured_reference(entry: dict) -> str:
    """The reference's measured file, or ``PROJECT:LABEL`` for one group of an Athena project."""
    return group_reference(entry["path"], entry["group"])


def reference_engine(config: dict, entry: dict):
    """The study's engine with the reference's own edge."""
    return build_engine({**config["spectra"], "edge": _reference_edge(config, entry)})


def run_fidelity(
    config: dict,
    out_dir: str | Path,
    cache: SpectrumCache | None = None,
    names: list[str] | None = None,
) -> list[ReferenceFidelity]:
    """Compute, compare and report every reference of ``config`` (or those in ``names``).

    Writes ``out_dir/{name}/`` (FEFF folders, ``spectrum.csv``, ``overlay.png``),
    ``fidelity.csv`` and ``fidelity.json`` and, when ``calibration.reference`` is set,
    ``calibration.json``. Raises ``SpectrumReadError`` or ``ReferenceError`` naming the file or
    reference that cannot be used.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    references = config["references"]
    selected = names or sorted(references)
    unknown = [name for name in selected if name not in references]
    if unknown:
        raise UserError(
            f"reference(s) {', '.join(unknown)} not in the config ({', '.join(sorted(references))})"
        )
    # every measured file is read before any FEFF run, so a bad file fails at once
    measured = {
        name: normalize_xanes(read_spectrum(_measured_reference(references[name]))) for name in selected
    }
    assessed = [_assess(name, config, measured[name], out_dir, cache) for name in selected]
    results = [fidelity for fidelity, _ in assessed]
    engine_settings = {key: value for key, value in config["spectra"].items() if key != "cache_dir"}
    _write_tables(out_dir, [record for _, record in assessed], engine_settings)
    calibration_name = config["calibration"]["reference"]
    chosen = next((result for result in results if result.name == calibration_name), None)
    if chosen is not None:
        write_calibration(chosen, engine_settings, out_dir / "calibration.json")
    elif calibration_name:
        logger.info("calibration reference %s not computed this time: no calibration.json", calibration_name)
    return results


def _assess(
    name: str, config: dict, measured, out_dir: Path, cache: SpectrumCache | None
) -> tuple[ReferenceFidelity, dict]:
    """Simulate one reference, compare it with its measurement, plot the overlay; returns the
    fidelity and its record (the JSON entry)."""
    entry = config["references"][name]
    calibration = config["calibration"]
    spec = ReferenceSpec.from_config(name, {key: value for key, value in entry.items() if key != "edge"})
    edge = _reference_edge(config, entry)
    simulated = compute_reference(
        spec, reference_engine(config, entry), out_dir / name, config["spectra"]["cluster_radius"], cache
    )
    simulated_normalized = normalize_xanes(
        Spectrum(
            simulated.energy,
            simulated.mu,
            source=str(out_dir / name / "spectrum.csv"),
            kind="computed",
            element=spec.element,
            edge=edge,
        )
    )
    fidelity, curves = assess_reference(
        name,
        measured,
        simulated_normalized,
        tuple(calibration["window"]),
        energy_dependent=calibration["energy_dependent_broadening"],
    )
    plot_overlay(fidelity, curves, out_dir / name / "overlay.png")
    logger.info(
        "%s: r %.4f raw, %.4f calibrated; RMSE %.4f -> %.4f; offset %s eV",
        name,
        fidelity.raw.pearson_r,
        fidelity.calibrated.pearson_r,
        fidelity.raw.rmse,
        fidelity.calibrated.rmse,
        _offset_text(fidelity.energy_offset),
    )
    record = {
        **fidelity.to_dict(),
        "element": spec.element,
        "edge": edge,
        "temperature_K": spec.temperature,
        "n_sites": simulated.n_sites,
        "failed_sites": simulated.failed,
        "engine_seconds": simulated.engine_seconds,
        "table_row": _table_row(fidelity, spec.element, edge, simulated.n_sites, simulated.engine_seconds),
    }
    return fidelity, record


def _write_tables(out_dir: Path, records: list[dict], engine_settings: dict) -> None:
    """``fidelity.csv`` (one formatted row per reference) and ``fidelity.json`` (full records)."""
    with atomic_open(out_dir / "fidelity.csv", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(record["table_row"] for record in records)
    full = [{key: value for key, value in record.items() if key != "table_row"} for record in records]
    atomic_write_text(
        out_dir / "fidelity.json",
        json.dumps(
            {"xasflow_version": __version__, "spectra": engine_settings, "references": full}, indent=2
        ),
    )


def write_calibration(fidelity: ReferenceFidelity, engine_settings: dict, path: str | Path) -> None:
    """The calibration record training reads: the transform, what it was fitted on, how well."""
    record = {
        "reference": fidelity.name,
        "measured_path": fidelity.measured_path,
        "transform": fidelity.transform.to_dict(),
        "applied_to": "simulated training spectra (measured spectra are used as measured)",
        "window_eV": list(fidelity.calibrated.window),
        "pearson_raw": fidelity.raw.pearson_r,
        "pearson_calibrated": fidelity.calibrated.pearson_r,
        "rmse_raw": fidelity.raw.rmse,
        "rmse_calibrated": fidelity.calibrated.rmse,
        "energy_offset_eV": fidelity.energy_offset,
        "spectra": engine_settings,
        "xasflow_version": __version__,
    }
    atomic_write_text(path, json.dumps(record, indent=2))


def _table_row(fidelity: ReferenceFidelity, element: str, edge: str, n_sites: int, seconds: float) -> dict:
    def energies(values) -> str:
        return " ".join(f"{value:.1f}" for value in values)

    transform = fidelity.transform
    return {
        "reference": fidelity.name,
        "element": element,
        "edge": edge,
        "n_sites": n_sites,
        "engine_seconds": f"{seconds:.1f}",
        "energy_offset_eV": _offset_text(fidelity.energy_offset),
        "pearson_raw": f"{fidelity.raw.pearson_r:.4f}",
        "spearman_raw": f"{fidelity.raw.spearman_r:.4f}",
        "rmse_raw": f"{fidelity.raw.rmse:.4f}",
        "pearson_calibrated": f"{fidelity.calibrated.pearson_r:.4f}",
        "spearman_calibrated": f"{fidelity.calibrated.spearman_r:.4f}",
        "rmse_calibrated": f"{fidelity.calibrated.rmse:.4f}",
        "shift_eV": f"{transform.shift:.2f}",
        "stretch": f"{transform.stretch:.4f}",
        "fwhm_eV": f"{transform.fwhm:.2f}",
        "fwhm_slope": f"{transform.fwhm_slope:.4f}",
        "first_peaks_measured_eV": energies(fidelity.calibrated.peak_energies_measured),
        "first_peaks_simulated_eV": energies(fidelity.raw.peak_energies_simulated),
    }


def _offset_text(offset: float | None) -> str:
    """The energy offset for the table: eV with 2 decimals, empty when not comparable."""
    return "" if offset is None else f"{offset:.2f}"
