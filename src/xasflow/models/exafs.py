"""EXAFS chi(k) from normalized mu(E), with Larch's ``autobk`` (as Athena does), for chi models.

A model with ``TrainParams.representation == "chi"`` reads k-weighted chi(k) on a uniform k grid
instead of mu(E). The simulated training spectra and a measured spectrum go through the same
function, :func:`chi_of_k`, on energies relative to E0 (so E0 = 0 here), after the same
normalization to unit edge step. The photoelectron wavenumber is k = sqrt(E / KTOE), E in eV
above E0 and KTOE = hbar^2 / 2 m_e = 3.81 eV Angstrom^2 (Larch's constant): k = 11 / Angstrom
is 461 eV above the edge.
"""

from __future__ import annotations

import larch
import numpy as np
from larch import Group
from larch.xafs import KTOE, autobk

from xasflow.errors import UserError

#: R (Angstrom) below which Fourier components of chi count as background (Larch ``rbkg``):
#: about half the shortest first-shell distance of metals and oxides (1.9-2.5 Angstrom).
AUTOBK_RBKG = 1.0
#: k-weight of the Fourier transform in which autobk minimizes the low-R part. Fixed, so chi
#: itself does not depend on the k-weight a model reads; 2 balances low and high k (on a
#: synthetic two-shell spectrum it recovers chi best of 0..3; 0 leaves low-k background in).
AUTOBK_KWEIGHT = 2
#: Start (eV relative to E0) of the grid every spectrum is interpolated onto before autobk
#: (:func:`autobk_energy_grid`): autobk reads mu from E0 up, the points below only anchor the
#: grid, and every normalized spectrum reaches 10 eV below E0 (``normalize`` refuses less).
AUTOBK_GRID_START_EV = -10.0
#: Largest step (eV) of that grid; the simulated datasets use 1 eV.
AUTOBK_GRID_STEP_EV = 1.0


def energy_of_k(k: float) -> float:
    """Energy above E0, eV, of photoelectron wavenumber ``k`` (1/Angstrom): ``KTOE * k**2``."""
    return float(KTOE * k * k)


def autobk_energy_grid(k_max: float) -> np.ndarray:
    """The energies (eV relative to E0) :func:`chi_of_k` hands to autobk, shape (n,): from
    :data:`AUTOBK_GRID_START_EV` to exactly ``energy_of_k(k_max)`` in steps of at most
    :data:`AUTOBK_GRID_STEP_EV`. One grid for every spectrum: autobk's spline reads one point
    past k_max when there is one, so a spectrum that goes on beyond k_max (a simulated
    dataset to +520 eV) would otherwise get another chi near k_max (by ~5 % of its largest value
    on a synthetic spectrum) than one that stops there (a measurement put on this grid)."""
    end = energy_of_k(k_max)
    points = int(np.ceil((end - AUTOBK_GRID_START_EV) / AUTOBK_GRID_STEP_EV)) + 1
    return np.linspace(AUTOBK_GRID_START_EV, end, points)


def check_energy_range(energy: np.ndarray, k_max: float) -> None:
    """Raise ``UserError`` unless the energies (eV relative to E0, increasing) start at or below
    E0 and reach E0 + :func:`energy_of_k` (``k_max``); the message names the eV needed and reached."""
    needed = energy_of_k(k_max)
    if not energy[0] <= 0.0:
        raise UserError(f"the spectrum starts at {energy[0]:+.1f} eV from E0; chi(k) needs data from E0 up")
    if energy[-1] < needed - 1e-6:
        reached_k = np.sqrt(max(float(energy[-1]), 0.0) / KTOE)
        raise UserError(
            f"the spectrum ends at E0 + {energy[-1]:.1f} eV (k = {reached_k:.2f} /Angstrom); chi(k) up to "
            f"k_max = {k_max:g} /Angstrom needs data to E0 + {needed:.1f} eV"
        )


def background_description() -> str:
    """How chi was made, for the model card: ``"Larch autobk, rbkg 1.0"`` and the rest."""
    return (
        f"Larch autobk, rbkg {AUTOBK_RBKG}, kweight {AUTOBK_KWEIGHT}, k 0..k_max, e0 = E0, "
        f"edge step 1 (xraylarch {larch.__version__})"
    )


def chi_of_k(
    energy: np.ndarray,
    mu: np.ndarray,
    k_grid: np.ndarray,
    k_weight: int,
    rbkg: float = AUTOBK_RBKG,
) -> np.ndarray:
    """k-weighted EXAFS ``k**k_weight * chi(k)`` of normalized spectra, on ``k_grid``.

    Each spectrum is interpolated linearly onto :func:`autobk_energy_grid` (``k_max``) and
    goes through ``larch.xafs.autobk`` alone (a measured spectrum gives the same chi as it
    would in a batch, whatever grid it came on) with:

    - ``ek0 = 0``: ``energy`` is relative to E0, and E0 is the one the spectra were aligned on;
    - ``edge_step = 1``: ``mu`` is already normalized to unit edge step (Larch ``pre_edge``),
      so no second normalization runs inside autobk;
    - ``rbkg`` (default :data:`AUTOBK_RBKG` = 1 Angstrom) and ``kweight`` :data:`AUTOBK_KWEIGHT`
      (2) for the background spline, whose k range is 0..``k_grid[-1]`` (``kmax``); every other
      autobk setting is Larch's default (``kmin`` 0, Hanning window ``dk`` 0.1, clamps 0 / 1)
      and the version is recorded in the model card (:func:`background_description`).

    autobk's chi (on its 0.05 / Angstrom grid) is interpolated linearly onto ``k_grid`` and
    multiplied by ``k_grid ** k_weight``.

    Parameters
    ----------
    energy:    (n_energy,) increasing energies, eV relative to E0.
    mu:        (n, n_energy) or (n_energy,) normalized mu(E) on ``energy``.
    k_grid:    (n_k,) increasing wavenumbers, 1/Angstrom, the last one k_max.
    k_weight:  power of k multiplied into chi (0..3).
    rbkg:      Angstrom, see above.

    Returns
    -------
    (n, n_k) or (n_k,) float64, as ``mu`` is 2-D or 1-D.

    Raises
    ------
    UserError
        The energies start above E0 or end below E0 + KTOE * k_max**2 (the message names the
        energy reached and the one needed).
    """
    energy = np.asarray(energy, dtype=np.float64)
    k_grid = np.asarray(k_grid, dtype=np.float64)
    spectra = np.asarray(mu, dtype=np.float64)
    single = spectra.ndim == 1
    spectra = np.atleast_2d(spectra)
    if spectra.shape[1] != energy.size:
        raise ValueError(f"mu has shape {np.shape(mu)}; expected (n, {energy.size}) on the energy grid")
    k_max = float(k_grid[-1])
    check_energy_range(energy, k_max)
    grid = autobk_energy_grid(k_max)
    chi = np.empty((spectra.shape[0], k_grid.size))
    for index, spectrum in enumerate(spectra):
        group = Group()
        autobk(
            grid,
            np.interp(grid, energy, spectrum),
            group=group,
            ek0=0.0,
            edge_step=1.0,
            rbkg=rbkg,
            kweight=AUTOBK_KWEIGHT,
            kmax=k_max,
        )
        if getattr(group, "chi", None) is None:  # autobk prints its complaint and returns nothing
            raise UserError(f"Larch autobk found no background for spectrum {index} (see its message above)")
        chi[index] = np.interp(k_grid, group.k, group.chi)
    chi *= k_grid**k_weight
    return chi[0] if single else chi
