"""LightningModule owning the network, the multitask loss, the optimizer and the normalization.

Checkpoints carry a SHA-256 of their weights and hyperparameters (:data:`CHECKSUM_KEY`, added
on every save); :func:`load_checkpoint` refuses a file whose checksum does not match, and checks
the hyperparameters (architecture, grid lengths, parameter count at most
:data:`MAX_PARAMETERS`, shapes of every weight) before it allocates the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.nn import functional

from xasflow.errors import UserError
from xasflow.models.conformal import ConformalCalibration
from xasflow.models.data import Normalization
from xasflow.models.networks import Ensemble, MultiscaleCNN, SpectrumCNN, SpectrumMLP
from xasflow.models.ood import nearest_distance
from xasflow.models.params import TrainParams

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "model.ckpt"  # the file train_model writes in its model's folder
CHECKSUM_KEY = "xasflow_sha256"
# Largest network a checkpoint may ask for: 50 million parameters (200 MB of float32), far above
# the models xasflow trains (about 1e4..1e6) and far below what a workstation can allocate.
MAX_PARAMETERS = 50_000_000
# Largest energy or r grid a checkpoint may declare (the default study has about 80 and 100).
MAX_GRID_POINTS = 100_000
REQUIRED_HYPERPARAMETERS = ("params", "energy", "r", "normalization")
KNOWN_HYPERPARAMETERS = (
    *REQUIRED_HYPERPARAMETERS,
    "model_card",
    "ood_reference_count",
    "ood_threshold",
    "conformal",
    "temperatures",
)


class CheckpointError(UserError):
    """A checkpoint that is damaged, not an xasflow model, or asks for an impossible network."""


def _member(params: TrainParams, n_energy: int, head_sizes: Mapping[str, int]) -> nn.Module:
    if params.architecture == "cnn":
        return SpectrumCNN(
            n_energy,
            head_sizes,
            channels=params.channels,
            kernel_size=params.kernel_size,
            hidden_sizes=params.hidden_sizes,
            dropout=params.dropout,
        )
    if params.architecture == "multiscale":
        return MultiscaleCNN(
            n_energy,
            head_sizes,
            channels=params.channels,
            kernel_sizes=params.kernel_sizes,
            hidden_sizes=params.hidden_sizes,
            dropout=params.dropout,
            cascade=params.cascade,
        )
    if params.architecture == "mlp":
        return SpectrumMLP(n_energy, head_sizes, hidden_sizes=params.hidden_sizes, dropout=params.dropout)
    raise ValueError(f"unknown architecture {params.architecture!r}; valid: cnn, mlp, multiscale")


def build_network(params: TrainParams, n_energy: int, head_sizes: Mapping[str, int]) -> Ensemble:
    """``params.ensemble`` networks of ``params.architecture`` for ``n_energy`` inputs and one
    head per target (``head_sizes``: name -> output width)."""
    return Ensemble([_member(params, n_energy, head_sizes) for _ in range(params.ensemble)])


def checkpoint_checksum(state_dict: Mapping[str, Tensor], hyper_parameters: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of every tensor (name, dtype, shape, bytes) and of the hyperparameters (JSON)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(hyper_parameters), sort_keys=True, default=str).encode())
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class SpectrumRegressor(pl.LightningModule):
    """Predicts a study's targets (:mod:`xasflow.models.targets`) from a spectrum, with a deep
    ensemble's spread and split-conformal intervals.

    Loss = sum over targets of weight x loss, averaged over the ensemble members: mean squared
    error of standardized numbers, of g(r) curves (in g(r) units: the network predicts the
    deviation from the training-mean curve), cross-entropy of classes, binary cross-entropy of
    probabilities; values a spectrum does not define are left out. Everything prediction needs
    (parameters, energy grid in eV relative to E0, r grid in Angstrom, training-split
    normalization, conformal calibration) is stored as hyperparameters, so
    :func:`load_checkpoint` alone rebuilds a working model (after verifying the file's checksum
    and hyperparameters; Lightning's ``load_from_checkpoint`` would skip both).

    Parameters
    ----------
    params:         :class:`TrainParams` or its ``to_dict()``.
    energy:         (n_energy,) the input axis: the energy grid of the input spectra, eV relative
                    to E0, or for a chi model (``params.representation`` "chi") the k grid of
                    its k-weighted chi(k) input, 1/Angstrom (:mod:`xasflow.models.exafs`).
    r:              (n_r,) r grid of the RDF, Angstrom.
    normalization:  :class:`~xasflow.models.data.Normalization` or its ``to_dict()``.
    model_card:     what the model is for and how it was made (absorber, edge, energy reference,
                    calibration, augmentation, targets and units, data hash and split); plain data.
    ood_reference_count: number of reference spectra kept (buffer ``ood_reference``, standardized
                    inputs) for the out-of-distribution distance; 0 disables it.
    ood_threshold:  distance above which an input is flagged as outside the training distribution.
    conformal:      target name -> ``ConformalCalibration.to_dict()`` (split-conformal
                    multipliers of the ensemble spread, fitted on the validation systems after
                    training); none before calibration.
    temperatures:   probability target name -> temperature T of ``sigmoid(logit / T)``, fitted
                    on the validation systems after training (temperature scaling); 1 if absent.
    """

    def __init__(
        self,
        params: TrainParams | Mapping[str, Any],
        energy: Sequence[float],
        r: Sequence[float],
        normalization: Normalization | Mapping[str, Any],
        model_card: Mapping[str, Any] | None = None,
        ood_reference_count: int = 0,
        ood_threshold: float | None = None,
        conformal: Mapping[str, Any] | None = None,
        temperatures: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.params = params if isinstance(params, TrainParams) else TrainParams.from_dict(params)
        self.normalization = (
            normalization
            if isinstance(normalization, Normalization)
            else Normalization.from_dict(dict(normalization))
        )
        self.energy = np.asarray(energy, dtype=np.float64)
        self.r = np.asarray(r, dtype=np.float64)
        if self.normalization.mu_mean.shape != self.energy.shape:
            raise ValueError(
                f"normalization has {self.normalization.mu_mean.size} energy points, "
                f"the energy grid has {self.energy.size}"
            )
        # save_hyperparameters() records the __init__ arguments as they are bound now: rebind them
        # to plain lists, floats and dicts so that the checkpoint is readable as YAML and loads
        # with torch.load(weights_only=True), and load_checkpoint(path) rebuilds this module.
        params = self.params.to_dict()
        energy = [float(value) for value in self.energy]
        r = [float(value) for value in self.r]
        normalization = self.normalization.to_dict()
        model_card = dict(model_card or {})
        self.model_card = model_card
        self.ood_threshold = None if ood_threshold is None else float(ood_threshold)
        conformal = {name: dict(value) for name, value in (conformal or {}).items()}
        self.conformal = {name: ConformalCalibration.from_dict(value) for name, value in conformal.items()}
        temperatures = {name: float(value) for name, value in (temperatures or {}).items()}
        self.temperatures = temperatures
        self.save_hyperparameters()
        self.specs = {spec.name: spec for spec in self.params.targets}
        self.network = build_network(self.params, self.energy.size, self.normalization.head_sizes())
        # standardized reference spectra for the out-of-distribution distance (xasflow.models.ood)
        self.register_buffer("ood_reference", torch.zeros(int(ood_reference_count), self.energy.size))

    @property
    def architecture(self) -> str:
        return self.params.architecture

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the checksum :func:`load_checkpoint` verifies (weights and hyperparameters)."""
        checkpoint[CHECKSUM_KEY] = checkpoint_checksum(
            checkpoint["state_dict"], checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY, {})
        )

    def forward(self, mu: Tensor) -> dict[str, Tensor]:
        """Standardized mu (batch, n_energy) -> ``{target: (members, batch, width)}`` head outputs
        in network space (see :class:`~xasflow.models.data.Normalization`);
        :meth:`predict_spectra` gives physical units.
        """
        return self.network(mu)

    def _target_loss(self, name: str, output: Tensor, target: Tensor) -> Tensor:
        """Loss of one target for every member's output (members, batch, width) against the
        batch's values; undefined values (NaN, class -1) are left out."""
        kind = self.normalization.targets[name].kind
        members = output.shape[0]
        if kind == "curve":
            defined = torch.isfinite(target).all(dim=-1)
        elif kind == "classification":
            defined = target >= 0
        else:
            defined = torch.isfinite(target)
        if not bool(defined.any()):
            return output.sum() * 0.0  # keeps the graph; nothing to learn from this batch
        output, target = output[:, defined], target[defined]
        if kind == "classification":
            labels = target.long().repeat(members)
            return functional.cross_entropy(output.reshape(-1, output.shape[-1]), labels)
        if kind == "curve":
            return functional.mse_loss(output, target.expand_as(output))
        values = output.squeeze(-1)
        if kind == "probability":
            return functional.binary_cross_entropy_with_logits(values, target.expand_as(values))
        return functional.mse_loss(values, target.expand_as(values))

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        prediction = self(batch["mu"])
        losses = {name: self._target_loss(name, prediction[name], batch[name]) for name in self.specs}
        loss = sum(self.specs[name].weight * value for name, value in losses.items())
        metrics = {f"{stage}_loss": loss, **{f"{stage}_{name}_loss": value for name, value in losses.items()}}
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=batch["mu"].shape[0])
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.params.learning_rate, weight_decay=self.params.weight_decay
        )

    def member_outputs(self, mu: np.ndarray) -> dict[str, np.ndarray]:
        """Raw head outputs ``{target: (members, n, width)}`` for normalized spectra ``mu``
        (n, n_energy) on :attr:`energy`, in eval mode without gradients."""
        mu = np.asarray(mu)
        if mu.ndim != 2 or mu.shape[1] != self.energy.size:
            raise ValueError(
                f"mu has shape {mu.shape}; expected (n_spectra, {self.energy.size}) "
                "on the model's energy grid"
            )
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                inputs = torch.from_numpy(self.normalization.standardize_mu(mu)).to(self.device)
                outputs = self(inputs)
        finally:
            self.train(was_training)
        return {name: value.cpu().numpy().astype(np.float64) for name, value in outputs.items()}

    def predict_spectra(self, mu: np.ndarray) -> dict[str, np.ndarray]:
        """Physical predictions for raw normalized spectra ``mu`` (n, n_energy) on :attr:`energy`.

        Per target ``name`` (see :func:`decode_outputs`): ``name`` the ensemble mean (a number
        (n,), a g(r) (n, n_r), a probability (n,), or the most probable class (n,)),
        ``name_spread`` the members' standard deviation (numbers and curves),
        ``name_probabilities`` (n, k) for classes, and ``name_low_68`` / ``name_high_68`` (and
        90, 95) where the model is calibrated. Plus the out-of-distribution distance and flag
        when the model has a reference set.
        """
        result = decode_outputs(
            self.normalization, self.member_outputs(mu), self.conformal, self.temperatures
        )
        if self.ood_reference.shape[0] and self.ood_threshold is not None:
            distance = nearest_distance(
                self.ood_reference.cpu().numpy(), self.normalization.standardize_mu(np.asarray(mu))
            )
            result["input_distance"] = distance
            result["out_of_distribution"] = distance > self.ood_threshold
        return result


