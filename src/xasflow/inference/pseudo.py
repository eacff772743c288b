"""A pseudo-experimental spectrum from a held-out system: what a measurement of it would look like.

All computed site spectra of the system are averaged on one absolute energy axis (a measurement
sees every absorber at once), broadened by a Gaussian (instrument resolution) and given Gaussian
noise, then written as a plain two-column file that goes through the same reader and Larch
normalization as a real measurement.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from xasflow.experiment.alignment import XanesNormalization, half_step_energy
from xasflow.experiment.fidelity import CalibrationTransform, gaussian_broaden
from xasflow.fileio import atomic_write_text
from xasflow.spectrum import Spectrum


@dataclass(frozen=True)
class PseudoExperimentParams:
    """``noise``: standard deviation in units of the edge step; ``broadening``: FWHM in eV."""

    system: str
    noise: float = 0.01
    broadening: float = 1.0
    seed: int = 3


def make_pseudo_experiment(
    dataset: xr.Dataset, params: PseudoExperimentParams, calibration: CalibrationTransform | None = None
) -> tuple[Spectrum, dict]:
    """The pseudo-experimental spectrum of the held-out ``params.system`` and its truth.

    The spectrum is computed (``kind="computed"``, ``metadata["pseudo_experiment"]`` True) on
    absolute energies, eV, shape (n,), with a step of half the dataset's grid step; mu is in
    edge steps (the dataset's normalized mu) plus noise. ``truth`` holds the mean coordination
    number and mean RDF of the averaged sites. With ``calibration`` (the transform fitted on a
    measured reference) the averaged spectrum is first made to look measured, as the training
    spectra are, then broadened and noised.

    Raises ValueError if the system has no spectra in the dataset.
    """
    selected = dataset.where(dataset["system"] == params.system, drop=True)
    if selected.sizes.get("spectrum", 0) == 0:
        systems = sorted(set(dataset["system"].values.tolist()))
        raise ValueError(f"system '{params.system}' has no spectra in the dataset (systems: {systems})")
    relative = dataset["energy"].values
    e0 = selected["e0"].values
    step = float(relative[1] - relative[0])
    # the union of the sites' ranges; np.interp holds each spectrum's end values beyond its own
    # range (flat pre-edge, last post-edge value), which only touches the outer few eV
    start, stop = e0.min() + relative[0], e0.max() + relative[-1]
    energy = np.arange(start, stop + 1e-9, step / 2)
    spectra = np.array(
        [
            np.interp(energy - site_e0, relative, mu)
            for site_e0, mu in zip(e0, selected["mu"].values, strict=True)
        ]
    )
    # a symmetry-reduced crystal site stands for `multiplicity` atoms
    weights = selected["multiplicity"].values.astype(float)
    averaged = np.average(spectra, axis=0, weights=weights)
    if calibration is not None and not calibration.is_identity:
        # FEFF's mu is ~1 above the edge, so the edge level can be read off it directly
        e0 = half_step_energy(energy, averaged, level=XanesNormalization().edge_level)
        averaged = calibration.apply(energy - e0, averaged, energy - e0)
    averaged = gaussian_broaden(energy, averaged, params.broadening)
    rng = np.random.default_rng(params.seed)
    measured = averaged + rng.normal(0.0, params.noise, size=averaged.size)
    truth = {
        "system": params.system,
        "n_sites_averaged": int(selected.sizes["spectrum"]),
        "coordination_number": float(np.average(selected["coordination_number"].values, weights=weights)),
        "rdf": np.average(selected["rdf"].values, axis=0, weights=weights).tolist(),
        "r": dataset["r"].values.tolist(),
        "noise": params.noise,
        "broadening_fwhm_eV": params.broadening,
        "seed": params.seed,
        "calibration": calibration.to_dict() if calibration is not None else None,
    }
    spectrum = Spectrum(
        energy,
        measured,
        source=f"pseudo-experiment of held-out system {params.system}",
        kind="computed",
        metadata={"pseudo_experiment": True, "n_sites_averaged": truth["n_sites_averaged"]},
    )
    return spectrum, truth


def write_pseudo_experiment(
    dataset: xr.Dataset,
    params: PseudoExperimentParams,
    spectrum_path: str | Path,
    truth_path: str | Path,
    calibration: CalibrationTransform | None = None,
) -> None:
    """Write the pseudo-experiment as a two-column text file (absolute eV, mu) that
    :func:`~xasflow.experiment.readers.read_spectrum` reads like a measurement, and its truth
    as JSON. Both files are written atomically."""
    spectrum, truth = make_pseudo_experiment(dataset, params, calibration)
    header = (
        f"pseudo-experimental spectrum of held-out system {params.system}: "
        f"mean of {truth['n_sites_averaged']} "
        f"FEFF site spectra, Gaussian broadening {params.broadening} eV FWHM, noise {params.noise}\n"
        "energy_eV mu"
    )
    table = io.StringIO()
    np.savetxt(table, np.column_stack([spectrum.energy, spectrum.mu]), fmt="%.6f", header=header)
    atomic_write_text(spectrum_path, table.getvalue())
    atomic_write_text(truth_path, json.dumps(truth, indent=2))
