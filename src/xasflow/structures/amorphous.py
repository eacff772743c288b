"""Amorphous starting structures: random packings at a given density and a melt-quench protocol.

A random packing of the right composition and density is melted far above the glass
transition and quenched by MD (``lammps_runner.run_md`` with ``melt_quench_stages`` as its
``pre_stages``); the periodic cell keeps the packing's volume (NVT), so the glass has the
density that was asked for. Distances are in Angstrom, densities in g/cm^3, temperatures in K.

Which potential for SiOx (measured with the potentials shipped with LAMMPS): silica (x = 2)
needs ``SiO.1994.vashishta`` (pair style vashishta; ~96-97 % fourfold Si after a 200 ps quench
of 192 atoms). Munetoh's ``SiO.tersoff`` leaves 20-35 % of Si three- or fivefold at any
affordable cooling rate (its O-O repulsion ends at 2.0 A, so O crowd round Si), but it is the
only shipped file with Si-Si bonds, so it is the one for x < 2: Vashishta's fixed ionic charges
keep Si apart and unbalance the charge when x < 2.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from xasflow.structures.builders import species_counts
from xasflow.structures.labels import LabelParams, compute_site_labels
from xasflow.structures.lammps_runner import MDStage

logger = logging.getLogger(__name__)

# 1 amu per cubic Angstrom in g/cm^3 (1.66053907e-24 g / 1e-24 cm^3)
AMU_PER_A3_IN_G_PER_CM3 = 1.66053906660
DEFAULT_MIN_DISTANCE = 1.5  # Angstrom, below the Si-O bond (1.61 A) and the O-O edge (2.6 A)
MAX_PLACEMENT_ATTEMPTS = 10_000  # random trials per atom before a packing is declared impossible

# Densities (g/cm^3) the SiOx interpolation runs through: amorphous Si, SiO, silica glass.
SIOX_DENSITY_POINTS = ((0.0, 2.33), (1.0, 2.18), (2.0, 2.20))


def cubic_cell_length(symbols_counts: Mapping[str, int], density: float) -> float:
    """Side (Angstrom) of the cube holding ``symbols_counts`` atoms at ``density`` (g/cm^3)."""
    if not np.isfinite(density) or density <= 0:
        raise ValueError(f"density must be a positive number of g/cm^3, got {density}")
    mass_amu = sum(atomic_masses[atomic_numbers[s]] * n for s, n in symbols_counts.items())
    volume = mass_amu * AMU_PER_A3_IN_G_PER_CM3 / density
    return float(volume ** (1.0 / 3.0))


def _pair_min_distances(
    symbols: list[str], min_distance: float | Mapping[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """Minimum separation for every (ordered) pair of the elements in ``symbols``."""
    elements = sorted(set(symbols))
    if not isinstance(min_distance, Mapping):
        value = float(min_distance)
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"min_distance must be a distance >= 0 Angstrom, got {min_distance}")
        return {(a, b): value for a in elements for b in elements}
    table: dict[tuple[str, str], float] = {}
    for a in elements:
        for b in elements:
            value = min_distance.get((a, b), min_distance.get((b, a)))
            if value is None:
                raise ValueError(
                    f"min_distance has no entry for the pair ({a}, {b}); "
                    f"give every pair of {elements}, e.g. {{('{a}', '{b}'): 1.5}}"
                )
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"min_distance for ({a}, {b}) is {value}; use a distance >= 0 Angstrom")
            table[(a, b)] = float(value)
    return table


def build_random_packing(
    composition: Mapping[str, float],
    n_atoms: int,
    density: float,
    seed: int,
    min_distance: float | Mapping[tuple[str, str], float] = DEFAULT_MIN_DISTANCE,
) -> Atoms:
    """A periodic cube of ``n_atoms`` atoms placed at random, no two closer than ``min_distance``.

    ``composition`` gives element fractions (normalised; SiOx is ``{"Si": 1, "O": x}``), turned
    into counts by ``species_counts``. The cube's side makes the mass density ``density``
    (g/cm^3, from ASE's atomic masses). ``min_distance`` (Angstrom) is one value for all pairs
    or a mapping ``{("Si", "O"): 1.5, ...}`` with every pair of elements (either order). Atoms
    are drawn uniformly by rejection sampling with minimum-image distances, in a random order of
    species, from ``numpy.random.default_rng(seed)``: the same arguments give the same
    structure. Raises ValueError when the atoms cannot be placed (density too high for the
    minimum distance and n_atoms).
    """
    counts = species_counts(composition, n_atoms)
    length = cubic_cell_length(counts, density)
    symbols = [s for s, n in counts.items() for _ in range(n)]
    pair_min = _pair_min_distances(symbols, min_distance)
    rng = np.random.default_rng(seed)
    symbols = [symbols[i] for i in rng.permutation(len(symbols))]
    elements = sorted(counts)
    element_index = np.array([elements.index(s) for s in symbols])
    # min_table[i, j]: minimum separation of element i and element j
    min_table = np.array([[pair_min[(a, b)] for b in elements] for a in elements])

    positions = np.empty((n_atoms, 3))
    for atom in range(n_atoms):
        needed = min_table[element_index[atom], element_index[:atom]]
        for _ in range(MAX_PLACEMENT_ATTEMPTS):
            trial = rng.random(3) * length
            delta = positions[:atom] - trial
            delta -= length * np.round(delta / length)
            if np.all(np.einsum("ij,ij->i", delta, delta) >= needed**2):
                positions[atom] = trial
                break
        else:
            raise ValueError(
                f"cannot place atom {atom + 1} of n_atoms={n_atoms} at density={density} g/cm^3 "
                f"(cube side {length:.2f} A) with min_distance={min_distance} A after "
                f"{MAX_PLACEMENT_ATTEMPTS} tries; lower the density or the minimum distance"
            )
    atoms = Atoms(symbols=symbols, positions=positions, cell=np.eye(3) * length, pbc=True)
    logger.debug("random packing %s: %d atoms, side %.3f A", atoms.get_chemical_formula(), n_atoms, length)
    return atoms


def siox_composition(x: float) -> dict[str, float]:
    """Element fractions of SiOx, ``{"Si": 1, "O": x}``, for 0 < x <= 2."""
    if not np.isfinite(x) or x <= 0 or x > 2:
        raise ValueError(f"SiOx needs 0 < x <= 2, got x={x}")
    return {"Si": 1.0, "O": float(x)}


def siox_density(x: float) -> float:
    """Density (g/cm^3) of amorphous SiOx, interpolated linearly in x through ``SIOX_DENSITY_POINTS``.

    Si 2.33, SiO 2.18 (measured 2.1-2.2), silica glass 2.20; 0 <= x <= 2.
    """
    if not np.isfinite(x) or x < 0 or x > 2:
        raise ValueError(f"SiOx density is tabulated for 0 <= x <= 2, got x={x}")
    xs, densities = zip(*SIOX_DENSITY_POINTS, strict=True)
    return float(np.interp(x, xs, densities))


def melt_quench_stages(
    melt_temperature: float, final_temperature: float, melt_steps: int, quench_steps: int
) -> tuple[MDStage, ...]:
    """The melt-quench as ``MDParams.pre_stages``: hold at ``melt_temperature`` (K) for
    ``melt_steps``, then cool linearly to ``final_temperature`` (K) over ``quench_steps``.

    Both stages are NVT so the glass keeps the density of the starting packing; the cooling
    rate is (melt - final) / (quench_steps * timestep). Measured for SiO2 (Vashishta 1994,
    timestep 2 fs, 4000 K for 2500 steps, then 100000 steps to 300 K): 96-97 % fourfold Si
    with 192 atoms (about 50 s on one core), 94-97 % with 96 atoms (about 25 s).
    """
    if melt_temperature <= final_temperature:
        raise ValueError(
            f"melt_temperature {melt_temperature} K must exceed final_temperature {final_temperature} K"
        )
    if final_temperature <= 0:
        raise ValueError(f"final_temperature must be positive (K), got {final_temperature}")
    if melt_steps < 1 or quench_steps < 1:
        raise ValueError(f"melt_steps and quench_steps must be positive, got {melt_steps} and {quench_steps}")
    return (
        MDStage(melt_steps, melt_temperature, melt_temperature, ensemble="nvt"),
        MDStage(quench_steps, melt_temperature, final_temperature, ensemble="nvt"),
    )


def silicon_valence(atoms: Atoms, si_o_cutoff: float) -> np.ndarray:
    """Number of O atoms within ``si_o_cutoff`` (Angstrom) of each Si, shape (n_Si,), in Si order.

    Periodic cells use neighbours over periodic images. The Si oxidation state
    in SiOx is this count (each Si-O bond moves about one electron) when there are no O-O bonds.
    """
    if si_o_cutoff <= 0:
        raise ValueError(f"si_o_cutoff must be a positive distance in Angstrom, got {si_o_cutoff}")
    # the valence label of the shared label module, restricted to Si
    params = LabelParams(pair_cutoffs=((("Si", "O"), si_o_cutoff),), valence_ligand="O", r_max=si_o_cutoff)
    labels = compute_site_labels(atoms, params)
    return labels.valence[labels.element == "Si"]
