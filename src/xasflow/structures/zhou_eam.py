"""EAM potentials of Zhou, Johnson & Wadley, written as LAMMPS ``eam/alloy`` (setfl) files.

X. W. Zhou, R. A. Johnson and H. N. G. Wadley, Phys. Rev. B 69, 144113 (2004) fit one analytic
EAM per element (16 metals) and a mixing rule for the cross pairs, so any combination of those
metals (Pt-Cu, Pt-Ni, Pt-Pd, Pt-Au, Al-Cu, Cu-Ni, ...) has a potential. With r in Angstrom:

* pair, eV: ``phi(r) = A exp[-alpha(r/re - 1)] / (1 + (r/re - kappa)^20)
  - B exp[-beta(r/re - 1)] / (1 + (r/re - lambda)^20)``
* density: ``f(r) = fe exp[-beta(r/re - 1)] / (1 + (r/re - lambda)^20)``
* embedding, eV, with rho_n = 0.85 rho_e and rho_o = 1.15 rho_e:
  ``sum_i Fn_i (rho/rho_n - 1)^i`` below rho_n, ``sum_i F_i (rho/rho_e - 1)^i`` up to rho_o,
  ``Fe [1 - ln((rho/rho_s)^eta)] (rho/rho_s)^eta`` above.
* cross pair: ``phi_ab = [f_b/f_a phi_aa + f_a/f_b phi_bb] / 2``.

The parameters are those of the paper's table as distributed in LAMMPS ``tools/eam_database``
(file ``EAM_code``, revised with the NIST Interatomic Potentials Repository). One detail of that
table: for Pt, rho_n is 0.25 rho_e, not 0.85 rho_e; only with 0.25 do its Fn coefficients meet the
middle branch (with 0.85 the embedding energy jumps by 2.6 eV at rho_n). The grid and cutoff follow
the LAMMPS tool (cutoff sqrt(5) max re, i.e. the fcc fifth-neighbour shell; rho up to
max(2 max rho_e, 100)); unlike the tool, each element line carries its own lattice type and
lattice constant (LAMMPS reads only the atomic number and mass from it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xasflow.fileio import atomic_write_text

logger = logging.getLogger(__name__)

CITATION = "X. W. Zhou, R. A. Johnson, H. N. G. Wadley, Phys. Rev. B 69, 144113 (2004)"
CUTOFF_PER_RE = math.sqrt(5.0)  # cutoff / max(re): the fcc fifth-neighbour distance, as the LAMMPS tool
MIN_RHO_MAX = 100.0  # smallest tabulated density range, as the LAMMPS tool
LATTICES = ("fcc", "bcc", "hcp")


@dataclass(frozen=True)
class ZhouElement:
    """One element's parameters in the Zhou-Johnson-Wadley EAM.

    re (Angstrom) is the equilibrium nearest-neighbour distance; fe, rhoe, rhos are densities in
    the paper's arbitrary units; alpha, beta, kappa, lambda_, eta are dimensionless; A, B, Fn,
    F, Fe are in eV. ``Fn`` holds Fn0..Fn3 (below rho_n), ``F`` holds F0..F3 (rho_n to rho_o).
    ``rho_n_ratio`` and ``rho_o_ratio`` give rho_n and rho_o as fractions of rhoe. mass in
    g/mol. ``lattice`` is the ground-state structure ('fcc', 'bcc', 'hcp').
    """

    symbol: str
    atomic_number: int
    mass: float
    lattice: str
    re: float
    fe: float
    rhoe: float
    rhos: float
    alpha: float
    beta: float
    A: float
    B: float
    kappa: float
    lambda_: float
    Fn: tuple[float, float, float, float]
    F: tuple[float, float, float, float]
    eta: float
    Fe: float
    rho_n_ratio: float = 0.85
    rho_o_ratio: float = 1.15

    def __post_init__(self) -> None:
        if self.lattice not in LATTICES:
            raise ValueError(f"{self.symbol}: lattice '{self.lattice}' is not one of {', '.join(LATTICES)}")
        if len(self.Fn) != 4 or len(self.F) != 4:
            raise ValueError(
                f"{self.symbol}: Fn and F need 4 coefficients each, got {len(self.Fn)}, {len(self.F)}"
            )

    @property
    def rho_n(self) -> float:
        """Lower end of the middle embedding branch (density units)."""
        return self.rho_n_ratio * self.rhoe

    @property
    def rho_o(self) -> float:
        """Upper end of the middle embedding branch (density units)."""
        return self.rho_o_ratio * self.rhoe

    @property
    def lattice_constant(self) -> float:
        """Equilibrium lattice constant in Angstrom implied by re (hcp: a; c is ideal)."""
        if self.lattice == "fcc":
            return self.re * math.sqrt(2.0)
        if self.lattice == "bcc":
            return 2.0 * self.re / math.sqrt(3.0)
        return self.re


def _element(
    symbol: str,
    atomic_number: int,
    mass: float,
    lattice: str,
    values: tuple[float, ...],
    rho_n_ratio: float = 0.85,
) -> ZhouElement:
    """Build a ZhouElement from the paper's table row: re, fe, rhoe, rhos, alpha, beta, A, B,
    kappa, lambda, Fn0..Fn3, F0..F3, eta, Fe."""
    re, fe, rhoe, rhos, alpha, beta, A, B, kappa, lam = values[:10]
    return ZhouElement(
        symbol=symbol,
        atomic_number=atomic_number,
        mass=mass,
        lattice=lattice,
        re=re,
        fe=fe,
        rhoe=rhoe,
        rhos=rhos,
        alpha=alpha,
        beta=beta,
        A=A,
        B=B,
        kappa=kappa,
        lambda_=lam,
        Fn=tuple(values[10:14]),
        F=tuple(values[14:18]),
        eta=values[18],
        Fe=values[19],
        rho_n_ratio=rho_n_ratio,
    )


# fmt: off
_TABLE = (
    # symbol, Z, mass (g/mol), lattice,
    # (re, fe, rhoe, rhos, alpha, beta, A, B, kappa, lambda, Fn0..Fn3, F0..F3, eta, Fe)
    ("Cu", 29, 63.546, "fcc", (2.556162, 1.554485, 21.175871, 21.175395, 8.127620, 4.334731, 0.396620,
     0.548085, 0.308782, 0.756515, -2.170269, -0.263788, 1.088878, -0.817603, -2.19, 0.0, 0.561830,
     -2.100595, 0.310490, -2.186568)),
    ("Ag", 47, 107.8682, "fcc", (2.891814, 1.106232, 14.604100, 14.604144, 9.132010, 4.870405, 0.277758,
     0.419611, 0.339710, 0.750758, -1.729364, -0.255882, 0.912050, -0.561432, -1.75, 0.0, 0.744561,
     -1.150650, 0.783924, -1.748423)),
    ("Au", 79, 196.96654, "fcc", (2.885034, 1.529021, 19.991632, 19.991509, 9.516052, 5.075228, 0.229762,
     0.356666, 0.356570, 0.748798, -2.937772, -0.500288, 1.601954, -0.835530, -2.98, 0.0, 1.706587,
     -1.134778, 1.021095, -2.978815)),
    ("Ni", 28, 58.6934, "fcc", (2.488746, 2.007018, 27.562015, 27.562031, 8.383453, 4.471175, 0.429046,
     0.633531, 0.443599, 0.820658, -2.693513, -0.076445, 0.241442, -2.375626, -2.70, 0.0, 0.265390,
     -0.152856, 0.445470, -2.7)),
    ("Pd", 46, 106.42, "fcc", (2.750897, 1.595417, 21.335246, 21.940073, 8.697397, 4.638612, 0.406763,
     0.598880, 0.397263, 0.754799, -2.321006, -0.473983, 1.615343, -0.231681, -2.36, 0.0, 1.481742,
     -1.675615, 1.130000, -2.352753)),
    ("Pt", 78, 195.08, "fcc", (2.771916, 2.336509, 33.367564, 35.205357, 7.105782, 3.789750, 0.556398,
     0.696037, 0.385255, 0.770510, -1.455568, -2.149952, 0.528491, 1.222875, -4.17, 0.0, 3.010561,
     -2.420128, 1.450000, -4.145597)),
    ("Al", 13, 26.981539, "fcc", (2.863924, 1.403115, 20.418205, 23.195740, 6.613165, 3.527021, 0.314873,
     0.365551, 0.379846, 0.759692, -2.807602, -0.301435, 1.258562, -1.247604, -2.83, 0.0, 0.622245,
     -2.488244, 0.785902, -2.824528)),
    ("Pb", 82, 207.2, "fcc", (3.499723, 0.647872, 8.450154, 8.450063, 9.121799, 5.212457, 0.161219,
     0.236884, 0.250805, 0.764955, -1.422370, -0.210107, 0.682886, -0.529378, -1.44, 0.0, 0.702726,
     -0.538766, 0.935380, -1.439436)),
    ("Fe", 26, 55.847, "bcc", (2.481987, 1.885957, 20.041463, 20.041463, 9.818270, 5.236411, 0.392811,
     0.646243, 0.170306, 0.340613, -2.534992, -0.059605, 0.193065, -2.282322, -2.54, 0.0, 0.200269,
     -0.148770, 0.391750, -2.539945)),
    ("Mo", 42, 95.94, "bcc", (2.728100, 2.723710, 29.354065, 29.354065, 8.393531, 4.476550, 0.708787,
     1.120373, 0.137640, 0.275280, -3.692913, -0.178812, 0.380450, -3.133650, -3.71, 0.0, 0.875874,
     0.776222, 0.790879, -3.712093)),
    ("Ta", 73, 180.9479, "bcc", (2.860082, 3.086341, 33.787168, 33.787168, 8.489528, 4.527748, 0.611679,
     1.032101, 0.176977, 0.353954, -5.103845, -0.405524, 1.112997, -3.585325, -5.14, 0.0, 1.640098,
     0.221375, 0.848843, -5.141526)),
    ("W", 74, 183.84, "bcc", (2.740840, 3.487340, 37.234847, 37.234847, 8.900114, 4.746728, 0.882435,
     1.394592, 0.139209, 0.278417, -4.946281, -0.148818, 0.365057, -4.432406, -4.96, 0.0, 0.661935,
     0.348147, 0.582714, -4.961306)),
    ("Mg", 12, 24.305, "hcp", (3.196291, 0.544323, 7.132600, 7.132600, 10.228708, 5.455311, 0.137518,
     0.225930, 0.5, 1.0, -0.896473, -0.044291, 0.162232, -0.689950, -0.90, 0.0, 0.122838, -0.226010,
     0.431425, -0.899702)),
    ("Co", 27, 58.9332, "hcp", (2.505979, 1.975299, 27.206789, 27.206789, 8.679625, 4.629134, 0.421378,
     0.640107, 0.5, 1.0, -2.541799, -0.219415, 0.733381, -1.589003, -2.56, 0.0, 0.705845, -0.687140,
     0.694608, -2.559307)),
    ("Ti", 22, 47.88, "hcp", (2.933872, 1.863200, 25.565138, 25.565138, 8.775431, 4.680230, 0.373601,
     0.570968, 0.5, 1.0, -3.203773, -0.198262, 0.683779, -2.321732, -3.22, 0.0, 0.608587, -0.750710,
     0.558572, -3.219176)),
    ("Zr", 40, 91.224, "hcp", (3.199978, 2.230909, 30.879991, 30.879991, 8.559190, 4.564902, 0.424667,
     0.640054, 0.5, 1.0, -4.485793, -0.293129, 0.990148, -3.202516, -4.51, 0.0, 0.928602, -0.981870,
     0.597133, -4.509025)),
)
# fmt: on

# Pt's Fn coefficients join the middle branch at 0.25 rho_e (see the module docstring).
_RHO_N_RATIO = {"Pt": 0.25}

ZHOU_2004: dict[str, ZhouElement] = {
    symbol: _element(symbol, z, mass, lattice, values, _RHO_N_RATIO.get(symbol, 0.85))
    for symbol, z, mass, lattice, values in _TABLE
}


def get_element(symbol: str) -> ZhouElement:
    """The parameters of ``symbol``; ValueError naming it and the valid symbols if absent."""
    try:
        return ZHOU_2004[symbol]
    except KeyError:
        raise ValueError(
            f"element '{symbol}' is not in the Zhou-Johnson-Wadley 2004 EAM table; "
            f"valid elements: {', '.join(ZHOU_2004)}"
        ) from None


def _screened_exponential(
    r: np.ndarray, re: float, prefactor: float, decay: float, shift: float
) -> np.ndarray:
    """``prefactor exp[-decay (r/re - 1)] / (1 + (r/re - shift)^20)``, the paper's building block."""
    reduced = r / re
    return prefactor * np.exp(-decay * (reduced - 1.0)) / (1.0 + (reduced - shift) ** 20)


