"""Data module: open the spectrum dataset, split it by system, standardize with training statistics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from xasflow.dataset.schema import open_dataset
from xasflow.errors import UserError
from xasflow.experiment.fidelity import CalibrationTransform
from xasflow.models.augment import AugmentationParams, augment_spectrum
from xasflow.models.params import SystemSplit, TrainParams

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

# Smallest per-energy standard deviation used to scale mu, in units of the normalized edge step.
# Flat regions (deep pre-edge) barely vary across the training spectra; dividing by their tiny
# spread would blow measurement noise in an experimental spectrum up to unit variance.
MU_STD_FLOOR = 1e-2


@dataclass(frozen=True, eq=False)  # arrays: no field-wise ==
class Normalization:
    """Training-split statistics that map data to network space and back.

    The input mu and the coordination number are standardized (z-scores); the RDF is only
    centered, so that its loss stays a mean squared error in g(r) units while the RDF head
    starts from the training-mean RDF instead of from zero.

    mu_mean, mu_std:           (n_energy,) per-energy mean and spread of normalized mu
                               (``mu_std`` floored at :data:`MU_STD_FLOOR`).
    coordination_number_mean:  mean first-shell coordination number of the training spectra.
    coordination_number_std:   its standard deviation (1.0 if the training CN is constant).
    rdf_mean:                  (n_r,) mean g(r) of the training spectra.
    """

    mu_mean: np.ndarray
    mu_std: np.ndarray
    coordination_number_mean: float
    coordination_number_std: float
    rdf_mean: np.ndarray

    @classmethod
    def fit(cls, mu: np.ndarray, coordination_number: np.ndarray, rdf: np.ndarray) -> Normalization:
        """Statistics of ``mu`` (n, n_energy), ``coordination_number`` (n,) and ``rdf`` (n, n_r)."""
        mu = np.asarray(mu, dtype=np.float64)
        coordination_number = np.asarray(coordination_number, dtype=np.float64)
        cn_std = float(coordination_number.std())
        return cls(
            mu_mean=mu.mean(axis=0),
            mu_std=np.maximum(mu.std(axis=0), MU_STD_FLOOR),
            coordination_number_mean=float(coordination_number.mean()),
            coordination_number_std=cn_std if cn_std > 1e-8 else 1.0,
            rdf_mean=np.asarray(rdf, dtype=np.float64).mean(axis=0),
        )

    def standardize_mu(self, mu: np.ndarray) -> np.ndarray:
        """(n, n_energy) normalized mu -> (n, n_energy) float32 network input."""
        return ((np.asarray(mu, dtype=np.float64) - self.mu_mean) / self.mu_std).astype(np.float32)

    def standardize_coordination_number(self, coordination_number: np.ndarray) -> np.ndarray:
        return (
            (np.asarray(coordination_number, dtype=np.float64) - self.coordination_number_mean)
            / self.coordination_number_std
        ).astype(np.float32)

    def unstandardize_coordination_number(self, standardized: np.ndarray) -> np.ndarray:
        return (
            np.asarray(standardized, dtype=np.float64) * self.coordination_number_std
            + self.coordination_number_mean
        )

    def center_rdf(self, rdf: np.ndarray) -> np.ndarray:
        """(n, n_r) g(r) -> (n, n_r) float32 RDF target, the deviation from the training mean."""
        return (np.asarray(rdf, dtype=np.float64) - self.rdf_mean).astype(np.float32)

    def uncenter_rdf(self, centered: np.ndarray) -> np.ndarray:
        """(n, n_r) RDF head output -> (n, n_r) g(r)."""
        return np.asarray(centered, dtype=np.float64) + self.rdf_mean

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and floats, for checkpoint hyperparameters."""
        return {
            "mu_mean": [float(value) for value in self.mu_mean],
            "mu_std": [float(value) for value in self.mu_std],
            "coordination_number_mean": self.coordination_number_mean,
            "coordination_number_std": self.coordination_number_std,
            "rdf_mean": [float(value) for value in self.rdf_mean],
        }

    @classmethod
    def from_dict(cls, mapping: dict[str, Any]) -> Normalization:
        return cls(
            mu_mean=np.asarray(mapping["mu_mean"], dtype=np.float64),
            mu_std=np.asarray(mapping["mu_std"], dtype=np.float64),
            coordination_number_mean=float(mapping["coordination_number_mean"]),
            coordination_number_std=float(mapping["coordination_number_std"]),
            rdf_mean=np.asarray(mapping["rdf_mean"], dtype=np.float64),
        )


