"""Data module: open the spectrum dataset, split it by system, standardize with training statistics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from xasflow.dataset.schema import open_dataset
from xasflow.errors import UserError
from xasflow.experiment import NormalizedSpectrum, to_relative_grid
from xasflow.experiment.fidelity import CalibrationTransform
from xasflow.models.augment import AugmentationParams, augment_batch
from xasflow.models.exafs import autobk_energy_grid, check_energy_range, chi_of_k
from xasflow.models.params import MIN_INPUT_POINTS, SystemSplit, TrainParams
from xasflow.models.targets import TargetScale, TargetSpec, target_values

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

# Smallest per-energy standard deviation used to scale mu, in units of the normalized edge step.
# Flat regions (deep pre-edge) barely vary across the training spectra; dividing by their tiny
# spread would blow measurement noise in an experimental spectrum up to unit variance.
MU_STD_FLOOR = 1e-2


@dataclass(frozen=True, eq=False)  # arrays: no field-wise ==
class Normalization:
    """Training-split statistics that map data to network space and back.

    The input mu (chi(k) for a chi model) is standardized per point of the input axis (z-scores);
    each target has its own :class:`~xasflow.models.targets.TargetScale` (numbers standardized,
    curves centred on the training mean, classes indexed).

    mu_mean, mu_std:  (n_energy,) per-energy mean and spread of normalized mu, or per-k of
                      k-weighted chi for a chi model (``mu_std`` floored at :data:`MU_STD_FLOOR`).
    targets:          target name -> its scale, in the model's target order.
    """

    mu_mean: np.ndarray
    mu_std: np.ndarray
    targets: dict[str, TargetScale]

    @classmethod
    def fit(
        cls, mu: np.ndarray, targets: dict[str, np.ndarray], specs: Sequence[TargetSpec]
    ) -> Normalization:
        """Statistics of ``mu`` (n, n_energy) and of each target's values (``targets[name]``)."""
        mu = np.asarray(mu, dtype=np.float64)
        return cls(
            mu_mean=mu.mean(axis=0),
            mu_std=np.maximum(mu.std(axis=0), MU_STD_FLOOR),
            targets={spec.name: TargetScale.fit(spec.kind, targets[spec.name]) for spec in specs},
        )

    def standardize_mu(self, mu: np.ndarray) -> np.ndarray:
        """(n, n_energy) normalized mu -> (n, n_energy) float32 network input."""
        return ((np.asarray(mu, dtype=np.float64) - self.mu_mean) / self.mu_std).astype(np.float32)

    def unstandardize_mu(self, standardized: np.ndarray) -> np.ndarray:
        """(n, n_energy) network input -> (n, n_energy) float64 normalized mu (or k-weighted chi),
        the inverse of :meth:`standardize_mu` up to its float32 rounding."""
        return np.asarray(standardized, dtype=np.float64) * self.mu_std + self.mu_mean

    def encode_targets(self, targets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Physical target values -> float32 network targets (see ``TargetScale.encode``)."""
        return {name: scale.encode(targets[name]) for name, scale in self.targets.items()}

    def head_sizes(self) -> dict[str, int]:
        return {name: scale.output_size for name, scale in self.targets.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and floats, for checkpoint hyperparameters."""
        return {
            "mu_mean": [float(value) for value in self.mu_mean],
            "mu_std": [float(value) for value in self.mu_std],
            "targets": {name: scale.to_dict() for name, scale in self.targets.items()},
        }

    @classmethod
    def from_dict(cls, mapping: dict[str, Any]) -> Normalization:
        return cls(
            mu_mean=np.asarray(mapping["mu_mean"], dtype=np.float64),
            mu_std=np.asarray(mapping["mu_std"], dtype=np.float64),
            targets={name: TargetScale.from_dict(value) for name, value in dict(mapping["targets"]).items()},
        )


@dataclass(frozen=True, eq=False)  # arrays: no field-wise ==
class SpectrumArrays:
    """The raw (not standardized) spectra and targets of one split.

    mu (n, n_energy) normalized absorption (the model's input: k-weighted chi(k) (n, n_k) for a
    chi model, except in :meth:`SpectrumDataModule.full_train_arrays`); targets: name -> (n,) or
    (n, n_r) physical values (NaN where undefined); system (n,) system name and frame (n,) MD
    snapshot of each spectrum.
    """

    mu: np.ndarray
    targets: dict[str, np.ndarray]
    system: np.ndarray
    frame: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.mu.shape[0])


