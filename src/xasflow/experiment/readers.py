"""Read measured X-ray absorption spectra into :class:`MeasuredSpectrum`.

Two formats are recognised from the file's content, not its name:

* XDI (first line ``# XDI/1.x``), parsed by Larch's ``XDIFile``, which wraps the reference XDI C
  library, so that malformed files are rejected exactly where the XDI specification says
  (``xdi-baddata/BadFiles.txt``);
* plain whitespace-separated columns with an optional ``#`` header (``.xmu``, ``.dat``), parsed
  strictly here: every data line must hold the same number of numeric values.

Every problem a user can cause is raised as :class:`SpectrumReadError` with the message
``"<path>: <problem>"`` on one line; no Larch or numpy traceback escapes.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xraydb
from larch.io.xdi import PyXDIFile, XDIFile, get_xdilib
from larch.utils.physical_constants import PLANCK_HC

from xasflow.errors import UserError

logger = logging.getLogger(__name__)

#: Fewest distinct energy points accepted: below this no pre-edge line and post-edge curve fit.
MIN_POINTS = 20
#: An energy axis whose largest value is below this (eV) is taken to be in keV.
KEV_THRESHOLD_EV = 100.0
#: Largest fraction of energy steps allowed to go backwards (mono jitter at region
#: boundaries); more means several sweeps in one file, or a column that is not an energy scan.
MAX_BACKWARD_STEP_FRACTION = 0.05

#: XDI labels of columns that already hold mu(E), in order of preference.
EXPLICIT_MU_LABELS = ("mutrans", "mufluor", "normtrans", "normfluor")
#: Header labels in plain column files that name the mu(E) column, in order of preference.
COLUMN_FILE_MU_LABELS = ("mu", "xmu", "mutrans", "mufluor", "normtrans", "normfluor", "norm")
#: Edge names accepted when the element is unknown (K, L1-L3, M1-M5, N1-N7, O1-O5).
KNOWN_EDGES = frozenset(
    ["K"]
    + [f"L{i}" for i in range(1, 4)]
    + [f"M{i}" for i in range(1, 6)]
    + [f"N{i}" for i in range(1, 8)]
    + [f"O{i}" for i in range(1, 6)]
)

_COMMENT_CHARS = ("#", "!", ";", "%")
_XDI_VERSION_LINE = re.compile(r"^\s*#\s*XDI/", re.IGNORECASE)
_XDI_COLUMN_LINE = re.compile(r"^\s*#\s*Column\.\d+\s*:", re.IGNORECASE | re.MULTILINE)
_GENERIC_COLUMN_LABEL = re.compile(r"^col\d+$", re.IGNORECASE)
# Per-channel fluorescence regions of interest, e.g. "Fe_Ka_mca3" (GSE / NSLS-II Epics scans).
_FLUORESCENCE_ROI_LABEL = re.compile(r"^[A-Za-z]{1,2}_[KLM][a-z0-9]*_mca(\d+)$", re.IGNORECASE)
_HEADER_KEY_VALUE = re.compile(r"^[#!;%]+\s*%?\s*([A-Za-z][\w.]*)\s*:\s*(.*?)\s*$")


class SpectrumReadError(UserError):
    """A spectrum file that cannot be turned into a usable spectrum.

    The message is always one line, ``"<path>: <problem>"``.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self):
        # Keep the two-argument constructor working across pickling (multiprocessing, Snakemake).
        return (type(self), (self.path, self.problem))


@dataclass(frozen=True)
class MeasuredSpectrum:
    """A measured absorption spectrum as read from a file.

    Attributes:
        path: the file it was read from.
        energy: incident photon energy, eV (absolute), shape (n,), strictly increasing.
        mu: raw absorption mu(E) (arbitrary units, not normalized), shape (n,).
        element: absorbing element symbol (e.g. ``"Cu"``), or None when the file does not say or
            says something that is not an element.
        edge: absorption edge (``"K"``, ``"L3"``, ...), or None when unknown or invalid.
        metadata: provenance: ``format`` (``"xdi"`` or ``"columns"``), ``mu_source`` (how mu was
            formed), ``column_labels``, ``warnings`` and format-specific header entries.
    """

    path: str
    energy: np.ndarray
    mu: np.ndarray
    element: str | None = None
    edge: str | None = None
    metadata: dict = field(default_factory=dict)