@dataclass(frozen=True, eq=False)  # arrays: no field-wise ==
class SpectrumArrays:
    """The raw (not standardized) spectra and targets of one split.

    mu (n, n_energy) normalized absorption; coordination_number (n,); rdf (n, n_r) g(r);
    system (n,) system name and frame (n,) MD snapshot of each spectrum.
    """

    mu: np.ndarray
    coordination_number: np.ndarray
    rdf: np.ndarray
    system: np.ndarray
    frame: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.mu.shape[0])


class _StandardizedSpectra(Dataset):
    """Items ``{"mu": (n_energy,), "coordination_number": (), "rdf": (n_r,)}`` in network space."""

    def __init__(self, arrays: SpectrumArrays, normalization: Normalization) -> None:
        self.mu = torch.from_numpy(normalization.standardize_mu(arrays.mu))
        self.coordination_number = torch.from_numpy(
            normalization.standardize_coordination_number(arrays.coordination_number)
        )
        self.rdf = torch.from_numpy(normalization.center_rdf(arrays.rdf))

    def __len__(self) -> int:
        return int(self.mu.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "mu": self.mu[index],
            "coordination_number": self.coordination_number[index],
            "rdf": self.rdf[index],
        }


class AugmentedSpectra(Dataset):
    """Training items redrawn at every visit (:mod:`xasflow.models.augment`), in network space.

    Item ``index`` at its ``k``-th visit uses ``default_rng([seed, index, k])``: reproducible
    from the seed and the (seeded) order in which the loader asks for items.
    """

    def __init__(
        self,
        arrays: SpectrumArrays,
        normalization: Normalization,
        energy: np.ndarray,
        params: AugmentationParams,
        window: np.ndarray | None = None,
    ) -> None:
        """``arrays.mu`` is on ``energy`` (the dataset's whole grid); ``window`` (boolean mask on
        it, default all) is the part the model reads, cut after augmenting."""
        self.arrays = arrays
        self.normalization = normalization
        self.energy = np.asarray(energy, dtype=float)
        self.params = params
        self.window = np.ones(self.energy.size, bool) if window is None else np.asarray(window, bool)
        self.visits = np.zeros(len(arrays), dtype=np.int64)
        frames = arrays.frame if arrays.frame is not None else np.zeros(len(arrays), dtype=np.int64)
        keys = list(zip(arrays.system.tolist(), frames.tolist(), strict=True))
        groups: dict[tuple[str, int], list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key, []).append(index)
        self.group_members = [np.asarray(groups[key]) for key in keys]

    def __len__(self) -> int:
        return len(self.arrays)

    def draw(self, index: int) -> tuple[np.ndarray, float, np.ndarray]:
        """The next augmented (mu (n_energy,), coordination number, rdf (n_r,)) of ``index``."""
        rng = np.random.default_rng([self.params.seed, index, int(self.visits[index])])
        self.visits[index] += 1
        members = np.array([index])
        if self.params.site_average > 1:
            group = self.group_members[index]
            count = int(rng.integers(1, min(self.params.site_average, group.size) + 1))
            others = rng.permutation(group[group != index])[: count - 1]
            members = np.concatenate([members, others])
        mu = self.arrays.mu[members].mean(axis=0)
        coordination_number = float(self.arrays.coordination_number[members].mean())
        rdf = self.arrays.rdf[members].mean(axis=0)
        return augment_spectrum(self.energy, mu, self.params, rng)[self.window], coordination_number, rdf

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        mu, coordination_number, rdf = self.draw(index)
        return {
            "mu": torch.from_numpy(self.normalization.standardize_mu(mu[None, :])[0]),
            "coordination_number": torch.tensor(
                self.normalization.standardize_coordination_number(np.array([coordination_number]))[0]
            ),
            "rdf": torch.from_numpy(self.normalization.center_rdf(rdf[None, :])[0]),
        }