def electron_density(element: ZhouElement, r: np.ndarray | float) -> np.ndarray:
    """Density f(r) contributed by one atom at distances ``r`` (Angstrom, any shape)."""
    distance = np.asarray(r, dtype=float)
    return _screened_exponential(distance, element.re, element.fe, element.beta, element.lambda_)


def pair_potential(element: ZhouElement, r: np.ndarray | float) -> np.ndarray:
    """Pair energy phi(r) in eV between two atoms of ``element`` at distances ``r`` (Angstrom)."""
    distance = np.asarray(r, dtype=float)
    repulsion = _screened_exponential(distance, element.re, element.A, element.alpha, element.kappa)
    attraction = _screened_exponential(distance, element.re, element.B, element.beta, element.lambda_)
    return repulsion - attraction


def mixed_pair_potential(first: ZhouElement, second: ZhouElement, r: np.ndarray | float) -> np.ndarray:
    """Cross pair energy phi_ab(r) in eV by the paper's mixing rule (same element: phi_aa)."""
    if first == second:
        return pair_potential(first, r)
    density_a = electron_density(first, r)
    density_b = electron_density(second, r)
    return 0.5 * (
        density_b / density_a * pair_potential(first, r) + density_a / density_b * pair_potential(second, r)
    )


def embedding_energy(element: ZhouElement, rho: np.ndarray | float) -> np.ndarray:
    """Embedding energy F(rho) in eV at host densities ``rho`` (>= 0, any shape)."""
    density = np.asarray(rho, dtype=float)
    if np.any(density < 0):
        raise ValueError(f"{element.symbol}: embedding density must be >= 0, got min {density.min()}")
    energy = np.empty_like(density)
    low = density < element.rho_n
    high = density >= element.rho_o
    middle = ~low & ~high
    energy[low] = np.polynomial.polynomial.polyval(density[low] / element.rho_n - 1.0, element.Fn)
    energy[middle] = np.polynomial.polynomial.polyval(density[middle] / element.rhoe - 1.0, element.F)
    scaled_eta = (density[high] / element.rhos) ** element.eta
    energy[high] = element.Fe * (1.0 - np.log(scaled_eta)) * scaled_eta
    return energy


