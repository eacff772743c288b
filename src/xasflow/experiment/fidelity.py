"""How alike a simulated and a measured spectrum are, and the transform that makes them alike.

Both spectra are expected already normalized the same way (:func:`normalize_xanes`: Larch
``pre_edge`` over fixed ranges, E0 at the half step) and placed on one grid of energies
relative to their own E0. Then:

* :func:`fidelity_metrics` gives Pearson and Spearman r, the RMSE of normalized mu over a
  stated window, and the energies of the first features (maxima of mu and of dmu/dE) of each.
* :class:`CalibrationTransform` is what a simulated spectrum needs to look measured: an energy
  shift, an energy-axis stretch about E0, and a Gaussian broadening (instrument resolution and
  the lifetime/thermal broadening FEFF under-estimates) that grows linearly above the edge
  (the inelastic losses of the photo-electron). :func:`fit_calibration` fits it by least
  squares against one measured reference.

The transform is applied to simulated spectra (training data), never to measured ones:
broadening can be added to a sharp spectrum, not taken out of a measured one, and a measured
spectrum is then used exactly as a user's spectrum would be.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats

logger = logging.getLogger(__name__)

#: Spacing (eV) of the fine uniform grid on which broadening is applied.
FINE_STEP_EV = 0.1
#: Bounds of the fitted parameters: shift (eV), stretch (fraction), FWHM (eV), amplitude (1),
#: FWHM slope (1).
CALIBRATION_BOUNDS = ((-6.0, 6.0), (-0.25, 0.25), (0.0, 8.0), (0.3, 3.0), (0.0, 0.15))
#: FWHM (eV) of the smoothing that separates the fine structure from the smooth absorption, and
#: the energies (eV above E0) over which the amplitude factor is switched on.
FINE_STRUCTURE_SMOOTHING_EV = 8.0
AMPLITUDE_RAMP_EV = (3.0, 8.0)
#: FWHM (eV) below which :func:`gaussian_broaden` leaves a spectrum as it is, and the number of
#: output points whose kernels it builds at once (bounds memory to BROADENING_BLOCK * n floats).
MIN_FWHM_EV = 1e-6
BROADENING_BLOCK = 2048


@dataclass(frozen=True)
class CalibrationTransform:
    """Map a simulated spectrum, on energies relative to its E0, onto a measured one.

    A simulated feature at ``e`` eV above E0 appears at ``shift + (1 + stretch) * e``; above the
    edge the fine structure (the spectrum minus its 8 eV-smoothed self) is scaled by
    ``amplitude``; then the spectrum is convolved with a Gaussian of FWHM
    ``fwhm + fwhm_slope * max(e, 0)`` eV.

    shift:       eV; the offset left after both spectra were put on their own half-step E0.
    stretch:     fractional stretch of the energy axis about E0 (features scale as 1/R^2, so a
                 1 % shorter bond gives about +2 %).
    fwhm:        eV; Gaussian broadening at and below E0.
    amplitude:   factor on the fine structure above the edge (like an EXAFS amplitude: FEFF's
                 spectra of thermally disordered clusters oscillate less than measured ones).
    fwhm_slope:  growth of that FWHM per eV above E0 (energy-dependent damping).
    """

    shift: float = 0.0
    stretch: float = 0.0
    fwhm: float = 0.0
    amplitude: float = 1.0
    fwhm_slope: float = 0.0

    def __post_init__(self) -> None:
        if self.fwhm < 0 or self.fwhm_slope < 0:
            raise ValueError(f"broadening must be >= 0, got fwhm={self.fwhm}, fwhm_slope={self.fwhm_slope}")
        if not -0.5 < self.stretch < 0.5:
            raise ValueError(f"stretch {self.stretch} is outside (-0.5, 0.5)")
        if not self.amplitude > 0:
            raise ValueError(f"amplitude {self.amplitude} must be > 0")

    @property
    def is_identity(self) -> bool:
        return (
            self.shift == 0
            and self.stretch == 0
            and self.fwhm == 0
            and self.fwhm_slope == 0
            and self.amplitude == 1
        )

    def apply(self, energy: np.ndarray, mu: np.ndarray, grid: np.ndarray) -> np.ndarray:
        """Transform spectra ``mu`` ((n_energy,) or (n, n_energy)) given on ``energy`` (eV
        relative to E0, increasing) and return them on ``grid`` (eV relative to E0), shape
        (len(grid),) or (n, len(grid)). Outside ``energy`` the end values are held."""
        energy = np.asarray(energy, dtype=float)
        mu = np.asarray(mu, dtype=float)
        single = mu.ndim == 1
        spectra = np.atleast_2d(mu)
        if self.is_identity:  # plain regridding, without the detour through the fine grid
            out = np.array([np.interp(grid, energy, row) for row in spectra])
            return out[0] if single else out
        moved = self.shift + (1.0 + self.stretch) * energy
        low = min(moved[0], float(np.min(grid))) - 1.0
        high = max(moved[-1], float(np.max(grid))) + 1.0
        fine = np.arange(low, high + FINE_STEP_EV / 2, FINE_STEP_EV)
        on_fine = np.array([np.interp(fine, moved, row) for row in spectra])
        if self.amplitude != 1.0:
            smooth = gaussian_broaden(fine, on_fine, np.full(fine.shape, FINE_STRUCTURE_SMOOTHING_EV))
            low, high = AMPLITUDE_RAMP_EV
            ramp = np.clip((fine - self.shift - low) / (high - low), 0.0, 1.0)
            on_fine = on_fine + (self.amplitude - 1.0) * ramp * (on_fine - smooth)
        broadened = gaussian_broaden(fine, on_fine, self._fwhm_at(fine - self.shift))
        out = np.array([np.interp(grid, fine, row) for row in broadened])
        return out[0] if single else out

    def _fwhm_at(self, relative_energy: np.ndarray) -> np.ndarray:
        return self.fwhm + self.fwhm_slope * np.maximum(relative_energy, 0.0)

    def to_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, mapping: dict) -> CalibrationTransform:
        return cls(**{key: float(value) for key, value in mapping.items() if key in cls.__dataclass_fields__})


def gaussian_broaden(energy: np.ndarray, spectra: np.ndarray, fwhm) -> np.ndarray:
    """Convolve ``spectra`` with a unit-area Gaussian whose FWHM may vary with energy.

    Args:
        energy: eV, shape (n,), increasing with a uniform step.
        spectra: shape (n,) or (m, n), values on ``energy``.
        fwhm: eV, a number or one value per point of ``energy`` (shape (n,)): the width of the
            kernel that forms each output point. All zero returns a copy.

    Returns:
        The broadened spectra, same shape as ``spectra``. Each kernel is renormalized over the
        grid, so the ends are not pulled towards zero and a flat spectrum stays flat.

    Raises:
        ValueError: a negative or non-finite FWHM.

    Cost and memory grow as n^2 (one kernel row per output point), in blocks of
    :data:`BROADENING_BLOCK` rows: fine for XANES grids of a few thousand points.
    """
    energy = np.asarray(energy, dtype=float)
    spectra = np.asarray(spectra, dtype=float)
    fwhm = np.broadcast_to(np.asarray(fwhm, dtype=float), energy.shape)
    if not np.all(np.isfinite(fwhm)) or np.any(fwhm < 0):
        raise ValueError(f"Gaussian FWHM must be finite and >= 0 eV; the smallest given is {fwhm.min():g} eV")
    if np.all(fwhm < MIN_FWHM_EV):
        return spectra.copy()
    sigma = np.maximum(fwhm, MIN_FWHM_EV) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    broadened = np.empty(spectra.shape)
    for start in range(0, energy.size, BROADENING_BLOCK):
        rows = slice(start, start + BROADENING_BLOCK)
        difference = energy[None, :] - energy[rows, None]  # (out, in)
        kernel = np.exp(-0.5 * (difference / sigma[rows, None]) ** 2)
        kernel /= kernel.sum(axis=1, keepdims=True)
        broadened[..., rows] = spectra @ kernel.T
    return broadened


@dataclass(frozen=True)
class FidelityMetrics:
    """Agreement of a simulated with a measured spectrum over ``window`` (eV relative to E0).

    pearson_r, spearman_r:  correlation of normalized mu over the window.
    rmse:                   root-mean-square difference of normalized mu over the window.
    peak_energies_measured, peak_energies_simulated:  eV relative to E0 of the first local maxima
                            of normalized mu in the window (white line and following peaks).
    inflection_energies_measured, inflection_energies_simulated: eV relative to E0 of the first
                            maxima of dmu/dE (pre-edge shoulder, main rise).
    """

    window: tuple[float, float]
    pearson_r: float
    spearman_r: float
    rmse: float
    peak_energies_measured: tuple[float, ...]
    peak_energies_simulated: tuple[float, ...]
    inflection_energies_measured: tuple[float, ...]
    inflection_energies_simulated: tuple[float, ...]

    def to_dict(self) -> dict:
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
        }


def feature_energies(
    energy: np.ndarray, mu: np.ndarray, count: int = 3, prominence: float = 0.02
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Energies (eV) of the first ``count`` maxima of ``mu`` and of ``dmu/dE``.

    A maximum must stand ``prominence`` above its surroundings (in normalized mu, or in normalized
    mu per eV for the derivative) so noise is not taken for a feature; maxima are refined by a
    parabola through the three points around them.
    """
    from scipy.signal import find_peaks

    energy = np.asarray(energy, dtype=float)
    mu = np.asarray(mu, dtype=float)
    derivative = np.gradient(mu, energy)
    results = []
    for curve, needed in ((mu, prominence), (derivative, prominence / 2)):
        indices, _ = find_peaks(curve, prominence=needed)
        results.append(tuple(_refine_peak(energy, curve, index) for index in indices[:count]))
    return results[0], results[1]


