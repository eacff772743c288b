"""Training and inference throughput of xasflow's models on the CPU.

Training: spectra per second through one epoch of the same network, loss and optimizer, fed
two ways:
- per item: a ``torch.utils.data.Dataset`` that builds each item's dict of tensors and a
  ``DataLoader`` that collates them (the usual PyTorch pattern, and xasflow's before issue 11);
- in memory: the split held as tensors, batches cut by index (``xasflow.models.data.IndexBatches``,
  what ``SpectrumDataModule`` now returns).
Inference: spectra per second of ``SpectrumRegressor.predict_spectra`` on a block of spectra.
Goal (issue 11): in-memory at least 5x per-item in training spectra/s.

    .venv/bin/python benchmarks/training_throughput.py [--spectra 4000] [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from xasflow.models.data import IndexBatches, Normalization
from xasflow.models.module import SpectrumRegressor
from xasflow.models.params import TrainParams

N_ENERGY, N_R = 33, 101  # the default study's model window (-12..+20 eV, 1 eV) and RDF grid


class PerItem(Dataset):
    """One dict of tensors per item, collated by the DataLoader."""

    def __init__(self, mu: np.ndarray, targets: dict[str, np.ndarray]) -> None:
        self.mu = mu
        self.targets = targets

    def __len__(self) -> int:
        return len(self.mu)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "mu": torch.from_numpy(self.mu[index]),
            **{name: torch.as_tensor(values[index]) for name, values in self.targets.items()},
        }


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, N_ENERGY))
    targets = {"coordination_number": rng.uniform(6, 12, n), "rdf": rng.random((n, N_R))}
    return mu, targets


def _epoch_rate(model: SpectrumRegressor, batches, n: int, epochs: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    model.log_dict = lambda *args, **kwargs: None  # no Trainer attached: logging is a no-op here
    started = time.perf_counter()
    for _ in range(epochs):
        for batch in batches:
            optimizer.zero_grad()
            loss = model._shared_step(batch, "train")
            loss.backward()
            optimizer.step()
    return n * epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mu, targets = _data(args.spectra)
    params = TrainParams(architecture="mlp", hidden_sizes=(64, 32), batch_size=args.batch_size, dropout=0.0)
    normalization = Normalization.fit(mu, targets, params.targets)
    encoded = normalization.encode_targets(targets)
    standardized = normalization.standardize_mu(mu)
    print(f"{args.spectra} spectra x {N_ENERGY} energies, batch {args.batch_size}, {args.threads} thread(s)")
    rows = []
    for architecture in ("mlp", "cnn"):
        params = TrainParams(
            architecture=architecture, hidden_sizes=(64, 32), batch_size=args.batch_size, dropout=0.0
        )
        model = SpectrumRegressor(
            params, np.arange(N_ENERGY, dtype=float), np.linspace(1, 6, N_R), normalization
        )
        loader = DataLoader(
            PerItem(standardized, encoded), batch_size=args.batch_size, shuffle=True, num_workers=0
        )
        tensors = {
            "mu": torch.from_numpy(standardized),
            **{k: torch.from_numpy(v) for k, v in encoded.items()},
        }
        memory = IndexBatches(tensors, args.batch_size, shuffle=True, seed=0)
        _epoch_rate(model, memory, args.spectra, 1)  # warm-up
        per_item = _epoch_rate(model, loader, args.spectra, args.epochs)
        in_memory = _epoch_rate(model, memory, args.spectra, args.epochs)
        started = time.perf_counter()
        model.predict_spectra(mu)
        inference = args.spectra / (time.perf_counter() - started)
        rows.append((architecture, per_item, in_memory, inference))
    print(
        f"{'network':8s} {'per-item sp/s':>14s} {'in-memory sp/s':>15s} {'ratio':>6s} {'inference sp/s':>15s}"
    )
    for architecture, per_item, in_memory, inference in rows:
        print(
            f"{architecture:8s} {per_item:14.0f} {in_memory:15.0f} "
            f"{in_memory / per_item:6.2f} {inference:15.0f}"
        )


if __name__ == "__main__":
    main()
