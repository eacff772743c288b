"""Energy calibration against a reference foil, and merging of repeated scans.

**Calibration**, as Athena's "calibrate" does it: a metal foil of known element is measured with
the sample, either behind it in the same scan (a third ion chamber: the reference channel,
mu_ref = ln(I_t / I_ref)) or in a scan of its own taken with the same monochromator setting. Its
edge energy E0 is found the standard way, as the maximum of d(mu)/dE (Larch ``find_e0``, through
:func:`~xasflow.experiment.normalization.normalize`, whose Larch ``pre_edge`` also checks that the
reference rises through an edge), and compared with the tabulated edge energy of that element and
edge (xraydb ``xray_edge``). The difference, ``tabulated - E0`` in eV, is added to the sample's
energies: the monochromator's energy offset is the same for sample and foil.

**Merging**, as Athena's "merge" does it: scans of one sample at one edge are interpolated onto
the energies of the first scan, inside the range all scans cover, and averaged by Larch
``merge_groups``, which also returns the standard deviation of the scans at each energy: the
noise of one scan, to be reported with the average.

:func:`prepare_spectra` runs both steps, in that order, on the spectra ``xasflow predict`` reads
(:class:`Preparation` holds its options). Problems a user can fix raise ``SpectrumReadError``
(one file: ``"<path>: <problem>"``) or ``UserError`` (several files, or an option), one line each.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import larch
import numpy as np
import xraydb
from larch import Group
from larch.io import merge_groups
from larch.xafs import find_e0

from xasflow.errors import SpectrumReadError, UserError
from xasflow.experiment.normalization import normalize
from xasflow.experiment.readers import MIN_POINTS, TRANSMISSION_LABELS, read_spectrum
from xasflow.spectrum import Spectrum

logger = logging.getLogger(__name__)

#: XDI labels of a column that already holds the reference foil's mu(E).
REFERENCE_MU_LABELS = ("murefer", "normrefer")
#: Labels of the intensity measured behind the reference foil (the third ion chamber): XDI
#: ``irefer``, and what beamline files call it. The intensity in front of the foil is the
#: transmitted one (:data:`~xasflow.experiment.readers.TRANSMISSION_LABELS`: ``itrans``, ``it``,
#: ``i1``), so the reference is ln(itrans/irefer) or, in SSRL-style files, ln(i1/i2).
REFERENCE_INTENSITY_LABELS = ("irefer", "iref", "ir", "i2")
#: Largest calibration shift accepted, eV. Monochromator offsets are a few eV, rarely above
#: 10-20 eV; a reference E0 farther than this from the tabulated edge is another edge, a glitch
#: or a wrong element, and shifting the sample by it would do harm.
MAX_CALIBRATION_SHIFT_EV = 30.0
#: Largest difference, eV, between the edge energies (maximum of d(mu)/dE) of scans to be
#: merged: repeated scans of one edge differ by the monochromator's drift, a few eV at most;
#: this catches scans of other edges in files that do not name their element and edge.
MAX_MERGE_E0_DIFFERENCE_EV = 20.0
#: The predictions.csv columns :func:`preparation_columns` fills.
PREPARATION_COLUMNS = ("energy_shift_eV", "merged_scans", "merged_spread")


def _element_symbol(text: str) -> str | None:
    try:
        return xraydb.atomic_symbol(xraydb.atomic_number(text.strip()))
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Foil:
    """A reference foil: its element and, optionally, the edge measured (None: the one edge of
    the element inside the scanned energy range)."""

    element: str
    edge: str | None = None

    @classmethod
    def parse(cls, text: str) -> Foil:
        """``"Ag"``, ``"Cu:K"`` or ``"au:l3"``; raises ``UserError`` for an unknown element or edge."""
        symbol, _, edge = str(text).partition(":")
        element = _element_symbol(symbol)
        if element is None:
            raise UserError(
                f"reference foil {text!r}: {symbol.strip()!r} is not an element symbol; "
                "give ELEMENT or ELEMENT:EDGE, e.g. Cu or Au:L3"
            )
        if not edge.strip():
            return cls(element)
        edges = xraydb.xray_edges(element)
        if edge.strip().upper() not in edges:
            raise UserError(
                f"reference foil {text!r}: {element} has no {edge.strip()!r} edge; its edges are "
                f"{', '.join(edges)}"
            )
        return cls(element, edge.strip().upper())

    def __str__(self) -> str:
        return f"{self.element} {self.edge}" if self.edge else self.element


@dataclass(frozen=True)
class FoilFile:
    """A reference foil measured in its own file (or Athena group, ``"x.prj:Au foil"``)."""

    path: str
    foil: Foil

    @classmethod
    def parse(cls, text: str) -> FoilFile:
        """``"cu_foil.xdi=Cu"`` or ``"Aunano.prj:Au foil=Au:L3"``: FILE=ELEMENT[:EDGE]."""
        path, separator, foil = str(text).rpartition("=")
        if not separator or not path.strip() or not foil.strip():
            raise UserError(
                f"reference foil {text!r}: give FILE=ELEMENT[:EDGE], e.g. cu_foil.xdi=Cu or "
                "'Aunano.prj:Au foil=Au:L3'"
            )
        return cls(path, Foil.parse(foil))


@dataclass(frozen=True)
class Calibration:
    """An energy calibration found from a reference foil.

    Attributes:
        reference: what was measured: ``"<file> reference foil"`` for a foil in a file of its
            own, ``"<file> reference channel ln(i1/i2)"`` for the foil behind the sample.
        element: the foil's element symbol.
        edge: the foil's edge (``"K"``, ``"L3"``).
        reference_e0: eV, the foil's E0 on the measured energy axis: maximum of d(mu)/dE (Larch
            ``find_e0``).
        tabulated_edge: eV, xraydb's edge energy of ``element`` and ``edge``.
    """

    reference: str
    element: str
    edge: str
    reference_e0: float
    tabulated_edge: float

    @property
    def energy_shift(self) -> float:
        """eV added to the measured energies: ``tabulated_edge - reference_e0``."""
        return self.tabulated_edge - self.reference_e0

    def as_metadata(self) -> dict:
        return {
            "energy_shift_eV": self.energy_shift,
            "reference": self.reference,
            "foil": f"{self.element} {self.edge}",
            "reference_e0_eV": self.reference_e0,
            "tabulated_edge_eV": self.tabulated_edge,
            "method": f"maximum of dmu/dE (larch {larch.__version__} find_e0) vs xraydb {xraydb.__version__}",
        }


def reference_channel(spectrum: Spectrum) -> tuple[Spectrum, str]:
    """The reference foil's mu(E) measured in the same scan as ``spectrum``, and its formula.

    Read from the columns of ``spectrum``'s file with
    :func:`~xasflow.experiment.readers.read_spectrum` (so on the same cleaned energy axis): a
    ``murefer``/``normrefer`` column, else ln(I_t/I_ref) from the transmitted intensity
    (``itrans``, ``it``, ``i1``) and the intensity behind the foil (``irefer``, ``iref``, ``ir``,
    ``i2``).

    Raises:
        SpectrumReadError: a group of an Athena project (whose reference, if any, is a group of
            its own: use :func:`foil_file_calibration`), a file without such columns, or
            intensities whose ratio is not a positive number.
    """
    path = spectrum.source
    if spectrum.metadata.get("format") == "athena":
        raise SpectrumReadError(
            path,
            "is a group of an Athena project, which keeps a reference as a group of its own; "
            "calibrate against that group as a separate foil ('<project>:<label>=ELEMENT')",
        )
    labels = [str(label) for label in spectrum.metadata.get("column_labels", [])]
    lowered = [label.lower() for label in labels]
    explicit = next((label for label in REFERENCE_MU_LABELS if label in lowered), None)
    if explicit is not None:
        column = read_spectrum(path, mu_column=explicit)
        return _as_reference(column, column.mu, explicit), explicit
    transmitted = next((label for label in TRANSMISSION_LABELS if label in lowered), None)
    behind = next((label for label in REFERENCE_INTENSITY_LABELS if label in lowered), None)
    if transmitted is None or behind is None:
        raise SpectrumReadError(
            path,
            f"has no reference channel: need a {' or '.join(REFERENCE_MU_LABELS)} column, or the "
            f"intensities in front of and behind the foil ({'/'.join(TRANSMISSION_LABELS)} and "
            f"{'/'.join(REFERENCE_INTENSITY_LABELS)}); its columns are {', '.join(labels) or 'unknown'}. "
            "Calibrate against a foil measured in a file of its own instead",
        )
    # Larch forms mu only from the columns a caller names; the ratio of two columns is formed
    # here, from columns read (and energy-sorted) by the same reader as the sample.
    front = read_spectrum(path, mu_column=transmitted)
    back = read_spectrum(path, mu_column=behind)
    formula = f"ln({transmitted}/{behind})"
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.log(front.mu / back.mu)
    bad = ~np.isfinite(mu)
    if bad.any():
        raise SpectrumReadError(
            path,
            f"reference channel {formula} is not finite at {int(bad.sum())} of {mu.size} points "
            f"({transmitted} and {behind} must be positive counts)",
        )
    return _as_reference(front, mu, formula), formula


def _as_reference(column: Spectrum, mu: np.ndarray, formula: str) -> Spectrum:
    return Spectrum(
        column.energy,
        mu,
        source=column.source,
        kind="measured",
        metadata={"mu_source": f"{formula} (reference channel)"},
    )


def calibrate_reference(reference: Spectrum, foil: Foil, description: str = "reference foil") -> Calibration:
    """The calibration a reference foil's spectrum gives: its E0 against the tabulated edge.

    E0 is one of the measured energies (Larch ``find_e0`` returns the point of largest smoothed
    slope), so the shift is found to within half the energy step at the edge.

    Args:
        reference: the foil's mu(E) on the measured energy axis (eV).
        foil: its element and edge; an edge left out is the element's one edge inside the scan.
        description: how messages name the reference (``"reference channel ln(i1/i2)"``).

    Raises:
        SpectrumReadError: no edge of the element inside the scan (or several, with no edge
            named), a reference that does not rise through an edge (Larch ``pre_edge`` finds no
            positive edge step), or an E0 more than :data:`MAX_CALIBRATION_SHIFT_EV` from the
            tabulated edge.
    """
    edge = _measured_edge(reference, foil, description)
    tabulated = float(xraydb.xray_edge(foil.element, edge).energy)
    try:
        reference_e0 = normalize(reference).e0
    except SpectrumReadError as error:
        raise SpectrumReadError(reference.source, f"{description}: {error.problem}") from error
    shift = tabulated - reference_e0
    if abs(shift) > MAX_CALIBRATION_SHIFT_EV:
        raise SpectrumReadError(
            reference.source,
            f"{description}: E0 (maximum of dmu/dE) at {reference_e0:.1f} eV is {abs(shift):.1f} eV "
            f"from the tabulated {foil.element} {edge} edge ({tabulated:.1f} eV), more than "
            f"{MAX_CALIBRATION_SHIFT_EV:g} eV: not that edge of a foil (wrong element or edge, or no "
            "edge in the reference)",
        )
    source = f"{reference.source} {description}"
    calibration = Calibration(source, foil.element, edge, float(reference_e0), tabulated)
    logger.info(
        "%s: E0 %.2f eV, tabulated %s %s edge %.2f eV: energy shift %+.2f eV",
        source,
        reference_e0,
        foil.element,
        edge,
        tabulated,
        calibration.energy_shift,
    )
    return calibration


def _measured_edge(reference: Spectrum, foil: Foil, description: str) -> str:
    """The foil's edge: the one named, else the element's one edge inside the scanned range.

    Picked here because Larch's ``guess_edge`` guesses the element too, from E0, which is what a
    calibration cannot trust.
    """
    low, high = float(reference.energy[0]), float(reference.energy[-1])
    scan = f"the scan covers {low:.1f}-{high:.1f} eV"
    if foil.edge is not None:
        energy = float(xraydb.xray_edge(foil.element, foil.edge).energy)
        if not low <= energy <= high:
            raise SpectrumReadError(
                reference.source,
                f"{description}: the tabulated {foil} edge ({energy:.1f} eV) lies outside the scan; {scan}",
            )
        return foil.edge
    edges = xraydb.xray_edges(foil.element)
    inside = [name for name, edge in edges.items() if low <= edge.energy <= high]
    if len(inside) == 1:
        return inside[0]
    if inside:
        raise SpectrumReadError(
            reference.source,
            f"{description}: {scan}, which holds the {foil.element} edges {', '.join(inside)}; "
            f"name one, e.g. {foil.element}:{inside[0]}",
        )
    nearest = min(edges.items(), key=lambda item: abs(item[1].energy - 0.5 * (low + high)))
    raise SpectrumReadError(
        reference.source,
        f"{description}: no {foil.element} edge inside the scan ({scan}; the nearest is "
        f"{foil.element} {nearest[0]} at {nearest[1].energy:.1f} eV): is the foil {foil.element}?",
    )


def apply_calibration(spectrum: Spectrum, calibration: Calibration) -> Spectrum:
    """``spectrum`` with ``calibration.energy_shift`` added to its energies, recorded in its
    metadata as ``calibration`` (:meth:`Calibration.as_metadata`)."""
    stored = spectrum.metadata.get("energy_shift_eV") if spectrum.metadata.get("format") == "athena" else 0
    if stored:
        logger.warning(
            "%s: already shifted by %+.2f eV in Athena; the calibration adds %+.2f eV to that",
            spectrum.source,
            stored,
            calibration.energy_shift,
        )
    metadata = {**spectrum.metadata, "calibration": calibration.as_metadata()}
    return replace(spectrum, energy=spectrum.energy + calibration.energy_shift, metadata=metadata)


def calibrate_with_reference_channel(spectrum: Spectrum, foil: Foil) -> Spectrum:
    """``spectrum`` calibrated against the foil measured behind it in the same scan
    (:func:`reference_channel`, :func:`calibrate_reference`)."""
    reference, formula = reference_channel(spectrum)
    return apply_calibration(spectrum, calibrate_reference(reference, foil, f"reference channel {formula}"))


def foil_file_calibration(foil_file: FoilFile) -> Calibration:
    """The calibration a foil measured in its own file gives (its mu as the reader forms it).

    Raises:
        SpectrumReadError: the file cannot be read, names another element or edge than
            ``foil_file.foil``, or gives no usable edge (:func:`calibrate_reference`).
    """
    spectrum = read_spectrum(foil_file.path)
    foil = foil_file.foil
    named = Foil(spectrum.element, spectrum.edge) if spectrum.element else None
    if named is not None and (
        named.element != foil.element or (foil.edge and named.edge and named.edge != foil.edge)
    ):
        raise SpectrumReadError(
            spectrum.source, f"is a {named} spectrum, but it was given as a {foil} reference foil"
        )
    if foil.edge is None and named is not None and named.edge:
        foil = named
    return calibrate_reference(spectrum, foil)


# --------------------------------------------------------------------------------------------
# merging


@dataclass(frozen=True, eq=False)
class MergedScans:
    """The average of repeated scans, and how much they differ.

    Attributes:
        spectrum: the average mu(E), on the energies of the first scan inside the range every
            scan covers (eV, shape (n,)); its metadata's ``merge`` entry lists the scans.
        spread: standard deviation of the scans at each of those energies, raw mu units, shape
            (n,), as Larch ``merge_groups`` computes it (ddof=0): the noise of one scan. The
            noise of the average is about ``spread / sqrt(count - 1)``.
        sources: the scans merged, in order.
    """

    spectrum: Spectrum
    spread: np.ndarray
    sources: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.sources)


def merge_scans(scans: Sequence[Spectrum]) -> MergedScans:
    """Average repeated scans of one sample at one edge with Larch ``merge_groups``.

    The scans are interpolated onto the energies of the first scan that every scan covers
    (cubic, falling back to linear where cubic rings, as Larch does) and averaged point by point.
    Calibrate the scans first if their energy axes differ.

    Raises:
        UserError: one line naming the files: fewer than 2 scans, scans that name different
            elements or edges, do not overlap in energy (or their common range holds fewer than
            :data:`~xasflow.experiment.readers.MIN_POINTS` points or no edge), or whose E0 differ
            by more than :data:`MAX_MERGE_E0_DIFFERENCE_EV`.
    """
    sources = tuple(scan.source for scan in scans)
    if len(scans) < 2:
        raise UserError(f"merging needs at least 2 scans, got {len(scans)}: {', '.join(sources) or 'none'}")
    element, edge = _common_edge(scans)
    low, high = _common_range(scans)
    _require_one_edge(scans, low, high)
    first = scans[0]
    inside = (first.energy >= low) & (first.energy <= high)
    # Larch extrapolates scans beyond their ends, and trims only the high end of the first scan:
    # the common grid is chosen here so that every averaged point was measured in every scan.
    master = Group(energy=first.energy[inside], mu=first.mu[inside])
    merged = merge_groups(
        [Group(energy=scan.energy, mu=scan.mu) for scan in scans], master=master, trim=False
    )
    spread = np.asarray(merged.mu_std, dtype=float)
    metadata = {
        "format": "merge",
        "mu_source": f"average of {len(scans)} scans (larch {larch.__version__} merge_groups)",
        "merge": {"scans": len(scans), "sources": list(sources), "median_spread": float(np.median(spread))},
        "warnings": [],
    }
    calibration = _merged_calibration(scans)
    if calibration:
        metadata["calibration"] = calibration
    spectrum = Spectrum(
        np.asarray(merged.energy, dtype=float),
        np.asarray(merged.mu, dtype=float),
        source=f"merge of {len(scans)} scans ({' + '.join(sources)})",
        kind="measured",
        element=element,
        edge=edge,
        metadata=metadata,
    )
    logger.info(
        "merged %d scans (%s) on %d energies %.1f-%.1f eV; spread (std of the scans) median %.3g, max %.3g",
        len(scans),
        ", ".join(sources),
        spectrum.energy.size,
        spectrum.energy[0],
        spectrum.energy[-1],
        np.median(spread),
        spread.max(),
    )
    return MergedScans(spectrum, spread, sources)


def _common_edge(scans: Sequence[Spectrum]) -> tuple[str | None, str | None]:
    """The element and edge the scans name (None when none names them); several are refused."""
    named = {(scan.element, scan.edge) for scan in scans if scan.element and scan.edge}
    if len(named) > 1:
        listed = "; ".join(f"{scan.source} ({scan.element or '?'} {scan.edge or '?'})" for scan in scans)
        raise UserError(f"cannot merge scans of different edges: {listed}")
    return next(iter(named), (None, None))


def _common_range(scans: Sequence[Spectrum]) -> tuple[float, float]:
    """The energy range (eV) every scan covers; refused when too short for a spectrum."""
    low = max(float(scan.energy[0]) for scan in scans)
    high = min(float(scan.energy[-1]) for scan in scans)
    ranges = ", ".join(f"{scan.source} {scan.energy[0]:.1f}-{scan.energy[-1]:.1f} eV" for scan in scans)
    if high <= low:
        raise UserError(f"cannot merge scans that do not overlap in energy: {ranges}")
    first = scans[0].energy
    count = int(np.count_nonzero((first >= low) & (first <= high)))
    if count < MIN_POINTS:
        raise UserError(
            f"cannot merge: the energies all scans cover, {low:.1f}-{high:.1f} eV, hold {count} points "
            f"of the first scan, fewer than {MIN_POINTS}: {ranges}"
        )
    return low, high


def _require_one_edge(scans: Sequence[Spectrum], low: float, high: float) -> None:
    """Refuse scans whose E0 (maximum of dmu/dE) differ too much, or lie outside the common range."""
    edges = [_edge_energy(scan) for scan in scans]
    listed = ", ".join(f"{scan.source} {e0:.1f} eV" for scan, e0 in zip(scans, edges, strict=True))
    if max(edges) - min(edges) > MAX_MERGE_E0_DIFFERENCE_EV:
        raise UserError(
            f"cannot merge scans whose edges (maximum of dmu/dE) lie {max(edges) - min(edges):.1f} eV "
            f"apart, more than {MAX_MERGE_E0_DIFFERENCE_EV:g} eV (different edges?): {listed}"
        )
    if not all(low <= e0 <= high for e0 in edges):
        raise UserError(
            f"cannot merge: the energies all scans cover, {low:.1f}-{high:.1f} eV, do not hold every "
            f"scan's edge: {listed}"
        )


def _edge_energy(scan: Spectrum) -> float:
    try:
        with warnings.catch_warnings():
            # numpy warnings from Larch's smoothing on odd grids; the result is checked after
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(find_e0(scan.energy, scan.mu))
    except Exception as exc:  # Larch failures become one line naming the scan
        raise SpectrumReadError(scan.source, f"cannot find the edge energy e0: {exc}") from exc


def _merged_calibration(scans: Sequence[Spectrum]) -> dict | None:
    """The calibration of merged scans: the mean shift, and each scan's."""
    shifts = [scan.metadata.get("calibration", {}).get("energy_shift_eV") for scan in scans]
    given = [shift for shift in shifts if shift is not None]
    if not given:
        return None
    return {"energy_shift_eV": float(np.mean(given)), "energy_shifts_eV": shifts}


