"""Symmetry-inequivalent absorbing sites and multiplicity-weighted averaging.

For a crystal only one absorber per equivalence class needs a spectrum; the site-averaged spectrum
is the multiplicity-weighted mean of the class spectra. Periodic structures are reduced with spglib
(through pymatgen's ``SpacegroupAnalyzer``), finite clusters with pymatgen's ``PointGroupAnalyzer``.
Treating equivalent atoms as separate classes is never wrong (only redundant), so whenever the
point-group result cannot be trusted we fall back to one class per atom.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from pymatgen.core import Molecule
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.symmetry.analyzer import PointGroupAnalyzer, SpacegroupAnalyzer

logger = logging.getLogger(__name__)

# pymatgen copies coordinates, it does not move atoms: anything beyond round-off means the site order
# or the positions changed, and the index mapping must be rebuilt by matching positions.
_POSITION_MATCH_TOLERANCE = 1e-4  # Angstrom


@dataclass(frozen=True)
class EquivalentSite:
    """One class of symmetry-equivalent atoms.

    Attributes:
        index: representative atom index in the input ``ase.Atoms`` (the smallest index of the class).
        element: chemical symbol shared by all members.
        multiplicity: number of atoms in the class, ``len(members)``.
        members: sorted indices (input order) of all atoms in the class, the representative included.
    """

    index: int
    element: str
    multiplicity: int
    members: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.multiplicity != len(self.members) or self.index not in self.members:
            raise ValueError(
                f"EquivalentSite(index={self.index}, multiplicity={self.multiplicity}) is inconsistent "
                f"with members={self.members}: multiplicity must equal len(members) and index be a member"
            )


def inequivalent_sites(
    atoms: Atoms,
    element: str | None = None,
    symprec: float = 1e-3,
    angle_tolerance: float = 5.0,
    cluster_tolerance: float = 0.3,
) -> list[EquivalentSite]:
    """Group the atoms of ``atoms`` into symmetry-equivalence classes.

    Periodic input (``atoms.pbc`` all True): spglib space-group analysis with ``symprec`` (Angstrom)
    and ``angle_tolerance`` (degrees). The default ``symprec`` of 1e-3 Angstrom is tight on purpose:
    a thermally displaced MD snapshot gets no reduction (every atom its own class). Only positions
    and elements count: initial magnetic moments are ignored (spglib's non-magnetic dataset), so
    the two spin sublattices of an antiferromagnet fall into one class.

    Non-periodic input (``atoms.pbc`` all False, a cluster): pymatgen point-group analysis with
    ``cluster_tolerance`` (Angstrom). Its default 0.3 Angstrom is loose: a cluster with ~0.05 Angstrom
    thermal noise is still found to have its ideal point group, so pass a small value (e.g. 0.01)
    for MD snapshots. If the point-group analysis fails or returns an incomplete grouping, every atom
    becomes its own class and a warning is logged.

    Args:
        atoms: the structure; never modified.
        element: only return classes of this chemical symbol (e.g. ``"Fe"``); None returns all.
        symprec: spglib distance tolerance in Angstrom (periodic input only).
        angle_tolerance: spglib angle tolerance in degrees (periodic input only).
        cluster_tolerance: point-group distance tolerance in Angstrom (cluster input only).

    Returns:
        One ``EquivalentSite`` per class, sorted by representative index; the multiplicities of
        the returned classes sum to the number of atoms of ``element`` (of all atoms if None).

    Raises:
        ValueError: empty ``atoms``, mixed periodicity, non-positive tolerances, or ``element``
            absent from ``atoms``.
    """
    symbols = atoms.get_chemical_symbols()
    if len(symbols) == 0:
        raise ValueError("inequivalent_sites: atoms is empty; need at least one atom")
    if element is not None and element not in symbols:
        raise ValueError(
            f"inequivalent_sites: element {element!r} is not in the structure; "
            f"valid elements are {sorted(set(symbols))}"
        )
    for name, value in (
        ("symprec", symprec),
        ("angle_tolerance", angle_tolerance),
        ("cluster_tolerance", cluster_tolerance),
    ):
        if not value > 0:
            raise ValueError(f"inequivalent_sites: {name}={value!r} must be a positive number")

    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.all():
        classes = _periodic_classes(atoms, symprec, angle_tolerance)
    elif not pbc.any():
        classes = _cluster_classes(atoms, cluster_tolerance)
    else:
        raise ValueError(
            f"inequivalent_sites: atoms.pbc={pbc.tolist()} is mixed; valid are all True (a crystal) "
            "or all False (a cluster)"
        )

    sites = []
    for members in classes:
        ordered = tuple(sorted(int(i) for i in members))
        site_element = symbols[ordered[0]]
        if element is not None and site_element != element:
            continue
        sites.append(
            EquivalentSite(index=ordered[0], element=site_element, multiplicity=len(ordered), members=ordered)
        )
    sites.sort(key=lambda site: site.index)
    logger.debug(
        "%s: %d atoms -> %d inequivalent sites%s",
        atoms.get_chemical_formula(),
        len(atoms),
        len(sites),
        f" of {element}" if element else "",
    )
    return sites


def site_weights(sites: list[EquivalentSite]) -> dict[int, float]:
    """Map each representative index to its weight ``multiplicity / sum(multiplicities)``.

    The total runs over the ``sites`` given, so pass the classes of one element only (as returned
    by ``inequivalent_sites(atoms, element=...)``) to get that element's site average.

    Raises:
        ValueError: no sites, or two sites with the same representative index.
    """
    if not sites:
        raise ValueError("site_weights: sites is empty; need at least one EquivalentSite")
    indices = [site.index for site in sites]
    if len(set(indices)) != len(indices):
        raise ValueError(f"site_weights: duplicate representative indices in {indices}")
    total = sum(site.multiplicity for site in sites)
    return {site.index: site.multiplicity / total for site in sites}


def weighted_average(spectra: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of per-site spectra on a common energy grid.

    Args:
        spectra: shape (n_sites, n_energy), e.g. mu(E) of each inequivalent site.
        weights: shape (n_sites,), non-negative (e.g. multiplicities); normalised here.

    Returns:
        Shape (n_energy,): ``sum_i weights[i] * spectra[i] / sum_i weights[i]``.

    Raises:
        ValueError: wrong dimensions, mismatched n_sites, non-finite or negative weights, or a zero
            total weight.
    """
    spectra = np.asarray(spectra, dtype=float)
    weights = np.asarray(weights, dtype=float)
    if spectra.ndim != 2:
        raise ValueError(f"weighted_average: spectra has shape {spectra.shape}; expected (n_sites, n_energy)")
    if weights.ndim != 1 or weights.shape[0] != spectra.shape[0]:
        raise ValueError(
            f"weighted_average: weights has shape {weights.shape}; expected ({spectra.shape[0]},) "
            f"to match spectra of shape {spectra.shape}"
        )
    if not np.all(np.isfinite(weights)):
        raise ValueError(f"weighted_average: weights {weights.tolist()} contain non-finite values")
    if np.any(weights < 0):
        raise ValueError(f"weighted_average: weights {weights.tolist()} contain negative values")
    total = weights.sum()
    if total <= 0:
        raise ValueError(f"weighted_average: weights {weights.tolist()} sum to zero")
    return (weights / total) @ spectra


def _periodic_classes(atoms: Atoms, symprec: float, angle_tolerance: float) -> list[list[int]]:
    """Equivalence classes (lists of input indices) of a periodic structure from spglib."""
    structure = AseAtomsAdaptor.get_structure(atoms)
    symmetrized = SpacegroupAnalyzer(
        structure, symprec=symprec, angle_tolerance=angle_tolerance
    ).get_symmetrized_structure()
    to_input = _map_to_input(
        np.asarray(symmetrized.frac_coords),
        atoms.get_scaled_positions(wrap=False),
        cell=np.asarray(atoms.cell[:]),
    )
    classes = [[int(to_input[i]) for i in group] for group in symmetrized.equivalent_indices]
    _check_partition(classes, atoms.get_chemical_symbols())
    return classes


def _cluster_classes(atoms: Atoms, tolerance: float) -> list[list[int]]:
    """Equivalence classes (lists of input indices) of a finite cluster from its point group."""
    symbols = atoms.get_chemical_symbols()
    singletons = [[i] for i in range(len(symbols))]
    if len(symbols) == 1:
        return singletons  # pymatgen's analyzer fails on a single atom; the answer is trivial
    # Built directly rather than with AseAtomsAdaptor.get_molecule, which rejects odd electron counts
    # (charge 0 with spin multiplicity 1), e.g. any Cu cluster with an odd number of atoms.
    molecule = Molecule(symbols, atoms.get_positions(), charge_spin_check=False)
    try:
        analyzer = PointGroupAnalyzer(molecule, tolerance=tolerance)
        eq_sets = analyzer.get_equivalent_atoms()["eq_sets"]
        centred = np.asarray(analyzer.centered_mol.cart_coords)
        positions = atoms.get_positions()
        # The analyzer shifts the cluster to its centre of mass; compare both about their centroids.
        to_input = _map_to_input(centred - centred.mean(axis=0), positions - positions.mean(axis=0))
        classes = [[int(to_input[i]) for i in members] for members in eq_sets.values()]
        _check_partition(classes, symbols)
    except Exception as error:  # any failure falls back to the always-valid answer
        logger.warning(
            "point-group analysis of %s (%d atoms, tolerance %.3g Angstrom) failed (%s: %s); "
            "treating every atom as its own class",
            atoms.get_chemical_formula(),
            len(symbols),
            tolerance,
            type(error).__name__,
            error,
        )
        return singletons
    logger.debug("%s: point group %s", atoms.get_chemical_formula(), analyzer.sch_symbol)
    return classes


def _map_to_input(candidate: np.ndarray, reference: np.ndarray, cell: np.ndarray | None = None) -> np.ndarray:
    """Index map ``candidate site i -> reference (input) atom to_input[i]``, matched by position.

    Coordinates are fractional when ``cell`` (3x3, Angstrom) is given (compared modulo lattice
    vectors), otherwise Cartesian in Angstrom. Raises RuntimeError if the match is not one-to-one.
    """
    if candidate.shape != reference.shape:
        raise RuntimeError(f"pymatgen returned {candidate.shape[0]} sites for {reference.shape[0]} atoms")

    def distances(delta: np.ndarray) -> np.ndarray:
        if cell is None:
            return np.linalg.norm(delta, axis=-1)
        return np.linalg.norm((delta - np.round(delta)) @ cell, axis=-1)

    # Fast path: pymatgen kept the input order (the usual case).
    if np.all(distances(candidate - reference) < _POSITION_MATCH_TOLERANCE):
        return np.arange(len(reference))
    to_input = np.array([int(np.argmin(distances(reference - site))) for site in candidate])
    matched = distances(candidate - reference[to_input]) < _POSITION_MATCH_TOLERANCE
    if not matched.all() or len(set(to_input.tolist())) != len(to_input):
        raise RuntimeError("could not map pymatgen's sites back to the input atoms by position")
    return to_input


def _check_partition(classes: Iterable[Iterable[int]], symbols: list[str]) -> None:
    """Raise RuntimeError unless ``classes`` cover every atom exactly once, one element per class."""
    seen: list[int] = []
    for class_members in classes:
        members = list(class_members)
        if len({symbols[i] for i in members}) != 1:
            raise RuntimeError(f"an equivalence class mixes elements: {sorted(members)}")
        seen.extend(members)
    if sorted(seen) != list(range(len(symbols))):
        missing = sorted(set(range(len(symbols))) - set(seen))
        raise RuntimeError(f"equivalence classes do not partition the atoms (missing {missing[:10]})")
