"""Measured XAS spectra: reading (XDI, plain columns) and edge-step normalization."""

from xasflow.experiment.normalization import NormalizedSpectrum, normalize, to_relative_grid
from xasflow.experiment.readers import MeasuredSpectrum, SpectrumReadError, read_spectrum

__all__ = [
    "MeasuredSpectrum",
    "NormalizedSpectrum",
    "SpectrumReadError",
    "normalize",
    "read_spectrum",
    "to_relative_grid",
]
