"""Training and inference throughput of xasflow's models on the CPU.

Training: spectra per second through one epoch of the same network, loss and optimizer, fed
two ways:
- per item: a ``torch.utils.data.Dataset`` that builds each item's dict of tensors and a
  ``DataLoader`` that collates them (the usual PyTorch pattern, and xasflow's before issue 11);
- in memory: the split held as tensors, batches cut by index (``xasflow.models.data.IndexBatches``,
  what ``SpectrumDataModule`` now returns).
Both without and with training augmentation (every spectrum redrawn at every visit: per item
with ``augment_spectrum``, against ``AugmentedSpectra.batch``, which draws the same random
numbers per item and changes the whole batch at once).
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

from xasflow.models.augment import AugmentationParams, augment_spectrum
from xasflow.models.data import AugmentedSpectra, IndexBatches, Normalization, SpectrumArrays
from xasflow.models.module import SpectrumRegressor
from xasflow.models.params import TrainParams

N_R = 101  # the default study's RDF grid


class PerItemAugmented(Dataset):
    """Each item redrawn on its own (``augment_spectrum``), standardized, then collated: the
    per-item augmentation xasflow had before issue 11."""

    def __init__(self, energy, mu, targets, normalization, params) -> None:
        self.energy, self.mu, self.targets = energy, mu, targets
        self.normalization, self.params = normalization, params
        self.visits = np.zeros(len(mu), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.mu)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.params.seed, index, int(self.visits[index])])
        self.visits[index] += 1
        mu = augment_spectrum(self.energy, self.mu[index], self.params, rng)
        encoded = self.normalization.encode_targets(
            {k: v[index : index + 1] for k, v in self.targets.items()}
        )
        return {
            "mu": torch.from_numpy(self.normalization.standardize_mu(mu[None, :])[0]),
            **{name: torch.as_tensor(values[0]) for name, values in encoded.items()},
        }


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


ENERGY = np.arange(-12.0, 20.5, 1.0)  # the default study's model window, 1 eV


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    edge = 1.0 / (1.0 + np.exp(-ENERGY / 1.5))
    mu = edge + 0.3 * np.exp(-(((ENERGY[None, :] - rng.uniform(3, 8, (n, 1))) / 3.0) ** 2))
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


class _First:
    """The batches of one pass that hold the first ``n_spectra`` spectra."""

    def __init__(self, batches, n_spectra: int) -> None:
        self.batches, self.n_spectra = batches, n_spectra

    def __iter__(self):
        seen = 0
        for batch in self.batches:
            if seen >= self.n_spectra:
                return
            seen += batch["mu"].shape[0]
            yield batch


def _rates(architecture: str, args, mu, targets, normalization) -> list[tuple]:
    """(network, data, per-item sp/s, in-memory sp/s, inference sp/s) without and with augmentation."""
    params = TrainParams(
        architecture=architecture, hidden_sizes=(64, 32), batch_size=args.batch_size, dropout=0.0
    )
    model = SpectrumRegressor(params, ENERGY, np.linspace(1, 6, N_R), normalization)
    standardized = normalization.standardize_mu(mu)
    encoded = normalization.encode_targets(targets)
    tensors = {"mu": torch.from_numpy(standardized), **{k: torch.from_numpy(v) for k, v in encoded.items()}}
    per_item = DataLoader(PerItem(standardized, encoded), batch_size=args.batch_size, shuffle=True)
    memory = IndexBatches(tensors, args.batch_size, shuffle=True, seed=0)
    _epoch_rate(model, memory, args.spectra, 1)  # warm-up
    plain = (
        _epoch_rate(model, per_item, args.spectra, args.epochs),
        _epoch_rate(model, memory, args.spectra, args.epochs),
    )
    augmentation = AugmentationParams(seed=1)
    arrays = SpectrumArrays(
        mu=mu, targets=targets, system=np.full(len(mu), "s"), frame=np.zeros(len(mu), int)
    )
    per_item = DataLoader(
        PerItemAugmented(ENERGY, mu, targets, normalization, augmentation),
        batch_size=args.batch_size,
        shuffle=True,
    )
    batched = AugmentedSpectra(arrays, normalization, ENERGY, augmentation)
    memory = IndexBatches(tensors, args.batch_size, shuffle=True, seed=0, draw=batched.batch)
    n_augmented = min(args.spectra, args.augmented_spectra)  # the per-item redraw is slow
    augmented = (
        _epoch_rate(model, _First(per_item, n_augmented), n_augmented, 1),
        _epoch_rate(model, _First(memory, n_augmented), n_augmented, 1),
    )
    started = time.perf_counter()
    model.predict_spectra(mu)
    inference = args.spectra / (time.perf_counter() - started)
    return [(architecture, "plain", *plain, inference), (architecture, "augmented", *augmented, inference)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=4000)
    parser.add_argument("--augmented-spectra", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mu, targets = _data(args.spectra)
    normalization = Normalization.fit(mu, targets, TrainParams().targets)
    print(
        f"{args.spectra} spectra x {ENERGY.size} energies, batch {args.batch_size}, {args.threads} thread(s)"
    )
    rows = [
        row
        for architecture in ("mlp", "cnn")
        for row in _rates(architecture, args, mu, targets, normalization)
    ]
    header = f"{'network':8s} {'data':10s} {'per-item sp/s':>14s} {'in-memory sp/s':>15s} {'ratio':>6s}"
    print(header + f" {'inference sp/s':>15s}")
    for architecture, kind, per_item, in_memory, inference in rows:
        print(
            f"{architecture:8s} {kind:10s} {per_item:14.0f} {in_memory:15.0f} "
            f"{in_memory / per_item:6.2f} {inference:15.0f}"
        )


if __name__ == "__main__":
    main()
