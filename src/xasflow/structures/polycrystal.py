"""Nanocrystalline starting structures: Voronoi polycrystals in a periodic box.

Grain centres are drawn uniformly in the box, each grain gets a uniformly random orientation
(uniform on SO(3)), and every point of the box belongs to the grain whose centre is nearest
under the minimum-image convention (a periodic Voronoi tessellation). Each grain is filled
with its rotated lattice; where two grains meet, one atom of every pair closer than a minimum
distance is removed. The result is a starting structure: relax and anneal it with MD so the
grain boundaries find their low-energy structure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from scipy.spatial import Voronoi, cKDTree
from scipy.spatial.transform import Rotation

logger = logging.getLogger(__name__)

# Fractional positions of the atoms in the cubic conventional cell, shape (n_basis, 3).
CUBIC_BASES = {
    "fcc": np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]),
    "bcc": np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]),
}
# Nearest-neighbour distance in units of the cubic lattice constant.
NEAREST_NEIGHBOUR_FRACTION = {"fcc": 1.0 / np.sqrt(2.0), "bcc": np.sqrt(3.0) / 2.0}
MIN_BOX_CELLS = 2  # a box edge must hold at least this many conventional cells


def build_polycrystal(
    element: str,
    lattice: str,
    lattice_constant: float,
    box_length: float | Sequence[float],
    n_grains: int,
    seed: int,
    min_distance_fraction: float = 0.6,
) -> Atoms:
    """Periodic Voronoi polycrystal of one element with randomly oriented grains.

    element: chemical symbol given to every atom (decorate an alloy afterwards).
    lattice: 'fcc' or 'bcc'; lattice_constant: cubic lattice constant a in Angstrom.
    box_length: edge of the cubic periodic box in Angstrom, or the three edges of an
    orthorhombic box, shape (3,). Each edge must be at least 2 a.
    n_grains: number of grains (>= 1). Centres are uniform in the box; a grain whose centre
    lands close to another's can be small, and in a small box may lose all its atoms.
    seed: seed of the numpy Generator that draws centres and orientations; the structure is a
    pure function of the arguments.
    min_distance_fraction: of every pair of atoms closer than this fraction of the
    nearest-neighbour distance (a/sqrt(2) for fcc, a sqrt(3)/2 for bcc) one atom is removed,
    in (0, 1). Two lattices cut by a plane give about rho^2 pi d^4 / 4 such pairs per unit area
    (rho the number density, d the distance): 0.6 removes ~0.025 atoms/A^2 in Al, close to the
    excess volume of relaxed high-angle boundaries (a few tenths of an Angstrom); 0.7 removes
    twice that, leaving a 30 A box with four grains 10 % short of atoms.

    Returns periodic ``Atoms`` with an orthorhombic cell and ``arrays['grain']`` (int,
    shape (n_atoms,)), the index in [0, n_grains) of the grain each atom was cut from.
    """
    box = _box_lengths(box_length)
    if lattice not in CUBIC_BASES:
        raise ValueError(f"lattice '{lattice}' is not supported; use one of {sorted(CUBIC_BASES)}")
    if not lattice_constant > 0:
        raise ValueError(f"lattice_constant must be positive (Angstrom), got {lattice_constant}")
    if isinstance(n_grains, bool) or not isinstance(n_grains, int | np.integer) or n_grains < 1:
        raise ValueError(f"n_grains must be an integer >= 1, got {n_grains!r}")
    if not 0 < min_distance_fraction < 1:
        raise ValueError(f"min_distance_fraction must lie in (0, 1), got {min_distance_fraction}")
    if np.any(box < MIN_BOX_CELLS * lattice_constant):
        raise ValueError(
            f"box edges {box.tolist()} Angstrom are too small for a polycrystal of lattice constant "
            f"{lattice_constant}; each edge must be at least {MIN_BOX_CELLS * lattice_constant} Angstrom"
        )

    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.0, 1.0, size=(n_grains, 3)) * box
    rotations = Rotation.random(n_grains, random_state=rng).as_matrix()  # (n_grains, 3, 3)

    centre_tree = cKDTree(centres, boxsize=box)
    radii = _voronoi_radii(centres, box)
    basis = CUBIC_BASES[lattice] * lattice_constant
    grain_positions = []
    grain_ids = []
    for grain, (centre, rotation, radius) in enumerate(zip(centres, rotations, radii, strict=True)):
        positions = _grain_atoms(centre, rotation, radius, basis, lattice_constant, box)
        _, nearest = centre_tree.query(positions)
        positions = positions[nearest == grain]
        grain_positions.append(positions)
        grain_ids.append(np.full(len(positions), grain, dtype=np.int64))
    positions = np.concatenate(grain_positions)
    grain = np.concatenate(grain_ids)

    min_distance = min_distance_fraction * NEAREST_NEIGHBOUR_FRACTION[lattice] * lattice_constant
    keep = _drop_close_atoms(positions, box, min_distance)
    logger.debug(
        "polycrystal %s %s: %d grains, %d atoms, %d removed closer than %.3f A",
        element,
        lattice,
        n_grains,
        int(keep.sum()),
        int((~keep).sum()),
        min_distance,
    )
    atoms = Atoms(symbols=[element] * int(keep.sum()), positions=positions[keep], cell=np.diag(box), pbc=True)
    atoms.new_array("grain", grain[keep])
    return atoms


def _box_lengths(box_length: float | Sequence[float]) -> np.ndarray:
    """Box edges in Angstrom, shape (3,), from one number (cubic) or three."""
    box = np.asarray(box_length, dtype=np.float64)
    if box.ndim == 0:
        box = np.full(3, float(box))
    if box.shape != (3,) or not np.all(np.isfinite(box)) or np.any(box <= 0):
        raise ValueError(
            f"box_length must be a positive number or three positive numbers, got {box_length!r}"
        )
    return box


def _voronoi_radii(centres: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Largest distance (Angstrom) from each centre to a vertex of its periodic Voronoi cell.

    The tessellation of the centres and their 26 nearest periodic images is enough: the cell
    of a centre lies within half a box edge of it along each axis. Shape (n_grains,).
    """
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
    shifts = shifts[np.argsort(np.abs(shifts).sum(axis=1), kind="stable")]  # (0, 0, 0) first
    images = (centres[None, :, :] + shifts[:, None, :] * box).reshape(-1, 3)
    # QJ joggles the input: the images of a single centre form a cubic grid, which is degenerate
    tessellation = Voronoi(images, qhull_options="Qbb Qc Qz QJ")
    radii = np.empty(len(centres))
    for grain, centre in enumerate(centres):
        region = tessellation.regions[tessellation.point_region[grain]]
        vertices = tessellation.vertices[[index for index in region if index >= 0]]
        radii[grain] = np.linalg.norm(vertices - centre, axis=1).max()
    # the joggle moves vertices by ~1e-11 relative; the margin also covers rounding
    return radii * (1.0 + 1e-6) + 1e-6