def _refine_peak(energy: np.ndarray, curve: np.ndarray, index: int) -> float:
    if index <= 0 or index >= energy.size - 1:
        return float(energy[index])
    x = energy[index - 1 : index + 2]
    y = curve[index - 1 : index + 2]
    a, b, _ = np.polyfit(x, y, 2)
    if a >= 0:
        return float(energy[index])
    return float(np.clip(-b / (2 * a), x[0], x[-1]))


def fidelity_metrics(
    energy: np.ndarray,
    measured: np.ndarray,
    simulated: np.ndarray,
    window: tuple[float, float],
    feature_count: int = 3,
) -> FidelityMetrics:
    """Compare ``measured`` and ``simulated`` normalized mu, both (n,) on ``energy`` (eV relative
    to E0), over ``window`` (eV). Raises ValueError if the window holds fewer than 5 points or
    a spectrum is constant there."""
    energy = np.asarray(energy, dtype=float)
    measured = np.asarray(measured, dtype=float)
    simulated = np.asarray(simulated, dtype=float)
    if measured.shape != energy.shape or simulated.shape != energy.shape:
        raise ValueError(
            f"energy {energy.shape}, measured {measured.shape} and simulated {simulated.shape} "
            "differ in shape"
        )
    inside = (energy >= window[0]) & (energy <= window[1])
    if inside.sum() < 5:
        raise ValueError(f"window {window} eV holds {inside.sum()} grid points; at least 5 are needed")
    m, s = measured[inside], simulated[inside]
    if np.ptp(m) == 0 or np.ptp(s) == 0:
        raise ValueError("a spectrum is constant over the window: no correlation can be computed")
    peaks_m, inflections_m = feature_energies(energy[inside], m, feature_count)
    peaks_s, inflections_s = feature_energies(energy[inside], s, feature_count)
    return FidelityMetrics(
        window=(float(window[0]), float(window[1])),
        pearson_r=float(np.corrcoef(m, s)[0, 1]),
        spearman_r=float(stats.spearmanr(m, s).statistic),
        rmse=float(np.sqrt(np.mean((m - s) ** 2))),
        peak_energies_measured=peaks_m,
        peak_energies_simulated=peaks_s,
        inflection_energies_measured=inflections_m,
        inflection_energies_simulated=inflections_s,
    )