def _cut_window(mu: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Spectra (n, n_energy) cut to the boolean ``window`` (n_energy,): (n, window.sum())."""
    return mu[:, window]


def measured_input(spectrum: NormalizedSpectrum, params: TrainParams, axis: np.ndarray) -> np.ndarray:
    """A normalized measured spectrum as a model reads it, on the model's input ``axis``
    (``SpectrumRegressor.energy``), shape (n_input,): mu interpolated onto E0 + ``axis`` (eV)
    for a mu model; for a chi model mu interpolated onto
    :func:`~xasflow.models.exafs.autobk_energy_grid` (up to k_max, the last point of ``axis``),
    then :func:`~xasflow.models.exafs.chi_of_k` on ``axis`` (1/Angstrom), as the training
    spectra were. Raises ``SpectrumReadError`` if the data do not cover what is read (check
    first with ``check_compatible``)."""
    if params.representation != "chi":
        return to_relative_grid(spectrum, axis)
    energy = autobk_energy_grid(float(axis[-1]))
    return chi_of_k(energy, to_relative_grid(spectrum, energy), axis, params.k_weight)


class IndexBatches:
    """Batches cut by index from tensors held in memory: no per-item Dataset, no collation.

    ``tensors`` maps names to tensors sharing their first dimension. Each pass yields dicts of
    ``batch_size`` rows; with ``shuffle`` the order is a fresh permutation from a private
    generator seeded with ``seed`` (so the order depends on the seed alone). ``draw`` (optional)
    replaces the stored rows of a batch by freshly drawn ones (augmentation): it takes the index
    tensor and returns the batch dict.
    """

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        draw=None,
    ) -> None:
        self.tensors = tensors
        self.n = int(next(iter(tensors.values())).shape[0])
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(int(seed))
        self.draw = draw

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        for start in range(0, self.n, self.batch_size):
            index = order[start : start + self.batch_size]
            if self.draw is not None:
                yield self.draw(index)
            else:
                yield {name: tensor[index] for name, tensor in self.tensors.items()}


class AugmentedSpectra:
    """Training spectra redrawn at every visit (:mod:`xasflow.models.augment`), in network space.

    Item ``index`` at its ``k``-th visit uses ``default_rng([seed, index, k])``: reproducible
    from the seed and the (seeded) order in which the batches ask for items. A site average
    gets the mean of its members' numbers, curves and probabilities; its class is that of the
    members when they agree, else undefined (left out of the loss).
    """

    def __init__(
        self,
        arrays: SpectrumArrays,
        normalization: Normalization,
        energy: np.ndarray,
        params: AugmentationParams,
        to_input: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """``arrays.mu`` is on ``energy`` (the dataset's whole grid); ``to_input`` (default: none)
        turns augmented spectra (m, n_energy) into what the model reads (m, n_input): the cut to
        its energy window, or chi(k)."""
        self.arrays = arrays
        self.normalization = normalization
        self.energy = np.asarray(energy, dtype=float)
        self.params = params
        self.to_input = to_input
        self.visits = np.zeros(len(arrays), dtype=np.int64)
        # (index, draw) -> (model input, targets) of the pooled draws (params.pool > 0)
        self._pool: dict[tuple[int, int], tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        frames = arrays.frame if arrays.frame is not None else np.zeros(len(arrays), dtype=np.int64)
        keys = list(zip(arrays.system.tolist(), frames.tolist(), strict=True))
        groups: dict[tuple[str, int], list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key, []).append(index)
        self.group_members = [np.asarray(groups[key]) for key in keys]

    def __len__(self) -> int:
        return len(self.arrays)

    def _members(self, index: int, rng: np.random.Generator) -> np.ndarray:
        members = np.array([index])
        if self.params.site_average > 1:
            group = self.group_members[index]
            count = int(rng.integers(1, min(self.params.site_average, group.size) + 1))
            others = rng.permutation(group[group != index])[: count - 1]
            members = np.concatenate([members, others])
        return members

    def _average_targets(self, members: np.ndarray) -> dict[str, np.ndarray]:
        averaged = {}
        for name, scale in self.normalization.targets.items():
            values = self.arrays.targets[name][members]
            mean = values.mean(axis=0)
            if scale.kind == "classification" and not np.all(values == values[0]):
                mean = np.nan  # members of different classes: no class for their average
            averaged[name] = np.asarray(mean, dtype=np.float64)
        return averaged

    def draw(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The next augmented (mu (n_energy,), {target: value}) of ``index``, physical units."""
        mu, targets = self.draw_batch(np.array([index]))
        return mu[0], {name: values[0] for name, values in targets.items()}

    def draw_batch(self, indices: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The next augmented spectra (m, n_input) and targets of ``indices``, physical units:
        random numbers drawn per item, the spectra changed as one batch (:func:`augment_batch`)
        on the whole grid, then made model input (``to_input``). With a pool
        (``params.pool`` P > 0) visit k of an item is its draw k mod P, computed at its first
        use and kept."""
        keys = []
        for index in np.asarray(indices, dtype=int).tolist():
            keys.append((index, int(self.visits[index]) % (self.params.pool or np.iinfo(np.int64).max)))
            self.visits[index] += 1
        if not self.params.pool:
            return self._fresh(keys)
        missing = [key for key in dict.fromkeys(keys) if key not in self._pool]
        if missing:
            mu, targets = self._fresh(missing)
            for row, key in enumerate(missing):
                self._pool[key] = (mu[row], {name: values[row] for name, values in targets.items()})
        rows = [self._pool[key] for key in keys]
        mu = np.stack([row[0] for row in rows])
        return mu, {name: np.array([row[1][name] for row in rows]) for name in self.normalization.targets}

    def _fresh(self, keys: list[tuple[int, int]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Draw ``draw`` of item ``index`` for each (index, draw) key, from
        ``default_rng([seed, index, draw])``: (m, n_input) model inputs and targets."""
        rngs, averages, labels = [], [], []
        for index, draw in keys:
            rng = np.random.default_rng([self.params.seed, int(index), int(draw)])
            members = self._members(int(index), rng)
            rngs.append(rng)
            averages.append(self.arrays.mu[members].mean(axis=0))
            labels.append(self._average_targets(members))
        mu = augment_batch(self.energy, np.array(averages), self.params, rngs)
        if self.to_input is not None:
            mu = self.to_input(mu)
        targets = {name: np.array([label[name] for label in labels]) for name in self.normalization.targets}
        return mu, targets

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """The next draw of one item, in network space (for inspection; training uses :meth:`batch`)."""
        return {name: values[0] for name, values in self.batch(torch.tensor([index])).items()}

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Network-space batch of the next draws of ``indices``."""
        mu, targets = self.draw_batch(indices.numpy())
        encoded = self.normalization.encode_targets(targets)
        return {
            "mu": torch.from_numpy(self.normalization.standardize_mu(mu)),
            **{name: torch.from_numpy(values) for name, values in encoded.items()},
        }


class SpectrumDataModule(pl.LightningDataModule):
    """Train / val / test loaders over a spectrum dataset, split by system.

    The zarr store is opened in :meth:`setup` (not here), so constructing the module is cheap
    and does not touch the file. After ``setup()`` the attributes ``split`` (systems per split),
    ``energy`` (the model's input axis, see below), ``r`` (n_r,) Angstrom, ``normalization`` and
    :meth:`arrays` are available.

    ``energy`` is the axis the network reads, whatever the representation: for a mu model
    (n_energy,) eV relative to E0 (the energy window), for a chi model (n_k,) the k grid in
    1/Angstrom (``params.k_grid()``); ``full_energy`` is always the dataset's grid in eV. Keeping
    one name keeps the checkpoint format: the same ``energy`` hyperparameter sizes the network,
    the normalization and the out-of-distribution reference, and ``params.representation``
    says its unit.
    """

    def __init__(
        self,
        dataset_path: str | Path,
        params: TrainParams,
        augmentation: AugmentationParams | None = None,
        calibration: CalibrationTransform | None = None,
    ) -> None:
        super().__init__()
        self.dataset_path = Path(dataset_path)
        self.params = params
        self.augmentation = augmentation or AugmentationParams.none()
        self.calibration = calibration
        self.split: SystemSplit | None = None
        self.energy: np.ndarray | None = None
        self.r: np.ndarray | None = None
        self.normalization: Normalization | None = None
        self.dataset_attrs: dict[str, Any] = {}
        self.absorber: str | None = None
        self._arrays: dict[str, SpectrumArrays] = {}
        self._augmented: AugmentedSpectra | None = None
        self._train_batches: IndexBatches | None = None
        # dataset spectra (n, n_full_energy) -> model input (n, n_input): window cut or chi(k)
        self.to_input: Callable[[np.ndarray], np.ndarray] | None = None
        self.full_energy: np.ndarray | None = None
        self._full_train_mu: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:  # called again by Trainer.fit after train_model's own call
            return
        dataset = open_dataset(self.dataset_path)  # verified against its checksums
        # zarr 3 returns numpy's variable-width StringDType, which cannot be cast with astype(str)
        systems = np.array(dataset["system"].values.tolist(), dtype=str)
        try:
            split = self.params.resolve_splits(systems)
        except (UserError, ValueError) as error:
            raise UserError(f"{self.dataset_path}: {error}") from error
        energy = dataset["energy"].values.astype(np.float64)
        mu = dataset["mu"].values.astype(np.float64)
        if self.calibration is not None and not self.calibration.is_identity:
            # simulated spectra made to look measured (the reference's fitted transform)
            mu = self.calibration.apply(energy, mu, energy)
        self.energy, self.to_input = self._model_input(energy)
        self.full_energy = energy
        self._split_arrays(dataset, systems, split, mu.astype(np.float32))
        train = self._arrays["train"]
        self.normalization = Normalization.fit(train.mu, train.targets, self.params.targets)
        self.r = dataset["r"].values.astype(np.float64)
        self.dataset_attrs = dict(dataset.attrs)
        self.absorber = ",".join(sorted(set(dataset["absorber"].values.tolist())))
        self.split = split
        logger.info(
            "%s: %d train spectra (%s), %d val (%s), %d test (%s), excluded %s",
            self.dataset_path,
            len(train),
            ", ".join(split.train),
            len(self._arrays["val"]),
            ", ".join(split.val),
            len(self._arrays["test"]),
            ", ".join(split.test),
            ", ".join(split.excluded) or "none",
        )

    def _model_input(self, energy: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """The model's input axis and the map from spectra on the dataset grid ``energy`` (eV) to
        its input: the energy window of a mu model, k-weighted chi(k) on ``params.k_grid()`` for
        a chi model (refused, naming the dataset, if the grid ends below k_max)."""
        if self.params.representation != "chi":
            window = self._model_window(energy)
            return energy[window], partial(_cut_window, window=window)
        k_grid = self.params.k_grid()
        try:
            check_energy_range(energy, float(k_grid[-1]))
        except UserError as error:
            raise UserError(f"{self.dataset_path}: {error}") from error
        return k_grid, partial(chi_of_k, energy, k_grid=k_grid, k_weight=self.params.k_weight)

    def _model_window(self, energy: np.ndarray) -> np.ndarray:
        """Mask of the dataset grid ``energy`` (eV) inside ``params.energy_min..energy_max``."""
        low = energy[0] if self.params.energy_min is None else self.params.energy_min
        high = energy[-1] if self.params.energy_max is None else self.params.energy_max
        window = (energy >= low - 1e-9) & (energy <= high + 1e-9)
        if window.sum() < MIN_INPUT_POINTS:
            raise UserError(
                f"{self.dataset_path}: the model window {low}..{high} eV holds {window.sum()} points of the "
                f"dataset grid {energy[0]:g}..{energy[-1]:g} eV; valid: at least {MIN_INPUT_POINTS}"
            )
        return window

    def _split_arrays(self, dataset, systems: np.ndarray, split: SystemSplit, mu: np.ndarray) -> None:
        """Fill the arrays of each split (spectra made model input) from the dataset."""
        source = str(self.dataset_path)
        targets = {spec.name: target_values(dataset, spec, source) for spec in self.params.targets}
        frame = dataset["frame"].values.astype(np.int64)
        for name, members in zip(SPLITS, (split.train, split.val, split.test), strict=True):
            mask = np.isin(systems, members)
            if name == "train":
                self._full_train_mu = mu[mask]  # augmentation works on the whole grid
            self._arrays[name] = SpectrumArrays(
                mu=self.to_input(mu[mask]).astype(np.float32),
                targets={target: values[mask] for target, values in targets.items()},
                system=systems[mask],
                frame=frame[mask],
            )
        self._check_targets_defined(self._arrays["train"])

    def _check_targets_defined(self, train: SpectrumArrays) -> None:
        """Every target needs defined training values (e.g. a valence needs its ligand)."""
        for name, values in train.targets.items():
            defined = np.isfinite(values).all(axis=tuple(range(1, values.ndim)))
            if len(train) and not defined.any():
                raise UserError(
                    f"{self.dataset_path}: target {name} is undefined for every training spectrum "
                    f"(systems {', '.join(sorted(set(train.system.tolist())))})"
                )

    def arrays(self, split_name: str) -> SpectrumArrays:
        """Raw spectra and targets of ``split_name`` ("train", "val" or "test")."""
        if self.split is None:
            raise RuntimeError("SpectrumDataModule.setup() must run before arrays()")
        if split_name not in self._arrays:
            raise ValueError(f"unknown split {split_name!r}; valid: {', '.join(SPLITS)}")
        return self._arrays[split_name]

    def full_train_arrays(self) -> SpectrumArrays:
        """The training split with spectra on the dataset's whole energy grid (for augmenting)."""
        train = self.arrays("train")
        return replace(train, mu=self._full_train_mu)

    def tensors(self, split_name: str) -> dict[str, torch.Tensor]:
        """Network-space tensors of a split: ``mu`` and one tensor per target."""
        assert self.normalization is not None, "setup() must run first"
        arrays = self.arrays(split_name)
        encoded = self.normalization.encode_targets(arrays.targets)
        return {
            "mu": torch.from_numpy(self.normalization.standardize_mu(arrays.mu)),
            **{name: torch.from_numpy(values) for name, values in encoded.items()},
        }

    def _loader(self, split_name: str, shuffle: bool) -> IndexBatches:
        assert self.normalization is not None, "setup() must run first"
        draw = None
        if split_name == "train" and self.augmentation.enabled:
            if self._augmented is None:  # one for the whole fit: its visit counts go on
                self._augmented = AugmentedSpectra(
                    self.full_train_arrays(),
                    self.normalization,
                    self.full_energy,
                    self.augmentation,
                    self.to_input,
                )
            draw = self._augmented.batch
        # the data are a few MB: held as tensors and cut by index, never item by item
        return IndexBatches(
            self.tensors(split_name),
            self.params.batch_size,
            shuffle=shuffle,
            seed=self.params.seed,
            draw=draw,
        )

    def train_dataloader(self) -> IndexBatches:
        if self._train_batches is None:  # one for the whole fit: its shuffling generator goes on
            self._train_batches = self._loader("train", shuffle=True)
        return self._train_batches

    def val_dataloader(self) -> IndexBatches:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> IndexBatches:
        return self._loader("test", shuffle=False)
