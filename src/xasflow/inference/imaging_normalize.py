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
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from larch.math import index_nearest, index_of
from larch.xafs import preedge

from xasflow.experiment.normalization import MIN_POINTS_PER_RANGE, normalize
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
