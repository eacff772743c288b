"""Starting structures for MD, built with ASE from a system's config entry.

Every builder is a pure function of its parameters; the returned ``Atoms`` is a new object.
"""

from __future__ import annotations

from dataclasses import dataclass

from ase import Atoms
from ase.build import bulk
from ase.cluster import Decahedron, Icosahedron, Octahedron

NANOPARTICLE_SHAPES = ("cuboctahedron", "icosahedron", "decahedron")


@dataclass(frozen=True)
class BulkSpec:
    """A periodic crystal: ``lattice`` is 'fcc' or 'bcc', lattice_constant in Angstrom."""

    element: str
    lattice: str
    lattice_constant: float
    supercell: tuple[int, int, int]


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
    """Cubic conventional cell of ``spec.lattice`` repeated ``spec.supercell`` times (periodic)."""
    if spec.lattice not in ("fcc", "bcc"):
        raise ValueError(f"lattice '{spec.lattice}' is not supported; use 'fcc' or 'bcc'")
    unit = bulk(spec.element, spec.lattice, a=spec.lattice_constant, cubic=True)
    return unit.repeat(spec.supercell)


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