def _format_block(values: np.ndarray) -> str:
    """Values five to a line, as the DYNAMO setfl files are written."""
    text = [f"{value:.16e}" for value in values]
    return "\n".join(" ".join(text[start : start + 5]) for start in range(0, len(text), 5))


def setfl_text(symbols: Sequence[str], n_r: int = 2000, n_rho: int = 2000) -> str:
    """The setfl file for ``symbols`` (in that order) as text; see ``write_setfl``."""
    if isinstance(symbols, str):
        symbols = [symbols]
    if not symbols:
        raise ValueError(f"no elements given; valid elements: {', '.join(ZHOU_2004)}")
    duplicates = sorted({symbol for symbol in symbols if list(symbols).count(symbol) > 1})
    if duplicates:
        raise ValueError(f"elements {duplicates} are listed more than once in {list(symbols)}")
    for count, name in ((n_r, "n_r"), (n_rho, "n_rho")):
        if count < 10:
            raise ValueError(f"{name} = {count} grid points is too few; use at least 10 (2000 is usual)")
    elements = [get_element(symbol) for symbol in symbols]

    cutoff = CUTOFF_PER_RE * max(element.re for element in elements)
    rho_max = max(2.0 * max(element.rhoe for element in elements), MIN_RHO_MAX)
    dr = cutoff / (n_r - 1)
    drho = rho_max / (n_rho - 1)
    r = np.arange(n_r) * dr
    rho = np.arange(n_rho) * drho

    lines = [
        f"Zhou-Johnson-Wadley EAM: {CITATION}",
        "Cross pairs by the paper's mixing rule phi_ab = (f_b/f_a phi_aa + f_a/f_b phi_bb)/2",
        "Written by xasflow.structures.zhou_eam from the published parameter table",
        f"{len(elements)} {' '.join(symbols)}",
        f"{n_rho} {drho:.16e} {n_r} {dr:.16e} {cutoff:.16e}",
    ]
    for element in elements:
        lines.append(
            f"{element.atomic_number} {element.mass} {element.lattice_constant:.6f} {element.lattice}"
        )
        lines.append(_format_block(embedding_energy(element, rho)))
        lines.append(_format_block(electron_density(element, r)))
    for i, first in enumerate(elements):
        for second in elements[: i + 1]:
            lines.append(_format_block(r * mixed_pair_potential(first, second, r)))
    return "\n".join(lines) + "\n"


def write_setfl(symbols: Sequence[str], path: str | Path, n_r: int = 2000, n_rho: int = 2000) -> Path:
    """Write a LAMMPS ``eam/alloy`` (setfl) file for ``symbols`` to ``path`` and return it.

    Elements appear in the file in the order given (use the same order in ``pair_coeff``).
    ``n_r`` points span r from 0 to the cutoff (sqrt(5) times the largest re, Angstrom);
    ``n_rho`` points span rho from 0 to max(2 max rho_e, 100). Pair functions are stored as
    r*phi(r) (eV Angstrom) for each pair i >= j. The file is written to a temporary name in the
    same folder and renamed, so a reader never sees half a file. Raises ValueError naming an
    unknown element and listing the valid ones.
    """
    symbols = [symbols] if isinstance(symbols, str) else list(symbols)
    text = setfl_text(symbols, n_r=n_r, n_rho=n_rho)
    target = atomic_write_text(path, text)
    logger.info("wrote Zhou 2004 EAM setfl for %s to %s", "-".join(symbols), target)
    return target
