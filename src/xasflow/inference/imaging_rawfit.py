"""The maps of a tile straight from raw absorbance: normalization folded into the fit.

Normalizing a pixel (:class:`~xasflow.inference.imaging_normalize.TileNormalizer`) subtracts a
baseline that is linear in its raw mu (the pre-edge line; with ``flatten`` also the post-edge
curve above E0) and divides by its edge step s. With the baseline written as ``B c`` (B: fixed
columns on the energy grid, shape (n_energy, m); c: per-pixel coefficients, themselves linear
in mu) and the references as rows of A^T, everything the fit needs is a product of small fixed
matrices with mu:

* the NNLS projections ``b = A^T norm = (A^T mu - (A^T B) c) / s``, one (k x n_energy) product;
* the residual ``norm - A w = (mu - [B, A] [c; s w]) / s``, one thin product and a subtraction;
* the normalized spectrum between the pre-edge and post-edge ranges, where the half-step edge
  energy is searched, ``(mu - B c) / s`` on those energies only.

So a tile is never normalized as a whole: of the n_energy x n_pixels arithmetic only the
residual remains, done on blocks of pixels small enough to stay in cache. The maps are those of
normalizing every pixel, fitting with :meth:`ReferenceFit.fit` and finding
:func:`half_step_energy`, to float32 rounding (checked in the tests against that computation).

Layout: a tile is read as (n_energy, ty, tx), so here spectra are columns, shape
(n_energy, n_pixels); every product keeps that memory order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from xasflow.inference.imaging_fit import FitResult, ReferenceFit
from xasflow.inference.imaging_normalize import TileNormalizer

#: Pixels per block: every product over pixels is made on blocks of exactly this many (the last
#: one padded), because BLAS rounds float32 products of narrow matrices differently, and the maps
#: must not depend on the tile size; 100 energies x 2048 pixels of float32 (0.8 MB) and the
#: block's fitted copy stay in a core's L2 cache.
PIXEL_BLOCK = 2048


class EdgeFit(NamedTuple):
    """The normalization of n pixels, without the normalized spectra.

    Attributes:
        coefficients: c of the subtracted baseline ``B c``, float32, shape (m, n).
        edge_step: edge step, raw mu units, float64, shape (n,).
        step_noise: its 1-sigma noise, float64, shape (n,) (as :class:`NormalizedSpectra`).
    """

    coefficients: np.ndarray
    edge_step: np.ndarray
    step_noise: np.ndarray


class RawTileFit:
    """Reference fractions, their uncertainties and the half-step edge energy of raw spectra.

    ``edge(mu)`` gives the edge step and its noise of every pixel (for the mask); ``fit(mu,
    edge, mask)`` the fit and the edge energy of the masked pixels.
    """

    def __init__(self, normalizer: TileNormalizer, reference_fit: ReferenceFit, level: float = 0.5):
        """Args:
        normalizer: the stack's normalization operators.
        reference_fit: the normalized references; must solve NNLS by enumeration
            (:attr:`ReferenceFit.enumerated`), which needs only projections.
        level: edge level of the edge energy (half the step).
        """
        if not reference_fit.enumerated:
            raise ValueError("RawTileFit needs a ReferenceFit solved by enumeration (k <= 10 references)")
        single = np.float32
        pre, post = normalizer.pre_points, normalizer.post_points
        self.normalizer = normalizer
        self.reference_fit = reference_fit
        self.level = float(level)
        self.pre_solve = normalizer.pre_solve.T.astype(single)  # (2, n_pre)
        self.pre_line = normalizer.pre_design[pre].astype(single)  # (n_pre, 2)
        self.pre_dof = max(pre.stop - pre.start - 2, 1)
        self.post_solve = normalizer.post_solve.T.astype(single)  # (d + 1, n_post)
        # post-edge coefficients of (mu - pre-edge line) = post_solve mu[post] - post_of_pre c_pre
        self.post_of_pre = (normalizer.post_solve.T @ normalizer.pre_design[post]).astype(single)
        self.step_row = normalizer.post_design[normalizer.edge_index]  # step = step_row . c_post
        baseline = [normalizer.pre_design]
        if normalizer.normalization.flatten:
            # above E0 also the post-edge curve minus its value at E0, the step (Larch's flat):
            # columns for the coefficients c_post and -step
            above = (np.arange(normalizer.energy.size) >= normalizer.edge_index)[:, None].astype(float)
            baseline += [normalizer.post_design * above, above]
        baseline = np.hstack(baseline)  # B, (n_energy, m)
        references = reference_fit.references  # (k, n_energy)
        self.references = references.astype(single)
        self.references_on_baseline = references @ baseline  # A^T B, (k, m)
        self.model = np.hstack([baseline, references.T]).astype(single)  # [B, A], (n_energy, m + k)
        self.edge_rows = slice(pre.stop, post.start + 1)  # where half_step_energy searches
        self.edge_baseline = baseline[self.edge_rows].astype(single)
        self.edge_energy = normalizer.energy[self.edge_rows]

    def edge(self, mu: np.ndarray) -> EdgeFit:
        """Baseline coefficients, edge step and step noise of raw spectra mu, float32
        (n_energy, n_pixels)."""
        normalizer = self.normalizer
        n_pixels = mu.shape[1]
        pre_coefficients = np.empty((self.pre_solve.shape[0], n_pixels), np.float32)
        post_coefficients = np.empty((self.post_solve.shape[0], n_pixels), np.float32)
        squares = np.empty(n_pixels)
        for block, count in _pixel_blocks(n_pixels):
            block_mu = _full_block(mu, block)
            pre_mu = block_mu[normalizer.pre_points]
            pre = self.pre_solve @ pre_mu
            pre_residual = pre_mu - self.pre_line @ pre
            squares[block] = np.einsum("ij,ij->j", pre_residual, pre_residual)[:count]
            pre_coefficients[:, block] = pre[:, :count]
            post = self.post_solve @ block_mu[normalizer.post_points] - self.post_of_pre @ pre
            post_coefficients[:, block] = post[:, :count]
        noise = np.sqrt(squares / self.pre_dof) * normalizer.step_gain
        edge_step = self.step_row @ post_coefficients.astype(float)
        if normalizer.normalization.flatten:
            minus_step = -edge_step.astype(np.float32)[None]
            coefficients = np.vstack([pre_coefficients, post_coefficients, minus_step])
        else:
            coefficients = pre_coefficients
        return EdgeFit(coefficients, edge_step, noise)

    def fit(self, mu: np.ndarray, edge: EdgeFit, mask: np.ndarray) -> tuple[FitResult, np.ndarray]:
        """The fit and the half-step edge energy (eV) of the pixels where ``mask`` is True.

        Args:
            mu: raw spectra, float32, shape (n_energy, n_pixels).
            edge: :meth:`edge` of ``mu``.
            mask: bool, shape (n_pixels,).

        Returns:
            (fit of the n masked pixels, arrays (n, k) and (n,); edge energies (n,), NaN where
            the normalized spectrum does not reach the level).
        """
        pixels = np.flatnonzero(mask)
        n_mapped = pixels.size
        # gathered and padded (repeating the last pixel) to whole blocks
        pixels = np.concatenate([pixels, np.repeat(pixels[-1:], -n_mapped % PIXEL_BLOCK)])
        mu, coefficients = np.take(mu, pixels, axis=1), np.take(edge.coefficients, pixels, axis=1)
        edge_step = edge.edge_step[pixels]
        scale = np.where(edge_step > 0, edge_step, 1.0)  # as TileNormalizer: unscaled otherwise
        projections = np.empty((len(self.references), pixels.size))
        rising = np.empty((len(self.edge_energy), pixels.size), np.float32)
        for block, _ in _pixel_blocks(pixels.size):
            projections[:, block] = self.references @ mu[:, block]
            projections[:, block] -= self.references_on_baseline @ coefficients[:, block].astype(float)
            rising[:, block] = mu[self.edge_rows, block] - self.edge_baseline @ coefficients[:, block]
        projections /= scale
        weights = self.reference_fit.column_weights(projections)  # (k, n)
        fitted = np.vstack([coefficients, (weights * scale).astype(np.float32)])
        rss = np.empty(pixels.size)
        for block, _ in _pixel_blocks(pixels.size):
            residual = self.model @ fitted[:, block]
            np.subtract(mu[:, block], residual, out=residual)
            rss[block] = np.einsum("ij,ij->j", residual, residual)
        result = self.reference_fit.result(weights[:, :n_mapped].T, rss[:n_mapped] / scale[:n_mapped] ** 2)
        return result, self._crossing(rising[:, :n_mapped], scale[:n_mapped])

    def _crossing(self, rising: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """:func:`half_step_energy` of spectra as columns: ``rising`` is mu minus its baseline
        (n_edge, n), overwritten, ``scale`` the edge steps (n,); the spectra are compared with
        level x step instead of being divided by it (same crossings, one pass fewer)."""
        for row in range(1, len(rising)):  # the running maximum (row by row: numpy's accumulate
            np.maximum(rising[row - 1], rising[row], out=rising[row])  # along axis 0 is 10x slower)
        threshold = (self.level * scale).astype(np.float32)
        first = np.add.reduce(rising < threshold, axis=0, dtype=np.intp)  # the maximum never falls
        found = (first > 0) & (first < len(rising))
        upper = np.where(found, first, 1)
        columns = np.arange(rising.shape[1])
        low, high = rising[upper - 1, columns] / scale, rising[upper, columns] / scale
        step = self.edge_energy[upper] - self.edge_energy[upper - 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(high > low, (self.level - low) / (high - low), 0.0)
        return np.where(found, self.edge_energy[upper - 1] + share * step, np.nan)


def _pixel_blocks(n_pixels: int) -> list[tuple[slice, int]]:
    """(columns, how many of them exist) of the PIXEL_BLOCK-wide blocks covering n_pixels."""
    return [
        (slice(start, start + PIXEL_BLOCK), min(PIXEL_BLOCK, n_pixels - start))
        for start in range(0, n_pixels, PIXEL_BLOCK)
    ]


def _full_block(array: np.ndarray, block: slice) -> np.ndarray:
    """``array[:, block]``, its last column repeated to PIXEL_BLOCK columns where it is narrower."""
    part = array[:, block]
    missing = PIXEL_BLOCK - part.shape[1]
    return np.pad(part, ((0, 0), (0, missing)), mode="edge") if missing else part