# --------------------------------------------------------------------------------------------
# preparation of measured spectra before normalization (xasflow predict)


@dataclass(frozen=True)
class Preparation:
    """What is done to measured spectra between reading and normalization, in this order:
    calibration (each file against its own reference channel, or all against one foil file),
    then merging all of them into one.

    Attributes:
        reference_channel: calibrate every spectrum against the foil behind it (its file's
            reference channel), of this element and edge.
        reference_foil: calibrate every spectrum against this foil measured in its own file.
        merge: average all spectra into one (:func:`merge_scans`).
    """

    reference_channel: Foil | None = None
    reference_foil: FoilFile | None = None
    merge: bool = False

    def __post_init__(self) -> None:
        if self.reference_channel is not None and self.reference_foil is not None:
            raise UserError(
                f"calibrate against the files' reference channel ({self.reference_channel}) or against "
                f"the foil file {self.reference_foil.path}, not both"
            )

    @classmethod
    def from_options(
        cls, calibrate_reference: str | None = None, reference_foil: str | None = None, merge: bool = False
    ) -> Preparation:
        """From the command line's ``ELEMENT[:EDGE]`` and ``FILE=ELEMENT[:EDGE]`` texts."""
        return cls(
            reference_channel=Foil.parse(calibrate_reference) if calibrate_reference else None,
            reference_foil=FoilFile.parse(reference_foil) if reference_foil else None,
            merge=merge,
        )


