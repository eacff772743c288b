"""Simulated spectra of measured reference materials (metal foils and other known structures).

A reference is a measured spectrum file and the structure of the material it was measured on:
an element with its lattice (fcc, bcc, hcp) and lattice constants, or a structure file ASE can
read. Its simulated spectrum is the static lattice's: every symmetry-inequivalent absorber
(spglib through pymatgen) is computed once with the study's engine settings, and the spectra
are averaged on FEFF's absolute energy axis with their multiplicities, as a measurement sees
every absorber at once. Thermal disorder is not simulated here; the calibration's broadening
(:mod:`xasflow.experiment.fidelity`) absorbs it together with the instrument resolution.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk

from xasflow.errors import UserError
from xasflow.fileio import atomic_open
from xasflow.spectra.cache import SpectrumCache
from xasflow.spectra.engines import Engine, run_site_cached, with_shared_potential
from xasflow.spectra.feff import PotentialError, cut_cluster
from xasflow.structures.symmetry import inequivalent_sites, weighted_average

logger = logging.getLogger(__name__)

REFERENCE_LATTICES = ("fcc", "bcc", "hcp")


class ReferenceError(UserError):
    """A reference that cannot be built or whose every site failed (message names it)."""


@dataclass(frozen=True)
class ReferenceSpec:
    """One measured reference and the material it was measured on.

    name:              label used in file names and tables.
    path:              the measured spectrum file (XDI, columns or an Athena project).
    element:           the absorbing element.
    lattice:           fcc, bcc or hcp (with ``lattice_constant`` a, and ``c`` for hcp), or None
                       when ``structure_file`` is given.
    lattice_constant:  a, Angstrom.
    c:                 c, Angstrom (hcp only; default ideal c/a = 1.633).
    structure_file:    any structure file ASE reads (CIF, POSCAR, extxyz), instead of a lattice.
    temperature:       K, the temperature of the measurement (recorded; the simulation is static).
    group:             for an Athena project of several groups, the label of the measured one.
    """

    name: str
    path: str
    element: str
    lattice: str | None = None
    lattice_constant: float | None = None
    c: float | None = None
    structure_file: str | None = None
    temperature: float = 300.0
    group: str = ""

    @classmethod
    def from_config(cls, name: str, entry: dict) -> ReferenceSpec:
        return cls(name=name, **entry)


def reference_structure(spec: ReferenceSpec) -> Atoms:
    """The periodic structure of a reference (primitive cell for a lattice)."""
    if spec.structure_file:
        from ase.io import read

        try:
            atoms = read(spec.structure_file)
        except Exception as error:  # ASE raises many types for unreadable files
            raise ReferenceError(
                f"reference {spec.name}: cannot read structure file {spec.structure_file}: {error}"
            ) from error
        if spec.element not in atoms.get_chemical_symbols():
            raise ReferenceError(
                f"reference {spec.name}: structure file {spec.structure_file} holds no {spec.element}"
            )
        return atoms
    if spec.lattice not in REFERENCE_LATTICES or not spec.lattice_constant:
        raise ReferenceError(
            f"reference {spec.name}: give lattice ({', '.join(REFERENCE_LATTICES)}) with "
            f"lattice_constant, or structure_file (got lattice={spec.lattice!r})"
        )
    if spec.lattice == "hcp":
        return bulk(spec.element, "hcp", a=spec.lattice_constant, c=spec.c or 1.633 * spec.lattice_constant)
    return bulk(spec.element, spec.lattice, a=spec.lattice_constant)


@dataclass(frozen=True, eq=False)
class ReferenceSpectrum:
    """A reference's simulated spectrum: ``energy`` (n,) absolute eV and ``mu`` (n,), the
    multiplicity-weighted mean of ``n_sites`` inequivalent absorbers standing for ``n_atoms``;
    ``engine_seconds`` is the engine time spent (0 for cached sites)."""

    name: str
    energy: np.ndarray
    mu: np.ndarray
    n_sites: int
    n_atoms: int
    failed: int
    engine_seconds: float


def compute_reference(
    spec: ReferenceSpec,
    engine: Engine,
    out_dir: str | Path,
    cluster_radius: float,
    cache: SpectrumCache | None = None,
) -> ReferenceSpectrum:
    """Compute every inequivalent absorber of the reference in ``out_dir/NNNN_El/``, write
    ``results.csv`` (status and reason of each) and ``spectrum.csv`` (the weighted mean), and
    return the mean. Raises :class:`ReferenceError` if every site failed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atoms = reference_structure(spec)
    sites = [site for site in inequivalent_sites(atoms) if site.element == spec.element]
    if not sites:
        raise ReferenceError(f"reference {spec.name}: no {spec.element} atom in its structure")
    potential_failure = ""
    if getattr(engine, "shares_potential", False):
        first = cut_cluster(atoms, sites[0].index, cluster_radius)
        try:
            engine = with_shared_potential(
                engine, cache, first, out_dir / "potential", f"{spec.name} SCF potential"
            )
        except PotentialError as error:
            potential_failure = str(error)
    rows, energies, spectra, weights, seconds = [], [], [], [], 0.0
    for site in sites:
        directory = out_dir / f"{site.index:04d}_{site.element}"
        title = f"reference {spec.name} site {site.index} {site.element}"
        if potential_failure:
            rows.append(
                {
                    "site": site.index,
                    "multiplicity": site.multiplicity,
                    "status": "failed",
                    "reason": f"shared SCF potential failed: {potential_failure}",
                    "directory": directory.name,
                }
            )
            continue
        outcome = run_site_cached(
            engine, cache, cut_cluster(atoms, site.index, cluster_radius), directory, title
        )
        result = outcome.result
        seconds += result.engine_seconds
        rows.append(
            {
                "site": site.index,
                "multiplicity": site.multiplicity,
                "status": result.status,
                "reason": result.reason,
                "directory": directory.name,
            }
        )
        if result.status == "ok":
            energies.append(result.energy)
            spectra.append(result.mu)
            weights.append(site.multiplicity)
    with atomic_open(out_dir / "results.csv", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("site", "multiplicity", "status", "reason", "directory"))
        writer.writeheader()
        writer.writerows(rows)
    failed = sum(row["status"] == "failed" for row in rows)
    if not spectra:
        reasons = "; ".join(sorted({row["reason"] for row in rows}))
        raise ReferenceError(f"reference {spec.name}: every site failed ({reasons}); logs in {out_dir}")
    energy = energies[0]
    mean = weighted_average(
        np.array([np.interp(energy, e, mu) for e, mu in zip(energies, spectra, strict=True)]),
        np.array(weights),
    )
    with atomic_open(out_dir / "spectrum.csv") as handle:
        np.savetxt(
            handle,
            np.column_stack([energy, mean]),
            delimiter=",",
            fmt="%.6f",
            header="energy_eV,mu",
            comments="",
        )
    logger.info(
        "reference %s: %d inequivalent sites (%d failed), %.1f s of FEFF",
        spec.name,
        len(sites),
        failed,
        seconds,
    )
    return ReferenceSpectrum(spec.name, energy, mean, len(spectra), int(sum(weights)), failed, seconds)
