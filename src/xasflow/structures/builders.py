"""Starting structures for MD, built with ASE from a system's config entry.

Every builder is a pure function of its parameters; the returned ``Atoms`` is a new object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.cluster import Decahedron, Icosahedron, Octahedron
from ase.data import atomic_numbers

NANOPARTICLE_SHAPES = ("cuboctahedron", "icosahedron", "decahedron")


LATTICES = ("fcc", "bcc", "bct")


@dataclass(frozen=True)
class BulkSpec:
    """A periodic crystal: ``lattice`` is 'fcc', 'bcc' or 'bct', lattice_constant in Angstrom.

    'bct' is the body-centred tetragonal cell of the Bain path with c = ``c_over_a`` * a:
    c/a = 1 is bcc, c/a = sqrt(2) is fcc (with a_fcc = sqrt(2) a), values between are the
    intermediate states of the bcc-fcc transformation.
    """

    element: str
    lattice: str
    lattice_constant: float
    supercell: tuple[int, int, int]
    c_over_a: float = 1.0


@dataclass(frozen=True)
class NanoparticleSpec:
    """A free cluster. ``shells`` counts shells including the central atom.

    cuboctahedron and icosahedron with shells n hold 1, 13, 55, 147, 309, ... atoms for
    n = 1, 2, 3, 4, 5; a decahedron uses p = q = shells and ``reentrance`` (Marks reentrance r).
    """

    element: str
    shape: str
    shells: int
    lattice_constant: float
    reentrance: int = 0


def build_bulk(spec: BulkSpec) -> Atoms:
    """Conventional cell of ``spec.lattice`` repeated ``spec.supercell`` times (periodic)."""
    if spec.lattice not in LATTICES:
        raise ValueError(f"lattice '{spec.lattice}' is not supported; use one of {LATTICES}")
    if spec.lattice == "bct":
        a = spec.lattice_constant
        unit = Atoms(
            [spec.element] * 2,
            scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5)],
            cell=[a, a, a * spec.c_over_a],
            pbc=True,
        )
    else:
        unit = bulk(spec.element, spec.lattice, a=spec.lattice_constant, cubic=True)
    return unit.repeat(spec.supercell)


def species_counts(composition: Mapping[str, float], n_atoms: int) -> dict[str, int]:
    """Integer count of each element for ``n_atoms`` atoms in the proportions of ``composition``.

    The fractions are normalised (``{"Si": 1, "O": 2}`` is SiO2); counts are rounded by the
    largest-remainder rule, so they sum to ``n_atoms`` exactly. Every element with a positive
    fraction gets at least one atom, otherwise ValueError.
    """
    if n_atoms < 1:
        raise ValueError(f"n_atoms must be a positive integer, got {n_atoms}")
    if not composition:
        raise ValueError("composition is empty; give element fractions such as {'Si': 1, 'O': 2}")
    for symbol, fraction in composition.items():
        if symbol not in atomic_numbers:
            raise ValueError(f"composition: '{symbol}' is not a chemical element")
        if not np.isfinite(fraction) or fraction < 0:
            raise ValueError(f"composition: fraction of {symbol} is {fraction}; use a finite value >= 0")
    present = {symbol: float(fraction) for symbol, fraction in composition.items() if fraction > 0}
    if not present:
        raise ValueError(f"composition {dict(composition)} has no positive fraction")
    symbols = list(present)
    fractions = np.array([present[s] for s in symbols])
    exact = fractions / fractions.sum() * n_atoms
    counts = np.floor(exact).astype(int)
    # hand the remaining atoms to the largest remainders (stable: ties go to the first listed)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n_atoms - counts.sum()]] += 1
    empty = [s for s, c in zip(symbols, counts, strict=True) if c == 0]
    if empty:
        raise ValueError(
            f"composition {dict(composition)} with n_atoms={n_atoms} leaves no atom of {empty}; "
            f"use more atoms (at least {int(np.ceil(fractions.sum() / fractions.min()))})"
        )
    return {s: int(c) for s, c in zip(symbols, counts, strict=True)}


def decorate(atoms: Atoms, composition: Mapping[str, float], seed: int) -> Atoms:
    """A copy of ``atoms`` whose sites hold the elements of ``composition`` at random: a
    chemically random (unsegregated) alloy, reproducible from ``seed``."""
    counts = species_counts(composition, len(atoms))
    symbols = np.concatenate([[symbol] * count for symbol, count in sorted(counts.items())])
    decorated = atoms.copy()
    decorated.set_chemical_symbols(np.random.default_rng(seed).permutation(symbols).tolist())
    return decorated


def build_nanoparticle(spec: NanoparticleSpec) -> Atoms:
    """Cluster centred at the origin, no cell, no periodicity."""
    if spec.shells < 2:
        raise ValueError(f"shells must be at least 2, got {spec.shells}")
    if spec.shape == "icosahedron":
        cluster = Icosahedron(spec.element, spec.shells, latticeconstant=spec.lattice_constant)
    elif spec.shape == "cuboctahedron":
        layers = spec.shells - 1
        cluster = Octahedron(spec.element, 2 * layers + 1, layers, latticeconstant=spec.lattice_constant)
    elif spec.shape == "decahedron":
        cluster = Decahedron(
            spec.element, spec.shells, spec.shells, spec.reentrance, latticeconstant=spec.lattice_constant
        )
    else:
        raise ValueError(f"shape '{spec.shape}' is not supported; use one of {NANOPARTICLE_SHAPES}")
    atoms = Atoms(cluster.get_chemical_symbols(), positions=cluster.get_positions())
    atoms.positions -= atoms.positions.mean(axis=0)
    atoms.set_pbc(False)
    return atoms
