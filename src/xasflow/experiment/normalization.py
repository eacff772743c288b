"""Edge-step normalization of spectra with Larch's ``pre_edge`` (as Athena/Larix do).

A line is fitted below the edge, a polynomial above it; both are extrapolated to E0 and their
difference is the edge step. ``norm = (mu - pre_edge_line) / edge_step`` then rises from ~0 to ~1.
Fit ranges are given in eV relative to E0, as in Athena.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from larch import Group
from larch.xafs import find_e0, pre_edge

from xasflow.experiment.readers import SpectrumReadError
from xasflow.spectrum import ABSOLUTE, Spectrum

logger = logging.getLogger(__name__)

#: Fewest measured points needed inside the pre-edge and inside the post-edge fit range.
MIN_POINTS_PER_RANGE = 3
#: The data must start at least this far below e0 (eV) for a pre-edge line to mean anything.
MIN_PRE_EDGE_EXTENT_EV = 10.0
#: The data must reach at least this far above e0 (eV): closer to the edge the post-edge curve
#: would be fitted on the rising edge itself (a scan stopped at the edge).
MIN_POST_EDGE_EXTENT_EV = 30.0
#: Fewest points a spectrum must have to be normalized at all.
MIN_POINTS_TO_NORMALIZE = 10
#: Largest distance (eV) by which a requested grid may overhang the measured range; the overhang
#: is filled with the nearest measured value.
GRID_OVERHANG_TOLERANCE_EV = 1.0


@dataclass(frozen=True)
class NormalizedSpectrum:
    """A spectrum normalized to unit edge step.

    Attributes:
        path: the spectrum's ``source`` (the file it was read from, or the calculation).
        energy: energy, eV, shape (n,), strictly increasing, on the axis of the spectrum it was
            made from (``energy_reference``).
        norm: normalized mu(E) (pre-edge line subtracted, divided by the edge step), shape (n,).
        e0: edge energy, eV, on the same axis as ``energy``.
        edge_step: edge jump in the units of the raw mu, > 0.
        pre_edge_range: (pre1, pre2), eV relative to e0, the range the pre-edge line was fitted on.
        norm_range: (norm1, norm2), eV relative to e0, the range the post-edge curve was fitted on.
        energy_reference: ``"absolute"`` (photon energies) or ``"relative:<name>"``, copied from
            the :class:`~xasflow.spectrum.Spectrum`; e0 of two spectra compare only when equal.
        element: absorbing element symbol (``"Cu"``) as the file header names it, or None;
            copied from the :class:`~xasflow.spectrum.Spectrum`.
        edge: absorption edge (``"K"``, ``"L3"``) as the file header names it, or None.
    """

    path: str
    energy: np.ndarray
    norm: np.ndarray
    e0: float
    edge_step: float
    pre_edge_range: tuple[float, float]
    norm_range: tuple[float, float]
    energy_reference: str = ABSOLUTE
    element: str | None = None
    edge: str | None = None


def normalize(
    spectrum: Spectrum,
    e0: float | None = None,
    pre1: float | None = None,
    pre2: float | None = None,
    norm1: float | None = None,
    norm2: float | None = None,
) -> NormalizedSpectrum:
    """Normalize a measured or computed spectrum to unit edge step with ``larch.xafs.pre_edge``.

    The data must reach at least 10 eV below and 30 eV above e0 (a -20..+60 eV XANES scan is
    fine; a scan that stops at the edge is refused).

    Ranges left as None take Larch's defaults (pre-edge from the second point to half-way to E0;
    post-edge from min(25, norm2/15) eV to the end of the data). Ranges that do not fit inside the
    data, or hold fewer than 3 points (a short XANES scan given EXAFS-style ranges such as
    -150..-30 / 150..400 eV), are replaced by the defaults for that data, with a warning logged.

    Args:
        spectrum: the spectrum (energy in eV, absolute or relative to an edge).
        e0: edge energy, eV, on the spectrum's energy axis; None finds it as the maximum of
            d(mu)/dE (Larch find_e0).
        pre1, pre2: pre-edge fit range, eV relative to e0 (negative).
        norm1, norm2: post-edge fit range, eV relative to e0 (positive).

    Returns:
        The normalized spectrum on the spectrum's energy grid.

    Raises:
        SpectrumReadError: e0 outside the data, no pre-edge or post-edge points, a Larch failure,
            or an edge step that is not positive and finite (mu does not rise at e0).
    """
    path = spectrum.source
    energy = np.asarray(spectrum.energy, dtype=float)
    mu = np.asarray(spectrum.mu, dtype=float)
    if energy.size < MIN_POINTS_TO_NORMALIZE:
        raise SpectrumReadError(
            path, f"only {energy.size} points; at least {MIN_POINTS_TO_NORMALIZE} are needed to normalize"
        )

    if e0 is None:
        try:
            with _larch_warnings_to_log(path):
                e0 = float(find_e0(energy, mu))
        except Exception as exc:  # Larch failures become one clear line
            raise SpectrumReadError(path, f"cannot find the edge energy e0: {exc}") from exc
    elif not (math.isfinite(e0) and energy[1] <= e0 <= energy[-2]):
        raise SpectrumReadError(
            path,
            f"e0={e0} eV is outside the data range {energy[1]:.1f}-{energy[-2]:.1f} eV "
            "(first and last points excluded)",
        )

    relative = energy - e0
    if relative[0] > -MIN_PRE_EDGE_EXTENT_EV:
        raise SpectrumReadError(
            path,
            f"the data start {relative[0]:+.1f} eV from e0={e0:.1f} eV; at least "
            f"{MIN_PRE_EDGE_EXTENT_EV:g} eV below the edge are needed for the pre-edge line",
        )
    if relative[-1] < MIN_POST_EDGE_EXTENT_EV:
        raise SpectrumReadError(
            path,
            f"the data end {relative[-1]:+.1f} eV from e0={e0:.1f} eV; at least "
            f"{MIN_POST_EDGE_EXTENT_EV:g} eV above the edge are needed for the post-edge curve "
            "(scan stopped at the edge?)",
        )
    pre_range = _pre_edge_range(path, relative, pre1, pre2)
    post_range = _post_edge_range(path, relative, norm1, norm2)

    group = Group()
    try:
        with _larch_warnings_to_log(path):
            pre_edge(
                energy,
                mu,
                group=group,
                e0=e0,
                pre1=pre_range[0],
                pre2=pre_range[1],
                norm1=post_range[0],
                norm2=post_range[1],
            )
    except Exception as exc:  # Larch failures become one clear line
        raise SpectrumReadError(path, f"Larch pre_edge failed: {type(exc).__name__}: {exc}") from exc

    e0 = float(group.e0)
    # Larch reports abs(step), which would turn a falling "edge" (wrong column, inverted
    # transmission) into an upside-down spectrum; the signed step catches that.
    edge_index = int(np.argmin(np.abs(energy - e0)))
    edge_step = float(group.post_edge[edge_index] - group.pre_edge[edge_index])
    if not math.isfinite(edge_step) or edge_step <= 0:
        raise SpectrumReadError(
            path,
            f"edge step {edge_step:.4g} at e0={e0:.1f} eV is not positive: mu does not rise at the "
            "edge (wrong mu column, or no absorption edge in the scan)",
        )
    norm = (mu - group.pre_edge) / edge_step
    if not np.all(np.isfinite(norm)):
        raise SpectrumReadError(path, "normalized mu is not finite")

    details = group.pre_edge_details
    result = NormalizedSpectrum(
        path=path,
        energy=_read_only(energy.copy()),
        norm=_read_only(norm),
        e0=e0,
        edge_step=edge_step,
        pre_edge_range=(float(details.pre1), float(details.pre2)),
        norm_range=(float(details.norm1), float(details.norm2)),
        energy_reference=spectrum.energy_reference,
        element=spectrum.element,
        edge=spectrum.edge,
    )
    logger.info(
        "normalized %s: e0=%.2f eV, edge step %.4g, pre-edge %s eV, post-edge %s eV",
        path,
        e0,
        edge_step,
        result.pre_edge_range,
        result.norm_range,
    )
    return result


def to_relative_grid(normalized: NormalizedSpectrum, energy_grid: np.ndarray) -> np.ndarray:
    """Interpolate ``norm`` linearly onto ``e0 + energy_grid``.

    Args:
        normalized: the normalized spectrum.
        energy_grid: energies relative to the edge, eV, shape (m,).

    Returns:
        Normalized mu on the grid, shape (m,). Grid points up to 1 eV outside the data range take
        the nearest value in the data.

    Raises:
        ValueError: the grid is not a 1-D array of finite numbers.
        SpectrumReadError: the grid reaches more than 1 eV beyond the data range.
    """
    grid = np.asarray(energy_grid, dtype=float)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)):
        raise ValueError(
            f"energy_grid must be a non-empty 1-D array of finite eV values, got shape {grid.shape}"
        )
    measured_low = normalized.energy[0] - normalized.e0
    measured_high = normalized.energy[-1] - normalized.e0
    if (
        grid.min() < measured_low - GRID_OVERHANG_TOLERANCE_EV
        or grid.max() > measured_high + GRID_OVERHANG_TOLERANCE_EV
    ):
        raise SpectrumReadError(
            normalized.path,
            f"energy grid {grid.min():+.1f}..{grid.max():+.1f} eV relative to e0="
            f"{normalized.e0:.1f} eV reaches beyond the data range {measured_low:+.1f}.."
            f"{measured_high:+.1f} eV by more than {GRID_OVERHANG_TOLERANCE_EV:g} eV",
        )
    # np.interp holds the end values outside the data: the small-overhang fill.
    return np.interp(normalized.e0 + grid, normalized.energy, normalized.norm)


@contextlib.contextmanager
def _larch_warnings_to_log(path):
    """Turn numpy RuntimeWarnings raised inside Larch (empty slices on odd grids) into debug logs.

    The results are checked here (finite, positive edge step), so the warnings add nothing for
    the user but noise.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        yield
    for warning in caught:
        logger.debug("%s: Larch warning: %s", path, warning.message)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _count_inside(relative: np.ndarray, low: float, high: float) -> int:
    return int(np.count_nonzero((relative >= low) & (relative <= high)))


