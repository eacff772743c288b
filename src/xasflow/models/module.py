"""LightningModule owning the network, the multitask loss, the optimizer and the normalization."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.nn import functional

from xasflow.models.data import Normalization
from xasflow.models.networks import SpectrumCNN, SpectrumMLP
from xasflow.models.ood import nearest_distance
from xasflow.models.params import TrainParams

logger = logging.getLogger(__name__)


def build_network(params: TrainParams, n_energy: int, n_r: int) -> nn.Module:
    """The architecture named by ``params.architecture`` for ``n_energy`` inputs and ``n_r`` RDF points."""
    if params.architecture == "cnn":
        return SpectrumCNN(
            n_energy,
            n_r,
            channels=params.channels,
            kernel_size=params.kernel_size,
            hidden_sizes=params.hidden_sizes,
            dropout=params.dropout,
        )
    if params.architecture == "mlp":
        return SpectrumMLP(n_energy, n_r, hidden_sizes=params.hidden_sizes, dropout=params.dropout)
    raise ValueError(f"unknown architecture {params.architecture!r}; valid: cnn, mlp")


class SpectrumRegressor(pl.LightningModule):
    """Predicts the coordination number and the partial RDF from a XANES spectrum.

    Loss = MSE(standardized coordination number) + ``params.rdf_weight`` * MSE(g(r)), the RDF
    error in g(r) units (the network predicts the deviation from the training-mean RDF).
    Everything prediction needs (parameters, energy grid in eV relative to E0, r grid in
    Angstrom, training-split normalization) is stored as hyperparameters, so
    ``SpectrumRegressor.load_from_checkpoint(path)`` alone rebuilds a working model.

    Parameters
    ----------
    params:         :class:`TrainParams` or its ``to_dict()``.
    energy:         (n_energy,) energy grid of the input spectra, eV relative to E0.
    r:              (n_r,) r grid of the RDF, Angstrom.
    normalization:  :class:`~xasflow.models.data.Normalization` or its ``to_dict()``.
    model_card:     what the model is for and how it was made (absorber, edge, energy reference,
                    calibration, augmentation, targets and units, data hash and split); plain data.
    ood_reference_count: number of reference spectra kept (buffer ``ood_reference``, standardized
                    inputs) for the out-of-distribution distance; 0 disables it.
    ood_threshold:  distance above which an input is flagged as outside the training distribution.
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
        # with torch.load(weights_only=True), and load_from_checkpoint(path) rebuilds this module.
        params = self.params.to_dict()
        energy = [float(value) for value in self.energy]
        r = [float(value) for value in self.r]
        normalization = self.normalization.to_dict()
        model_card = dict(model_card or {})
        self.model_card = model_card
        self.ood_threshold = None if ood_threshold is None else float(ood_threshold)
        self.save_hyperparameters()
        self.network = build_network(self.params, self.energy.size, self.r.size)
        # standardized reference spectra for the out-of-distribution distance (xasflow.models.ood)
        self.register_buffer("ood_reference", torch.zeros(int(ood_reference_count), self.energy.size))

    @property
    def architecture(self) -> str:
        return self.params.architecture

    def forward(self, mu: Tensor) -> dict[str, Tensor]:
        """Standardized mu (batch, n_energy) -> standardized CN (batch,), centered g(r) (batch, n_r).

        See :class:`~xasflow.models.data.Normalization`; :meth:`predict_spectra` gives physical units.
        """
        return self.network(mu)

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        prediction = self(batch["mu"])
        cn_loss = functional.mse_loss(prediction["coordination_number"], batch["coordination_number"])
        rdf_loss = functional.mse_loss(prediction["rdf"], batch["rdf"])
        loss = cn_loss + self.params.rdf_weight * rdf_loss
        # mean absolute error in coordination-number units, easier to read than a standardized MSE
        cn_mae = (
            prediction["coordination_number"] - batch["coordination_number"]
        ).abs().mean() * self.normalization.coordination_number_std
        batch_size = batch["mu"].shape[0]
        metrics = {
            f"{stage}_loss": loss,
            f"{stage}_cn_mse": cn_loss,
            f"{stage}_rdf_mse": rdf_loss,
            f"{stage}_cn_mae": cn_mae,
        }
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=batch_size)
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

    def predict_spectra(self, mu: np.ndarray) -> dict[str, np.ndarray]:
        """Physical predictions for raw normalized spectra.

        ``mu`` (n, n_energy) on :attr:`energy` -> ``{"coordination_number": (n,), "rdf": (n, n_r)}``
        in physical units (standardization undone). Runs in eval mode without gradients and
        restores the previous training mode.
        """
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
                prediction = self(inputs)
        finally:
            self.train(was_training)
        result = {
            "coordination_number": self.normalization.unstandardize_coordination_number(
                prediction["coordination_number"].cpu().numpy()
            ),
            "rdf": self.normalization.uncenter_rdf(prediction["rdf"].cpu().numpy()),
        }
        if self.ood_reference.shape[0] and self.ood_threshold is not None:
            distance = nearest_distance(
                self.ood_reference.cpu().numpy(), self.normalization.standardize_mu(mu)
            )
            result["input_distance"] = distance
            result["out_of_distribution"] = distance > self.ood_threshold
        return result