class SpectrumDataModule(pl.LightningDataModule):
    """Train / val / test loaders over a spectrum dataset, split by system.

    The zarr store is opened in :meth:`setup` (not here), so constructing the module is cheap
    and does not touch the file. After ``setup()`` the attributes ``split`` (systems per split),
    ``energy`` (n_energy,) eV relative to E0, ``r`` (n_r,) Angstrom, ``normalization`` and
    :meth:`arrays` are available.
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
        self.window: np.ndarray | None = None  # mask of the dataset grid the model reads
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
        self.window = self._model_window(energy)
        self.full_energy = energy
        self._split_arrays(dataset, systems, split, mu.astype(np.float32))
        train = self._arrays["train"]
        self.normalization = Normalization.fit(train.mu, train.coordination_number, train.rdf)
        self.energy = energy[self.window]
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

    def _model_window(self, energy: np.ndarray) -> np.ndarray:
        """Mask of the dataset grid ``energy`` (eV) inside ``params.energy_min..energy_max``."""
        low = energy[0] if self.params.energy_min is None else self.params.energy_min
        high = energy[-1] if self.params.energy_max is None else self.params.energy_max
        window = (energy >= low - 1e-9) & (energy <= high + 1e-9)
        if window.sum() < 4:
            raise UserError(
                f"{self.dataset_path}: the model window {low}..{high} eV holds {window.sum()} points of the "
                f"dataset grid {energy[0]:g}..{energy[-1]:g} eV; valid: at least 4"
            )
        return window

    def _split_arrays(self, dataset, systems: np.ndarray, split: SystemSplit, mu: np.ndarray) -> None:
        """Fill the arrays of each split (spectra cut to the model window) from the dataset."""
        coordination_number = dataset["coordination_number"].values.astype(np.float32)
        rdf = dataset["rdf"].values.astype(np.float32)
        frame = dataset["frame"].values.astype(np.int64)
        for name, members in zip(SPLITS, (split.train, split.val, split.test), strict=True):
            mask = np.isin(systems, members)
            if name == "train":
                self._full_train_mu = mu[mask]  # augmentation works on the whole grid
            self._arrays[name] = SpectrumArrays(
                mu=mu[mask][:, self.window],
                coordination_number=coordination_number[mask],
                rdf=rdf[mask],
                system=systems[mask],
                frame=frame[mask],
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

    def _loader(self, split_name: str, shuffle: bool) -> DataLoader:
        assert self.normalization is not None, "setup() must run first"
        if split_name == "train" and self.augmentation.enabled:
            if self._augmented is None:  # one dataset for the whole fit: its visit counts go on
                self._augmented = AugmentedSpectra(
                    self.full_train_arrays(),
                    self.normalization,
                    self.full_energy,
                    self.augmentation,
                    self.window,
                )
            dataset = self._augmented
        else:
            dataset = _StandardizedSpectra(self.arrays(split_name), self.normalization)
        # a private generator: the shuffling order depends on the seed alone
        generator = torch.Generator().manual_seed(self.params.seed) if shuffle else None
        # the data are a few MB in memory: worker processes would only add start-up time
        return DataLoader(
            dataset, batch_size=self.params.batch_size, shuffle=shuffle, generator=generator, num_workers=0
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
