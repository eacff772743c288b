"""Predict coordination numbers and partial RDFs from spectra with a trained checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xasflow.models.module import SpectrumRegressor

logger = logging.getLogger(__name__)


# eq=False: identity comparison; field-wise == is meaningless for arrays and a network
@dataclass(frozen=True, eq=False)
class Predictor:
    """A trained model ready for prediction.

    Attributes
    ----------
    energy:        (n_energy,) energy grid the input spectra must be on, eV relative to E0.
    r:             (n_r,) r grid of the predicted RDF, Angstrom.
    architecture:  "cnn" or "mlp".
    model:         the :class:`SpectrumRegressor`, in eval mode.
    checkpoint_path:  where it was loaded from.
    """

    energy: np.ndarray
    r: np.ndarray
    architecture: str
    model: SpectrumRegressor
    checkpoint_path: Path

    def predict(self, mu: np.ndarray) -> dict[str, np.ndarray]:
        """Normalized spectra ``mu`` (n, n_energy) on :attr:`energy` -> physical predictions.

        Returns ``{"coordination_number": (n,), "rdf": (n, n_r)}`` (g(r) on :attr:`r`).
        Raises ``ValueError`` if ``mu`` is not 2D with ``len(energy)`` columns or is not finite.
        """
        mu = np.asarray(mu, dtype=np.float64)
        if mu.ndim != 2 or mu.shape[1] != self.energy.size:
            raise ValueError(
                f"mu has shape {mu.shape}; the model {self.checkpoint_path} expects (n_spectra, "
                f"{self.energy.size}): {self.energy.size} energy points from {self.energy[0]:g} to "
                f"{self.energy[-1]:g} eV relative to E0 (interpolate the spectra onto model.energy)"
            )
        if not np.all(np.isfinite(mu)):
            raise ValueError("mu holds NaN or inf values")
        return self.model.predict_spectra(mu)


def load_predictor(checkpoint_path: str | Path) -> Predictor:
    """Load a checkpoint written by :func:`xasflow.models.train.train_model` onto the CPU.

    Raises ``ValueError`` naming the file if it is missing or cannot be read as such a checkpoint.
    """
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise ValueError(f"{checkpoint_path}: checkpoint does not exist")
    try:
        # weights_only: the checkpoint holds tensors and plain hyperparameters, nothing to unpickle
        model = SpectrumRegressor.load_from_checkpoint(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch / pickle / zip raise many types for a damaged file
        raise ValueError(
            f"{checkpoint_path}: not a readable xasflow model checkpoint ({type(error).__name__}: {error})"
        ) from error
    model.eval()
    energy, r = model.energy.copy(), model.r.copy()
    energy.flags.writeable = False
    r.flags.writeable = False
    logger.info("loaded %s model from %s", model.architecture, checkpoint_path)
    return Predictor(
        energy=energy,
        r=r,
        architecture=model.architecture,
        model=model,
        checkpoint_path=checkpoint_path,
    )
