"""A common energy reference for simulated and measured spectra.

The maximum of dmu/dE (Athena's default E0) is ambiguous at the Cu K edge: the 1s->4p shoulder
and the main rise have derivative maxima of similar height, and simulated site spectra switch
between them (seen as a 6 eV bimodal E0 in the default study). The energy at which the
normalized absorption first reaches a fixed fraction of the edge step is single-valued for a
rising edge, so xasflow places both simulated and measured spectra on a grid relative to it.

That fraction is 0.3, not one half: the Cu K shoulder of measured foils and of FEFF10 spectra
with SCF and an RPA core hole plateaus at 0.45-0.55 of the step, so the half step jumped by
3.5-5 eV between near-identical spectra (one site with its own or with a shared SCF potential),
while the 0.3 crossing, on the steep rise into the shoulder, moved by 0.03 eV.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from xasflow.experiment.normalization import NormalizedSpectrum, normalize
from xasflow.experiment.readers import SpectrumReadError
from xasflow.spectrum import Spectrum


def half_step_energy(
    energy: np.ndarray, norm: np.ndarray, level: float = 0.5, near: float | None = None, window: float = 20.0
) -> float:
    """Energy (eV) where ``norm`` (edge step 1) first rises through ``level``, interpolated.

    With ``near`` (eV) only points within ``window`` eV of it are searched, so a glitch far
    below the edge of a long measured scan is not taken for the edge. ``energy`` (n,) must be
    increasing. Raises ValueError if ``norm`` does not rise through ``level`` there.
    """
    energy = np.asarray(energy, dtype=float)
    norm = np.asarray(norm, dtype=float)
    inside = np.ones(energy.size, bool) if near is None else np.abs(energy - near) <= window
    indices = np.flatnonzero(inside)
    if indices.size < 2:
        raise ValueError(f"fewer than 2 points within {window} eV of {near} eV")
    below = norm[indices[:-1]] < level
    rising = below & (norm[indices[1:]] >= level)
    if not rising.any():
        raise ValueError(f"normalized absorption does not rise through {level} in the searched range")
    low_index = int(indices[:-1][np.argmax(rising)])
    low, high = norm[low_index], norm[low_index + 1]
    step = energy[low_index + 1] - energy[low_index]
    return float(energy[low_index] + (level - low) / (high - low) * step)


@dataclass(frozen=True)
class XanesNormalization:
    """Fixed Larch ``pre_edge`` ranges (eV relative to the half-step E0) used for every spectrum.

    FEFF XANES covers about -18..+60 eV around the edge, so simulated and measured spectra are
    both normalized over ranges inside that window; a measured scan reaching 1000 eV would
    otherwise get Athena's default, much longer post-edge line and a different edge step.
    """

    pre1: float = -16.0
    pre2: float = -8.0
    norm1: float = 15.0
    norm2: float = 50.0
    edge_level: float = 0.3  # E0: where normalized mu first reaches this fraction of the step


def normalize_xanes(
    spectrum: Spectrum, ranges: XanesNormalization = XanesNormalization()
) -> NormalizedSpectrum:
    """Normalize over ``ranges`` around the edge-level E0 and return it with that E0.

    A first Larch normalization (its own E0 and ranges) locates the edge-level crossing; the
    spectrum is then normalized again over the fixed ranges around it, and E0 recomputed.
    Raises ``SpectrumReadError`` naming the file if any step fails.
    """
    first = normalize(spectrum)
    e0 = _edge_level(first, near=first.e0, level=ranges.edge_level)
    second = normalize(
        spectrum, e0=e0, pre1=ranges.pre1, pre2=ranges.pre2, norm1=ranges.norm1, norm2=ranges.norm2
    )
    return replace(second, e0=_edge_level(second, near=e0, level=ranges.edge_level))


def _edge_level(spectrum: NormalizedSpectrum, near: float, level: float) -> float:
    try:
        return half_step_energy(spectrum.energy, spectrum.norm, level=level, near=near)
    except ValueError as error:
        raise SpectrumReadError(spectrum.path, f"no edge to align on ({error})") from error
