"""Refuse a spectrum that a model was not trained to read, before anything is predicted.

Every checkpoint carries a model card (:func:`xasflow.models.train.train_model` writes it into
the hyperparameters): the absorber and edge of its training spectra and the energy grid, eV
relative to E0, that its input must cover. A network predicts a number for any array of the
right length, so a Fe K-edge spectrum given to a Cu K-edge model, or a scan that stops before
the end of the model's grid, would otherwise come back as a confident-looking prediction.

:func:`check_compatible` compares one normalized spectrum with one model, in this order:

1. the element named in the file header against the card's absorber;
2. the edge named in the file header against the card's edge;
3. the measured E0 (absolute eV) against the tabulated edge energy of the card's absorber and
   edge (xraydb), which catches files whose header names no element (plain ``.dat`` columns);
4. the measured energy range against E0 + the model's grid; for a chi(k) model (card ``input``
   ``representation: chi``) against E0 + the energies its chi(k) is made from, which end at
   E0 + 3.81 k_max^2 eV (:func:`~xasflow.models.exafs.autobk_energy_grid`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xraydb

from xasflow.experiment import NormalizedSpectrum
from xasflow.experiment.normalization import GRID_OVERHANG_TOLERANCE_EV
from xasflow.experiment.readers import SpectrumReadError
from xasflow.models.exafs import autobk_energy_grid
from xasflow.spectrum import ABSOLUTE

logger = logging.getLogger(__name__)

#: Largest distance (eV) between a spectrum's E0 and the tabulated edge of the model's absorber.
#: Measured E0 (0.3 of the edge step) lies within ~11 eV of the tabulated edge for the foils and
#: oxides of shared data (Cu K -1.3..+1.7, Ni K +0.1, Co K +1.4, Zn K +3.6, Se K -2.3..+3.0,
#: Pt L3 -5.0, Fe K +1.2..+10.9 for Fe2O3); chemical shifts and monochromator calibration errors
#: stay below ~20 eV, and FEFF's own edges are accepted within 30 eV (FeffParams.edge_tolerance),
#: so pseudo-experiments made from them pass too. Neighbouring K edges are ~600 eV apart
#: (Fe 7112, Co 7709, Ni 8333, Cu 8979, Zn 9659 eV) and Pt L3 (11564 eV) is ~350 eV from Ir and
#: Au L3: 60 eV separates them with room on both sides. It cannot separate a K edge from an L
#: edge of a heavy element that happens to lie close (Yb L3 is 35 eV below Cu K, W L2 20 eV below
#: Pt L3); only a header naming the element catches those.
EDGE_ENERGY_TOLERANCE_EV = 60.0


class IncompatibleSpectrumError(SpectrumReadError):
    """A spectrum of another element or edge than a model's, or one too short for its grid.

    The message is always one line, ``"<path>: <problem>"`` (as every ``SpectrumReadError``).
    """


@dataclass(frozen=True)
class _ModelTarget:
    """What a model reads: absorber symbols (a card may list several, ``"Cu,Ni"``) and edge."""

    absorbers: tuple[str, ...]
    edge: str

    def describe(self) -> str:
        return f"{' or '.join(self.absorbers)} {self.edge}-edge"


def check_compatible(
    spectrum: NormalizedSpectrum, model_card: Mapping, model_energy: np.ndarray, model_name: str
) -> None:
    """Raise :class:`IncompatibleSpectrumError` if the model cannot read ``spectrum``.

    Parameters
    ----------
    spectrum:      the normalized spectrum (:func:`xasflow.experiment.alignment.normalize_xanes`),
                   with E0 and energies in eV and, where the file header names them, its element
                   and edge.
    model_card:    the checkpoint's ``model_card`` (``absorber``, ``edge``, ...). A card without
                   absorber or edge (a checkpoint from before model cards) skips the element, edge
                   and edge-energy checks, with a logged warning.
    model_energy:  (n_energy,) the model's input grid, eV relative to E0, increasing (for a chi
                   model, whose grid is k, the card's k_max sets the energies instead).
    model_name:    how messages name the model (``cnn``).

    Raises
    ------
    IncompatibleSpectrumError
        One line naming the file, what the model reads and what the spectrum is: another element
        or edge in the header, an E0 more than :data:`EDGE_ENERGY_TOLERANCE_EV` from the model's
        tabulated edge, or data that do not cover E0 + ``model_energy`` (to within one grid step,
        at most :data:`~xasflow.experiment.normalization.GRID_OVERHANG_TOLERANCE_EV`).
    """
    target = _model_target(model_card)
    if target is None:
        logger.warning(
            "model %s has no absorber and edge in its model card (a checkpoint from before model "
            "cards): %s is not checked for element and edge",
            model_name,
            spectrum.path,
        )
    else:
        _check_header(spectrum, target, model_name)
        _check_edge_energy(spectrum, target, model_name)
    _check_coverage(spectrum, _energy_read(model_card, model_energy), model_name)


def _energy_read(model_card: Mapping, model_energy: np.ndarray) -> np.ndarray:
    """Energies (eV relative to E0) the model's input is made from: its grid, or for a chi model
    the grid its chi(k) is computed on, up to E0 + 3.81 k_max^2 eV."""
    read = dict(model_card.get("input") or {})
    if read.get("representation") == "chi":
        return autobk_energy_grid(float(read["k"][1]))
    return np.asarray(model_energy, dtype=float)


def _model_target(model_card: Mapping) -> _ModelTarget | None:
    """The card's absorber(s) and edge; None when the card names neither or only one of them."""
    absorbers = tuple(
        symbol.strip().capitalize() for symbol in str(model_card.get("absorber") or "").split(",")
    )
    absorbers = tuple(symbol for symbol in absorbers if symbol)
    edge = str(model_card.get("edge") or "").strip().upper()
    if not absorbers or not edge:
        return None
    return _ModelTarget(absorbers=absorbers, edge=edge)


