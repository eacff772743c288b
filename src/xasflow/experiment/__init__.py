"""Measured XAS spectra: reading (XDI, plain columns, Athena projects), edge-step normalization, alignment and
fidelity against simulated spectra. Spectra are :class:`xasflow.spectrum.Spectrum` objects."""

from xasflow.experiment.normalization import NormalizedSpectrum, normalize, to_relative_grid
from xasflow.experiment.readers import SpectrumReadError, read_spectra, read_spectrum

__all__ = [
    "NormalizedSpectrum",
    "SpectrumReadError",
    "normalize",
    "read_spectra",
    "read_spectrum",
    "to_relative_grid",
]