def _grain_atoms(
    centre: np.ndarray,
    rotation: np.ndarray,
    radius: float,
    basis: np.ndarray,
    lattice_constant: float,
    box: np.ndarray,
) -> np.ndarray:
    """Sites of the rotated lattice around ``centre`` that may lie in its Voronoi cell.

    Sites within ``radius`` of the centre and within half a box edge along each axis (so each
    site is the minimum image of its offset), wrapped into the box, shape (n_sites, 3).
    """
    n_cells = int(np.ceil(radius / lattice_constant)) + 1
    cell_range = np.arange(-n_cells, n_cells + 1, dtype=np.float64) * lattice_constant
    cells = np.stack(np.meshgrid(cell_range, cell_range, cell_range, indexing="ij"), axis=-1).reshape(-1, 3)
    offsets = (cells[:, None, :] + basis[None, :, :]).reshape(-1, 3)
    offsets = offsets[np.einsum("ij,ij->i", offsets, offsets) <= radius * radius]
    offsets = offsets @ rotation.T
    half = box / 2
    offsets = offsets[np.all((offsets >= -half) & (offsets < half), axis=1)]
    positions = np.mod(centre + offsets, box)
    return np.where(positions >= box, positions - box, positions)  # mod can round up to box


def _drop_close_atoms(positions: np.ndarray, box: np.ndarray, min_distance: float) -> np.ndarray:
    """Keep-mask, shape (n_atoms,): of every pair closer than ``min_distance`` one atom goes.

    Pairs are visited in sorted order and the later atom of a pair is removed unless one of
    the two is already gone, so the result is deterministic and removes no more than needed
    for chains of close atoms.
    """
    pairs = cKDTree(positions, boxsize=box).query_pairs(min_distance, output_type="ndarray")
    keep = np.ones(len(positions), dtype=bool)
    if len(pairs) == 0:
        return keep
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    for first, second in pairs:
        if keep[first] and keep[second]:
            keep[second] = False
    return keep
