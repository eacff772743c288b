"""xasflow.models: targets, networks, training parameters, data module, Lightning module, training,
baselines and calibrated uncertainty."""

from xasflow.models.data import Normalization, SpectrumArrays, SpectrumDataModule
from xasflow.models.module import SpectrumRegressor, build_network
from xasflow.models.networks import Ensemble, MultiscaleCNN, SpectrumCNN, SpectrumMLP
from xasflow.models.params import ARCHITECTURES, SystemSplit, TrainParams
from xasflow.models.targets import TargetSpec, parse_targets
from xasflow.models.train import train_model

__all__ = [
    "ARCHITECTURES",
    "Ensemble",
    "MultiscaleCNN",
    "Normalization",
    "SpectrumArrays",
    "SpectrumCNN",
    "SpectrumDataModule",
    "SpectrumMLP",
    "SpectrumRegressor",
    "SystemSplit",
    "TargetSpec",
    "TrainParams",
    "build_network",
    "parse_targets",
    "train_model",
]
