"""Synthetic energy stacks with known truth, built from measured Fe K-edge reference spectra.

Each pixel of the sample area holds a mixture of the references with smooth, known fractions
(summing to 1), scaled by a smooth edge step (thickness), on a linear background absorbance;
an empty border holds background only. Transmission counting noise is drawn as Poisson counts
``I ~ Poisson(dose * exp(-mu))`` with ``dose`` incident photons per pixel per energy, and the
stack holds the measured absorbance ``-ln(I / dose)``.

The mixtures are made of the references as normalized by the stack's own normalization
(:func:`~xasflow.inference.imaging.prepare_references`), so that a noise-free pixel normalizes to
exactly ``sum_i f_i r_i``: the truth is the share of the edge step (the share of Fe atoms) in each
state, and any error is the method's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from xasflow.experiment.readers import read_spectrum
from xasflow.inference.imaging import prepare_references
from xasflow.inference.imaging_normalize import EdgeNormalization

#: Measured Fe K-edge references of ``shared/data/experimental`` (XDI project, public domain).
FE_REFERENCE_FILES = {
    "Fe": "fe_metal_rt.xdi",
    "FeO": "feo_rt1.xdi",
    "Fe2O3": "fe2o3_rt.xdi",
    "Fe3C": "fe3c_rt.xdi",
}
#: 100 energies, 2 eV apart, across the Fe K edge (7112 eV): -62 .. +136 eV.
FE_STACK_ENERGY = 7050.0 + 2.0 * np.arange(100)
#: Lowest edge step (absorbance) inside the sample area.
MIN_SAMPLE_STEP = 0.5


@dataclass(frozen=True)
class SyntheticTruth:
    """What a synthetic stack was made of.

    Attributes:
        energy: eV, shape (n_energy,).
        references: normalized references used, shape (k, n_energy).
        names: reference names.
        normalization: the stack normalization the references were normalized with.
        fractions: true fractions, shape (k, ny, nx), summing to 1 in the sample area, NaN outside.
        edge_step: true edge step (absorbance), shape (ny, nx), 0 outside the sample.
        sample: True inside the sample area, shape (ny, nx).
        dose: incident photons per pixel per energy, or None (noise-free).
    """

    energy: np.ndarray
    references: np.ndarray
    names: list[str]
    normalization: EdgeNormalization
    fractions: np.ndarray
    edge_step: np.ndarray
    sample: np.ndarray
    dose: float | None


def fe_references(data_dir: str | Path, energy: np.ndarray = FE_STACK_ENERGY):
    """The measured Fe references, normalized for a stack on ``energy``.

    Returns:
        (references (k, n_energy), names, normalization).
    """
    spectra = [read_spectrum(Path(data_dir) / "experimental" / name) for name in FE_REFERENCE_FILES.values()]
    references, normalization = prepare_references(spectra, energy)
    return references, list(FE_REFERENCE_FILES), normalization


def smooth_fractions(n_components: int, image_shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth random fraction maps, shape (k, ny, nx), >= 0, summing to 1 at every pixel.

    Each component's logit is white noise smoothed with a Gaussian of 1/6 the image size, scaled
    so fractions span nearly pure to nearly absent; softmax over components.
    """
    sigma = max(image_shape) / 6
    logits = np.stack(
        [
            ndimage.gaussian_filter(rng.standard_normal(image_shape), sigma, mode="wrap")
            for _ in range(n_components)
        ]
    )
    logits /= logits.std(axis=(1, 2), keepdims=True)
    weights = np.exp(1.5 * logits)
    return weights / weights.sum(axis=0)


def sample_area(image_shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(sample mask, edge step): an ellipse covering ~60% of the image with a smooth step of
    0.5-1.5 inside, and an empty border."""
    ny, nx = image_shape
    y, x = np.mgrid[0:ny, 0:nx]
    inside = ((y - ny / 2) / (0.45 * ny)) ** 2 + ((x - nx / 2) / (0.42 * nx)) ** 2 <= 1
    texture = ndimage.gaussian_filter(rng.standard_normal(image_shape), max(image_shape) / 8, mode="wrap")
    texture = (texture - texture.min()) / max(np.ptp(texture), 1e-12)
    step = np.where(inside, MIN_SAMPLE_STEP + texture, 0.0)
    return inside, step


def synthetic_stack(
    references: np.ndarray,
    names: list[str],
    normalization: EdgeNormalization,
    energy: np.ndarray = FE_STACK_ENERGY,
    image_shape: tuple[int, int] = (16, 16),
    dose: float | None = 1e4,
    seed: int = 0,
) -> tuple[np.ndarray, SyntheticTruth]:
    """A stack (n_energy, ny, nx) float32 of raw absorbance, and its truth.

    Args:
        references: normalized references on ``energy``, shape (k, n_energy) (:func:`fe_references`).
        names: their names.
        normalization: the normalization they were made with.
        energy: eV, shape (n_energy,).
        image_shape: (ny, nx).
        dose: incident photons per pixel per energy (Poisson noise); None for no noise.
        seed: seed of the maps and of the noise.
    """
    rng = np.random.default_rng(seed)
    fractions = smooth_fractions(len(references), image_shape, rng)
    sample, step = sample_area(image_shape, rng)
    # background absorbance of a support film: 0.2-0.3, falling slowly (linearly) with energy
    ny, nx = image_shape
    background = 0.2 + 0.1 * np.linspace(0, 1, ny)[:, None] * np.ones((1, nx))
    slope = -2e-4 * (energy - normalization.e0)
    mixture = np.einsum("kyx,ke->eyx", fractions, references)
    mu = background[None] * (1 + slope[:, None, None]) + step[None] * mixture
    if dose is not None:
        counts = rng.poisson(dose * np.exp(-mu))
        mu = -np.log(np.maximum(counts, 0.5) / dose)  # an empty detector pixel reads as half a count
    truth = SyntheticTruth(
        energy=np.asarray(energy, dtype=float),
        references=references,
        names=list(names),
        normalization=normalization,
        fractions=np.where(sample[None], fractions, np.nan),
        edge_step=step,
        sample=sample,
        dose=dose,
    )
    return mu.astype(np.float32), truth


def fraction_errors(fractions: np.ndarray, truth: SyntheticTruth) -> tuple[float, float]:
    """(RMSE, coverage): RMSE of mapped fractions (k, ny, nx) against the truth over the sample
    pixels that were mapped, and the share of sample pixels that were mapped."""
    mapped = truth.sample & np.isfinite(fractions).all(axis=0)
    error = fractions[:, mapped] - truth.fractions[:, mapped]
    return float(np.sqrt(np.mean(error**2))), float(mapped.sum() / truth.sample.sum())
