"""Edge-step normalization of every pixel of an energy stack, vectorized over a tile.

The definitions are those of :func:`xasflow.experiment.normalization.normalize` (Larch's
``pre_edge``, as Athena shows it): a line is fitted to mu(E) on the pre-edge range, a
polynomial of degree ``post_edge_degree`` to mu(E) minus that line on the post-edge range; the
edge step is the polynomial at the energy point nearest E0, and
``norm = (mu - pre_edge_line) / edge_step``. Ranges are eV relative to E0, and the fit points
are chosen with Larch's own ``index_of`` / ``index_nearest``, so one pixel normalized here equals
the same spectrum normalized with ``pre_edge`` (checked in the tests).

One E0 and one pair of ranges serve the whole stack (a per-pixel E0 from the derivative would
follow the noise): they are resolved once with the project's ``normalize`` on a representative
spectrum (by default the mean of the reference spectra on the stack's energy grid), which also
applies its checks (enough data below and above the edge, ranges that fit the data).

Because both fits are linear in mu, the pre-edge line and the step of all pixels are matrix
products with operators computed once per energy grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from larch.math import index_nearest, index_of
from larch.xafs import preedge

from xasflow.experiment.normalization import GRID_OVERHANG_TOLERANCE_EV, MIN_POINTS_PER_RANGE, normalize
from xasflow.spectrum import Spectrum

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeNormalization:
    """How every pixel of a stack is normalized.

    Attributes:
        e0: edge energy, eV, on the stack's (absolute) energy axis.
        pre_edge_range: (pre1, pre2), eV relative to e0, range of the pre-edge line.
        norm_range: (norm1, norm2), eV relative to e0, range of the post-edge polynomial.
        post_edge_degree: degree of the post-edge polynomial (0: constant, 1: line, as Larch's
            ``nnorm``).
        flatten: also remove the post-edge polynomial's slope above E0 (Larch's ``flat``).
    """

    e0: float
    pre_edge_range: tuple[float, float]
    norm_range: tuple[float, float]
    post_edge_degree: int = 1
    flatten: bool = False


def resolve_normalization(
    energy: np.ndarray,
    mu: np.ndarray,
    source: str,
    e0: float | None = None,
    pre_edge_range: tuple[float | None, float | None] = (None, None),
    norm_range: tuple[float | None, float | None] = (None, None),
    post_edge_degree: int | None = None,
    flatten: bool = False,
) -> EdgeNormalization:
    """Fix E0, the fit ranges and the post-edge degree of a stack from one representative spectrum.

    Args:
        energy: the stack's energies, eV, shape (n_energy,), increasing.
        mu: a representative raw spectrum on those energies (the mean of the references), shape
            (n_energy,).
        source: what ``mu`` is, for messages.
        e0: edge energy, eV; None finds it (maximum of d(mu)/dE, Larch ``find_e0``).
        pre_edge_range, norm_range: eV relative to e0; None ends take Larch's defaults for this
            grid, exactly as :func:`~xasflow.experiment.normalization.normalize` does.
        post_edge_degree: None takes Larch's rule for the post-edge range width (0 below 30 eV,
            1 below 300 eV, else 2).

    Raises:
        SpectrumReadError: the grid does not reach far enough below or above the edge, or a
            range holds too few points (the messages of ``normalize``).
    """
    spectrum = Spectrum(energy, mu, source=source, kind="measured")
    resolved = normalize(spectrum, e0, *pre_edge_range, *norm_range)
    if post_edge_degree is None:
        details = preedge(
            spectrum.energy,
            spectrum.mu,
            e0=resolved.e0,
            pre1=resolved.pre_edge_range[0],
            pre2=resolved.pre_edge_range[1],
            norm1=resolved.norm_range[0],
            norm2=resolved.norm_range[1],
        )
        post_edge_degree = int(details["nnorm"])
    normalization = EdgeNormalization(
        e0=resolved.e0,
        pre_edge_range=resolved.pre_edge_range,
        norm_range=resolved.norm_range,
        post_edge_degree=post_edge_degree,
        flatten=flatten,
    )
    logger.info("stack normalization from %s: %s", source, normalization)
    return normalization


def _fit_points(energy: np.ndarray, e0: float, low: float, high: float, what: str) -> slice:
    """The points Larch's pre_edge fits on for the range e0+low .. e0+high."""
    points = slice(int(index_of(energy, e0 + low)), int(index_nearest(energy, e0 + high)))
    if points.stop - points.start < MIN_POINTS_PER_RANGE:
        raise ValueError(
            f"the {what} range {low:+.1f}..{high:+.1f} eV around e0={e0:.1f} eV holds "
            f"{points.stop - points.start} points of the stack's energy grid; at least {MIN_POINTS_PER_RANGE}"
        )
    return points


