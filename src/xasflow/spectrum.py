"""One spectrum type for measured and computed X-ray absorption spectra.

A :class:`Spectrum` is mu(E) on an energy axis, with the axis' reference stated: absolute photon
energy (a measurement, FEFF) or energy relative to a named edge energy E0 (FDMNES reports eV
relative to its own edge). :meth:`Spectrum.absolute_energy` is the one way to get absolute eV,
and it refuses to add an E0 to energies that are already absolute, or to return relative
energies as if they were absolute.

This module sits at the bottom of xasflow: it imports only numpy and the standard library, so
every stage (experiment, spectra, dataset, models, inference) can use it. A malformed spectrum
raises ValueError: the readers check files and raise :class:`~xasflow.errors.UserError`
subclasses before a Spectrum is built, so a ValueError here is a bug in the code that built it.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, field

import numpy as np

#: ``energy_reference`` of a spectrum whose energies are photon energies, eV.
ABSOLUTE = "absolute"
#: Prefix of ``energy_reference`` for energies relative to a named E0: ``"relative:fdmnes_edge"``.
RELATIVE_PREFIX = "relative:"
#: Separates an Athena project's path from one group's label in a spectrum reference and in the
#: ``source`` of a spectrum read from a project: ``PtData.prj:10wt% 20K``.
GROUP_SEPARATOR = ":"
#: What a spectrum can be: read from a measurement file, or computed (FEFF, FDMNES, averages of
#: computed spectra such as a pseudo-experiment).
KINDS = ("measured", "computed")


def group_reference(path: str, label: str | None = None) -> str:
    """How to name one group of an Athena project: ``"PtData.prj:10wt% 20K"``; ``path`` itself
    when ``label`` is empty or None (a file, or every group of a project)."""
    return f"{path}{GROUP_SEPARATOR}{label}" if label else str(path)


def relative_reference(e0_name: str) -> str:
    """The ``energy_reference`` of energies relative to the E0 called ``e0_name``.

    Raises ValueError if the name is empty.
    """
    name = str(e0_name).strip()
    if not name:
        raise ValueError("the E0 a relative energy axis refers to needs a name, e.g. 'fdmnes_edge'")
    return f"{RELATIVE_PREFIX}{name}"


@dataclass(frozen=True, eq=False)
class Spectrum:
    """An absorption spectrum, measured or computed.

    ``energy`` and ``mu`` are given positionally; everything else by keyword. The arrays are
    copied as float64 and made read-only. Equality is identity (arrays have no single truth
    value); compare the arrays themselves where needed.

    Attributes:
        energy: energy axis, eV, shape (n,), n >= 2, finite, strictly increasing; photon energies
            (all > 0) when ``energy_reference`` is ``"absolute"``, else eV relative to that E0.
        mu: absorption mu(E), shape (n,), finite; raw (arbitrary units) unless the source says
            otherwise in ``metadata``.
        source: where it came from: a file path, ``"<project path>:<label>"`` for one group of
            an Athena project (:func:`group_reference`), or a description of the calculation.
        kind: ``"measured"`` or ``"computed"``.
        energy_reference: ``"absolute"``, or ``"relative:<name>"`` for energies relative to the
            E0 called ``<name>`` (see :func:`relative_reference`).
        element: absorbing element symbol (``"Cu"``), or None when unknown.
        edge: absorption edge (``"K"``, ``"L3"``), or None when unknown.
        metadata: provenance (a plain dict, copied): for files ``format``, ``mu_source``,
            ``energy_source``, ``column_labels``, ``channels``, ``encoding``, ``warnings``.

    Raises:
        ValueError: arrays that are not 1-D, differ in length, hold fewer than 2 points or
            non-finite values, energies that do not increase strictly (or are <= 0 on an absolute
            axis), an unknown ``kind`` or a malformed ``energy_reference``. The message names
            ``source``.
    """

    energy: np.ndarray
    mu: np.ndarray
    _: KW_ONLY
    source: str
    kind: str
    energy_reference: str = ABSOLUTE
    element: str | None = None
    edge: str | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        source = str(self.source)
        energy = _read_only_vector(self.energy, "energy", source)
        mu = _read_only_vector(self.mu, "mu", source)
        if energy.size != mu.size:
            raise ValueError(f"{source}: energy has {energy.size} points but mu has {mu.size}")
        if energy.size < 2:
            raise ValueError(f"{source}: a spectrum needs at least 2 points, got {energy.size}")
        steps = np.diff(energy)
        if not np.all(steps > 0):
            first = int(np.flatnonzero(steps <= 0)[0])
            raise ValueError(
                f"{source}: energies must increase strictly; point {first + 1} is {energy[first]:g} eV "
                f"and point {first + 2} is {energy[first + 1]:g} eV"
            )
        if self.kind not in KINDS:
            raise ValueError(f"{source}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        _check_reference(self.energy_reference, source)
        if self.energy_reference == ABSOLUTE and energy[0] <= 0:
            raise ValueError(
                f"{source}: absolute photon energies must be > 0 eV, the axis starts at {energy[0]:g} eV "
                f"(energies relative to an edge need energy_reference='{RELATIVE_PREFIX}<name>')"
            )
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "energy", energy)
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def is_absolute(self) -> bool:
        """True when ``energy`` holds photon energies (eV), False when relative to an E0."""
        return self.energy_reference == ABSOLUTE

    @property
    def e0_name(self) -> str | None:
        """The name of the E0 a relative axis refers to; None on an absolute axis."""
        return None if self.is_absolute else self.energy_reference[len(RELATIVE_PREFIX) :]

    def absolute_energy(self, e0: float | None = None, e0_name: str | None = None) -> np.ndarray:
        """Photon energies, eV, shape (n,).

        Args:
            e0: eV, absolute energy of the E0 a relative axis refers to; must be None for an
                absolute axis (adding it would count the edge twice).
            e0_name: if given, must match the name in ``energy_reference``, so an E0 meant for
                another reference (a measured half-step E0 for FDMNES's own edge) is refused.

        Raises:
            ValueError: an E0 given for an absolute axis, none given for a relative one, a
                non-finite E0, or an ``e0_name`` that is not this spectrum's.
        """
        if self.is_absolute:
            if e0 is not None:
                raise ValueError(
                    f"{self.source}: energies are already absolute; an E0 of {e0} eV must not be added"
                )
            return self.energy
        if e0 is None:
            raise ValueError(
                f"{self.source}: energies are relative to E0 '{self.e0_name}'; pass that E0 in eV "
                "to get absolute energies"
            )
        if e0_name is not None and e0_name != self.e0_name:
            raise ValueError(
                f"{self.source}: energies are relative to E0 '{self.e0_name}', not to '{e0_name}'"
            )
        if not math.isfinite(e0):
            raise ValueError(f"{self.source}: E0 must be a finite energy in eV, got {e0}")
        absolute = self.energy + float(e0)
        absolute.setflags(write=False)
        return absolute


def _read_only_vector(values, name: str, source: str) -> np.ndarray:
    try:
        array = np.array(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {name} is not an array of numbers ({error})") from error
    if array.ndim != 1:
        raise ValueError(f"{source}: {name} must be 1-D, got shape {array.shape}")
    not_finite = ~np.isfinite(array)
    if not_finite.any():
        first = int(np.flatnonzero(not_finite)[0])
        raise ValueError(
            f"{source}: {name} is not finite at {int(not_finite.sum())} of {array.size} points, "
            f"first at point {first + 1}"
        )
    array.setflags(write=False)
    return array


def _check_reference(reference: str, source: str) -> None:
    if reference == ABSOLUTE:
        return
    if isinstance(reference, str) and reference.startswith(RELATIVE_PREFIX):
        if reference[len(RELATIVE_PREFIX) :].strip():
            return
    raise ValueError(
        f"{source}: energy_reference {reference!r} is neither '{ABSOLUTE}' nor "
        f"'{RELATIVE_PREFIX}<name of the E0>'"
    )