def read_spectrum(
    path: str | Path,
    *,
    mu_column: int | str | None = None,
    min_points: int = MIN_POINTS,
) -> MeasuredSpectrum:
    """Read one XAS spectrum from an XDI file or a plain column file.

    The format is chosen from the content: a first line ``# XDI/...`` means XDI, anything else is
    read as whitespace-separated numeric columns (energy first).

    mu(E) is formed, unless ``mu_column`` says otherwise:

    * XDI: an explicit mu column (``mutrans``, ``mufluor``, ``normtrans``, ``normfluor``), else
      ``ln(i0/itrans)``, else ``ifluor/i0``, else the dead-time-corrected sum of per-channel
      fluorescence ROIs (``Fe_Ka_mca1`` ... with ``DTFactor_mca1`` ...) divided by ``i0``;
    * columns: the column whose header label is ``mu``/``xmu``/``mutrans``/..., else column 2.

    Energies whose maximum is below 100 are taken to be keV and converted to eV. Energies are
    sorted (a scan recorded high-to-low is reversed) and points at the same energy are merged by
    averaging mu.

    Args:
        path: file to read.
        mu_column: override the mu choice: a column label (case-insensitive) or a 1-based column
            number, as a person counts columns in the file (XDI ``Column.N``).
        min_points: fewest distinct energies accepted.

    Returns:
        The spectrum, with energy in eV (shape (n,), strictly increasing) and mu (shape (n,)).

    Raises:
        SpectrumReadError: the file is missing, empty, binary, not numeric, malformed XDI, holds
            no XAFS scan (no energy axis, a 2D map), has non-finite values, too few points, or an
            energy axis that is not a single monotonic scan.
    """
    path = Path(path)
    text = _read_text(path)
    first_line = text.lstrip("\r\n").splitlines()[0]
    if _XDI_VERSION_LINE.match(first_line):
        energy, mu, element, edge, metadata = _read_xdi(path, text, mu_column)
    elif _XDI_COLUMN_LINE.search(text):
        # BadFiles.txt bad_01: an XDI header without its version line must be refused, not read
        # as loose columns.
        raise SpectrumReadError(
            path,
            "has XDI header lines ('# Column.N: ...') but its first line is not the "
            f"'# XDI/1.0' version line (found {first_line.strip()[:40]!r}); not a valid XDI file",
        )
    else:
        energy, mu, element, edge, metadata = _read_columns(path, text, mu_column)

    energy, mu, notes = _clean_energy_axis(path, energy, mu, metadata, min_points)
    metadata.setdefault("warnings", []).extend(notes)
    energy.setflags(write=False)
    mu.setflags(write=False)
    logger.info(
        "read %s: %d points, %.1f-%.1f eV, element=%s edge=%s, mu from %s",
        path,
        energy.size,
        energy[0],
        energy[-1],
        element,
        edge,
        metadata.get("mu_source"),
    )
    return MeasuredSpectrum(
        path=str(path), energy=energy, mu=mu, element=element, edge=edge, metadata=metadata
    )


# --------------------------------------------------------------------------------------------
# file access