def prepare_spectra(spectra: Sequence[Spectrum], preparation: Preparation | None) -> list[Spectrum]:
    """Calibrate, then merge, ``spectra`` as ``preparation`` says (None: unchanged)."""
    spectra = list(spectra)
    if preparation is None:
        return spectra
    if preparation.reference_channel is not None:
        spectra = [
            calibrate_with_reference_channel(spectrum, preparation.reference_channel) for spectrum in spectra
        ]
    elif preparation.reference_foil is not None:
        calibration = foil_file_calibration(preparation.reference_foil)
        spectra = [apply_calibration(spectrum, calibration) for spectrum in spectra]
    if preparation.merge:
        spectra = [merge_scans(spectra).spectrum]
    return spectra


def preparation_columns(spectrum: Spectrum, edge_step: float) -> dict[str, str]:
    """The predictions.csv columns of :func:`prepare_spectra`: ``energy_shift_eV`` (the
    calibration shift added, eV; a merge's mean), ``merged_scans`` and ``merged_spread`` (the
    median over energies of the scans' standard deviation, in units of the edge step); empty
    where the spectrum was not calibrated or merged."""
    calibration = spectrum.metadata.get("calibration")
    merge = spectrum.metadata.get("merge")
    return {
        "energy_shift_eV": f"{calibration['energy_shift_eV']:.2f}" if calibration else "",
        "merged_scans": str(merge["scans"]) if merge else "",
        "merged_spread": f"{merge['median_spread'] / edge_step:.3g}" if merge else "",
    }