def _polynomial(x: np.ndarray, degree: int) -> np.ndarray:
    return np.vander(x, degree + 1, increasing=True)


class NormalizedSpectra(NamedTuple):
    """Spectra of n pixels normalized by :class:`TileNormalizer`.

    Attributes:
        norm: normalized spectra, shape (n, n_energy).
        edge_step: edge step in raw mu units, shape (n,).
        step_noise: 1-sigma noise of edge_step, shape (n,), from the scatter of mu about the
            pre-edge line (white noise assumed; the pre-edge region is the least absorbing, so
            this is a lower bound under counting noise).
    """

    norm: np.ndarray
    edge_step: np.ndarray
    step_noise: np.ndarray


class TileNormalizer:
    """The linear operators of one :class:`EdgeNormalization` on one energy grid.

    ``normalizer(mu)`` normalizes spectra of shape (n_pixels, n_energy).
    """

    def __init__(self, energy: np.ndarray, normalization: EdgeNormalization):
        self.energy = np.asarray(energy, dtype=float)
        self.normalization = normalization
        e0 = normalization.e0
        relative = self.energy - e0  # centred on e0 for well-conditioned polynomial fits
        self.pre_points = _fit_points(self.energy, e0, *normalization.pre_edge_range, "pre-edge")
        self.post_points = _fit_points(self.energy, e0, *normalization.norm_range, "post-edge")
        self.edge_index = int(index_nearest(self.energy, e0))
        # least-squares coefficients are mu[:, points] @ pinv(design[points]).T (low rank: two
        # thin products per pixel instead of an n_points x n_energy one)
        self.pre_design = _polynomial(relative, 1)
        self.pre_solve = np.linalg.pinv(self.pre_design[self.pre_points]).T
        self.post_design = _polynomial(relative, normalization.post_edge_degree)
        self.post_solve = np.linalg.pinv(self.post_design[self.post_points]).T

        # step = mu @ step_vector: the step is linear in mu; its noise is sigma * |step_vector|
        pre_full = np.zeros((self.energy.size, self.energy.size))
        pre_full[self.pre_points] = self.pre_solve @ self.pre_design.T
        subtract = np.eye(self.energy.size) - pre_full
        step_vector = subtract[:, self.post_points] @ self.post_solve @ self.post_design[self.edge_index]
        self.step_gain = float(np.linalg.norm(step_vector))

    def __call__(self, mu: np.ndarray) -> NormalizedSpectra:
        """Normalize spectra.

        Args:
            mu: raw spectra on the grid, shape (n_pixels, n_energy).

        Returns:
            Normalized spectra (n_pixels, n_energy), float32 for float32 mu (a stack's values;
            half the memory traffic, and rounding far below counting noise), else float64;
            edge steps and their noise, float64. Where the step is not positive the spectrum is
            left unscaled (mu minus its pre-edge line); mask those pixels.
        """
        dtype = np.float32 if np.asarray(mu).dtype == np.float32 else np.float64
        # a copy worked on in place; order "K" keeps the (energy, pixel) memory order of a tile
        subtracted = np.array(mu, dtype=dtype, order="K")
        pre_design, pre_solve = self.pre_design.astype(dtype), self.pre_solve.astype(dtype)
        # (design @ coefficients^T)^T has the memory order of subtracted: a cache-friendly subtraction
        subtracted -= (pre_design @ (subtracted[:, self.pre_points] @ pre_solve).T).T
        pre_residual = subtracted[:, self.pre_points]
        n_pre = pre_residual.shape[1]
        squares = np.einsum("ij,ij->i", pre_residual, pre_residual).astype(float)
        noise = np.sqrt(squares / max(n_pre - 2, 1))
        post_coefficients = subtracted[:, self.post_points] @ self.post_solve.astype(dtype)
        edge_step = post_coefficients.astype(float) @ self.post_design[self.edge_index]
        scale = np.where(edge_step > 0, edge_step, 1.0)
        if self.normalization.flatten:
            # Larch's flat: above E0 the post-edge curve's shape is taken out, keeping its value at E0
            curve = post_coefficients @ self.post_design[self.edge_index :].T.astype(dtype)
            subtracted[:, self.edge_index :] -= curve - edge_step[:, None].astype(dtype)
        subtracted /= scale[:, None].astype(dtype)
        return NormalizedSpectra(subtracted, edge_step, noise * self.step_gain)