def _interval_columns(
    name: str, calibration: ConformalCalibration, prediction: np.ndarray, spread: np.ndarray
) -> dict[str, np.ndarray]:
    """``name_low_68``, ``name_high_68``, ... of the calibrated intervals; NaN bounds where the
    prediction itself is not a number (the caller refuses those)."""
    finite = np.isfinite(prediction) & np.isfinite(spread)
    safe_prediction, safe_spread = np.where(finite, prediction, 0.0), np.where(finite, spread, 0.0)
    columns = {}
    for level, (low, high) in calibration.intervals(safe_prediction, safe_spread).items():
        percent = round(100 * level)
        columns[f"{name}_low_{percent}"] = np.where(finite, low, np.nan)
        columns[f"{name}_high_{percent}"] = np.where(finite, high, np.nan)
    return columns


def decode_outputs(
    normalization: Normalization,
    outputs: Mapping[str, np.ndarray],
    conformal: Mapping[str, ConformalCalibration] | None = None,
    temperatures: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Ensemble head outputs ``{target: (members, n, width)}`` -> physical predictions (see
    :meth:`SpectrumRegressor.predict_spectra`). A probability is ``sigmoid(mean logit / T)``
    with the target's temperature ``T`` (default 1); its spread is that of the members'
    probabilities."""
    result: dict[str, np.ndarray] = {}
    for name, scale in normalization.targets.items():
        if scale.kind == "probability":
            logits = np.asarray(outputs[name], dtype=np.float64)[..., 0] / float(
                (temperatures or {}).get(name, 1.0)
            )
            result[name] = scale.decode(logits.mean(axis=0))
            result[f"{name}_spread"] = scale.decode(logits).std(axis=0)
            continue
        decoded = scale.decode(outputs[name])  # (members, n, width)
        if scale.kind == "classification":
            probabilities = decoded.mean(axis=0)
            result[name] = np.asarray(scale.classes, dtype=np.float64)[probabilities.argmax(axis=-1)]
            result[f"{name}_probabilities"] = probabilities
            continue
        if scale.kind != "curve":
            decoded = decoded[..., 0]
        result[name] = decoded.mean(axis=0)
        result[f"{name}_spread"] = decoded.std(axis=0)
        calibration = (conformal or {}).get(name)
        if calibration is not None:
            result.update(_interval_columns(name, calibration, result[name], result[f"{name}_spread"]))
    return result


def _reason(error: BaseException) -> str:
    """One short line about ``error``, without torch's advice to unpickle untrusted code."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if "weights_only" in str(error) or "Weights only load failed" in text:
        text = "it holds objects other than tensors and plain data, which xasflow never writes"
    return f"{type(error).__name__}: {text[:200]}"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``, loaded on the CPU with ``weights_only`` and verified.

    Raises :class:`CheckpointError` naming ``path`` if it is missing, unreadable, has no
    xasflow checksum, or its weights or hyperparameters differ from the checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    try:
        # weights_only: the checkpoint holds tensors and plain hyperparameters, nothing to unpickle
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch / pickle / zip raise many types for a damaged file
        raise CheckpointError(
            f"{path}: not a readable xasflow model checkpoint ({_reason(error)})"
        ) from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not an xasflow model checkpoint (no state_dict)")
    recorded = checkpoint.get(CHECKSUM_KEY)
    if not isinstance(recorded, str):
        raise CheckpointError(
            f"{path}: has no xasflow checksum ('{CHECKSUM_KEY}'): damaged, or written before xasflow "
            "checked checkpoints; retrain the model"
        )
    hyper_parameters = checkpoint.get(SpectrumRegressor.CHECKPOINT_HYPER_PARAMS_KEY, {})
    if checkpoint_checksum(checkpoint["state_dict"], hyper_parameters) != recorded:
        raise CheckpointError(
            f"{path}: weights or hyperparameters do not match the checksum recorded when it was saved "
            "(the file is damaged); retrain the model or restore the file from a copy"
        )
    return checkpoint


def _grid(hyper_parameters: Mapping[str, Any], name: str, source: Path) -> np.ndarray:
    """The energy or r grid of the hyperparameters: 2..MAX_GRID_POINTS finite increasing values."""
    values = hyper_parameters[name]
    if not isinstance(values, list | tuple) or not 2 <= len(values) <= MAX_GRID_POINTS:
        size = len(values) if isinstance(values, list | tuple) else type(values).__name__
        raise CheckpointError(
            f"{source}: hyperparameter '{name}' has {size} points; valid: 2..{MAX_GRID_POINTS}"
        )
    grid = np.asarray(values, dtype=np.float64)
    if grid.ndim != 1 or not np.all(np.isfinite(grid)) or np.any(np.diff(grid) <= 0):
        raise CheckpointError(f"{source}: hyperparameter '{name}' is not a strictly increasing finite grid")
    return grid


def _check_window(params: TrainParams, energy: np.ndarray, source: Path) -> None:
    """The energy grid lies inside the model window the parameters name (eV); a chi model's
    grid is the k grid its parameters name (1/Angstrom)."""
    if params.representation == "chi":
        expected = params.k_grid()
        if energy.shape != expected.shape or not np.allclose(energy, expected, atol=1e-6):
            raise CheckpointError(
                f"{source}: input grid {energy[0]:g}..{energy[-1]:g} ({energy.size} points) is not the "
                f"k grid {params.k_min}..{params.k_max} step {params.k_step} /Angstrom of its chi parameters"
            )
        return
    low = -math.inf if params.energy_min is None else params.energy_min
    high = math.inf if params.energy_max is None else params.energy_max
    if energy[0] < low - 1e-6 or energy[-1] > high + 1e-6:
        raise CheckpointError(
            f"{source}: energy grid {energy[0]:g}..{energy[-1]:g} eV lies outside the model window "
            f"{params.energy_min}..{params.energy_max} eV of its parameters"
        )


def _check_normalization(
    normalization: Normalization, params: TrainParams, n_energy: int, n_r: int, source: Path
) -> None:
    """Input statistics on the energy grid; one finite scale per target, curves on the r grid."""
    for name in ("mu_mean", "mu_std"):
        shape = getattr(normalization, name).shape
        if shape != (n_energy,):
            raise CheckpointError(
                f"{source}: normalization '{name}' has shape {shape}, the grids need ({n_energy},)"
            )
    if not (
        np.all(np.isfinite(normalization.mu_mean)) and np.all(np.isfinite(normalization.mu_std))
    ) or np.any(normalization.mu_std <= 0):
        raise CheckpointError(f"{source}: normalization holds NaN, inf or a non-positive spread")
    if list(normalization.targets) != list(params.target_names()):
        raise CheckpointError(
            f"{source}: normalization covers targets {list(normalization.targets)}, "
            f"its parameters name {list(params.target_names())}"
        )
    for name, scale in normalization.targets.items():
        mean = np.asarray(scale.mean, dtype=np.float64)
        if scale.kind != params.targets[list(normalization.targets).index(name)].kind:
            raise CheckpointError(f"{source}: target {name} has kind {scale.kind} in its normalization")
        if not np.all(np.isfinite(mean)) or not (np.isfinite(scale.std) and scale.std > 0):
            raise CheckpointError(
                f"{source}: normalization of target {name} holds NaN, inf or a non-positive spread"
            )
        if scale.kind == "curve" and mean.shape != (n_r,):
            raise CheckpointError(f"{source}: curve target {name} has {mean.size} points, the r grid {n_r}")


def _check_network_shapes(
    params: TrainParams,
    n_energy: int,
    head_sizes: Mapping[str, int],
    state_dict: Mapping[str, Tensor],
    source: Path,
) -> None:
    """Build the network on the meta device (no memory), bound its size, compare every shape."""
    try:
        with torch.device("meta"):
            network = build_network(params, n_energy, head_sizes)
    except ValueError as error:
        raise CheckpointError(f"{source}: its parameters describe no valid network ({error})") from error
    count = sum(parameter.numel() for parameter in network.parameters())
    if count > MAX_PARAMETERS:
        raise CheckpointError(
            f"{source}: its parameters ask for a network of {count:,} weights ({params.architecture}), "
            f"above the limit of {MAX_PARAMETERS:,}; refusing to build it"
        )
    expected = {f"network.{name}": tuple(tensor.shape) for name, tensor in network.state_dict().items()}
    stored = {name: tuple(tensor.shape) for name, tensor in state_dict.items() if name.startswith("network.")}
    for name in sorted(set(expected) | set(stored)):
        if expected.get(name) != stored.get(name):
            raise CheckpointError(
                f"{source}: weight '{name}' has shape {stored.get(name)}, "
                f"its parameters need {expected.get(name)}"
            )


def _check_calibration(hyper_parameters: Mapping[str, Any], source: Path) -> None:
    """Conformal calibrations that parse; positive finite probability temperatures."""
    try:
        for value in dict(hyper_parameters.get("conformal") or {}).values():
            ConformalCalibration.from_dict(value)
    except (UserError, ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{source}: invalid conformal calibration ({_reason(error)})") from error
    temperatures = dict(hyper_parameters.get("temperatures") or {})
    if not all(isinstance(value, int | float) and 0 < value < math.inf for value in temperatures.values()):
        raise CheckpointError(f"{source}: temperatures must be positive finite numbers, got {temperatures}")


def check_hyperparameters(checkpoint: Mapping[str, Any], source: str | Path) -> dict[str, Any]:
    """Validate a checkpoint's hyperparameters against its weights before anything is allocated.

    Checks: the keys :class:`SpectrumRegressor` needs; valid :class:`TrainParams` (architecture
    known); energy and r grids of 2..:data:`MAX_GRID_POINTS` increasing points, the energy grid
    inside the model window (a chi model: equal to its k grid); normalization lengths equal to
    the grids; a network of at most :data:`MAX_PARAMETERS` weights whose every shape equals the
    stored one; the out-of-distribution reference shape.
    Returns the hyperparameters; raises :class:`CheckpointError` naming ``source``.
    """
    source = Path(source)
    hyper_parameters = dict(checkpoint.get(SpectrumRegressor.CHECKPOINT_HYPER_PARAMS_KEY) or {})
    missing = [key for key in REQUIRED_HYPERPARAMETERS if key not in hyper_parameters]
    unknown = sorted(set(hyper_parameters) - set(KNOWN_HYPERPARAMETERS))
    if missing or unknown:
        raise CheckpointError(
            f"{source}: not an xasflow model checkpoint (hyperparameters lack {missing}, unknown {unknown})"
        )
    try:
        params = TrainParams.from_dict(dict(hyper_parameters["params"]))
        normalization = Normalization.from_dict(dict(hyper_parameters["normalization"]))
    except (UserError, ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{source}: invalid hyperparameters ({_reason(error)})") from error
    energy = _grid(hyper_parameters, "energy", source)
    r = _grid(hyper_parameters, "r", source)
    _check_window(params, energy, source)
    _check_normalization(normalization, params, energy.size, r.size, source)
    state_dict = checkpoint["state_dict"]
    _check_network_shapes(params, energy.size, normalization.head_sizes(), state_dict, source)
    _check_calibration(hyper_parameters, source)
    count = hyper_parameters.get("ood_reference_count", 0)
    reference = state_dict.get("ood_reference")
    if reference is None or tuple(reference.shape) != (count, energy.size):
        shape = None if reference is None else tuple(reference.shape)
        raise CheckpointError(
            f"{source}: out-of-distribution reference has shape {shape}, "
            f"its parameters need ({count}, {energy.size})"
        )
    return hyper_parameters


def model_from_checkpoint(checkpoint: Mapping[str, Any], source: str | Path) -> SpectrumRegressor:
    """The :class:`SpectrumRegressor` of a checkpoint dict read by :func:`read_checkpoint`, built
    only after :func:`check_hyperparameters` accepted it; on the CPU, in eval mode."""
    hyper_parameters = check_hyperparameters(checkpoint, source)
    model = SpectrumRegressor(**hyper_parameters)
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    model.eval()
    return model


def load_checkpoint(path: str | Path) -> SpectrumRegressor:
    """Read, verify and build the model saved at ``path`` (raises :class:`CheckpointError`)."""
    return model_from_checkpoint(read_checkpoint(path), path)
