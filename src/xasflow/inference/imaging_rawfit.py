"""The maps of a tile straight from raw absorbance: normalization folded into the fit.

Normalizing a pixel (:class:`~xasflow.inference.imaging_normalize.TileNormalizer`) subtracts a
baseline that is linear in its raw mu (the pre-edge line; with ``flatten`` also the post-edge
curve above E0) and divides by its edge step s. With the baseline written as ``B c`` (B: fixed
columns on the energy grid, shape (n_energy, m); c: per-pixel coefficients, themselves linear
in mu) and the references as rows of A^T, everything the fit needs follows from one product of
a fixed matrix with mu, ``[P_pre; P_post; A^T; B^T] mu``, and two sums of squares:

* the baseline coefficients c: the pre-edge line ``P_pre mu`` (least squares on the pre-edge
  points) and, for the edge step, the post-edge curve of mu minus that line;
* the pre-edge scatter, for the step's noise: ``|mu_pre|^2 - c_pre^T (L^T L) c_pre`` (L the
  pre-edge line's design; the least-squares residual is orthogonal to L);
* the NNLS projections ``b = A^T norm = (A^T mu - (A^T B) c) / s``;
* the residual of the fit w, ``|norm - A w|^2 = |z|^2 / s^2 - 2 w.b + w^T G w`` with
  ``z = mu - B c``, ``|z|^2 = |mu|^2 - 2 c.(B^T mu) + c^T (B^T B) c`` and G = A^T A;
* the normalized spectrum between the pre-edge and post-edge ranges, where the half-step edge
  energy is searched, ``(mu - B c) / s`` on those energies only.

The sums are float64 (the expanded residual cancels |mu|^2 against the fit; in float64 that
costs about 1e-14 of |mu|^2, far below counting noise and float32 rounding of the stack). So a
tile is never normalized as a whole and is read from memory once: each block of pixels is
copied to a float64 buffer that stays in cache for the one product (BLAS) and the per-pixel
steps (compiled with numba; each pixel goes through the same operations wherever it lies, so the
maps do not depend on the tiling). The maps are those of normalizing every pixel, fitting with
:meth:`ReferenceFit.fit` and finding :func:`half_step_energy` (checked in the tests against a
pixel-by-pixel float64 computation).

Layout: a tile is read as (n_energy, ty, tx), so here spectra are columns, shape
(n_energy, n_pixels).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from xasflow.inference.imaging_fit import FitResult, ReferenceFit, nnls_columns
from xasflow.inference.imaging_normalize import TileNormalizer

#: Pixels per block: 100 energies x 256 pixels of float64 (200 kB) and the block's products stay
#: in a core's L2 cache.
PIXEL_BLOCK = 256


class RawMaps(NamedTuple):
    """The maps of n pixels from :meth:`RawTileFit.maps`.

    Attributes:
        fit: the fit of the mapped pixels (arrays (n_mapped, k) and (n_mapped,)).
        edge_energy: half-step edge energy of the mapped pixels, eV, shape (n_mapped,); NaN
            where the normalized spectrum does not reach the level.
        edge_step: edge step of every pixel, raw mu units, float64, shape (n,).
        mask: True where the pixel was mapped, shape (n,).
    """

    fit: FitResult
    edge_energy: np.ndarray
    edge_step: np.ndarray
    mask: np.ndarray


class RawTileFit:
    """Edge step, mask, reference fractions, their uncertainties and the half-step edge energy
    of raw spectra, in one pass over a tile (:meth:`maps`)."""

    def __init__(self, normalizer: TileNormalizer, reference_fit: ReferenceFit, level: float = 0.5):
        """Args:
        normalizer: the stack's normalization operators.
        reference_fit: the normalized references; must solve NNLS by enumeration
            (:attr:`ReferenceFit.enumerated`), which needs only projections.
        level: edge level of the edge energy (half the step).
        """
        if not reference_fit.enumerated:
            raise ValueError("RawTileFit needs a ReferenceFit solved by enumeration (k <= 10 references)")
        pre, post = normalizer.pre_points, normalizer.post_points
        n_energy = normalizer.energy.size
        self.normalizer = normalizer
        self.reference_fit = reference_fit
        self.level = float(level)
        pre_line = normalizer.pre_design[pre]  # L, (n_pre, 2)
        baseline = [normalizer.pre_design]
        if normalizer.normalization.flatten:
            # above E0 also the post-edge curve minus its value at E0, the step (Larch's flat):
            # columns for the coefficients c_post and -step
            above = (np.arange(n_energy) >= normalizer.edge_index)[:, None].astype(float)
            baseline += [normalizer.post_design * above, above]
        baseline = np.hstack(baseline)  # B, (n_energy, m)
        references = reference_fit.references  # A^T, (k, n_energy)
        pre_solve = np.zeros((2, n_energy))
        pre_solve[:, pre] = normalizer.pre_solve.T
        post_solve = np.zeros((normalizer.post_solve.shape[1], n_energy))
        post_solve[:, post] = normalizer.post_solve.T
        # one product gives all of them: rows c_pre, post-edge coefficients of mu, A^T mu, B^T mu
        self.products = np.ascontiguousarray(np.vstack([pre_solve, post_solve, references, baseline.T]))
        self.edge_operators = (
            pre_line.T @ pre_line,  # L^T L
            normalizer.post_solve.T @ normalizer.pre_design[post],  # post-edge coefficients of the line
            normalizer.post_design[normalizer.edge_index][None],  # step = this . c_post, (1, d + 1)
        )
        self.fit_operators = (
            references @ baseline,  # A^T B, (k, m)
            baseline.T @ baseline,  # (m, m)
            np.ascontiguousarray(baseline),
            reference_fit.gram,  # G = A^T A, (k, k)
        )
        self.noise_scale = (max(pre.stop - pre.start - 2, 1), normalizer.step_gain)
        self.pre_rows = (pre.start, pre.stop)
        self.edge_rows = slice(pre.stop, post.start + 1)  # where half_step_energy searches
        self.edge_energy = normalizer.energy[self.edge_rows]

    def maps(self, mu: np.ndarray, min_edge_step: float, min_step_snr: float) -> RawMaps:
        """The maps of raw spectra.

        Args:
            mu: raw spectra, float32, shape (n_energy, n_pixels).
            min_edge_step, min_step_snr: a pixel is mapped where its edge step is at least
                min_edge_step (raw mu units) and at least min_step_snr times its noise.
        """
        mu = np.ascontiguousarray(mu, dtype=np.float32)
        n_pixels, k = mu.shape[1], len(self.reference_fit.references)
        edge_step, mask = np.empty(n_pixels), np.empty(n_pixels, dtype=np.bool_)
        weights, rss, edge_energy = np.empty((k, n_pixels)), np.empty(n_pixels), np.empty(n_pixels)
        _map_columns(
            mu,
            self.products,
            (self.edge_operators, self.pre_rows, self.noise_scale, (min_edge_step, min_step_snr)),
            self.fit_operators,
            (self.edge_rows.start, self.edge_rows.stop, self.edge_energy, self.level),
            self.reference_fit.nnls_operators,
            (edge_step, mask, weights, rss, edge_energy),
        )
        result = self.reference_fit.result(weights[:, mask].T, rss[mask])
        return RawMaps(result, edge_energy[mask], edge_step, mask)


# The compiled kernels: one block of pixels at a time, copied to a float64 buffer; a product with
# BLAS (np.dot), then loops over the block's pixels. Pixels are indexed, never taken as views:
# a view per pixel costs reference counting that outweighs a pixel's arithmetic.


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _map_columns(mu, products, edge, fit_operators, search, nnls_operators, outputs):
    """All maps of the spectra mu (n_energy, n_pixels), float32, into ``outputs``: edge step
    (n,), mask (n,), NNLS weights (k, n), normalized residual sum of squares (n,) and edge
    energy (n,), the last three only where the mask is True.

    ``products``: the rows [P_pre; P_post; A^T; B^T] (r, n_energy); ``edge``: (L^T L, post-edge
    coefficients of the pre-edge line, step row), (first, stop) pre-edge row, (degrees of
    freedom, step gain) of the noise, (min_edge_step, min_step_snr); ``fit_operators``: (A^T B,
    B^T B, B, G); ``search``: (first row, stop row, energies, level) of the edge search."""
    edge_step, mask, weights = outputs[0], outputs[1], outputs[2]
    n_energy, n_pixels = mu.shape
    k, m = fit_operators[0].shape
    block = np.zeros((n_energy, PIXEL_BLOCK))
    product = np.empty((products.shape[0], PIXEL_BLOCK))
    squares = np.empty((2, PIXEL_BLOCK))  # |mu_pre|^2, |mu|^2
    coefficients = np.empty((m, PIXEL_BLOCK))
    projections, found = np.empty((k, PIXEL_BLOCK)), np.empty((k, PIXEL_BLOCK))
    for start in range(0, n_pixels, PIXEL_BLOCK):
        count = min(PIXEL_BLOCK, n_pixels - start)
        _load(mu, start, count, block, edge[1], squares)
        np.dot(products, block, product)
        pixels = slice(start, start + count)
        _edge_block(product, squares[0], edge, coefficients, edge_step[pixels], mask[pixels])
        picked = np.flatnonzero(mask[pixels])
        scale = np.where(edge_step[pixels] > 0, edge_step[pixels], 1.0)  # as TileNormalizer
        fitted = (picked, coefficients, scale)
        _project(product, fitted, fit_operators[0], projections)
        nnls_columns(projections[:, : picked.size], nnls_operators, found[:, : picked.size])
        _residual(product, squares[1], fitted, fit_operators, (projections, found), outputs[3][pixels])
        _crossing(block, fitted, fit_operators[2], search, outputs[4][pixels])
        for position in range(picked.size):
            weights[:, start + picked[position]] = found[:, position]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _load(mu, start, count, block, pre_rows, squares):
    """block[:, :count] = mu[:, start : start + count] as float64 (the rest left as it was);
    squares[0] = |mu_pre|^2 and squares[1] = |mu|^2 of each column."""
    squares[:] = 0.0
    for row in range(mu.shape[0]):
        source, target = mu[row, start : start + count], block[row, :count]
        inside = pre_rows[0] <= row < pre_rows[1]
        for index in range(count):
            value = np.float64(source[index])
            target[index] = value
            squares[1, index] += value * value
            if inside:
                squares[0, index] += value * value


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _edge_block(product, pre_squares, edge, coefficients, edge_step, mask):
    """Edge step and mask of the block's pixels (into ``edge_step``, ``mask``, both (count,)) and
    their baseline coefficients c (into ``coefficients[:, :count]``)."""
    (line_gram, post_of_pre, step_row), _, (dof, gain), (min_edge_step, min_step_snr) = edge
    n_post, flatten = post_of_pre.shape[0], coefficients.shape[0] > 2
    for index in range(edge_step.size):
        pre0, pre1 = product[0, index], product[1, index]
        scatter = pre_squares[index] - (
            line_gram[0, 0] * pre0 * pre0 + 2 * line_gram[0, 1] * pre0 * pre1 + line_gram[1, 1] * pre1 * pre1
        )
        noise = np.sqrt(max(scatter, 0.0) / dof) * gain
        coefficients[0, index], coefficients[1, index] = pre0, pre1
        step = 0.0
        for row in range(n_post):
            post = product[2 + row, index] - (post_of_pre[row, 0] * pre0 + post_of_pre[row, 1] * pre1)
            step += step_row[0, row] * post
            if flatten:  # c = [c_pre, c_post, -step]
                coefficients[2 + row, index] = post
        if flatten:
            coefficients[2 + n_post, index] = -step
        edge_step[index] = step
        mask[index] = step >= min_edge_step and step >= min_step_snr * noise


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _project(product, fitted, references_on_baseline, projections):
    """projections[:, j] = A^T (mu - B c) / s of the j-th picked pixel, the NNLS input."""
    picked, coefficients, scale = fitted
    k, m = references_on_baseline.shape
    first = product.shape[0] - m - k
    for position in range(picked.size):
        index = picked[position]
        for reference in range(k):
            total = product[first + reference, index]
            for column in range(m):
                total -= references_on_baseline[reference, column] * coefficients[column, index]
            projections[reference, position] = total / scale[index]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _residual(product, squares, fitted, fit_operators, fit, rss):
    """|norm - A w|^2 of the picked pixels into ``rss`` (count,) at their places, from |mu|^2,
    B^T mu, c, the projections b and the weights w: |z|^2 / s^2 - 2 w.b + w^T G w."""
    picked, coefficients, scale = fitted
    _, baseline_gram, _, gram = fit_operators
    projections, weights = fit
    m, k = baseline_gram.shape[0], gram.shape[0]
    first = product.shape[0] - m
    for position in range(picked.size):
        index = picked[position]
        on_baseline = 0.0  # c^T (B^T B) c - 2 c.(B^T mu)
        for row in range(m):
            on_baseline -= 2 * coefficients[row, index] * product[first + row, index]
            for column in range(m):
                on_baseline += (
                    coefficients[row, index] * baseline_gram[row, column] * coefficients[column, index]
                )
        on_references = 0.0  # w^T G w - 2 w.b
        for row in range(k):
            on_references -= 2 * weights[row, position] * projections[row, position]
            for column in range(k):
                on_references += weights[row, position] * gram[row, column] * weights[column, position]
        total = (squares[index] + on_baseline) / (scale[index] * scale[index]) + on_references
        rss[index] = max(total, 0.0)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _crossing(block, fitted, baseline, search, edge_energy):
    """:func:`half_step_energy` of the picked pixels into ``edge_energy`` at their places, eV
    (NaN where not found): the first search row where the running maximum of mu - B c reaches
    level x step (compared, not divided), interpolated linearly from the row before."""
    picked, coefficients, scale = fitted
    first_row, stop_row, energy, level = search
    for position in range(picked.size):
        index = picked[position]
        threshold, running, previous = level * scale[index], -np.inf, -np.inf
        row = first_row
        while row < stop_row and running < threshold:
            value = block[row, index]
            for column in range(coefficients.shape[0]):
                value -= baseline[row, column] * coefficients[column, index]
            previous, running = running, max(running, value)
            row += 1
        edge_energy[index] = np.nan
        if running >= threshold and row - 1 > first_row:
            low, high = previous / scale[index], running / scale[index]
            share = (level - low) / (high - low) if high > low else 0.0
            position_found = row - 1 - first_row
            edge_energy[index] = energy[position_found - 1] + share * (
                energy[position_found] - energy[position_found - 1]
            )