def _default_pre_edge_range(relative: np.ndarray) -> tuple[float, float]:
    """Larch's default: from the second point (the first is often bad), rounded, to half-way."""
    below_edge = int(np.count_nonzero(relative < 0))
    rounding = 5.0 if below_edge > 20 else 2.0
    low = max(rounding * round(relative[1] / rounding), relative[0])
    return low, 0.5 * low


def _default_post_edge_range(relative: np.ndarray) -> tuple[float, float]:
    """Larch's default: to the end of the data (rounded down to 5 eV), from min(25, norm2/15)."""
    high = min(5.0 * round(relative[-1] / 5.0), relative[-1])
    return min(25.0, 5.0 * round(high / 15.0)), high


#: How messages name each fit range: which end of the data limits it, and what is fitted there.
_RANGE_WORDS = {
    "pre-edge": {"end": 0, "edge_side": "below", "data": "start", "fit": "a pre-edge line", "at": "starting"},
    "post-edge": {"end": -1, "edge_side": "above", "data": "end", "fit": "a post-edge curve", "at": "ending"},
}


def _pre_edge_range(path, relative, pre1, pre2) -> tuple[float, float]:
    default = _default_pre_edge_range(relative)
    low = default[0] if pre1 is None else max(float(pre1), relative[0])
    high = 0.5 * low if pre2 is None else float(pre2)
    return _usable_range(path, relative, "pre-edge", (low, high), (pre1, pre2), default)


