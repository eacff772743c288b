"""xasflow: molecular dynamics -> ab initio X-ray absorption spectra -> neural networks."""

__version__ = "0.1.0"