def level_crossing(
    energy: np.ndarray, norm: np.ndarray, level: float, near: np.ndarray, window: float
) -> tuple[np.ndarray, np.ndarray]:
    """Where each normalized spectrum first rises through ``level``, searched within ``window``
    eV of its own ``near`` energy: :func:`xasflow.experiment.alignment.half_step_energy` for
    many spectra at once.

    Args:
        energy: eV, shape (n_energy,), increasing.
        norm: normalized spectra, shape (n, n_energy).
        level: the fraction of the edge step (0.3 for the model's E0).
        near: eV, shape (n,), the middle of each spectrum's search window.
        window: half-width of the search window, eV.

    Returns:
        (crossing energies, eV, shape (n,), NaN where not found; found, bool (n,)).
    """
    inside = np.abs(energy[None, :] - near[:, None]) <= window
    rising = inside[:, :-1] & inside[:, 1:] & (norm[:, :-1] < level) & (norm[:, 1:] >= level)
    found = rising.any(axis=1)
    low_index = np.argmax(rising, axis=1)
    rows = np.arange(len(norm))
    low, high = norm[rows, low_index].astype(float), norm[rows, low_index + 1].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = energy[low_index] + (level - low) / (high - low) * np.diff(energy)[low_index]
    return np.where(found, crossing, np.nan), found


