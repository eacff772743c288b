"""Seeded on-the-fly augmentation of simulated training spectra.

A measured spectrum differs from one simulated site spectrum in ways that carry no structural
information: its energy scale is off by a fraction of an eV and a percent or so, its resolution
is coarser, it has noise, its edge step and post-edge line come from a fit with its own errors,
and it is the average over every absorber in the beam. Each training spectrum is therefore
redrawn every time it is used, with one random draw of each of these; the labels are kept
(site averages get the mean of their members' labels). Validation and test spectra are never
augmented, so the reported metrics stay those of the simulated data.

Every draw comes from ``numpy.random.default_rng([seed, index, visit])``: the same seed gives
the same augmented spectra in the same order, whatever else the process does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from xasflow.experiment.fidelity import FINE_STEP_EV, MIN_FWHM_EV, CalibrationTransform


@dataclass(frozen=True)
class AugmentationParams:
    """Amplitudes of the random changes (0 switches one off); see the config schema.

    energy_shift:   eV, standard deviation of a rigid shift of the energy axis.
    stretch:        standard deviation of a fractional stretch of the energy axis about E0.
    broadening:     eV, extra Gaussian FWHM drawn uniformly from [0, broadening].
    noise:          standard deviation of white noise, in edge steps.
    normalization:  standard deviation of a relative error of the edge step (mu scaled by 1+eps).
    background:     standard deviation of a linear background, edge steps per 100 eV, zero at E0.
    site_average:   a spectrum is replaced by the mean of 1..site_average spectra of its system
                    and frame (uniform), its labels by theirs.
    pool:           0 (default): every visit of a spectrum is a fresh draw. P > 0: visit k
                    reuses draw k mod P, whose model input is computed once and kept, so a
                    spectrum has at most P different augmented versions. For chi models, where
                    each draw costs a Larch autobk fit (~9 ms), this is what makes training
                    affordable; the first P visits are the same draws as without a pool.
    """

    seed: int = 0
    energy_shift: float = 0.5
    stretch: float = 0.01
    broadening: float = 1.5
    noise: float = 0.005
    normalization: float = 0.03
    background: float = 0.01
    site_average: int = 1
    pool: int = 0

    def __post_init__(self) -> None:
        for name in ("energy_shift", "stretch", "broadening", "noise", "normalization", "background"):
            if getattr(self, name) < 0:
                raise ValueError(f"augmentation.{name} is {getattr(self, name)}; it must be >= 0")
        if self.site_average < 1:
            raise ValueError(f"augmentation.site_average is {self.site_average}; it must be >= 1")
        if self.pool < 0:
            raise ValueError(f"augmentation.pool is {self.pool}; it must be >= 0 (0: no pool)")

    @classmethod
    def none(cls) -> AugmentationParams:
        """No augmentation at all."""
        return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1)

    @property
    def enabled(self) -> bool:
        amplitudes = ("energy_shift", "stretch", "broadening", "noise", "normalization", "background")
        return any(getattr(self, name) > 0 for name in amplitudes) or self.site_average > 1

    def to_dict(self) -> dict:
        return asdict(self)


def augment_spectrum(
    energy: np.ndarray, mu: np.ndarray, params: AugmentationParams, rng: np.random.Generator
) -> np.ndarray:
    """One random redraw of ``mu`` (n_energy,) on ``energy`` (eV relative to E0), same shape."""
    energy = np.asarray(energy, dtype=float)
    mu = np.asarray(mu, dtype=float)
    transform = CalibrationTransform(
        shift=float(rng.normal(0.0, params.energy_shift)) if params.energy_shift else 0.0,
        stretch=float(np.clip(rng.normal(0.0, params.stretch), -0.2, 0.2)) if params.stretch else 0.0,
        fwhm=float(rng.uniform(0.0, params.broadening)) if params.broadening else 0.0,
    )
    out = mu if transform.is_identity else transform.apply(energy, mu, energy)
    scale = 1.0 + (rng.normal(0.0, params.normalization) if params.normalization else 0.0)
    slope = rng.normal(0.0, params.background) if params.background else 0.0
    out = out * scale + slope * energy / 100.0
    if params.noise:
        out = out + rng.normal(0.0, params.noise, size=out.shape)
    return out


def _draw(params: AugmentationParams, rng: np.random.Generator, n_energy: int) -> tuple[float, ...]:
    """The random numbers of one redraw, in the order :func:`augment_spectrum` draws them:
    shift, stretch, FWHM, scale, slope (the noise vector follows)."""
    shift = float(rng.normal(0.0, params.energy_shift)) if params.energy_shift else 0.0
    stretch = float(np.clip(rng.normal(0.0, params.stretch), -0.2, 0.2)) if params.stretch else 0.0
    fwhm = float(rng.uniform(0.0, params.broadening)) if params.broadening else 0.0
    scale = 1.0 + (rng.normal(0.0, params.normalization) if params.normalization else 0.0)
    slope = rng.normal(0.0, params.background) if params.background else 0.0
    return shift, stretch, fwhm, scale, slope


#: The Gaussian kernel is cut this many standard deviations from its centre (exp(-12.5) ~ 4e-6).
KERNEL_REACH_SIGMA = 5.0


def _moved_and_broadened(
    energy: np.ndarray, mu: np.ndarray, shift: np.ndarray, stretch: np.ndarray, fwhm: np.ndarray
) -> np.ndarray:
    """Each row of ``mu`` (m, n) with its sample j moved to ``shift + (1 + stretch) E_j`` (ends
    held), convolved with a unit-area Gaussian of its FWHM renormalized over a fine grid
    (:data:`FINE_STEP_EV`), and read at ``energy``: what ``CalibrationTransform.apply`` does
    one spectrum at a time, here as one batched kernel product."""
    moved = shift[:, None] + (1.0 + stretch[:, None]) * energy[None, :]
    out = np.empty_like(mu)
    sharp = fwhm < MIN_FWHM_EV
    for row in np.flatnonzero(sharp):
        out[row] = np.interp(energy, moved[row], mu[row])
    broad = np.flatnonzero(~sharp)
    if broad.size:
        # a kernel narrower than the fine step would fall between its points (0 / 0): below that
        # width the broadening is far under the 1 eV grid anyway
        sigma = np.maximum(fwhm[broad] / (2.0 * np.sqrt(2.0 * np.log(2.0))), FINE_STEP_EV / 2)
        reach = int(np.ceil(KERNEL_REACH_SIGMA * sigma.max() / FINE_STEP_EV))  # fine points per side
        low = min(float(moved[broad, 0].min()), energy[0]) - 1.0 - reach * FINE_STEP_EV
        high = max(float(moved[broad, -1].max()), energy[-1]) + 1.0 + reach * FINE_STEP_EV
        fine = np.arange(low, high + FINE_STEP_EV / 2, FINE_STEP_EV)
        on_fine = np.array([np.interp(fine, moved[row], mu[row]) for row in broad])  # (b, n_fine)
        # only the fine points within the kernel's reach of each output point: (n, 2 reach + 1)
        centre = np.rint((energy - low) / FINE_STEP_EV).astype(int)
        window = centre[:, None] + np.arange(-reach, reach + 1)[None, :]
        difference = energy[:, None] - fine[window]  # (n, 2 reach + 1)
        kernel = np.exp(-0.5 * (difference[None, :, :] / sigma[:, None, None]) ** 2)  # (b, n, w)
        out[broad] = np.einsum("bnw,bnw->bn", kernel, on_fine[:, window]) / kernel.sum(axis=2)
    return out


def augment_batch(
    energy: np.ndarray, mu: np.ndarray, params: AugmentationParams, rngs: list[np.random.Generator]
) -> np.ndarray:
    """One random redraw of every row of ``mu`` (m, n_energy) on ``energy`` (eV relative to E0),
    row ``i`` drawn from ``rngs[i]`` exactly as :func:`augment_spectrum` draws it (same numbers,
    same order), the energy-axis changes applied to the whole batch at once."""
    energy = np.asarray(energy, dtype=float)
    mu = np.atleast_2d(np.asarray(mu, dtype=float))
    draws = []
    noise = np.zeros_like(mu)
    for row, rng in enumerate(rngs):
        draws.append(_draw(params, rng, energy.size))
        if params.noise:
            noise[row] = rng.normal(0.0, params.noise, size=energy.size)
    shift, stretch, fwhm, scale, slope = (
        np.array(column, dtype=float) for column in zip(*draws, strict=True)
    )
    out = mu
    if np.any(shift) or np.any(stretch) or np.any(fwhm >= MIN_FWHM_EV):
        out = _moved_and_broadened(energy, mu, shift, stretch, fwhm)
    return out * scale[:, None] + slope[:, None] * energy[None, :] / 100.0 + noise
