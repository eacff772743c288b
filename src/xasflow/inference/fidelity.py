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
from xasflow.experiment.alignment import normalize_xanes
from xasflow.experiment.fidelity import ReferenceFidelity, assess_reference, plot_overlay
from xasflow.experiment.readers import read_spectrum
from xasflow.spectra.cache import SpectrumCache
from xasflow.spectra.engines import build_engine
from xasflow.spectra.reference import ReferenceSpec, compute_reference
from xasflow.spectrum import Spectrum

logger = logging.getLogger(__name__)

TABLE_COLUMNS = (
    "reference",
    "element",
    "edge",
    "n_sites",
    "feff_seconds",
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


def reference_engine(config: dict, spec_entry: dict):
    """The study's engine with the reference's own edge (a Pt L3 foil in a Cu K study)."""
    spectra = {**config["spectra"], "edge": spec_entry.get("edge", config["spectra"]["edge"])}
    return build_engine(spectra)


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
    references = config.get("references", {})
    calibration = config.get("calibration", {})
    window = tuple(calibration.get("window", (-12.0, 45.0)))
    selected = names or sorted(references)
    unknown = [name for name in selected if name not in references]
    if unknown:
        raise ValueError(
            f"reference(s) {', '.join(unknown)} not in the config ({', '.join(sorted(references))})"
        )
    # every measured file is read before any FEFF run, so a bad file fails at once
    measured = {name: normalize_xanes(read_spectrum(references[name]["path"])) for name in selected}
    results, rows, records = [], [], []
    for name in selected:
        entry = references[name]
        spec = ReferenceSpec.from_config(name, {k: v for k, v in entry.items() if k != "edge"})
        engine = reference_engine(config, entry)
        simulated = compute_reference(
            spec, engine, out_dir / name, config["spectra"]["cluster_radius"], cache
        )
        edge = entry.get("edge", config["spectra"]["edge"])
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
            measured[name],
            simulated_normalized,
            window,
            energy_dependent=calibration.get("energy_dependent_broadening", False),
        )
        plot_overlay(fidelity, curves, out_dir / name / "overlay.png")
        results.append(fidelity)
        records.append(
            {
                **fidelity.to_dict(),
                "element": spec.element,
                "edge": edge,
                "temperature_K": spec.temperature,
                "n_sites": simulated.n_sites,
                "failed_sites": simulated.failed,
                "feff_seconds": simulated.feff_seconds,
            }
        )
        rows.append(_table_row(fidelity, spec.element, edge, simulated.n_sites, simulated.feff_seconds))
        logger.info(
            "%s: r %.4f raw, %.4f calibrated; RMSE %.4f -> %.4f; offset %s eV",
            name,
            fidelity.raw.pearson_r,
            fidelity.calibrated.pearson_r,
            fidelity.raw.rmse,
            fidelity.calibrated.rmse,
            _offset_text(fidelity.energy_offset),
        )
    with open(out_dir / "fidelity.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    engine_settings = {key: value for key, value in config["spectra"].items() if key != "cache_dir"}
    (out_dir / "fidelity.json").write_text(
        json.dumps(
            {"xasflow_version": __version__, "spectra": engine_settings, "references": records}, indent=2
        )
    )
    calibration_name = calibration.get("reference")
    chosen = next((result for result in results if result.name == calibration_name), None)
    if chosen is not None:
        write_calibration(chosen, engine_settings, out_dir / "calibration.json")
    elif calibration_name:
        logger.info("calibration reference %s not computed this time: no calibration.json", calibration_name)
    return results


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
    Path(path).write_text(json.dumps(record, indent=2))


def _table_row(fidelity: ReferenceFidelity, element: str, edge: str, n_sites: int, seconds: float) -> dict:
    def energies(values) -> str:
        return " ".join(f"{value:.1f}" for value in values)

    transform = fidelity.transform
    return {
        "reference": fidelity.name,
        "element": element,
        "edge": edge,
        "n_sites": n_sites,
        "feff_seconds": f"{seconds:.1f}",
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
