"""Surface/bulk deconvolution of nanoparticle spectra.

A measured particle spectrum is the average over all absorber atoms. With ``w`` the share of
absorber atoms at the surface, the particle spectrum P is ``w S + (1 - w) I``, S the mean
surface spectrum and I the mean interior spectrum. Taking the computed spectrum B of the bulk
alloy of the same composition for I gives the surface spectrum

    S = (P - (1 - w) B) / w

and, to first order, its 1-sigma uncertainty per energy point

    sigma_S^2 = sigma_P^2 / w^2 + ((1 - w) / w)^2 sigma_B^2 + ((P - B) / w^2)^2 sigma_w^2

(the partial derivatives of S are 1/w, -(1 - w)/w and (B - P)/w^2). Errors are taken as
independent between P, B and w, and between energy points. What this uncertainty cannot hold is
the difference between the particle's interior and the bulk alloy (strain, composition,
finite size): :func:`xasflow.inference.deconvolution_run.deconvolve_simulated` measures it on
simulated particles whose surface spectrum is known.

Energies. Every spectrum here is an :class:`EdgeSpectrum`: normalized mu on a grid of eV relative
to an absolute edge energy E0, where normalized mu first reaches
``XanesNormalization.edge_level`` of the step (the reference of the training spectra). P and B
are each placed on their own E0 (a measurement and a calculation share no absolute energy
scale), so S lives on P's E0; any chemical shift between surface and bulk is not resolved.
Before a model reads S, S is placed on its own edge crossing, as every training spectrum was.

Composite spectra of simulated systems average the site spectra on absolute energies (a
measurement sees all absorbers at once), as :mod:`xasflow.inference.pseudo` does, then find
the edge of the average.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.stats import truncnorm

from xasflow.errors import UserError
from xasflow.experiment import read_spectrum
from xasflow.experiment.alignment import XanesNormalization, half_step_energy, normalize_xanes
from xasflow.experiment.fidelity import CalibrationTransform
from xasflow.experiment.normalization import NormalizedSpectrum, to_relative_grid
from xasflow.models.targets import TargetSpec, target_values

logger = logging.getLogger(__name__)

#: 1 / Phi^-1(3/4): turns a median absolute deviation into the standard deviation of a normal
MAD_TO_SIGMA = 1.482602
#: eV around the expected E0 searched for the edge crossing of a composite or deconvolved spectrum
EDGE_SEARCH_WINDOW_EV = 10.0


class DeconvolutionError(UserError):
    """Inputs that cannot be deconvolved: a weight outside (0, 1], a system without the spectra needed."""


class NotDeconvolvable(DeconvolutionError):
    """A simulated particle whose surface spectrum does not exist or was not sampled (no surface
    absorber atoms, or none of them computed): reported and skipped, not a failure of the run."""


# --- the algebra ----------------------------------------------------------------------------------


def surface_spectrum(
    particle: np.ndarray,
    bulk: np.ndarray,
    weight: float,
    particle_sigma: np.ndarray | float,
    bulk_sigma: np.ndarray | float,
    weight_sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The surface spectrum S = (P - (1 - w) B) / w and its propagated 1-sigma uncertainty.

    Parameters
    ----------
    particle:        (n,) P, normalized mu of the whole particle (edge steps), on the same energy
                     points as ``bulk``.
    bulk:            (n,) B, normalized mu of the bulk alloy (edge steps).
    weight:          w, share of absorber atoms at the surface, 0 < w <= 1.
    particle_sigma:  (n,) or a number: 1-sigma noise of P (edge steps).
    bulk_sigma:      (n,) or a number: 1-sigma uncertainty of B as an estimate of the mean bulk
                     spectrum (edge steps).
    weight_sigma:    1-sigma uncertainty of w.

    Returns ``(surface, surface_sigma)``, both (n,), edge steps; the uncertainty is the first-order
    propagation of independent errors (module docstring). Raises ValueError for shapes that do
    not match or a weight outside (0, 1] (callers check user input and raise
    :class:`DeconvolutionError` first).
    """
    particle = np.asarray(particle, dtype=float)
    bulk = np.asarray(bulk, dtype=float)
    if particle.shape != bulk.shape or particle.ndim != 1:
        raise ValueError(f"particle {particle.shape} and bulk {bulk.shape} must be 1-D of one length")
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"surface weight {weight} is outside (0, 1]")
    surface = (particle - (1.0 - weight) * bulk) / weight
    variance = (
        (np.asarray(particle_sigma, dtype=float) / weight) ** 2
        + ((1.0 - weight) / weight * np.asarray(bulk_sigma, dtype=float)) ** 2
        + ((particle - bulk) / weight**2 * weight_sigma) ** 2
    )
    return surface, np.sqrt(np.broadcast_to(variance, surface.shape))