def _post_edge_range(path, relative, norm1, norm2) -> tuple[float, float]:
    default = _default_post_edge_range(relative)
    high = default[1] if norm2 is None else min(float(norm2), relative[-1])
    low = min(25.0, 5.0 * round(high / 15.0)) if norm1 is None else float(norm1)
    return _usable_range(path, relative, "post-edge", (low, high), (norm1, norm2), default)


def _fits(relative: np.ndarray, low: float, high: float) -> bool:
    return low < high and _count_inside(relative, low, high) >= MIN_POINTS_PER_RANGE


def _usable_range(path, relative, name: str, candidate, given, default) -> tuple[float, float]:
    """``candidate`` (eV relative to e0) if it holds enough points, else Larch's ``default``
    for this data, with a warning when the user ``given`` range was the one that did not fit."""
    if _fits(relative, *candidate):
        return candidate
    words = _RANGE_WORDS[name]
    data_end = relative[words["end"]]
    if given != (None, None):
        logger.warning(
            "%s: %s range %s..%s eV does not fit the data (%s %+.1f eV from e0); using %+.1f..%+.1f eV",
            path,
            name,
            *given,
            words["at"],
            data_end,
            *default,
        )
    if not _fits(relative, *default):
        raise SpectrumReadError(
            path,
            f"fewer than {MIN_POINTS_PER_RANGE} points {words['edge_side']} the edge (data "
            f"{words['data']} {data_end:+.1f} eV from e0): cannot fit {words['fit']}",
        )
    return default
