"""Per-site structural labels computed from a snapshot: coordination number, RDF, surface flag.

All distances are in Angstrom. Periodic snapshots use the minimum-image neighbours of ASE's
neighbour list (any number of images); clusters use plain distances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list


@dataclass(frozen=True)
class LabelParams:
    """``cn_cutoff``: first-shell cutoff (Angstrom), e.g. the first minimum of g(r).

    ``r_min``/``r_max``/``n_r``: the fixed RDF grid; ``rdf_sigma``: Gaussian smearing of each
    neighbour distance (Angstrom); ``surface_cn_max``: a site with coordination number at most
    this is flagged as surface.
    """

    cn_cutoff: float = 3.1
    r_min: float = 1.5
    r_max: float = 6.0
    n_r: int = 91
    rdf_sigma: float = 0.05
    surface_cn_max: int = 10

    @property
    def r_grid(self) -> np.ndarray:
        return np.linspace(self.r_min, self.r_max, self.n_r)


@dataclass(frozen=True)
class SiteLabels:
    """Labels of every atom of one snapshot. Arrays have length n_atoms (rdf: n_atoms x n_r)."""

    element: np.ndarray
    coordination_number: np.ndarray
    surface: np.ndarray
    rdf: np.ndarray
    r: np.ndarray


def number_density(atoms: Atoms, reference_density: float | None) -> float:
    """Atoms per cubic Angstrom: N/V for a periodic cell, else ``reference_density`` (bulk)."""
    if atoms.pbc.all():
        return len(atoms) / atoms.get_volume()
    if reference_density is None or reference_density <= 0:
        raise ValueError("a cluster needs a positive reference_density (atoms per A^3) for g(r)")
    return reference_density


def compute_site_labels(
    atoms: Atoms, params: LabelParams, reference_density: float | None = None
) -> SiteLabels:
    """Labels of every atom in ``atoms``.

    The per-site RDF is g_i(r) = sum_j N(r - d_ij, sigma) / (4 pi r^2 rho), so that
    integrating 4 pi r^2 rho g_i(r) dr over a shell gives the number of neighbours in it.
    """
    rho = number_density(atoms, reference_density)
    reach = max(params.r_max + 4 * params.rdf_sigma, params.cn_cutoff)
    first, distance = neighbor_list("id", atoms, reach, self_interaction=False)
    n_atoms = len(atoms)
    in_shell = distance <= params.cn_cutoff
    coordination = np.bincount(first[in_shell], minlength=n_atoms).astype(np.int64)

    r = params.r_grid
    rdf = np.zeros((n_atoms, r.size))
    norm = 1.0 / (params.rdf_sigma * np.sqrt(2 * np.pi))
    for absorber in range(n_atoms):
        distances = distance[first == absorber]
        if distances.size == 0:
            continue
        gauss = norm * np.exp(-0.5 * ((r[None, :] - distances[:, None]) / params.rdf_sigma) ** 2)
        rdf[absorber] = gauss.sum(axis=0) / (4 * np.pi * r**2 * rho)
    surface = (coordination <= params.surface_cn_max).astype(np.int8)
    return SiteLabels(
        element=np.asarray(atoms.get_chemical_symbols()),
        coordination_number=coordination,
        surface=surface,
        rdf=rdf,
        r=r,
    )


def reference_number_density(lattice: str, lattice_constant: float) -> float:
    """Atoms per A^3 of a cubic crystal: 4/a^3 for fcc, 2/a^3 for bcc."""
    atoms_per_cell = {"fcc": 4, "bcc": 2}[lattice]
    return atoms_per_cell / lattice_constant**3
