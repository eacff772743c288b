"""Predict coordination numbers and partial RDFs from spectra with a trained checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xasflow.errors import UserError
from xasflow.models.module import SpectrumRegressor, load_checkpoint

logger = logging.getLogger(__name__)


class PredictionError(UserError):
    """A spectrum the model cannot predict, or a prediction that is not a number."""


# eq=False: identity comparison; field-wise == is meaningless for arrays and a network
@dataclass(frozen=True, eq=False)
class Predictor:
    """A trained model ready for prediction.

    Attributes
    ----------
    energy:        (n_energy,) the input axis: energy grid the input spectra must be on, eV
                   relative to E0, or for a chi model (``model.params.representation``) the k
                   grid of its k-weighted chi(k) input, 1/Angstrom
                   (:func:`~xasflow.models.data.measured_input` makes either from a spectrum).
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

    @property
    def targets(self) -> tuple[str, ...]:
        """Names of the model's targets, in order."""
        return self.model.params.target_names()

    @property
    def model_card(self) -> dict:
        return dict(self.model.model_card)

    def predict(self, mu: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Normalized spectra ``mu`` (n, n_energy) on :attr:`energy` -> physical predictions.

        Returns, per target (:attr:`targets`), the ensemble mean, its spread and calibrated
        intervals (see :meth:`~xasflow.models.module.SpectrumRegressor.predict_spectra`; curves
        on :attr:`r`), plus the out-of-distribution distance and flag when the model has a
        reference set. ``names``
        (n,) name the spectra in error messages (default: their row numbers).

        Raises ``ValueError`` if ``mu`` is not 2D with ``len(energy)`` columns (a caller's bug)
        and :class:`PredictionError` if a spectrum holds NaN or inf, or the model predicts NaN
        or inf for one (a damaged or diverged model): nothing is returned that is not a number.
        """
        mu = np.asarray(mu, dtype=np.float64)
        if mu.ndim != 2 or mu.shape[1] != self.energy.size:
            raise ValueError(
                f"mu has shape {mu.shape}; the model {self.checkpoint_path} expects (n_spectra, "
                f"{self.energy.size}): {self.energy.size} energy points from {self.energy[0]:g} to "
                f"{self.energy[-1]:g} eV relative to E0 (interpolate the spectra onto model.energy)"
            )
        names = [f"row {index}" for index in range(mu.shape[0])] if names is None else list(names)
        bad_input = ~np.all(np.isfinite(mu), axis=1)
        if bad_input.any():
            raise PredictionError(
                f"{names[int(np.flatnonzero(bad_input)[0])]}: the spectrum holds NaN or inf on the "
                f"energy grid of {self.checkpoint_path}"
            )
        prediction = self.model.predict_spectra(mu)
        finite = np.ones(mu.shape[0], dtype=bool)
        for name in self.targets:  # the values and spreads; an interval may be unbounded (inf)
            for key in (name, f"{name}_spread", f"{name}_probabilities"):
                if key in prediction:
                    values = np.asarray(prediction[key], dtype=np.float64).reshape(mu.shape[0], -1)
                    finite &= np.all(np.isfinite(values), axis=1)
        if not finite.all():
            raise PredictionError(
                f"{names[int(np.flatnonzero(~finite)[0])]}: the model {self.checkpoint_path} predicts NaN or "
                "inf; refusing to write it (the model diverged or is damaged: retrain it)"
            )
        return prediction


def load_predictor(checkpoint_path: str | Path) -> Predictor:
    """Load a checkpoint written by :func:`xasflow.models.train.train_model` onto the CPU.

    The checkpoint's checksum and hyperparameters are verified before the network is built
    (:func:`xasflow.models.module.load_checkpoint`); raises
    :class:`~xasflow.models.module.CheckpointError` (a ``UserError``) naming the file if it is
    missing, damaged, or not such a checkpoint.
    """
    checkpoint_path = Path(checkpoint_path)
    model = load_checkpoint(checkpoint_path)
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
