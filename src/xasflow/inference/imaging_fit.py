"""Per-pixel maps from normalized spectra: reference fractions (NNLS) with uncertainties, the
edge energy, per-region composition, and PCA denoising.

Linear combination fitting: a normalized pixel spectrum y (n_energy) is modelled as
``y = A w + noise`` with A the normalized reference spectra as columns (n_energy, k) and
weights w >= 0. Because each spectrum has unit edge step, the weights of a complete set of
references sum to about 1; the fractions are ``w / sum(w)`` (the share of the absorber's edge
step, i.e. of the absorbing atoms, in each reference state).

``scipy.optimize.nnls`` solves one pixel per call (seconds per million pixels in the Python loop
alone), so :class:`ReferenceFit` solves all pixels of a tile together. With few references (k
<= 10) the exact solution is found by enumeration: the NNLS optimum restricted to its support S
is the unconstrained least-squares fit on S, and every feasible (all >= 0) such fit is a feasible
point of the NNLS problem, so the optimum is the feasible subset fit of smallest residual.
With the Gram matrix G = A^T A and b = A^T y computed once per pixel, each of the 2^k - 1 subset
fits costs |S|^2 operations per pixel and its residual is ||y||^2 - w_S . b_S. Pixels whose
unconstrained fit G^-1 b is already >= 0 (that fit is the optimum) skip the enumeration. This is
written here because scipy has no batched NNLS; the tests check it against ``scipy.optimize.nnls``.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import nnls

from xasflow.errors import UserError

logger = logging.getLogger(__name__)

#: Largest number of references solved by exact subset enumeration (2^k - 1 subsets).
MAX_ENUMERATED_REFERENCES = 10
#: Subset weights held at once in the enumeration (float64 values: 32 MB).
ENUMERATION_VALUES = 4_000_000
#: References whose Gram matrix is worse conditioned than this are refused (near duplicates).
MAX_REFERENCE_CONDITION = 1e8


@dataclass(frozen=True)
class FitResult:
    """The fit of n pixels against k references.

    Attributes:
        weights: NNLS weights, shape (n, k), >= 0.
        residual_rms: root-mean-square residual per energy point, shape (n,), units of norm.
        fractions: weights / sum(weights), shape (n, k); NaN where all weights are 0.
        fraction_std: 1-sigma uncertainty of each fraction, shape (n, k) (see
            :meth:`ReferenceFit.fit`).
        weight_sum: sum of the weights, shape (n,): about 1 when the references explain the
            pixel; far from 1 flags a missing reference or a bad normalization.
    """

    weights: np.ndarray
    residual_rms: np.ndarray
    fractions: np.ndarray
    fraction_std: np.ndarray
    weight_sum: np.ndarray


class ReferenceFit:
    """Non-negative least-squares fit of many spectra against the same references."""

    def __init__(self, references: np.ndarray, names: list[str] | None = None):
        """Args:
        references: normalized reference spectra on the stack grid, shape (k, n_energy).
        names: reference names for messages.

        Raises:
            UserError: no references, non-finite values, fewer energies than references, or
                references so alike that their fractions cannot be told apart.
        """
        references = np.asarray(references, dtype=float)
        names = names or [f"reference {index}" for index in range(len(references))]
        if references.ndim != 2 or references.shape[0] < 1 or not np.isfinite(references).all():
            raise UserError(f"references must be finite, shape (k, n_energy); got shape {references.shape}")
        n_references, n_energy = references.shape
        if n_energy <= n_references:
            raise UserError(
                f"{n_references} references need more than {n_references} energies, got {n_energy}"
            )
        self.references = references
        self.names = names
        self.gram = references @ references.T
        condition = np.linalg.cond(self.gram)
        if not condition < MAX_REFERENCE_CONDITION:
            raise UserError(
                f"references {', '.join(names)} are nearly linearly dependent (Gram condition "
                f"{condition:.3g} > {MAX_REFERENCE_CONDITION:g}); drop one of the look-alikes"
            )
        self.gram_inverse = np.linalg.inv(self.gram)
        self.degrees_of_freedom = n_energy - n_references
        # every subset's least-squares weights at once, pixels as columns: rows number * k + i of
        # subset_solve @ b are subset number's weights w_S = G_S^-1 b_S (0 outside the subset)
        subsets = []
        if n_references <= MAX_ENUMERATED_REFERENCES:
            for size in range(1, n_references + 1):
                subsets += [np.array(subset) for subset in itertools.combinations(range(n_references), size)]
        self._subset_solve = np.zeros((len(subsets) * n_references, n_references))
        for number, indices in enumerate(subsets):
            rows = number * n_references + indices
            self._subset_solve[np.ix_(rows, indices)] = np.linalg.inv(self.gram[np.ix_(indices, indices)])
        self._n_subsets = len(subsets)
        self._drop_one_solve = self._drop_one_operators() if subsets and n_references > 1 else None

    def _drop_one_operators(self) -> np.ndarray:
        """Rows j * k + i: the weights w^(j) of the fit without reference j (0 at j); rows k * k + j:
        the gradient (b - G w^(j))_j of that fit at the dropped reference; both linear in b."""
        n_references = len(self.gram)
        solves = np.zeros((n_references, n_references, n_references))
        gradients = np.eye(n_references)
        for dropped in range(n_references):
            kept = np.delete(np.arange(n_references), dropped)
            solves[dropped][np.ix_(kept, kept)] = np.linalg.inv(self.gram[np.ix_(kept, kept)])
            gradients[dropped] -= self.gram[dropped] @ solves[dropped]
        return np.vstack([solves.reshape(-1, n_references), gradients])

    @property
    def enumerated(self) -> bool:
        """True when NNLS is solved by subset enumeration (k <= MAX_ENUMERATED_REFERENCES), which
        needs only the projections b = A^T y of each spectrum, not the spectrum itself."""
        return self._n_subsets > 0

    def weights(self, projections: np.ndarray) -> np.ndarray:
        """NNLS weights (n, k), float64, from the projections b = A^T y (n, k) of n spectra.
        Needs :attr:`enumerated`."""
        columns = np.ascontiguousarray(np.asarray(projections, dtype=float).T)
        return self.column_weights(columns).T

    def column_weights(self, projections: np.ndarray) -> np.ndarray:
        """NNLS weights (k, n), float64, from projections (k, n): one spectrum per column.

        Where the unconstrained least-squares weights ``G^-1 b`` are all >= 0 they are the NNLS
        optimum (no weights fit better). Of the others, most (81 % on the synthetic Fe stacks)
        have their optimum on k - 1 references: a fit without reference j that is >= 0 and whose
        gradient at j points to negative w_j meets the Karush-Kuhn-Tucker conditions, which only
        the optimum meets (G is positive definite). The rest go through the enumeration.
        Needs :attr:`enumerated`."""
        weights = self.gram_inverse @ projections
        infeasible = np.flatnonzero(weights.min(axis=0, initial=0.0) < 0)
        if infeasible.size and self._drop_one_solve is not None:
            found, solved = self._drop_one_weights(projections[:, infeasible])
            weights[:, infeasible] = found
            infeasible = infeasible[~solved]
        if infeasible.size:
            weights[:, infeasible] = self._enumerated_weights(projections[:, infeasible])
        return weights

    def _drop_one_weights(self, projections: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(weights (k, n), solved (n,)): the fit without one reference where it is the NNLS
        optimum (KKT: its weights >= 0, its gradient at the dropped reference <= 0)."""
        n_references = len(projections)
        solved_by = self._drop_one_solve @ projections
        weights = np.zeros_like(projections)
        solved = np.zeros(projections.shape[1], dtype=bool)
        for dropped in range(n_references):
            candidate = solved_by[dropped * n_references : (dropped + 1) * n_references]
            optimal = solved_by[n_references * n_references + dropped] <= 0
            for index in range(n_references):
                if index != dropped:
                    optimal &= candidate[index] >= 0
            optimal &= ~solved
            weights[:, optimal] = candidate[:, optimal]
            solved |= optimal
        return weights, solved

    def _enumerated_weights(self, projections: np.ndarray) -> np.ndarray:
        """NNLS weights (k, n) by enumeration: the feasible subset fit of largest w . b (none
        with w . b > 0: all weights 0), for projections (k, n), in chunks of bounded memory.
        Subsets and references are short loops over rows of (subset, pixel) arrays: numpy
        reduces slowly over short axes."""
        n_references, n_pixels = projections.shape
        weights = np.zeros_like(projections)
        chunk = max(1, ENUMERATION_VALUES // len(self._subset_solve))
        for start in range(0, n_pixels, chunk):
            pixels = slice(start, start + chunk)
            candidates = self._subset_solve @ projections[:, pixels]  # (subset * k + i, pixel)
            by_subset = candidates.reshape(self._n_subsets, n_references, -1)
            value = by_subset[:, 0] * projections[0, pixels]  # w_S . b_S per subset and pixel
            lowest = by_subset[:, 0].copy()  # the smallest weight of each subset fit
            for index in range(1, n_references):
                value += by_subset[:, index] * projections[index, pixels]
                np.minimum(lowest, by_subset[:, index], out=lowest)
            value[lowest < 0] = 0.0  # infeasible: no better than w = 0
            best = np.argmax(value, axis=0)  # the first of equals, as a strict > would keep
            columns = np.arange(len(best))
            chosen = value[best, columns] > 0
            for index in range(n_references):
                weights[index, pixels] = np.where(
                    chosen, candidates[best * n_references + index, columns], 0.0
                )
        return weights

    def nnls(self, spectra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NNLS weights (n, k) and residual sums of squares (n,) of spectra shape (n, n_energy).

        float32 spectra (normalized tiles) stay float32 in the n x n_energy products; the
        k-dimensional work is float64."""
        spectra = np.asarray(spectra)
        spectra = spectra if spectra.dtype == np.float32 else spectra.astype(float)
        references = self.references.astype(spectra.dtype)
        if not self.enumerated:
            logger.warning("%d references: per-pixel scipy nnls (slow)", len(self.references))
            results = [nnls(self.references.T, spectrum) for spectrum in spectra]
            weights = np.array([weight for weight, _ in results]).reshape(len(spectra), -1)
            return weights, np.array([norm**2 for _, norm in results])
        weights = self.weights(spectra @ references.T)  # b = A^T y per pixel, shape (n, k)
        # the residual itself, not ||y||^2 - 2 w.b + w.G w, whose cancellation float32 would not survive
        residual = spectra - weights.astype(spectra.dtype) @ references
        return weights, np.einsum("ij,ij->i", residual, residual).astype(float)

    def fit(self, spectra: np.ndarray) -> FitResult:
        """NNLS fit with fractions and their uncertainties (:meth:`result`).

        Args:
            spectra: normalized spectra, shape (n, n_energy).
        """
        weights, rss = self.nnls(spectra)
        return self.result(weights, rss)

    def result(self, weights: np.ndarray, rss: np.ndarray) -> FitResult:
        """Fractions and their uncertainties from NNLS weights (n, k) and residual sums of
        squares (n,).

        The weight covariance is that of the unconstrained least-squares fit,
        ``s^2 (A^T A)^-1`` with ``s^2 = RSS / (n_energy - k)`` from the NNLS residual (white noise
        of unknown level assumed; conservative for weights held at 0). It is carried to the
        fractions f = w / sum(w) with the Jacobian (I - f 1^T) / sum(w).
        """
        noise_variance = rss / self.degrees_of_freedom
        weight_sum = weights.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            fractions = weights / weight_sum[:, None]
        inverse = self.gram_inverse
        row_sums = inverse.sum(axis=1)  # (G^-1 1)
        total = inverse.sum()  # 1^T G^-1 1
        variance = (np.diag(inverse) - 2 * fractions * row_sums + fractions**2 * total) * noise_variance[
            :, None
        ]
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction_std = np.sqrt(np.clip(variance, 0, None)) / np.abs(weight_sum)[:, None]
        return FitResult(
            weights=weights,
            residual_rms=np.sqrt(rss / self.references.shape[1]),
            fractions=fractions,
            fraction_std=fraction_std,
            weight_sum=weight_sum,
        )


def half_step_energy(
    energy: np.ndarray,
    norm: np.ndarray,
    start_index: int = 0,
    stop_index: int | None = None,
    level: float = 0.5,
) -> np.ndarray:
    """Energy where normalized spectra first reach ``level`` (half the edge step), eV.

    The crossing is searched on the running maximum of each spectrum from ``start_index`` (the
    end of the pre-edge range) up to ``stop_index`` (the start of the post-edge range), so noise
    below the edge that dips back does not count twice, and interpolated linearly between the
    two grid points around it. This is the half-step E0 convention of the dataset
    (``xasflow.experiment.alignment``).

    Args:
        energy: eV, shape (n_energy,).
        norm: normalized spectra, shape (n, n_energy).
        start_index: first energy index searched.
        stop_index: first energy index not searched (None: to the end).

    Returns:
        Edge energies, eV, shape (n,); NaN where the level is never reached.
    """
    running = np.maximum.accumulate(norm[:, start_index:stop_index], axis=1)
    reached = running >= level
    first = np.argmax(reached, axis=1)
    found = reached[np.arange(len(norm)), first] & (first > 0)
    upper = np.where(found, first, 1)
    low_value = running[np.arange(len(norm)), upper - 1]
    high_value = running[np.arange(len(norm)), upper]
    step = energy[start_index + upper] - energy[start_index + upper - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(high_value > low_value, (level - low_value) / (high_value - low_value), 0.0)
    return np.where(found, energy[start_index + upper - 1] + share * step, np.nan)


@dataclass(frozen=True)
class PcaRule:
    """How many principal components the PCA denoiser keeps.

    ``"references"`` (default): k + 1 for k references. Raw absorbance spectra of mixtures of k
    references on a linear background lie in the span of {1, E, r_1 .. r_k}; the pixel-to-pixel
    variation about the mean needs at most k + 1 components. The fit already assumes that the
    references describe every pixel, so the rule adds no assumption. (Measured on the synthetic
    Fe stacks: k + 1 = 5 gave the lowest fraction error of 3..8 components at every dose.)
    ``"mle"``: Minka's maximum-likelihood dimension (scikit-learn ``n_components="mle"``),
    for data without a trusted reference set; with Poisson noise, whose variance differs between
    energies and pixels, it keeps nearly every component (97 of 100 measured) and then barely
    denoises. An integer keeps that many. Never more than ``max_components``.
    """

    n_components: int | str = "references"
    max_components: int = 12

    def count(self, sample: np.ndarray, n_references: int) -> int:
        """Components to keep for a sample of spectra, shape (n, n_energy)."""
        from sklearn.decomposition import PCA

        limit = min(self.max_components, *sample.shape)
        if self.n_components == "references":
            return min(n_references + 1, limit)
        if self.n_components == "mle" and len(sample) >= sample.shape[1]:
            return int(
                min(max(PCA(n_components="mle", svd_solver="full").fit(sample).n_components_, 1), limit)
            )
        if isinstance(self.n_components, int) and self.n_components >= 1:
            return min(self.n_components, limit)
        raise UserError(
            f"PCA n_components '{self.n_components}': give 'references', 'mle' (with more sampled "
            "pixels than energies) or a positive number"
        )


class PcaDenoiser:
    """Spectral PCA denoising: spectra are replaced by their projection on the leading components
    (``sklearn.decomposition.PCA``, mean-centred).

    The components are fitted once on a sample of pixels of the whole stack (not per tile), so the
    result does not depend on the tiling.
    """

    def __init__(self, sample: np.ndarray, n_references: int, rule: PcaRule = PcaRule()):
        """Args:
        sample: spectra of unmasked pixels, shape (n, n_energy).
        n_references: number of references (for the ``"references"`` rule).
        rule: how many components to keep.
        """
        from sklearn.decomposition import PCA

        if len(sample) < 2:
            raise UserError(f"PCA denoising needs at least 2 unmasked pixels, got {len(sample)}")
        self.n_components = rule.count(sample, n_references)
        self.pca = PCA(n_components=self.n_components, svd_solver="full").fit(sample)
        logger.info(
            "PCA denoiser: %d components (rule %s), %.6f of the variance of %d sampled pixels",
            self.n_components,
            rule.n_components,
            self.pca.explained_variance_ratio_.sum(),
            len(sample),
        )

    def __call__(
        self, spectra: np.ndarray, energy: np.ndarray, references: np.ndarray, image_shape=None
    ) -> np.ndarray:
        """Project every spectrum on the components (pixel by pixel: ``image_shape`` unused)."""
        if len(spectra) == 0:
            return spectra
        return self.pca.inverse_transform(self.pca.transform(spectra))


@dataclass(frozen=True)
class RegionComposition:
    """Mean composition of one region and how sure it is enriched.

    Attributes:
        label: the region's label (> 0).
        n_pixels: unmasked pixels in the region.
        mean_fraction: mean of the pixel fractions, shape (k,).
        standard_error: 1-sigma of that mean from the per-pixel uncertainties, shape (k,):
            ``sqrt(sum sigma_i^2) / n`` (pixel errors independent).
        enrichment_probability: P(region's true mean fraction > threshold), shape (k,):
            ``1 - Phi((threshold - mean) / standard_error)``, a Gaussian posterior with flat prior.
    """

    label: int
    n_pixels: int
    mean_fraction: np.ndarray
    standard_error: np.ndarray
    enrichment_probability: np.ndarray


class RegionAccumulator:
    """Sums of fractions and variances per region label, accumulated tile by tile."""

    def __init__(self, n_references: int):
        self.n_references = n_references
        self.count = np.zeros(1)
        self.fraction_sum = np.zeros((1, n_references))
        self.variance_sum = np.zeros((1, n_references))

    def add(self, labels: np.ndarray, fractions: np.ndarray, fraction_std: np.ndarray) -> None:
        """Add pixels: labels (n,) int (0 = no region), fractions and std (n, k); NaN pixels skipped."""
        usable = (labels > 0) & np.isfinite(fractions).all(axis=1) & np.isfinite(fraction_std).all(axis=1)
        labels = labels[usable].astype(np.int64)
        if labels.size == 0:
            return
        size = max(int(labels.max()) + 1, len(self.count))
        self._grow(size)
        self.count += np.bincount(labels, minlength=size)
        for index in range(self.n_references):
            self.fraction_sum[:, index] += np.bincount(labels, fractions[usable, index], minlength=size)
            self.variance_sum[:, index] += np.bincount(
                labels, fraction_std[usable, index] ** 2, minlength=size
            )

    def _grow(self, size: int) -> None:
        if size > len(self.count):
            extra = size - len(self.count)
            self.count = np.concatenate([self.count, np.zeros(extra)])
            self.fraction_sum = np.vstack([self.fraction_sum, np.zeros((extra, self.n_references))])
            self.variance_sum = np.vstack([self.variance_sum, np.zeros((extra, self.n_references))])

    def compositions(self, threshold: float) -> list[RegionComposition]:
        """One :class:`RegionComposition` per label that holds pixels."""
        result = []
        for label in np.flatnonzero(self.count > 0):
            if label == 0:
                continue
            n_pixels = self.count[label]
            mean = self.fraction_sum[label] / n_pixels
            error = np.sqrt(self.variance_sum[label]) / n_pixels
            with np.errstate(divide="ignore", invalid="ignore"):
                probability = np.where(
                    error > 0,
                    stats.norm.sf(threshold, loc=mean, scale=np.where(error > 0, error, 1.0)),
                    (mean > threshold).astype(float),
                )
            result.append(RegionComposition(int(label), int(n_pixels), mean, error, probability))
        return result