class AlignedSpectra(NamedTuple):
    """Pixel spectra normalized and aligned as one measured spectrum is for a model.

    Attributes:
        energy: the stack's energies, eV, shape (n_energy,).
        norm: normalized spectra on those energies, shape (n, n_energy).
        e0: each spectrum's E0, eV, shape (n,) (NaN where not valid).
        valid: True where both normalizations found their edge-level crossing and a positive
            edge step, shape (n,).
    """

    energy: np.ndarray
    norm: np.ndarray
    e0: np.ndarray
    valid: np.ndarray

    def on_relative_grid(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each spectrum interpolated (linearly) onto its own ``e0 + grid``, as
        :func:`~xasflow.experiment.normalization.to_relative_grid` does one spectrum.

        Args:
            grid: eV relative to E0, shape (m,), increasing (a model's energy grid).

        Returns:
            (values (n, m), covered (n,)): covered is False where the grid reaches more than
            ``GRID_OVERHANG_TOLERANCE_EV`` beyond the stack's energies (``to_relative_grid``
            refuses those); ends within it hold the end value, as ``np.interp`` does.
        """
        e0 = np.where(self.valid, self.e0, self.energy[0] - grid[0])
        positions = e0[:, None] + np.asarray(grid, dtype=float)[None, :]
        covered = (positions[:, 0] >= self.energy[0] - GRID_OVERHANG_TOLERANCE_EV) & (
            positions[:, -1] <= self.energy[-1] + GRID_OVERHANG_TOLERANCE_EV
        )
        last = self.energy.size - 2
        index = np.clip(np.searchsorted(self.energy, positions, side="right") - 1, 0, last)
        weight = np.clip((positions - self.energy[index]) / np.diff(self.energy)[index], 0.0, 1.0)
        rows = np.arange(len(self.norm))[:, None]
        values = self.norm[rows, index] * (1 - weight) + self.norm[rows, index + 1] * weight
        return values, covered & self.valid


class XanesAlignment:
    """:func:`xasflow.experiment.alignment.normalize_xanes` for every pixel of a stack, vectorized.

    ``normalize_xanes`` normalizes one spectrum twice: first to find where its normalized mu
    crosses ``ranges.edge_level`` (E0'), then over the fixed XANES ranges around E0', and takes
    E0 as the crossing of that second normalization. Here:

    1. every pixel is normalized over the fixed ranges around the stack's E0 (one set of linear
       operators, :class:`TileNormalizer`), and its crossing within ``window`` eV of the stack's
       E0 is its E0';
    2. pixels are grouped by the grid points their ranges around E0' select (Larch's
       ``index_of`` / ``index_nearest``), so each group is normalized with one operator, exactly
       as Larch normalizes each pixel around its own E0';
    3. E0 is the crossing of that normalization within ``window`` eV of E0'.

    Only step 1 differs from ``normalize_xanes``, whose first pass uses Larch's default ranges
    around the derivative maximum: it only picks E0', which selects the fit ranges of step 2.
    The tests compare a pixel with ``normalize_xanes`` of the same spectrum.

    The normalization is invariant to an affine change of mu (offset, linear background, scale),
    so spectra already normalized by the stack's own normalization may be given instead of raw
    absorbance (with ``flatten`` they are not affine-equivalent; give raw spectra then).
    """

    def __init__(
        self, energy: np.ndarray, normalization: EdgeNormalization, level: float, window: float = 20.0
    ):
        """
        Args:
            energy: the stack's energies, eV, shape (n_energy,).
            normalization: E0 of the stack (eV) and the fixed XANES ranges (eV relative to E0)
                with their post-edge degree, as resolved on a representative spectrum
                (:func:`resolve_normalization`); ``flatten`` must be False, as in ``normalize_xanes``.
            level: the edge level defining E0 (``XanesNormalization.edge_level``).
            window: search window around the previous E0, eV (that of ``normalize_xanes``).
        """
        self.energy = np.asarray(energy, dtype=float)
        self.normalization = replace(normalization, flatten=False)
        self.level = float(level)
        self.window = float(window)
        self.first = TileNormalizer(self.energy, self.normalization)
        self._normalizers: dict[tuple[int, ...], TileNormalizer | None] = {}

    def _fit_keys(self, e0: np.ndarray) -> np.ndarray:
        """(n, 5) grid indices the ranges around each E0 select: pre-edge start/stop, post-edge
        start/stop and the point nearest E0 (Larch's index_of / index_nearest, vectorized)."""
        pre1, pre2 = self.normalization.pre_edge_range
        norm1, norm2 = self.normalization.norm_range
        energy = self.energy

        def index_of(values):  # last point at or below the value, 0 below the grid
            return np.maximum(np.searchsorted(energy, values, side="right") - 1, 0)

        def index_nearest(values):  # nearest point, the lower one on a tie
            return np.abs(energy[None, :] - values[:, None]).argmin(axis=1)

        return np.stack(
            [
                index_of(e0 + pre1),
                index_nearest(e0 + pre2),
                index_of(e0 + norm1),
                index_nearest(e0 + norm2),
                index_nearest(e0),
            ],
            axis=1,
        )

    def _normalizer(self, key: tuple[int, ...], e0: float) -> TileNormalizer | None:
        """The operator of one group of fit points (None: ranges too short on this grid)."""
        if key not in self._normalizers:  # a benign race between tile threads: same value
            try:
                self._normalizers[key] = TileNormalizer(self.energy, replace(self.normalization, e0=e0))
            except ValueError:
                self._normalizers[key] = None
        return self._normalizers[key]

    def __call__(self, mu: np.ndarray) -> AlignedSpectra:
        """Align spectra of shape (n, n_energy) (raw absorbance, or affinely normalized)."""
        mu = np.asarray(mu)
        n = len(mu)
        first = self.first(mu)
        stack_e0 = np.full(n, self.normalization.e0)
        e0_first, found = level_crossing(self.energy, first.norm, self.level, stack_e0, self.window)
        found &= first.edge_step > 0
        norm = np.zeros_like(first.norm)
        step = np.zeros(n)
        keys = self._fit_keys(np.where(found, e0_first, self.normalization.e0))
        unique, group = np.unique(keys[found], axis=0, return_inverse=True)
        rows = np.flatnonzero(found)
        for index, key in enumerate(unique):
            members = rows[group.ravel() == index]
            normalizer = self._normalizer(tuple(int(value) for value in key), float(e0_first[members[0]]))
            if normalizer is not None:
                second = normalizer(mu[members])
                norm[members], step[members] = second.norm, second.edge_step
        valid = found & (step > 0)
        e0, found_again = level_crossing(
            self.energy, norm, self.level, np.where(valid, e0_first, stack_e0), self.window
        )
        valid &= found_again
        return AlignedSpectra(self.energy, norm, np.where(valid, e0, np.nan), valid)