def _check_header(spectrum: NormalizedSpectrum, target: _ModelTarget, model_name: str) -> None:
    """Refuse an element or edge named in the file header that is not the model's."""
    element = spectrum.element.capitalize() if spectrum.element else None
    edge = spectrum.edge.upper() if spectrum.edge else None
    if (element is None or element in target.absorbers) and (edge is None or edge == target.edge):
        return
    described = " ".join(filter(None, [element, f"{edge}-edge" if edge else None]))
    raise IncompatibleSpectrumError(
        spectrum.path,
        f"is a {described} spectrum (file header); model {model_name} reads {target.describe()} spectra",
    )


def _check_edge_energy(spectrum: NormalizedSpectrum, target: _ModelTarget, model_name: str) -> None:
    """Refuse an E0 (absolute eV) far from every tabulated edge energy the model reads."""
    if spectrum.energy_reference != ABSOLUTE:
        logger.debug("%s: energies relative to an edge; E0 not compared with tabulated edges", spectrum.path)
        return
    tabulated = _tabulated_edges(target, model_name)
    if not tabulated:
        return
    nearest = min(tabulated, key=lambda symbol: abs(spectrum.e0 - tabulated[symbol]))
    offset = spectrum.e0 - tabulated[nearest]
    if abs(offset) <= EDGE_ENERGY_TOLERANCE_EV:
        return
    raise IncompatibleSpectrumError(
        spectrum.path,
        f"its edge at E0 = {spectrum.e0:.1f} eV is {offset:+.1f} eV from the {nearest} {target.edge} edge "
        f"({tabulated[nearest]:.1f} eV, within {EDGE_ENERGY_TOLERANCE_EV:g} eV expected); model "
        f"{model_name} reads {target.describe()} spectra{_looks_like(spectrum.e0)}",
    )


def _tabulated_edges(target: _ModelTarget, model_name: str) -> dict[str, float]:
    """Tabulated edge energy (eV, xraydb) of each absorber; unknown ones left out with a warning."""
    tabulated = {}
    for symbol in target.absorbers:
        try:
            edge = xraydb.xray_edges(symbol).get(target.edge)
        except (ValueError, KeyError):  # xraydb's reply to a symbol that is not an element
            edge = None
        if edge is None:
            logger.warning(
                "model %s: xraydb has no %s edge of %r; E0 not checked against it",
                model_name,
                target.edge,
                symbol,
            )
            continue
        tabulated[symbol] = float(edge.energy)
    return tabulated


def _looks_like(e0: float) -> str:
    """``", this one looks like Fe K (7112.0 eV)"``: the tabulated edge nearest E0, or ""."""
    try:
        guess = xraydb.guess_edge(e0)
    except (ValueError, TypeError):
        return ""
    if not guess:
        return ""
    symbol, edge = guess
    return f"; this one looks like {symbol} {edge} ({xraydb.xray_edge(symbol, edge).energy:.1f} eV)"


def _check_coverage(spectrum: NormalizedSpectrum, model_energy: np.ndarray, model_name: str) -> None:
    """Refuse data that start above E0 + model_energy[0] or end below E0 + model_energy[-1].

    The tolerance is one model grid step, but at most the overhang that
    :func:`~xasflow.experiment.normalization.to_relative_grid` fills with the end value, so a
    spectrum that passes here is always put on the model's grid.
    """
    step = float(model_energy[1] - model_energy[0]) if model_energy.size > 1 else 0.0
    tolerance = min(step, GRID_OVERHANG_TOLERANCE_EV)
    e0 = spectrum.e0
    data_start, data_end = float(spectrum.energy[0]), float(spectrum.energy[-1])
    needed_start, needed_end = e0 + float(model_energy[0]), e0 + float(model_energy[-1])
    if data_start > needed_start + tolerance:
        raise IncompatibleSpectrumError(
            spectrum.path,
            f"the data start at {data_start:.1f} eV (E0 {data_start - e0:+.1f} eV, E0 = {e0:.1f} eV); "
            f"model {model_name} reads from {needed_start:.1f} eV (E0 {model_energy[0]:+.1f} eV)",
        )
    if data_end < needed_end - tolerance:
        raise IncompatibleSpectrumError(
            spectrum.path,
            f"the data end at {data_end:.1f} eV (E0 {data_end - e0:+.1f} eV, E0 = {e0:.1f} eV); "
            f"model {model_name} reads up to {needed_end:.1f} eV (E0 {model_energy[-1]:+.1f} eV)",
        )
