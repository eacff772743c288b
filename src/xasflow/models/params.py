"""Training parameters and the by-system split of a dataset into train / validation / test.

Spectra of one system (a nanoparticle or a bulk crystal at one temperature, several MD frames)
are strongly correlated, so the split is always made over whole systems, never over sites:
a site-level split would leak near-duplicate spectra from training into the test set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from xasflow.errors import UserError
from xasflow.models.targets import TargetSpec, parse_targets

logger = logging.getLogger(__name__)

ARCHITECTURES = ("cnn", "mlp", "multiscale")
REPRESENTATIONS = ("mu", "chi")
CONFORMAL_METHODS = ("split", "cross_system")
# fewest input points a model reads (the energy window or the k grid)
MIN_INPUT_POINTS = 4

# Share of the remaining systems given to each automatically chosen split (at least one system).
_AUTO_SPLIT_FRACTION = 0.2

_TUPLE_FIELDS = ("hidden_sizes", "channels", "kernel_sizes", "val_systems", "test_systems", "exclude_systems")


@dataclass(frozen=True)
class TrainParams:
    """Everything that defines one training run; the science, not the machine.

    Attributes
    ----------
    architecture:     "cnn" (:class:`~xasflow.models.networks.SpectrumCNN`), "mlp"
                      (:class:`~xasflow.models.networks.SpectrumMLP`) or "multiscale"
                      (:class:`~xasflow.models.networks.MultiscaleCNN`, the cascade multiscale CNN).
    targets:          what the model predicts (:mod:`xasflow.models.targets`): config entries
                      or :class:`~xasflow.models.targets.TargetSpec`; default the first-shell
                      coordination number and the RDF. Each target's loss carries its weight.
    ensemble:         independent networks (different initialization) trained side by side
                      and averaged; their spread is the model's uncertainty (deep ensemble).
    max_epochs:       number of passes over the training split.
    batch_size:       spectra per optimizer step.
    learning_rate:    Adam learning rate.
    weight_decay:     Adam L2 penalty.
    seed:             seeds torch / numpy / python and the automatic choice of split systems.
    hidden_sizes:     widths of the dense layers (the whole MLP trunk; after the convolutions in
                      the CNN).
    channels:         output channels of each convolution block of the CNN (each block halves
                      the energy axis by max pooling).
    kernel_size:      convolution kernel width, in energy grid points.
    kernel_sizes:     kernel widths of the parallel branches of the multiscale CNN.
    cascade:          multiscale CNN: every head after the first also reads the first target's
                      prediction (e.g. partial CNs conditioned on the total CN).
    dropout:          dropout probability after each dense layer.
    val_systems:      systems used for validation (best checkpoint); chosen from ``seed`` if empty.
    test_systems:     systems used only for the final metrics; chosen from ``seed`` if empty.
    exclude_systems:  systems never used (e.g. held out as a pseudo-experiment).
    energy_min, energy_max: the part of the dataset's energy grid (eV relative to E0) the model
                      reads; None = the whole grid. Calibration and augmentation act on the
                      whole grid first, so the window's ends see real data. Only for
                      ``representation`` "mu".
    representation:   what the network reads: "mu" (normalized mu(E) on the energy window) or
                      "chi" (EXAFS ``k**k_weight * chi(k)`` from Larch autobk,
                      :mod:`xasflow.models.exafs`, on :meth:`k_grid`). The data must reach
                      E0 + 3.81 * k_max**2 eV (461 eV for k_max = 11 / Angstrom).
    k_min, k_max, k_step: the k grid of a chi model, 1/Angstrom (:meth:`k_grid`).
    k_weight:         power of k multiplied into chi (0..3).
    conformal:        how the intervals are calibrated (:mod:`xasflow.models.conformal`):
                      "split" on the validation systems, or "cross_system" on out-of-system
                      predictions of every training and validation system, one extra training
                      per system (:mod:`xasflow.models.crossval`).
    """

    architecture: str = "cnn"
    targets: tuple[TargetSpec, ...] = ()
    ensemble: int = 1
    max_epochs: int = 200
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    hidden_sizes: tuple[int, ...] = (128, 64)
    channels: tuple[int, ...] = (16, 32)
    kernel_size: int = 5
    kernel_sizes: tuple[int, ...] = (3, 9, 21)
    cascade: bool = True
    dropout: float = 0.1
    val_systems: tuple[str, ...] = ()
    test_systems: tuple[str, ...] = ()
    exclude_systems: tuple[str, ...] = ()
    energy_min: float | None = None
    energy_max: float | None = None
    representation: str = "mu"
    k_min: float = 2.0
    k_max: float = 11.0
    k_step: float = 0.1
    k_weight: int = 2
    conformal: str = "split"

    def __post_init__(self) -> None:
        # YAML and JSON give lists; store tuples so that the parameters stay hashable and immutable
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                raise UserError(f"TrainParams.{name} must be a list, got the string {value!r}")
            object.__setattr__(self, name, tuple(value))
        targets = [target.to_dict() if isinstance(target, TargetSpec) else target for target in self.targets]
        object.__setattr__(self, "targets", parse_targets(targets))
        if self.architecture not in ARCHITECTURES:
            raise UserError(
                f"TrainParams.architecture is {self.architecture!r}; valid: {', '.join(ARCHITECTURES)}"
            )
        if self.conformal not in CONFORMAL_METHODS:
            raise UserError(
                f"TrainParams.conformal is {self.conformal!r}; valid: {', '.join(CONFORMAL_METHODS)}"
            )
        self._check_numbers()
        self._check_representation()
        self._check_sizes()
        self._check_splits()

    def _check_numbers(self) -> None:
        positive = ("max_epochs", "batch_size", "kernel_size", "learning_rate", "ensemble")
        for name in positive:
            if not getattr(self, name) > 0:
                raise UserError(f"TrainParams.{name} is {getattr(self, name)}; it must be > 0")
        if not self.weight_decay >= 0:
            raise UserError(f"TrainParams.weight_decay is {self.weight_decay}; it must be >= 0")
        window = (self.energy_min, self.energy_max)
        if None not in window and not window[0] < window[1]:
            raise UserError(f"TrainParams.energy_min {window[0]} must be below energy_max {window[1]}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"TrainParams.dropout is {self.dropout}; it must be in [0, 1)")

    def _check_representation(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise UserError(
                f"TrainParams.representation is {self.representation!r}; valid: {', '.join(REPRESENTATIONS)}"
            )
        if not 0.0 <= self.k_min < self.k_max:
            raise UserError(f"TrainParams.k_min {self.k_min} must be >= 0 and below k_max {self.k_max}")
        if not self.k_step > 0:
            raise UserError(f"TrainParams.k_step is {self.k_step}; it must be > 0")
        if self.k_weight not in (0, 1, 2, 3):
            raise UserError(f"TrainParams.k_weight is {self.k_weight}; valid: 0, 1, 2, 3")
        if self.representation == "chi" and self.k_grid().size < MIN_INPUT_POINTS:
            raise UserError(
                f"TrainParams k grid {self.k_min}..{self.k_max} step {self.k_step} /Angstrom holds "
                f"{self.k_grid().size} points; valid: at least {MIN_INPUT_POINTS}"
            )
        if self.representation == "chi" and (self.energy_min, self.energy_max) != (None, None):
            raise UserError(
                f"TrainParams.energy_min/energy_max ({self.energy_min}, {self.energy_max}) cut mu(E); "
                "a chi model reads k_min..k_max: leave them unset"
            )

    def k_grid(self) -> np.ndarray:
        """(n_k,) the wavenumbers a chi model reads, 1/Angstrom: k_min, k_min + k_step, ... up to
        k_max (exactly k_max when k_max - k_min is a multiple of k_step; never beyond it)."""
        count = int(np.floor((self.k_max - self.k_min) / self.k_step + 1e-6)) + 1
        return np.linspace(self.k_min, self.k_min + (count - 1) * self.k_step, count)

    def _check_sizes(self) -> None:
        for name in ("hidden_sizes", "channels", "kernel_sizes"):
            if any(int(size) < 1 for size in getattr(self, name)):
                raise UserError(f"TrainParams.{name} is {getattr(self, name)}; all sizes must be >= 1")
        if self.architecture in ("cnn", "multiscale") and not self.channels:
            raise UserError(
                f"TrainParams.channels is empty; the {self.architecture} architecture needs "
                "at least one block"
            )
        if self.architecture == "multiscale" and not self.kernel_sizes:
            raise UserError(
                "TrainParams.kernel_sizes is empty; the multiscale architecture needs at least one branch"
            )

    def _check_splits(self) -> None:
        seen: dict[str, str] = {}
        for split_name in ("val_systems", "test_systems", "exclude_systems"):
            for system in getattr(self, split_name):
                if system in seen:
                    where = "twice" if seen[system] == split_name else f"in both {seen[system]} and"
                    raise UserError(f"system {system!r} is named {where} {split_name}")
                seen[system] = split_name

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> TrainParams:
        """Build from a config mapping; unknown keys raise ``UserError`` naming them."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise UserError(
                f"unknown training parameter(s) {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(sorted(known))}"
            )
        values = dict(mapping)
        # PyYAML reads "1e-3" (no dot) as a string: coerce numbers here, with a clear message
        for field in fields(cls):
            if (
                field.name in values
                and field.type in ("int", "float", "float | None")
                and values[field.name] is not None
            ):
                converter = int if field.type == "int" else float
                try:
                    values[field.name] = converter(values[field.name])
                except (TypeError, ValueError) as error:
                    raise UserError(
                        f"training parameter {field.name!r} is {values[field.name]!r}; expected {field.type}"
                    ) from error
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples become lists) suitable for JSON, YAML and checkpoint hparams."""
        values = {
            key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
        }
        values["targets"] = [target.to_dict() for target in self.targets]
        return values

    def target_names(self) -> tuple[str, ...]:
        return tuple(target.name for target in self.targets)

    def resolve_splits(self, available_systems: Iterable[str]) -> SystemSplit:
        """Assign every system of the dataset to train, val, test or excluded.

        ``available_systems`` are the systems present in the dataset (duplicates allowed). Named
        systems must exist. Empty ``val_systems`` / ``test_systems`` are filled deterministically
        from ``seed`` with about 20 % of the systems not named anywhere (at least one each when
        three or more remain); the rest is the training split, which must not be empty.
        """
        available = sorted({str(system) for system in available_systems})
        for split_name in ("val_systems", "test_systems", "exclude_systems"):
            for system in getattr(self, split_name):
                if system not in available:
                    raise UserError(
                        f"{split_name} names system {system!r}, which is not in the dataset; "
                        f"available systems: {', '.join(available)}"
                    )
        named = set(self.val_systems) | set(self.test_systems) | set(self.exclude_systems)
        remaining = [system for system in available if system not in named]
        val, test, shuffled = self._automatic_splits(remaining)
        train = sorted(shuffled)
        if not train:
            raise UserError(
                "no system is left for training after val/test/exclude; "
                f"available systems: {', '.join(available)}"
            )
        return SystemSplit(
            train=tuple(train),
            val=tuple(sorted(val)),
            test=tuple(sorted(test)),
            excluded=tuple(sorted(self.exclude_systems)),
        )

    def _automatic_splits(self, remaining: list[str]) -> tuple[list[str], list[str], list[str]]:
        """Fill empty val/test splits from ``remaining`` (shuffled by ``seed``); returns val, test
        and the systems left for training."""
        rng = np.random.default_rng(self.seed)
        shuffled = [remaining[index] for index in rng.permutation(len(remaining))]
        val, test = list(self.val_systems), list(self.test_systems)
        n_auto = int(not val) + int(not test)
        if not n_auto:
            return val, test, shuffled
        per_split = round(_AUTO_SPLIT_FRACTION * len(remaining))
        per_split = min(max(1, per_split), (len(remaining) - 1) // n_auto)
        if per_split >= 1:
            if not val:
                val, shuffled = shuffled[:per_split], shuffled[per_split:]
            if not test:
                test, shuffled = shuffled[:per_split], shuffled[per_split:]
        elif not val and len(remaining) >= 2:
            # two systems left: validation (checkpoint choice) matters more than a test score
            val, shuffled = shuffled[:1], shuffled[1:]
        if not val or not test:
            logger.warning(
                "only %d system(s) left for automatic splits: val=%s test=%s", len(remaining), val, test
            )
        return val, test, shuffled


@dataclass(frozen=True)
class SystemSplit:
    """Names of the systems in each split (sorted); a system is in at most one of them."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    excluded: tuple[str, ...] = ()