def _read_text(path: Path) -> str:
    if not path.exists():
        raise SpectrumReadError(path, "file does not exist")
    if path.is_dir():
        raise SpectrumReadError(path, "is a directory, not a spectrum file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpectrumReadError(path, f"cannot be read: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise SpectrumReadError(path, "file is empty")
    if raw[:2] == b"\x1f\x8b":
        raise SpectrumReadError(
            path, "is gzip-compressed (an Athena project?), not an XDI or column text file"
        )
    if b"\x00" in raw[:4096]:
        raise SpectrumReadError(path, "is a binary file, not an XDI or column text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Old beamline files carry Latin-1 in comments; the numbers are ASCII either way.
        return raw.decode("latin-1")


# --------------------------------------------------------------------------------------------
# XDI


class _XDIFileNoArrays(XDIFile):
    """Larch's C-library XDI reader without its array post-processing.

    ``XDIFile._assign_arrays`` converts angle to energy and forms mutrans, and raises on an
    unparsable ``Mono.d_spacing`` (BadFiles.txt bad_31, which must be readable). Energy and mu are
    formed in this module instead, from ``data``, ``array_labels`` and ``array_units``.
    """

    def _assign_arrays(self):
        return None


class _PyXDIFileNoArrays(PyXDIFile):
    """Larch's pure-Python XDI reader, used only when the XDI C library cannot be loaded."""

    def _assign_arrays(self):
        return None


@functools.cache
def _xdi_library_available() -> bool:
    try:
        get_xdilib()
    except (AttributeError, OSError) as exc:
        # get_dll returns None when the bundled libxdifile is missing for this platform.
        logger.warning("XDI C library unavailable (%s); using Larch's lenient Python reader", exc)
        return False
    return True


def _as_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _larch_error_text(exc: Exception) -> str:
    """Larch's XDI errors read 'Error reading XDIFile <path>\\n<reason>': keep the reason."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].lower().startswith("error reading xdifile"):
        lines = lines[1:]
    reason = " ".join(lines) or type(exc).__name__
    return reason.rstrip(":")


def _read_xdi(path: Path, text: str, mu_column: int | str | None):
    strict = _xdi_library_available()
    reader_class = _XDIFileNoArrays if strict else _PyXDIFileNoArrays
    try:
        xdi = reader_class(str(path))
    except Exception as exc:  # any Larch/ctypes failure becomes one clear line
        raise SpectrumReadError(path, f"invalid XDI file: {_larch_error_text(exc)}") from exc

    warnings: list[str] = []
    status = getattr(xdi, "status", 0) or 0
    if status > 0:
        message = _as_str(getattr(xdi, "error_message", "")).strip()
        warnings.append(f"XDI warning {status}: {message}")
        logger.warning("%s: XDI library warning %d: %s", path, status, message)

    data = np.asarray(xdi.data, dtype=float)
    if data.ndim != 2 or data.shape[0] < 2:
        raise SpectrumReadError(path, "XDI data table holds fewer than two columns")
    n_columns = data.shape[0]
    labels = [_as_str(label).strip() for label in xdi.array_labels][:n_columns]
    units = [_as_str(unit).strip() for unit in getattr(xdi, "array_units", [])][:n_columns]
    units += [""] * (n_columns - len(units))
    labels = _fill_generic_labels(labels, _last_header_words(text), warnings, path)
    attrs = {family: dict(entries) for family, entries in getattr(xdi, "attrs", {}).items()}

    outer = np.asarray(getattr(xdi, "outer_array", []))
    if outer.size > 1:
        outer_label = _as_str(getattr(xdi, "outer_label", "")).strip() or "outer"
        raise SpectrumReadError(
            path,
            f"no single XAFS scan: the file holds a 2D scan ({outer.size} blocks of outer "
            f"variable {outer_label!r}); split it into one scan per file",
        )

    energy, energy_source = _xdi_energy(path, data, labels, units, attrs)
    mu, mu_source = _xdi_mu(path, data, labels, mu_column)
    element, edge = _xdi_element_edge(path, xdi, attrs, warnings)
    metadata = {
        "format": "xdi",
        "xdi_reader": "libxdifile" if strict else "larch-python",
        "xdi_version": _as_str(getattr(xdi, "xdi_version", "")).strip(),
        "column_labels": labels,
        "column_units": units,
        "energy_source": energy_source,
        "mu_source": mu_source,
        "xdi_attrs": attrs,
        "comments": _as_str(getattr(xdi, "comments", "")).strip(),
        "warnings": warnings,
    }
    return energy, mu, element, edge, metadata


def _last_header_words(text: str) -> list[str]:
    """Words of the last comment line before the data table (XDI's optional column-label line)."""
    last_comment = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(_COMMENT_CHARS):
            last_comment = stripped
            continue
        if _parse_numbers(stripped) is not None:
            break
    return last_comment.lstrip("".join(_COMMENT_CHARS)).split()


def _fill_generic_labels(labels: list[str], header_words: list[str], warnings: list[str], path):
    """Replace the library's placeholder labels ('col4') from the final header line.

    BadFiles.txt bad_07/08/10: missing or broken ``Column.N`` lines leave placeholders; the XDI
    label line just above the data still names every column. Explicit labels are never replaced,
    so a file that declares ``Column.1: x mm`` stays a non-energy scan.
    """
    if not any(_GENERIC_COLUMN_LABEL.match(label) for label in labels):
        return labels
    if len(header_words) != len(labels):
        return labels
    filled = [
        word if _GENERIC_COLUMN_LABEL.match(label) else label
        for label, word in zip(labels, header_words, strict=True)
    ]
    if filled != labels:
        note = f"column labels {labels} completed from the header line to {filled}"
        warnings.append(note)
        logger.warning("%s: %s", path, note)
    return filled


def _describe_columns(labels: list[str], units: list[str] | None = None) -> str:
    units = units or [""] * len(labels)
    return ", ".join(
        f"{label} [{unit}]" if unit else label for label, unit in zip(labels, units, strict=True)
    )


def _xdi_energy(path, data, labels, units, attrs) -> tuple[np.ndarray, str]:
    lowered = [label.lower() for label in labels]
    lowered_units = [unit.split()[0].lower() if unit.split() else "" for unit in units]
    energy_index = None
    if "energy" in lowered:
        energy_index = lowered.index("energy")
    else:
        # BadFiles.txt bad_32: 'Column.1: Energie eV' is an energy axis in all but spelling.
        for index, unit in enumerate(lowered_units):
            if unit in ("ev", "kev"):
                energy_index = index
                break
    if energy_index is not None:
        energy = data[energy_index].copy()
        if lowered_units[energy_index] == "kev":
            energy *= 1000.0
            return energy, f"{labels[energy_index]} (keV, converted to eV)"
        return energy, labels[energy_index]

    if "angle" in lowered:
        angle_index = lowered.index("angle")
        d_spacing = _d_spacing(attrs)
        if d_spacing is None:
            raise SpectrumReadError(
                path,
                "has an 'angle' column but no valid Mono.d_spacing (Angstrom) to convert it to "
                "energy; add '# Mono.d_spacing: <value>' to the header",
            )
        angle = data[angle_index]
        if lowered_units[angle_index] not in ("rad", "radian", "radians"):
            angle = np.deg2rad(angle)
        with np.errstate(divide="ignore", invalid="ignore"):
            energy = PLANCK_HC / (2.0 * d_spacing * np.sin(angle))
        return energy, f"angle via Bragg's law, d={d_spacing} Angstrom"

    raise SpectrumReadError(
        path,
        f"no XAFS scan: no energy column (columns: {_describe_columns(labels, units)}); expected "
        "a column labelled 'energy' or with units eV/keV, or 'angle' with Mono.d_spacing",
    )


def _d_spacing(attrs: dict) -> float | None:
    for family in ("mono", "monochromator"):
        for key in ("d_spacing", "dspacing"):
            raw = attrs.get(family, {}).get(key)
            if raw is None:
                continue
            words = raw.split("||")[0].split()
            try:
                value = float(words[0]) if words else math.nan
            except ValueError:
                continue
            if math.isfinite(value) and value > 0:
                return value
    return None


def _column_index(path, labels: list[str], mu_column: int | str) -> int:
    if isinstance(mu_column, bool) or not isinstance(mu_column, (int, str)):
        raise SpectrumReadError(path, f"mu_column must be a label or a 1-based number, not {mu_column!r}")
    if isinstance(mu_column, int):
        if not 1 <= mu_column <= len(labels):
            raise SpectrumReadError(
                path, f"mu_column={mu_column} is out of range: the file has {len(labels)} columns"
            )
        return mu_column - 1
    lowered = [label.lower() for label in labels]
    if mu_column.lower() not in lowered:
        raise SpectrumReadError(
            path, f"mu_column={mu_column!r} not found; columns are {_describe_columns(labels)}"
        )
    return lowered.index(mu_column.lower())


def _xdi_mu(path, data, labels, mu_column) -> tuple[np.ndarray, str]:
    if mu_column is not None:
        index = _column_index(path, labels, mu_column)
        return data[index].copy(), labels[index]

    lowered = [label.lower() for label in labels]
    for name in EXPLICIT_MU_LABELS:
        if name in lowered:
            return data[lowered.index(name)].copy(), labels[lowered.index(name)]

    i0 = data[lowered.index("i0")] if "i0" in lowered else None
    if i0 is not None and "itrans" in lowered:
        itrans = data[lowered.index("itrans")]
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = np.log(i0 / itrans)
        _require_finite_ratio(path, mu, "ln(i0/itrans)", "i0 and itrans must be positive counts")
        return mu, "ln(i0/itrans)"
    if i0 is not None and "ifluor" in lowered:
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = data[lowered.index("ifluor")] / i0
        _require_finite_ratio(path, mu, "ifluor/i0", "i0 must be non-zero")
        return mu, "ifluor/i0"

    channels = {}
    for index, label in enumerate(labels):
        match = _FLUORESCENCE_ROI_LABEL.match(label)
        if match:
            channels[int(match.group(1))] = index
    if i0 is not None and channels:
        fluorescence = np.zeros(data.shape[1])
        corrected = 0
        for channel, index in sorted(channels.items()):
            dead_time = f"dtfactor_mca{channel}"
            factor = data[lowered.index(dead_time)] if dead_time in lowered else 1.0
            corrected += dead_time in lowered
            fluorescence += data[index] * factor
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = fluorescence / i0
        names = [labels[index] for _, index in sorted(channels.items())]
        source = f"sum({', '.join(names)})/i0"
        if corrected:
            source += f" with dead-time factors on {corrected} channels"
        _require_finite_ratio(path, mu, source, "i0 must be non-zero")
        return mu, source

    raise SpectrumReadError(
        path,
        f"no absorption column: need one of {', '.join(EXPLICIT_MU_LABELS)}, or i0 with itrans or "
        f"ifluor (columns: {_describe_columns(labels)}); pass mu_column to choose one",
    )


def _require_finite_ratio(path, mu: np.ndarray, source: str, hint: str) -> None:
    bad = ~np.isfinite(mu)
    if bad.any():
        raise SpectrumReadError(
            path, f"{source} is not finite at {int(bad.sum())} of {mu.size} points ({hint})"
        )


def _valid_element(symbol: str) -> str | None:
    if not symbol:
        return None
    try:
        return xraydb.atomic_symbol(xraydb.atomic_number(symbol))
    except (ValueError, KeyError, TypeError):
        return None


def _valid_edge(edge: str, element: str | None) -> str | None:
    edge = edge.strip().upper()
    if not edge:
        return None
    if element is not None:
        return edge if edge in xraydb.xray_edges(element) else None
    return edge if edge in KNOWN_EDGES else None


def _xdi_element_edge(path, xdi, attrs, warnings) -> tuple[str | None, str | None]:
    element_attrs = attrs.get("element", {})
    scan_parameters = attrs.get("scanparameters", {})
    # The C library truncates these fields ('Foo' -> 'Fo'); the header values are complete.
    raw_symbol = (
        element_attrs.get("symbol")
        or _as_str(getattr(xdi, "element", ""))
        or scan_parameters.get("element", "")
    ).strip()
    raw_edge = (
        element_attrs.get("edge") or _as_str(getattr(xdi, "edge", "")) or scan_parameters.get("edge", "")
    ).strip()
    element = _valid_element(raw_symbol)
    edge = _valid_edge(raw_edge, element)
    for name, raw, valid in (("Element.symbol", raw_symbol, element), ("Element.edge", raw_edge, edge)):
        if raw and valid is None:
            note = f"{name} {raw!r} is not valid; recorded as unknown"
            warnings.append(note)
            logger.warning("%s: %s", path, note)
    return element, edge


# --------------------------------------------------------------------------------------------
# plain column files


def _parse_number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        pass
    try:
        # Fortran double-precision exponents ('0.8786D+04') in old beamline files.
        return float(token.replace("D", "E").replace("d", "e"))
    except ValueError:
        return None


def _parse_numbers(line: str) -> list[float] | None:
    values = []
    for token in line.split():
        value = _parse_number(token)
        if value is None:
            return None
        values.append(value)
    return values or None


def _read_columns(path: Path, text: str, mu_column: int | str | None):
    header: list[str] = []
    rows: list[list[float]] = []
    n_columns = 0
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(_COMMENT_CHARS):
            if not rows:
                header.append(stripped)
            continue
        values = _parse_numbers(stripped)
        if values is None:
            if not rows:
                # A title line without a comment character, before any data.
                header.append(stripped)
                continue
            bad_token = next(tok for tok in stripped.split() if _parse_number(tok) is None)
            raise SpectrumReadError(
                path, f"line {line_number}: non-numeric value {bad_token[:40]!r} in the data table"
            )
        if not rows:
            n_columns = len(values)
            if n_columns < 2:
                raise SpectrumReadError(
                    path,
                    f"line {line_number}: found 1 column; need at least 2 (energy and mu)",
                )
        elif len(values) != n_columns:
            raise SpectrumReadError(
                path,
                f"line {line_number}: {len(values)} values where the data table has {n_columns} columns",
            )
        rows.append(values)
    if not rows:
        raise SpectrumReadError(path, "no numeric data table found")
    data = np.asarray(rows, dtype=float).T

    header_words = header[-1].lstrip("".join(_COMMENT_CHARS)).split() if header else []
    has_labels = len(header_words) == n_columns and all(_parse_number(w) is None for w in header_words)
    labels = [w.lower() for w in header_words] if has_labels else [f"col{i + 1}" for i in range(n_columns)]
    header_values = _header_key_values(header)

    if mu_column is not None:
        mu_index = _column_index(path, labels, mu_column)
    else:
        mu_index = next((labels.index(name) for name in COLUMN_FILE_MU_LABELS if name in labels), 1)
    mu_source = f"column {mu_index + 1} ({labels[mu_index]})"
    if mu_column is None and mu_index == 1 and labels[1] not in COLUMN_FILE_MU_LABELS:
        logger.info("%s: no mu label in the header; using column 2 as mu", path)

    element = _valid_element(
        header_values.get("atom") or header_values.get("element.symbol") or header_values.get("element", "")
    )
    edge = _valid_edge(header_values.get("edge") or header_values.get("element.edge", ""), element)
    metadata = {
        "format": "columns",
        "column_labels": labels,
        "energy_source": f"column 1 ({labels[0]})",
        "mu_source": mu_source,
        "header": header_values,
        "warnings": [],
    }
    return data[0].copy(), data[mu_index].copy(), element, edge, metadata


def _header_key_values(header: list[str]) -> dict[str, str]:
    """``#%atom: Cu`` / ``# Element.symbol: Cu`` header lines as a lower-case key -> value dict."""
    values = {}
    for line in header:
        match = _HEADER_KEY_VALUE.match(line)
        if match and match.group(2):
            values.setdefault(match.group(1).lower(), match.group(2))
    return values


# --------------------------------------------------------------------------------------------
# checks common to all formats


def _clean_energy_axis(path, energy: np.ndarray, mu: np.ndarray, metadata: dict, min_points: int):
    """Check values, convert keV, sort and merge duplicates. Returns (energy eV, mu, notes)."""
    notes: list[str] = []
    if energy.size < min_points:
        raise SpectrumReadError(
            path, f"only {energy.size} data points; at least {min_points} are needed for a spectrum"
        )
    not_finite = ~(np.isfinite(energy) & np.isfinite(mu))
    if not_finite.any():
        first = int(np.flatnonzero(not_finite)[0])
        raise SpectrumReadError(
            path,
            f"non-finite values (nan/inf) in energy or mu ({metadata.get('mu_source')}) at "
            f"{int(not_finite.sum())} of {energy.size} points, first at data row {first + 1}",
        )
    if energy.min() <= 0:
        raise SpectrumReadError(
            path,
            f"energy column ({metadata.get('energy_source')}) has values <= 0 "
            f"(min {energy.min():g}); photon energies must be positive",
        )
    if energy.max() < KEV_THRESHOLD_EV:
        energy = energy * 1000.0
        notes.append(f"energy maximum below {KEV_THRESHOLD_EV:g}: taken as keV, converted to eV")
        logger.info("%s: energy taken as keV and converted to eV", path)

    steps = np.diff(energy)
    if np.median(steps) < 0:
        energy, mu = energy[::-1], mu[::-1]
        steps = -steps[::-1]
        notes.append("energy recorded high to low; reversed")
    n_backward = int((steps < 0).sum())
    if n_backward > MAX_BACKWARD_STEP_FRACTION * steps.size:
        raise SpectrumReadError(
            path,
            f"energy is not monotonic: it goes backwards at {n_backward} of {steps.size} steps "
            "(several sweeps in one file, or the first column is not an energy scan)",
        )
    if n_backward:
        notes.append(f"energy went backwards at {n_backward} steps; points sorted by energy")
        order = np.argsort(energy, kind="stable")
        energy, mu = energy[order], mu[order]

    unique_energy, inverse, counts = np.unique(energy, return_inverse=True, return_counts=True)
    if unique_energy.size < energy.size:
        mu = np.bincount(inverse, weights=mu) / counts
        notes.append(f"{energy.size - unique_energy.size} repeated energies merged by averaging mu")
        energy = unique_energy
    if energy.size < min_points:
        raise SpectrumReadError(
            path,
            f"only {energy.size} distinct energies (column {metadata.get('energy_source')}); "
            f"at least {min_points} are needed for a spectrum",
        )
    for note in notes:
        logger.info("%s: %s", path, note)
    return np.ascontiguousarray(energy, dtype=float), np.ascontiguousarray(mu, dtype=float), notes