def fit_calibration(
    simulated_energy: np.ndarray,
    simulated: np.ndarray,
    grid: np.ndarray,
    measured: np.ndarray,
    window: tuple[float, float],
    energy_dependent: bool = True,
) -> CalibrationTransform:
    """Least-squares fit of a :class:`CalibrationTransform` that maps ``simulated`` (normalized
    mu on ``simulated_energy``, eV relative to its E0) onto ``measured`` (normalized mu on
    ``grid``, eV relative to its E0) over ``window`` (eV). With ``energy_dependent=False`` the
    broadening is constant (``fwhm_slope`` = 0).

    Several starting broadenings are tried (the residual has local minima where features of
    the two spectra interleave); the best least-squares solution is returned.
    """
    grid = np.asarray(grid, dtype=float)
    measured = np.asarray(measured, dtype=float)
    inside = (grid >= window[0]) & (grid <= window[1])
    target = measured[inside]
    bounds = CALIBRATION_BOUNDS if energy_dependent else CALIBRATION_BOUNDS[:4]

    def residual(parameters: np.ndarray) -> np.ndarray:
        transform = CalibrationTransform(*parameters)
        return transform.apply(simulated_energy, simulated, grid[inside]) - target

    best = None
    for start_fwhm in (0.5, 2.0, 4.0):
        start = [0.0, 0.0, start_fwhm, 1.0] + ([0.02] if energy_dependent else [])
        solution = optimize.least_squares(
            residual,
            start,
            bounds=([low for low, _ in bounds], [high for _, high in bounds]),
            diff_step=1e-3,
        )
        if best is None or solution.cost < best.cost:
            best = solution
    transform = CalibrationTransform(*best.x)
    logger.info(
        "calibration fitted: %s (rms residual %.4f)", transform, np.sqrt(2 * best.cost / inside.sum())
    )
    return transform