def draw_surface_spectra(
    particle: np.ndarray,
    bulk: np.ndarray,
    weight: float,
    particle_sigma: np.ndarray | float,
    bulk_sigma: np.ndarray | float,
    weight_sigma: float,
    n_draws: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo surface spectra: P, B and w drawn from their uncertainties, each draw deconvolved.

    P and B get independent Gaussian noise per point (shapes and units as in
    :func:`surface_spectrum`); w is drawn from a normal truncated to (0, 1] (a share outside it
    has no meaning). Returns ``(surfaces, weights)``: (n_draws, n) edge steps and (n_draws,).
    Unlike :func:`surface_spectrum`, the draws keep the non-linearity in 1/w.
    """
    particle = np.asarray(particle, dtype=float)
    bulk = np.asarray(bulk, dtype=float)
    shape = (int(n_draws), particle.size)
    particles = particle + np.asarray(particle_sigma, dtype=float) * rng.standard_normal(shape)
    bulks = bulk + np.asarray(bulk_sigma, dtype=float) * rng.standard_normal(shape)
    if weight_sigma > 0:
        low, high = (0.0 - weight) / weight_sigma, (1.0 - weight) / weight_sigma
        weights = truncnorm.rvs(low, high, loc=weight, scale=weight_sigma, size=shape[0], random_state=rng)
    else:
        weights = np.full(shape[0], float(weight))
    surfaces = (particles - (1.0 - weights[:, None]) * bulks) / weights[:, None]
    return surfaces, weights


# --- the surface weight ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SurfaceWeight:
    """Share ``value`` of absorber atoms at the surface (0..1), its 1-sigma ``sigma``, and where
    it came from (``source``, for the reports)."""

    value: float
    sigma: float
    source: str


def surface_weight_from_labels(
    labels: Mapping[str, np.ndarray], absorber: str, source: str = "labels"
) -> SurfaceWeight:
    """The share of ``absorber`` atoms flagged ``surface``, pooled over all frames.

    ``labels``: the per-atom arrays of ``labels.npz`` (``structures.pipeline.label_system``):
    ``element``, ``surface`` (1 surface, 0 not) and ``frame``, each (n_labels,). The sigma is the
    standard deviation (ddof 1) of the per-frame shares: how much the share moves with thermal
    motion across the snapshots, which a measurement of a real ensemble sees too (it is not the
    smaller standard error of the pooled mean); 0 with a single frame. ``source`` names the file
    in errors. Raises :class:`DeconvolutionError` if a key is missing or no atom is ``absorber``.
    """
    missing = [key for key in ("element", "surface", "frame") if key not in labels]
    if missing:
        raise DeconvolutionError(f"{source}: labels lack {', '.join(missing)} (not a labels.npz of xasflow)")
    element = np.asarray(labels["element"]).astype(str)
    surface = np.asarray(labels["surface"]).astype(bool)
    frame = np.asarray(labels["frame"])
    mine = element == absorber
    if not mine.any():
        raise DeconvolutionError(
            f"{source}: no {absorber} atoms among the labels (elements {', '.join(sorted(set(element)))})"
        )
    per_frame = np.array([surface[mine & (frame == index)].mean() for index in np.unique(frame[mine])])
    sigma = float(np.std(per_frame, ddof=1)) if per_frame.size > 1 else 0.0
    value = float(surface[mine].mean())
    return SurfaceWeight(
        value,
        sigma,
        f"{source}: {int(surface[mine].sum())} of {int(mine.sum())} {absorber} atoms at the "
        f"surface over {per_frame.size} frames",
    )


def closed_shell_surface_weight(n_atoms: int) -> SurfaceWeight:
    """The dispersion (surface share of all atoms) of a closed-shell cuboctahedron or icosahedron.

    Both hold N(k) = (10 k^3 + 15 k^2 + 11 k + 3) / 3 atoms with k shells around the centre atom
    (13, 55, 147, 309, ...), 10 k^2 + 2 of them in the outer shell. For another ``n_atoms`` the
    real k solving N(k) = n_atoms interpolates between the closed shells. This is the share of
    all atoms; in an alloy with surface segregation the absorber's share differs, which the
    caller's sigma has to cover (returned sigma 0). Raises :class:`DeconvolutionError` below 13
    atoms, where no atom is inside.
    """
    if n_atoms < 13:
        raise DeconvolutionError(f"a particle of {n_atoms} atoms has no interior; give 13 atoms or more")
    roots = np.roots([10.0, 15.0, 11.0, 3.0 - 3.0 * n_atoms])
    shells = float(max(root.real for root in roots if abs(root.imag) < 1e-9))
    surface_atoms = 10.0 * shells**2 + 2.0
    return SurfaceWeight(
        surface_atoms / n_atoms,
        0.0,
        f"closed-shell cuboctahedron/icosahedron of {n_atoms} atoms: {surface_atoms:.1f} at the surface "
        f"({shells:.2f} shells)",
    )


def check_weight(weight: SurfaceWeight, what: str) -> None:
    """Raise :class:`DeconvolutionError` naming ``what`` unless 0 < value <= 1 and sigma >= 0."""
    if not (np.isfinite(weight.value) and 0.0 < weight.value <= 1.0):
        raise DeconvolutionError(
            f"{what}: surface weight {weight.value} is outside (0, 1]: the share of absorber atoms at the "
            "surface must be positive for a surface spectrum to exist"
        )
    if not (np.isfinite(weight.sigma) and weight.sigma >= 0.0):
        raise DeconvolutionError(f"{what}: weight sigma {weight.sigma} must be a number >= 0")


def noise_from_residual(mu: np.ndarray) -> float:
    """1-sigma white noise of a sampled spectrum ``mu`` (n,), in its own units, from its
    high-frequency residual.

    The second difference d_i = mu_(i-1) - 2 mu_i + mu_(i+1) of white noise has variance 6 sigma^2,
    and a smooth spectrum adds little to it wherever its curvature is small (pre-edge, post-edge);
    the median of |d| (times 1.4826, a normal's MAD) ignores the points on the edge and white line
    where it is not small. Curvature that is not small at most points (a coarse grid) makes this an
    overestimate. Raises ValueError for fewer than 5 points.
    """
    mu = np.asarray(mu, dtype=float)
    if mu.size < 5:
        raise ValueError(f"{mu.size} points are too few to estimate noise")
    second = mu[:-2] - 2.0 * mu[1:-1] + mu[2:]
    return float(MAD_TO_SIGMA * np.median(np.abs(second)) / np.sqrt(6.0))


# --- spectra on an edge-referenced grid -----------------------------------------------------------


@dataclass(frozen=True, eq=False)  # arrays: no field-wise ==
class EdgeSpectrum:
    """Normalized mu with its 1-sigma uncertainty on a grid relative to an absolute E0.

    name:    what it is (a file, ``<system> particle``, ...), for messages and reports.
    energy:  (n,) eV relative to ``e0``.
    mu:      (n,) normalized mu, edge steps.
    sigma:   (n,) 1-sigma uncertainty of ``mu``, edge steps.
    e0:      eV, absolute: the grid's zero.
    own_edge:  True if ``e0`` is this spectrum's own edge crossing (a particle, a bulk); False if it
             is another's (a surface spectrum on its particle's E0): found again before a model
             reads it.
    element, edge:  the absorber and edge where known (model cards are checked against them).
    """

    name: str
    energy: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    e0: float
    own_edge: bool = True
    element: str | None = None
    edge: str | None = None

    def normalized(self) -> NormalizedSpectrum:
        """This spectrum as the models read a measured one: on absolute energies e0 + energy, with
        its own edge crossing as E0: ``e0`` itself, or found again near it unless ``own_edge``.

        Raises :class:`DeconvolutionError` if mu does not rise through the edge level near e0.
        """
        energy = self.e0 + self.energy
        ranges = XanesNormalization()
        if self.own_edge:
            own_e0 = self.e0
        else:
            try:
                own_e0 = half_step_energy(
                    energy, self.mu, level=ranges.edge_level, near=self.e0, window=EDGE_SEARCH_WINDOW_EV
                )
            except ValueError as error:
                raise DeconvolutionError(
                    f"{self.name}: no edge within {EDGE_SEARCH_WINDOW_EV} eV of E0 ({error})"
                ) from error
        return NormalizedSpectrum(
            path=self.name,
            energy=energy,
            norm=np.asarray(self.mu, dtype=float),
            e0=own_e0,
            edge_step=1.0,
            pre_edge_range=(ranges.pre1, ranges.pre2),
            norm_range=(ranges.norm1, ranges.norm2),
            element=self.element,
            edge=self.edge,
        )


def deconvolve(particle: EdgeSpectrum, bulk: EdgeSpectrum, weight: SurfaceWeight) -> EdgeSpectrum:
    """The surface spectrum of ``particle`` (:func:`surface_spectrum`), on the particle's grid
    and E0; ``bulk`` must share the grid (both on ``energy`` relative to their own E0)."""
    check_weight(weight, particle.name)
    if particle.energy.shape != bulk.energy.shape or not np.allclose(particle.energy, bulk.energy):
        raise ValueError("particle and bulk spectra must share one grid relative to their E0")
    surface, sigma = surface_spectrum(
        particle.mu, bulk.mu, weight.value, particle.sigma, bulk.sigma, weight.sigma
    )
    return EdgeSpectrum(
        f"{particle.name} surface",
        particle.energy,
        surface,
        sigma,
        particle.e0,
        own_edge=False,
        element=particle.element,
        edge=particle.edge,
    )


def edge_energy(energy: np.ndarray, mu: np.ndarray, near: float | None = None) -> float:
    """Absolute E0 (eV) of normalized ``mu`` on ``energy`` (n,): where it first reaches the edge
    level of the training spectra (``XanesNormalization.edge_level``), within
    ``EDGE_SEARCH_WINDOW_EV`` of ``near``. Raises ValueError if it does not."""
    return half_step_energy(
        energy, mu, level=XanesNormalization().edge_level, near=near, window=EDGE_SEARCH_WINDOW_EV
    )


def measured_particle(
    path: str | Path, grid: np.ndarray, noise: float | None = None
) -> tuple[EdgeSpectrum, NormalizedSpectrum]:
    """A measured particle spectrum read and normalized as ``xasflow predict`` reads one
    (:func:`~xasflow.experiment.alignment.normalize_xanes`), on ``grid`` (n,) eV relative to E0.

    ``noise``: 1-sigma noise per point in edge steps; None estimates it from the measured points
    inside E0 + ``grid`` (:func:`noise_from_residual`). Linear interpolation onto a coarser grid
    averages neighbouring points, so the measured point's noise is an upper bound for the grid's.
    Returns the spectrum and the normalized measurement (for the model cards' checks). Raises
    ``SpectrumReadError`` (a ``UserError`` naming the file) for an unreadable file or one that
    does not cover the grid.
    """
    normalized = normalize_xanes(read_spectrum(path))
    mu = to_relative_grid(normalized, grid)
    if noise is None:
        relative = normalized.energy - normalized.e0
        inside = (relative >= grid[0]) & (relative <= grid[-1])
        noise = noise_from_residual(normalized.norm[inside])
        logger.info("%s: noise %.4g edge steps, estimated from the second differences", path, noise)
    spectrum = EdgeSpectrum(
        str(path),
        np.asarray(grid, float),
        mu,
        np.full(mu.shape, float(noise)),
        normalized.e0,
        element=normalized.element,
        edge=normalized.edge,
    )
    return spectrum, normalized


# --- composite spectra of simulated systems -------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SimulatedSpectra:
    """Site spectra of one system on a common absolute energy axis.

    energy:   (m,) absolute eV, the union of the sites' ranges at half the dataset's grid step.
    spectra:  (n_sites, m) normalized mu of each site (held at its end values outside its range).
    sites:    the dataset rows of these sites (labels: surface, coordination numbers, ...).
    """

    energy: np.ndarray
    spectra: np.ndarray
    sites: xr.Dataset


def system_spectra(
    dataset: xr.Dataset, system: str, calibration: CalibrationTransform | None = None
) -> SimulatedSpectra:
    """The site spectra of ``system`` on absolute energies (each site's mu on the dataset grid,
    eV relative to its own E0, shifted by that E0). With ``calibration`` every site spectrum is
    first transformed as the training spectra were. Raises :class:`DeconvolutionError` naming the
    systems present if ``system`` has no spectra."""
    systems = np.array(dataset["system"].values.tolist(), dtype=str)
    rows = np.flatnonzero(systems == system)
    if rows.size == 0:
        raise DeconvolutionError(
            f"system '{system}' has no spectra in the dataset (systems: {', '.join(sorted(set(systems)))})"
        )
    sites = dataset.isel(spectrum=rows)
    relative = dataset["energy"].values.astype(float)
    mu = sites["mu"].values.astype(float)
    if calibration is not None and not calibration.is_identity:
        mu = calibration.apply(relative, mu, relative)
    e0 = sites["e0"].values.astype(float)
    step = float(relative[1] - relative[0])
    energy = np.arange(e0.min() + relative[0], e0.max() + relative[-1] + 1e-9, step / 2)
    spectra = np.array(
        [np.interp(energy - site_e0, relative, row) for site_e0, row in zip(e0, mu, strict=True)]
    )
    return SimulatedSpectra(energy, spectra, sites)


def site_mean(spectra: np.ndarray, multiplicity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of site ``spectra`` (k, m), each weighted by the atoms it stands for
    (``multiplicity``, (k,)), and the standard error of that mean, (m,) each.

    The standard error (weighted standard deviation over sqrt of the effective number of sites),
    not the standard deviation itself: the composite stands for the mean over all atoms of its
    kind, and its uncertainty is how far a mean of k sampled sites can be from that. Sites of one
    snapshot are not fully independent, so with few frames this is a lower bound. 0 for one site.
    """
    weights = np.asarray(multiplicity, dtype=float)
    mean = np.average(spectra, axis=0, weights=weights)
    n_effective = weights.sum() ** 2 / np.sum(weights**2)
    if spectra.shape[0] < 2:
        return mean, np.zeros_like(mean)
    variance = np.average((spectra - mean) ** 2, axis=0, weights=weights) * n_effective / (n_effective - 1)
    return mean, np.sqrt(variance / n_effective)


def _absorber_and_edge(dataset: xr.Dataset) -> tuple[str | None, str | None]:
    """The dataset's absorber (None if several) and edge (from its provenance; None if absent)."""
    absorbers = sorted(set(dataset["absorber"].values.tolist()))
    try:
        edge = json.loads(dataset.attrs.get("provenance", "{}")).get("spectra", {}).get("edge")
    except (TypeError, ValueError):
        edge = None
    return (str(absorbers[0]) if len(absorbers) == 1 else None), edge


@dataclass(frozen=True, eq=False)
class BulkReference:
    """The computed bulk spectrum B of ``system`` (mean of its sites, sigma their standard error)
    and the sites behind it (for true labels)."""

    system: str
    spectrum: EdgeSpectrum
    sites: xr.Dataset


def simulated_bulk(
    dataset: xr.Dataset, system: str, calibration: CalibrationTransform | None = None
) -> BulkReference:
    """B of ``system`` on the dataset grid relative to its own edge crossing (:func:`site_mean`).

    Raises :class:`DeconvolutionError` if the system has no spectra or no edge.
    """
    simulated = system_spectra(dataset, system, calibration)
    if simulated.sites["surface"].values.any():
        logger.warning("bulk system %s has surface sites: is it a bulk (periodic) system?", system)
    mean, error = site_mean(simulated.spectra, simulated.sites["multiplicity"].values)
    e0 = _composite_edge(simulated.energy, mean, simulated.sites, f"bulk system {system}")
    spectrum = _edge_spectrum(f"{system} bulk", dataset, simulated.energy, mean, error, e0)
    return BulkReference(system, spectrum, simulated.sites)


def _edge_spectrum(
    name: str,
    dataset: xr.Dataset,
    energy: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    e0: float,
    own_edge: bool = True,
) -> EdgeSpectrum:
    """``mu`` and ``sigma`` given on absolute ``energy`` (eV), on the dataset grid relative to
    ``e0``, with the dataset's absorber and edge."""
    grid = dataset["energy"].values.astype(float)
    element, edge = _absorber_and_edge(dataset)
    return EdgeSpectrum(
        name,
        grid,
        np.interp(e0 + grid, energy, mu),
        np.interp(e0 + grid, energy, sigma),
        e0,
        own_edge=own_edge,
        element=element,
        edge=edge,
    )


def _composite_edge(energy: np.ndarray, mu: np.ndarray, sites: xr.Dataset, what: str) -> float:
    try:
        return edge_energy(energy, mu, near=float(np.mean(sites["e0"].values)))
    except ValueError as error:
        raise DeconvolutionError(f"{what}: the averaged spectrum has no edge ({error})") from error


@dataclass(frozen=True, eq=False)
class ParticleCase:
    """One particle to deconvolve.

    particle:        P (simulated: w S + (1 - w) I of the sampled sites; measured: the file).
    weight:          w and its sigma.
    true_surface:    the mean of the surface sites' spectra on P's grid and E0 (simulated only).
    true_interior:   the mean of the interior sites' spectra on its own edge crossing, as B is
                     placed: the best bulk reference there could be (simulated only; None when
                     every absorber is at the surface).
    surface_sites, interior_sites:  the dataset rows behind S and I (simulated only).
    """

    name: str
    particle: EdgeSpectrum
    weight: SurfaceWeight
    true_surface: EdgeSpectrum | None = None
    true_interior: EdgeSpectrum | None = None
    surface_sites: xr.Dataset | None = None
    interior_sites: xr.Dataset | None = None


def simulated_particle(
    dataset: xr.Dataset,
    system: str,
    weight: SurfaceWeight,
    calibration: CalibrationTransform | None = None,
) -> ParticleCase:
    """P, the true S, and the sites behind them for the simulated particle ``system``.

    The sampled sites are a stratified sample, not the particle's own mix, so P is
    ``w mean(surface sites) + (1 - w) mean(interior sites)`` with ``weight`` the particle's true
    surface share (:func:`surface_weight_from_labels`); sigma_P combines the two means' standard
    errors (:func:`site_mean`) the same way. Raises :class:`NotDeconvolvable` if w is 0, the
    system has no spectra in the dataset or no surface site was computed.
    """
    if not weight.value > 0:
        raise NotDeconvolvable(f"{system}: no absorber atom at the surface ({weight.source})")
    if system not in set(dataset["system"].values.tolist()) and system in _study_systems(dataset):
        # a system of the study whose every site failed or was rejected (the dataset's
        # summary.json counts them): reported, not an error; an unknown name stays an error
        raise NotDeconvolvable(f"{system}: no spectra in the dataset (its sites failed or were rejected)")
    simulated = system_spectra(dataset, system, calibration)
    surface = simulated.sites["surface"].values.astype(bool)
    if not surface.any():
        raise NotDeconvolvable(f"{system}: none of its {surface.size} computed sites is a surface site")
    if weight.value < 1 and surface.all():
        raise NotDeconvolvable(f"{system}: none of its {surface.size} computed sites is an interior site")
    multiplicity = simulated.sites["multiplicity"].values
    surface_mean, surface_error = site_mean(simulated.spectra[surface], multiplicity[surface])
    w = weight.value
    true_interior = None
    if surface.all():
        interior_mean, interior_error = np.zeros_like(surface_mean), np.zeros_like(surface_mean)
    else:
        interior_mean, interior_error = site_mean(simulated.spectra[~surface], multiplicity[~surface])
        interior_e0 = _composite_edge(
            simulated.energy, interior_mean, simulated.sites, f"interior of {system}"
        )
        true_interior = _edge_spectrum(
            f"{system} true interior", dataset, simulated.energy, interior_mean, interior_error, interior_e0
        )
    particle_mu = w * surface_mean + (1.0 - w) * interior_mean
    particle_sigma = np.hypot(w * surface_error, (1.0 - w) * interior_error)
    e0 = _composite_edge(simulated.energy, particle_mu, simulated.sites, f"particle {system}")
    return ParticleCase(
        name=system,
        particle=_edge_spectrum(
            f"{system} particle", dataset, simulated.energy, particle_mu, particle_sigma, e0
        ),
        weight=weight,
        true_surface=_edge_spectrum(
            f"{system} true surface",
            dataset,
            simulated.energy,
            surface_mean,
            surface_error,
            e0,
            own_edge=False,
        ),
        true_interior=true_interior,
        surface_sites=simulated.sites.isel(spectrum=np.flatnonzero(surface)),
        interior_sites=simulated.sites.isel(spectrum=np.flatnonzero(~surface)),
    )


def _study_systems(dataset: xr.Dataset) -> set[str]:
    """The systems of the study the dataset was assembled from (the JSON text of its
    ``provenance`` attribute), with or without spectra in it; empty when not recorded."""
    try:
        systems = json.loads(dataset.attrs.get("provenance") or "{}").get("systems")
    except (TypeError, ValueError, AttributeError):
        return set()
    return set(systems) if isinstance(systems, dict) else set()


def true_value(spec: TargetSpec, sites: xr.Dataset | None) -> float:
    """Mean label of target ``spec`` over ``sites`` weighted by multiplicity (NaN labels, which
    the system does not define, left out); NaN without sites."""
    if sites is None or sites.sizes.get("spectrum", 0) == 0:
        return float("nan")
    values = target_values(sites, spec)
    weights = sites["multiplicity"].values.astype(float)
    defined = np.isfinite(values)
    if values.ndim != 1 or not defined.any():
        return float("nan")
    return float(np.average(values[defined], weights=weights[defined]))


def particle_truths(spec: TargetSpec, case: ParticleCase, bulk: BulkReference) -> dict[str, float]:
    """True values of one number target for the particle, its surface and the bulk (NaN where
    unknown: a measured particle). The particle's is w * surface + (1 - w) * interior."""
    surface = true_value(spec, case.surface_sites)
    interior = true_value(spec, case.interior_sites)
    w = case.weight.value
    particle = surface if w == 1 else w * surface + (1.0 - w) * interior
    return {
        "particle": particle,
        "bulk": true_value(spec, bulk.sites),
        "surface": surface,
        "true_surface": surface,
    }
