"""Per-site structural labels of a snapshot, shared by every kind of structure model.

Per atom: partial coordination numbers (per-pair cutoffs), shell coordination numbers, total
and partial radial distribution functions on a fixed grid, valence (number of ligand
neighbours, e.g. O around Si), local composition and a surface flag. Structure types from common
neighbour analysis and grain-boundary flags come from LAMMPS (``structure_types``) and are
added by the pipeline. All distances are in Angstrom. Periodic snapshots use ASE's
neighbour list over periodic images; clusters use plain distances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list


@dataclass(frozen=True)
class LabelParams:
    """How labels are computed.

    ``cn_cutoff``: first-shell cutoff (Angstrom) for every pair of elements without an entry in
    ``pair_cutoffs`` (pairs as ((A, B), cutoff), symmetric), e.g. the first minimum of the
    partial g(r). ``shell_edges``: outer radii of coordination shells (Angstrom, increasing); the
    shell CNs count neighbours in (0, e1], (e1, e2], ... (bcc Fe: 2.7, 3.3 gives 8 and 6).
    ``r_min``/``r_max``/``n_r``: the fixed RDF grid; ``rdf_sigma``: Gaussian smearing of each
    neighbour distance (Angstrom). ``surface_cn_max``: an atom of a cluster with at most this
    many neighbours is a surface atom. ``valence_ligand``: the element whose neighbours count as
    an atom's valence (O for Si in SiOx), or None.
    """

    cn_cutoff: float = 3.1
    pair_cutoffs: tuple[tuple[tuple[str, str], float], ...] = ()
    shell_edges: tuple[float, ...] = ()
    r_min: float = 1.5
    r_max: float = 6.0
    n_r: int = 91
    rdf_sigma: float = 0.05
    surface_cn_max: int = 10
    valence_ligand: str | None = None

    @property
    def r_grid(self) -> np.ndarray:
        return np.linspace(self.r_min, self.r_max, self.n_r)

    def cutoff(self, first: str, second: str) -> float:
        """First-shell cutoff of the pair (first, second), Angstrom."""
        for (a, b), value in self.pair_cutoffs:
            if {a, b} == {first, second}:
                return float(value)
        return float(self.cn_cutoff)

    @property
    def reach(self) -> float:
        """Largest distance any label needs, Angstrom."""
        cutoffs = [self.cn_cutoff, *(value for _, value in self.pair_cutoffs), *self.shell_edges]
        return max(self.r_max + 4 * self.rdf_sigma, *cutoffs)

    @classmethod
    def from_config(cls, section: Mapping) -> LabelParams:
        """From the validated ``labels`` config section (pair cutoffs keyed 'A-B')."""
        pairs = []
        for key, value in sorted(section["pair_cutoffs"].items()):
            first, _, second = key.partition("-")
            pairs.append(((first, second), float(value)))
        return cls(
            cn_cutoff=section["cn_cutoff"],
            pair_cutoffs=tuple(pairs),
            shell_edges=tuple(section["shell_edges"]),
            r_min=section["r_min"],
            r_max=section["r_max"],
            n_r=section["n_r"],
            rdf_sigma=section["rdf_sigma"],
            surface_cn_max=section["surface_cn_max"],
            valence_ligand=section["valence_ligand"],
        )


@dataclass(frozen=True)
class SiteLabels:
    """Labels of every atom of one snapshot.

    ``species`` orders the element axis of the partial arrays. Shapes: element,
    coordination_number, surface, valence (n_atoms,); partial_cn, local_composition
    (n_atoms, n_species); shell_cn (n_atoms, n_shells); rdf (n_atoms, n_r); partial_rdf
    (n_atoms, n_species, n_r); r (n_r,). valence is -1 where it does not apply (no ligand set,
    or the atom is itself the ligand).
    """

    species: tuple[str, ...]
    element: np.ndarray
    coordination_number: np.ndarray
    partial_cn: np.ndarray
    shell_cn: np.ndarray
    surface: np.ndarray
    valence: np.ndarray
    local_composition: np.ndarray
    rdf: np.ndarray
    partial_rdf: np.ndarray
    r: np.ndarray


def number_density(atoms: Atoms, reference_density: float | None) -> float:
    """Atoms per cubic Angstrom: N/V for a periodic cell, else ``reference_density`` (bulk)."""
    if atoms.pbc.all():
        return len(atoms) / atoms.get_volume()
    if reference_density is None or reference_density <= 0:
        raise ValueError("a cluster needs a positive reference_density (atoms per A^3) for g(r)")
    return reference_density


def compute_site_labels(
    atoms: Atoms,
    params: LabelParams,
    reference_density: float | None = None,
    species: Sequence[str] | None = None,
) -> SiteLabels:
    """Labels of every atom in ``atoms``.

    The per-site partial RDF towards element b is g_ib(r) = sum_{j in b} N(r - d_ij, sigma) /
    (4 pi r^2 rho_b), with rho_b = x_b rho the partial number density, so that integrating
    4 pi r^2 rho_b g_ib(r) over a shell gives the number of b neighbours in it; the total RDF
    uses rho. A first-shell neighbour of element b counts when d_ij <= cutoff(a_i, b).
    ``species`` (default: the elements present, sorted) fixes the element axis.
    """
    symbols = np.asarray(atoms.get_chemical_symbols())
    species = tuple(species) if species is not None else tuple(sorted(set(symbols)))
    unknown = sorted(set(symbols) - set(species))
    if unknown:
        raise ValueError(f"atoms of {unknown} are not among the label species {list(species)}")
    n_atoms, n_species = len(atoms), len(species)
    species_index = {symbol: index for index, symbol in enumerate(species)}
    atom_species = np.array([species_index[symbol] for symbol in symbols], dtype=np.int64)
    rho = number_density(atoms, reference_density)
    fractions = np.bincount(atom_species, minlength=n_species) / n_atoms
    partial_rho = rho * fractions

    first, second, distance = neighbor_list("ijd", atoms, params.reach, self_interaction=False)
    cutoff_table = np.array([[params.cutoff(a, b) for b in species] for a in species])
    first_species, second_species = atom_species[first], atom_species[second]
    bonded = distance <= cutoff_table[first_species, second_species]
    partial_cn = np.zeros((n_atoms, n_species), dtype=np.int64)
    np.add.at(partial_cn, (first[bonded], second_species[bonded]), 1)
    coordination = partial_cn.sum(axis=1)

    edges = np.asarray((0.0, *params.shell_edges))
    shell_cn = np.zeros((n_atoms, max(len(edges) - 1, 0)), dtype=np.int64)
    for shell in range(shell_cn.shape[1]):
        inside = (distance > edges[shell]) & (distance <= edges[shell + 1])
        shell_cn[:, shell] = np.bincount(first[inside], minlength=n_atoms)

    r = params.r_grid
    rdf = np.zeros((n_atoms, r.size))
    partial_rdf = np.zeros((n_atoms, n_species, r.size))
    norm = 1.0 / (params.rdf_sigma * np.sqrt(2 * np.pi))
    shell_area = 4 * np.pi * r**2
    order = np.argsort(first, kind="stable")
    bounds = np.searchsorted(first[order], np.arange(n_atoms + 1))
    for atom in range(n_atoms):
        pairs = order[bounds[atom] : bounds[atom + 1]]
        if pairs.size == 0:
            continue
        gauss = norm * np.exp(-0.5 * ((r[None, :] - distance[pairs, None]) / params.rdf_sigma) ** 2)
        per_species = np.zeros((n_species, r.size))
        np.add.at(per_species, second_species[pairs], gauss)
        rdf[atom] = per_species.sum(axis=0) / (shell_area * rho)
        present = partial_rho > 0
        partial_rdf[atom, present] = per_species[present] / (shell_area[None, :] * partial_rho[present, None])

    with np.errstate(invalid="ignore", divide="ignore"):
        local_composition = np.where(coordination[:, None] > 0, partial_cn / coordination[:, None], 0.0)
    valence = np.full(n_atoms, -1, dtype=np.int64)
    ligand = params.valence_ligand
    if ligand is not None:
        not_ligand = symbols != ligand
        valence[not_ligand] = partial_cn[not_ligand, species_index[ligand]] if ligand in species_index else 0
    surface = np.zeros(n_atoms, dtype=np.int8)
    if not atoms.pbc.all():  # a periodic cell has no surface
        surface = (coordination <= params.surface_cn_max).astype(np.int8)
    return SiteLabels(
        species=species,
        element=symbols,
        coordination_number=coordination,
        partial_cn=partial_cn,
        shell_cn=shell_cn,
        surface=surface,
        valence=valence,
        local_composition=local_composition,
        rdf=rdf,
        partial_rdf=partial_rdf.astype(np.float32),
        r=r,
    )


def reference_number_density(lattice: str, lattice_constant: float, c_over_a: float = 1.0) -> float:
    """Atoms per A^3 of a crystal: 4/a^3 for fcc, 2/a^3 for bcc, 2/(a^3 c/a) for bct."""
    if lattice == "fcc":
        return 4 / lattice_constant**3
    if lattice == "bcc":
        return 2 / lattice_constant**3
    if lattice == "bct":
        return 2 / (lattice_constant**3 * c_over_a)
    raise ValueError(f"lattice '{lattice}' has no reference density; use fcc, bcc or bct")


CNA_TYPES = {"fcc": 1, "hcp": 2, "bcc": 3, "icosahedral": 4, "other": 5}


def cna_cutoff(lattice: str, lattice_constant: float) -> float:
    """Common-neighbour-analysis cutoff between the first and second shells (LAMMPS docs):
    0.854 a for fcc, 1.207 a for bcc, Angstrom."""
    factors = {"fcc": 0.5 * (1 / np.sqrt(2) + 1), "bcc": 0.5 * (np.sqrt(2) + 1)}
    if lattice not in factors:
        raise ValueError(f"no CNA cutoff for lattice '{lattice}'; use fcc or bcc")
    return float(factors[lattice] * lattice_constant)


def grain_boundary_flags(structure_types: np.ndarray, crystal: str) -> np.ndarray:
    """True for atoms whose CNA type is not that of ``crystal`` ('fcc' or 'bcc'), shape (n_atoms,).

    In an annealed polycrystal these are the grain-boundary atoms (and stacking faults, which
    CNA reports as hcp).
    """
    if crystal not in ("fcc", "bcc"):
        raise ValueError(f"crystal '{crystal}' is not supported; use fcc or bcc")
    return np.asarray(structure_types) != CNA_TYPES[crystal]


def composition_of(symbols: np.ndarray, mask: np.ndarray, species: Sequence[str]) -> dict[str, float]:
    """Fraction of each element among the atoms selected by ``mask`` (NaN when none are)."""
    chosen = symbols[np.asarray(mask, dtype=bool)]
    if chosen.size == 0:
        return {symbol: float("nan") for symbol in species}
    return {symbol: float(np.mean(chosen == symbol)) for symbol in species}
