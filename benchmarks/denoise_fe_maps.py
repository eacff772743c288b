"""Fraction maps from noisy Fe K XANES stacks: raw per-pixel NNLS, PCA then NNLS, the denoiser.

Synthetic stacks are built from four measured Fe references (../shared/data/experimental:
Fe foil, FeO, Fe2O3, Fe3C), normalized with Larch and put on a common grid of absolute energies
across the Fe K edge. Smooth fraction maps summing to 1 mix them; a smooth background (offset and
slope, varying across the image) is added; Poisson counts are drawn at several doses (expected
counts per pixel per energy for mu = 1 edge step).

Printed per dose: RMSE of the fraction maps (edge steps) of
  raw       per-pixel NNLS on counts / dose,
  pca       sklearn PCA keeping n_references + n_background components (the rank of the
            noise-free stack, the most favourable fixed rule for PCA), reconstructed, then NNLS,
  den+nnls  NNLS on the denoiser's spectra,
  den       the denoiser's own fractions (posterior),
  net       the network's blind fractions (prediction from the neighbours alone),
and the denoiser's wall time. Run:

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/denoise_fe_maps.py [--size 64] [--doses 10 100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.optimize import nnls
from sklearn.decomposition import PCA

from xasflow.experiment import read_spectrum
from xasflow.experiment.normalization import normalize
from xasflow.inference.denoise import DenoiseSettings, background_basis, denoise_stack

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "experimental"
REFERENCES = ("fe_metal_rt", "feo_rt1", "fe2o3_rt", "fe3c_rt")
ENERGY = np.linspace(7095.0, 7194.0, 100)  # eV, 1 eV steps across the Fe K edge (7112 eV)


def fe_references(energy: np.ndarray = ENERGY, folder: Path = DATA) -> np.ndarray:
    """(4, E) normalized mu (edge steps) of the measured Fe references on ``energy``."""
    rows = []
    for name in REFERENCES:
        normalized = normalize(read_spectrum(folder / f"{name}.xdi"))
        rows.append(np.interp(energy, normalized.energy, normalized.norm))
    return np.asarray(rows)


def synthetic_stack(references, energy, size, dose, seed):
    """Counts (P, E), true fractions (P, R), clean mu (P, E) of a size x size image."""
    rng = np.random.default_rng(seed)
    n_refs = references.shape[0]
    fields = np.stack(
        [gaussian_filter(rng.normal(size=(size, size)), size / 8, mode="wrap") for _ in range(n_refs)]
    )
    fields /= fields.std(axis=(1, 2), keepdims=True)
    weights = np.exp(1.5 * fields)
    fractions = (weights / weights.sum(axis=0)).reshape(n_refs, -1).T
    offset = 0.1 + 0.03 * gaussian_filter(rng.normal(size=(size, size)), size / 4, mode="wrap").ravel() * 10
    slope = 0.02 * gaussian_filter(rng.normal(size=(size, size)), size / 4, mode="wrap").ravel() * 10
    basis = background_basis(energy, 1)
    clean = (
        fractions @ references + np.clip(offset, 0.03, None)[:, None] * basis[0] + slope[:, None] * basis[1]
    )
    clean = np.clip(clean, 0.0, None)
    counts = rng.poisson(dose * clean).astype(np.float32)
    return counts, fractions, clean


def nnls_fractions(spectra, references, energy, order=1):
    """Per-pixel NNLS of spectra (P, E) on the references plus a free Legendre background."""
    basis = background_basis(energy, order)
    design = np.vstack([references, basis, -basis]).T
    return np.array([nnls(design, spectrum)[0][: references.shape[0]] for spectrum in spectra])


def rmse(estimate, truth):
    return float(np.sqrt(np.mean((estimate - truth) ** 2)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--doses", type=float, nargs="+", default=[10, 30, 100, 1000, 10000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=DenoiseSettings.epochs)
    parser.add_argument(
        "--input", choices=("counts", "mu"), default="counts", help="what the denoiser is given"
    )
    parser.add_argument("--learning-rate", type=float, default=DenoiseSettings.learning_rate)
    args = parser.parse_args()
    torch.set_num_threads(1)
    references = fe_references()
    columns = ("dose", "raw", "pca", "den+nnls", "den", "net", "den/raw", "wall s", "cpu s")
    print(" ".join(f"{name:>8}" for name in columns))
    for dose in args.doses:
        counts, truth, _ = synthetic_stack(references, ENERGY, args.size, dose, args.seed)
        mu = counts / dose
        raw = nnls_fractions(mu, references, ENERGY)
        n_components = references.shape[0] + 2
        pca = nnls_fractions(_pca(mu, n_components), references, ENERGY)
        settings = DenoiseSettings(
            input=args.input,
            counts_per_unit=float(dose) if args.input == "counts" else None,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            seed=args.seed,
        )
        start, start_cpu = time.perf_counter(), time.process_time()
        given = counts if args.input == "counts" else mu
        result = denoise_stack(given, ENERGY, references, settings, image_shape=(args.size, args.size))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        denoised = nnls_fractions(
            result.denoised / (dose if args.input == "counts" else 1.0), references, ENERGY
        )
        row = [rmse(raw, truth), rmse(pca, truth), rmse(denoised, truth), rmse(result.fractions, truth)]
        row.append(rmse(result.network_fractions, truth))
        print(
            f"{dose:8g} "
            + " ".join(f"{v:8.4f}" for v in row)
            + f" {row[3] / row[0]:8.3f} {seconds:8.1f} {cpu_seconds:8.1f}"
        )


def _pca(mu, n_components):
    model = PCA(n_components)
    return model.inverse_transform(model.fit_transform(mu))


if __name__ == "__main__":
    main()