@dataclass(frozen=True)
class ReferenceFidelity:
    """One measured reference against its simulated spectrum.

    energy_offset:  eV, measured half-step E0 minus simulated half-step E0 (absolute energies);
                    None when the simulated energies are relative to an edge (FDMNES), where
                    the difference would mix an absolute with a relative energy.
    raw:            metrics with both spectra only normalized and aligned on their E0.
    calibrated:     metrics after the fitted :class:`CalibrationTransform` ``transform``.
    """

    name: str
    measured_path: str
    energy_offset: float | None
    raw: FidelityMetrics
    calibrated: FidelityMetrics
    transform: CalibrationTransform

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "measured_path": self.measured_path,
            "energy_offset_eV": self.energy_offset,
            "raw": self.raw.to_dict(),
            "calibrated": self.calibrated.to_dict(),
            "transform": self.transform.to_dict(),
        }


#: eV kept beyond the comparison window when the simulated spectrum is regridded for the fit, so
#: that the stretch and the broadening see real data near the window's ends.
FIT_MARGIN_EV = (4.0, 8.0)


def simulated_fine_grid(normalized, window: tuple[float, float]) -> np.ndarray:
    """A 0.25 eV grid (eV relative to E0) over ``window`` plus :data:`FIT_MARGIN_EV`, clipped to
    the simulated spectrum's own range."""
    low = max(window[0] - FIT_MARGIN_EV[0], normalized.energy[0] - normalized.e0)
    high = min(window[1] + FIT_MARGIN_EV[1], normalized.energy[-1] - normalized.e0)
    return np.arange(np.ceil(low * 4) / 4, high + 1e-9, 0.25)


def assess_reference(
    name: str,
    measured,
    simulated,
    window: tuple[float, float],
    grid_step: float = 0.25,
    energy_dependent: bool = False,
) -> tuple[ReferenceFidelity, dict[str, np.ndarray]]:
    """Compare a measured with a simulated spectrum (both :class:`NormalizedSpectrum`, from
    :func:`~xasflow.experiment.alignment.normalize_xanes`) over ``window`` (eV relative to E0);
    ``energy_dependent`` lets the fitted broadening grow above E0.

    Returns the :class:`ReferenceFidelity` and the curves for an overlay plot: ``energy`` (eV
    relative to E0), ``measured``, ``simulated`` and ``calibrated`` on it.
    """
    from xasflow.experiment.normalization import to_relative_grid

    grid = np.arange(window[0], window[1] + grid_step / 2, grid_step)
    measured_on_grid = to_relative_grid(measured, grid)
    fine = simulated_fine_grid(simulated, window)
    simulated_fine = to_relative_grid(simulated, fine)
    simulated_on_grid = np.interp(grid, fine, simulated_fine)
    transform = fit_calibration(fine, simulated_fine, grid, measured_on_grid, window, energy_dependent)
    calibrated_on_grid = transform.apply(fine, simulated_fine, grid)
    fidelity = ReferenceFidelity(
        name=name,
        measured_path=str(measured.path),
        energy_offset=_energy_offset(measured, simulated),
        raw=fidelity_metrics(grid, measured_on_grid, simulated_on_grid, window),
        calibrated=fidelity_metrics(grid, measured_on_grid, calibrated_on_grid, window),
        transform=transform,
    )
    curves = {
        "energy": grid,
        "measured": measured_on_grid,
        "simulated": simulated_on_grid,
        "calibrated": calibrated_on_grid,
    }
    return fidelity, curves


def _energy_offset(measured, simulated) -> float | None:
    """eV between the two E0, or None when their energy axes have different references."""
    if measured.energy_reference != simulated.energy_reference:
        logger.warning(
            "%s (%s) and %s (%s): energy axes differ in reference; no energy offset reported",
            measured.path,
            measured.energy_reference,
            simulated.path,
            simulated.energy_reference,
        )
        return None
    return float(measured.e0 - simulated.e0)


def plot_overlay(fidelity: ReferenceFidelity, curves: dict[str, np.ndarray], path) -> None:
    """Measured, simulated and calibrated spectra of one reference, with r and RMSE, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    axis.plot(curves["energy"], curves["measured"], "k-", lw=1.6, label="measured")
    for curve, metrics, style in (
        ("simulated", fidelity.raw, "C0--"),
        ("calibrated", fidelity.calibrated, "C3-"),
    ):
        label = f"{curve} (r {metrics.pearson_r:.3f}, RMSE {metrics.rmse:.3f})"
        axis.plot(curves["energy"], curves[curve], style, lw=1.2, label=label)
    axis.set_xlabel("energy relative to E0 (0.3 of the edge step), eV")
    axis.set_ylabel("normalized absorption")
    axis.set_title(f"{fidelity.name}: {fidelity.measured_path.rsplit('/', 1)[-1]}", fontsize=10)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
