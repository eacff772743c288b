"""xasflow.models: networks, training parameters, data module, Lightning module and training."""

from xasflow.models.data import Normalization, SpectrumArrays, SpectrumDataModule
from xasflow.models.module import SpectrumRegressor, build_network
from xasflow.models.networks import SpectrumCNN, SpectrumMLP
from xasflow.models.params import ARCHITECTURES, SystemSplit, TrainParams
from xasflow.models.train import regression_metrics, train_model

__all__ = [
    "ARCHITECTURES",
    "Normalization",
    "SpectrumArrays",
    "SpectrumCNN",
    "SpectrumDataModule",
    "SpectrumMLP",
    "SpectrumRegressor",
    "SystemSplit",
    "TrainParams",
    "build_network",
    "regression_metrics",
    "train_model",
]
