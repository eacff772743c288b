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

from xasflow.experiment.fidelity import CalibrationTransform


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
    """

    seed: int = 0
    energy_shift: float = 0.5
    stretch: float = 0.01
    broadening: float = 1.5
    noise: float = 0.005
    normalization: float = 0.03
    background: float = 0.01
    site_average: int = 1

    def __post_init__(self) -> None:
        for name in ("energy_shift", "stretch", "broadening", "noise", "normalization", "background"):
            if getattr(self, name) < 0:
                raise ValueError(f"augmentation.{name} is {getattr(self, name)}; it must be >= 0")
        if self.site_average < 1:
            raise ValueError(f"augmentation.site_average is {self.site_average}; it must be >= 1")

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
