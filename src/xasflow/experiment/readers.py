"""Read measured X-ray absorption spectra into :class:`~xasflow.spectrum.Spectrum`.

Three formats are recognised from the file's content, not its name:

* Athena projects (``.prj``, gzip-compressed or plain), read by Larch's ``AthenaProject``
  (:mod:`xasflow.experiment.athena`): one spectrum per group. ``"PtData.prj"`` means every group,
  ``"PtData.prj:10wt% 20K"`` the one group with that label (:data:`xasflow.spectrum.GROUP_SEPARATOR`);
* XDI (first line ``# XDI/1.x``), parsed by Larch's ``XDIFile``, which wraps the reference XDI C
  library, so that malformed files are rejected exactly where the XDI specification says
  (``xdi-baddata/BadFiles.txt``);
* column files in a beamline layout Larch recognises (SSRL's EXAFS Data Collector, APS MRCAT,
  XSD and 12-BM, NSLS XDAC, CLS HXMA, KEK-PF: headers without ``#``, numbers inside them, a
  legend naming the columns), read by Larch's ``read_ascii``;
* other column files (``.xmu``, ``.dat``, CSV), whitespace-, comma- or semicolon-separated with
  an optional header, parsed strictly here: every data line must hold the same number of
  numeric values. Larch's ``read_ascii`` pads ragged rows with NaN and reads the last numeric
  block wherever it starts, which would turn a damaged file into a plausible spectrum.

Text is UTF-8 or ASCII, Latin-1 in old beamline comments, or UTF-16/UTF-32 (with or without a
byte-order mark, as Windows editors save it); it is decoded before parsing.

Every problem a user can cause is raised as :class:`SpectrumReadError` with the message
``"<path>: <problem>"`` on one line; no Larch or numpy traceback escapes. A group of a project is
named ``"<project path>:<label>"`` in messages and as the spectrum's ``source``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import math
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import larch
import numpy as np
import xraydb
from larch.io import read_ascii
from larch.io.xafs_beamlines import GenericBeamlineData, guess_beamline
from larch.io.xdi import PyXDIFile, XDIFile, XDIFileStruct, get_xdilib
from larch.utils.physical_constants import PLANCK_HC

from xasflow.errors import SpectrumReadError
from xasflow.experiment.athena import MU_DATA_TYPE, Project, ProjectGroup, looks_like_project, read_project
from xasflow.spectrum import GROUP_SEPARATOR, Spectrum, group_reference

logger = logging.getLogger(__name__)

#: Most group labels a message lists before it says how many more there are.
MAX_LABELS_LISTED = 40
#: Fewest distinct energy points accepted: below this no pre-edge line and post-edge curve fit.
MIN_POINTS = 20
#: An energy axis whose largest value is below this (eV) is taken to be in keV.
KEV_THRESHOLD_EV = 100.0
#: Largest fraction of energy steps allowed to go backwards (mono jitter at region
#: boundaries); more means several sweeps in one file, or a column that is not an energy scan.
MAX_BACKWARD_STEP_FRACTION = 0.05
#: Bytes inspected to tell text from binary, and the largest fraction of them that may be
#: control characters other than tab, newlines and form feed (random binary data has ~10 %).
TEXT_SAMPLE_BYTES = 8192
MAX_CONTROL_FRACTION = 0.01

#: XDI labels of columns that already hold mu(E), in order of preference.
EXPLICIT_MU_LABELS = ("mutrans", "mufluor", "normtrans", "normfluor")
#: Header labels in plain column files that name the mu(E) column, in order of preference.
COLUMN_FILE_MU_LABELS = ("mu", "xmu", "mutrans", "mufluor", "normtrans", "normfluor", "norm")
#: Labels (as Larch names beamline columns) of the transmitted and the fluorescence intensity,
#: which form mu(E) with ``i0`` as ln(i0/it) and if/i0.
TRANSMISSION_LABELS = ("itrans", "it", "i1")
FLUORESCENCE_LABELS = ("ifluor", "if", "fluor", "iff")
#: Leading lines shown to Larch's beamline recognition (it looks at the first line or two).
BEAMLINE_HEADER_LINES = 40
#: XDI families whose values the XDI library's ``XDI_validate_item`` checks (Element is checked
#: with the element and edge this module records).
XDI_VALIDATED_FAMILIES = ("facility", "mono", "sample", "scan", "column")
#: Fields the XDI specification recommends (``XDI_recommended_metadata`` in the XDI library).
XDI_RECOMMENDED_FIELDS = (
    "Facility.name",
    "Facility.xray_source",
    "Beamline.name",
    "Scan.start_time",
    "Column.1",
)
#: Lattice constants (Angstrom, room temperature) of the cubic monochromator crystals whose d-spacing
#: can be computed from a reflection in ``Mono.name`` when ``Mono.d_spacing`` is missing:
#: Si from CODATA 2018 (5.431020511), Ge from the usual tabulated 5.6579.
CUBIC_MONO_LATTICE_CONSTANTS = {"Si": 5.431020511, "Ge": 5.6579}
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
_MONO_REFLECTION = re.compile(r"^\s*(?P<crystal>si|ge)\s*\(?\s*(?P<hkl>\d{3})\s*\)?\s*$", re.IGNORECASE)
_HEADER_KEY_VALUE = re.compile(r"^[#!;%]+\s*%?\s*([A-Za-z][\w.]*)\s*:\s*(.*?)\s*$")
# Byte-order marks, longest first: the UTF-32-LE mark begins with the UTF-16-LE one.
_BYTE_ORDER_MARKS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# C0 control characters that never appear in text files (tab, newlines, form feed excluded).
_CONTROL_BYTES = frozenset([*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F])
# Encodings the XDI C library cannot read from the file itself: it gets a UTF-8 copy.
_REENCODE_FOR_XDI = frozenset(["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])


class _Parsed(NamedTuple):
    """What a format parser found: energy and mu as in the file (before sorting and keV)."""

    energy: np.ndarray
    mu: np.ndarray
    element: str | None
    edge: str | None
    metadata: dict


class _MuChoice(NamedTuple):
    values: np.ndarray
    source: str
    channels: tuple[str, ...] = ()


def read_spectrum(
    path: str | Path,
    *,
    mu_column: int | str | None = None,
    min_points: int = MIN_POINTS,
    require_edge: bool = True,
) -> Spectrum:
    """Read one measured XAS spectrum from an XDI file, a plain column file or one group of an
    Athena project.

    The format is chosen from the content: gzip-compressed data or text opening with
    ``# Athena project file`` is an Athena project, a first line ``# XDI/...`` means XDI, a
    header Larch recognises as a beamline's (SSRL, ...) is read by Larch's ``read_ascii``,
    anything else is read as numeric columns (energy first).

    mu(E) is formed, unless ``mu_column`` says otherwise:

    * XDI: an explicit mu column (``mutrans``, ``mufluor``, ``normtrans``, ``normfluor``), else
      ``ln(i0/itrans)``, else ``ifluor/i0``, else the dead-time-corrected sum of per-channel
      fluorescence ROIs (``Fe_Ka_mca1`` ... with ``DTFactor_mca1`` ...) divided by ``i0``;
    * columns: the column whose header label is ``mu``/``xmu``/``mutrans``/..., else
      ``ln(i0/it)`` (``itrans``, ``it``, ``i1``), else ``if/i0`` (``ifluor``, ``if``, ...), else
      column 2 (with a warning when an unlabelled table has more columns); a beamline layout
      read by Larch has no column-2 fallback: its legend names every column;
    * Athena project: the group's stored mu(E) on its stored energies plus its stored energy
      shift (see :mod:`xasflow.experiment.athena`); ``mu_column`` does not apply.

    Energies whose maximum is below 100 are taken to be keV and converted to eV. Energies are
    sorted (a scan recorded high-to-low is reversed) and points at the same energy are merged by
    averaging mu.

    Args:
        path: file to read; for a project of several groups ``"<project>:<group label>"``
            (:func:`split_group_selection`). A project of one mu(E) group needs no label.
        mu_column: override the mu choice: a column label (case-insensitive) or a 1-based column
            number, as a person counts columns in the file (XDI ``Column.N``).
        min_points: fewest distinct energies accepted.
        require_edge: refuse a scan that ends below the tabulated edge of the element and edge
            the file names (an interrupted scan: no edge step). False reads such a file as it
            is, e.g. to check the parsing of the 12-point pre-edge files of ``xdi-baddata``.

    Returns:
        A ``Spectrum`` with ``kind="measured"``, absolute energies in eV (shape (n,), strictly
        increasing), raw mu (shape (n,)), ``source`` the path (``"<project>:<label>"`` for a
        group), and ``metadata`` with ``format``, ``encoding``, ``energy_source``, ``mu_source``,
        ``column_labels`` and ``warnings`` (``channels`` when mu sums fluorescence channels;
        ``project``, ``group``, ``athena_id`` and ``energy_shift_eV`` for a project group).

    Raises:
        SpectrumReadError: the file is missing, empty, binary, not numeric, malformed XDI, holds
            no XAFS scan (no energy axis, a 2D map), has non-finite values, too few points, an
            energy axis that is not a single monotonic scan, or a scan that stops below the
            edge it names (``require_edge``); a damaged project, a project of
            several groups without a label, or a label the project does not hold.
    """
    path, label = split_group_selection(path)
    raw = _read_bytes(path)
    if looks_like_project(raw):
        _refuse_mu_column(path, mu_column)
        project = read_project(path)
        if label is None:
            return _group_spectrum(project, _only_group(project), min_points, require_edge)
        return _group_spectrum(project, _selected_group(project, label), min_points, require_edge)
    _refuse_label(path, label)
    return _text_spectrum(path, raw, mu_column, min_points, require_edge)


def read_spectra(
    path: str | Path,
    *,
    mu_column: int | str | None = None,
    min_points: int = MIN_POINTS,
    require_edge: bool = True,
) -> list[Spectrum]:
    """Every spectrum ``path`` names: one for an XDI or column file or for ``"<project>:<label>"``,
    one per mu(E) group, in file order, for an Athena project named alone.

    Groups holding something other than mu(E) (chi(k), ...) are left out with a logged warning.
    Arguments and errors as :func:`read_spectrum`; a bad group refuses the whole project, so
    that nothing is predicted from half a project (select the good groups one by one instead).
    """
    selected_path, label = split_group_selection(path)
    raw = _read_bytes(selected_path)
    if not looks_like_project(raw) or label is not None:
        return [read_spectrum(path, mu_column=mu_column, min_points=min_points, require_edge=require_edge)]
    _refuse_mu_column(selected_path, mu_column)
    project = read_project(selected_path)
    groups = _mu_groups(project)
    return [_group_spectrum(project, group, min_points, require_edge) for group in groups]


def split_group_selection(path: str | Path) -> tuple[Path, str | None]:
    """The file and the group label a spectrum reference names.

    ``"PtData.prj:10wt% 20K"`` is ``(Path("PtData.prj"), "10wt% 20K")``; a reference without
    :data:`GROUP_SEPARATOR` is ``(path, None)``. A reference that names an existing file is that
    file, whatever its name holds. Otherwise it is split at the first separator whose left part
    is an existing file (labels may hold the separator), else after ``.prj:`` so that a missing
    project is reported under its own name.
    """
    text = str(path)
    if GROUP_SEPARATOR not in text or Path(text).exists():
        return Path(text), None
    position = text.find(GROUP_SEPARATOR)
    while position > 0:
        if Path(text[:position]).is_file():
            return Path(text[:position]), text[position + 1 :]
        position = text.find(GROUP_SEPARATOR, position + 1)
    marker = text.lower().find(".prj" + GROUP_SEPARATOR)
    if marker > 0:
        end = marker + len(".prj")
        return Path(text[:end]), text[end + 1 :]
    return Path(text), None


def _text_spectrum(
    path: Path, raw: bytes, mu_column: int | str | None, min_points: int, require_edge: bool
) -> Spectrum:
    """An XDI or column file, from its bytes."""
    text, encoding = _decode_text(path, raw)
    parsed = _parse(path, text, encoding, mu_column)
    energy, mu, notes = _clean_energy_axis(path, parsed.energy, parsed.mu, parsed.metadata, min_points)
    if require_edge:
        _require_edge_in_scan(path, energy, parsed.element, parsed.edge)
    metadata = {**parsed.metadata, "encoding": encoding}
    metadata["warnings"] = [*metadata.get("warnings", []), *notes]
    _log_read(path, energy, parsed.element, parsed.edge, metadata)
    return Spectrum(
        energy,
        mu,
        source=str(path),
        kind="measured",
        element=parsed.element,
        edge=parsed.edge,
        metadata=metadata,
    )


def _log_read(source, energy: np.ndarray, element, edge, metadata: dict) -> None:
    logger.info(
        "read %s: %d points, %.1f-%.1f eV, element=%s edge=%s, mu from %s",
        source,
        energy.size,
        energy[0],
        energy[-1],
        element,
        edge,
        metadata.get("mu_source"),
    )


def _parse(path: Path, text: str, encoding: str, mu_column: int | str | None) -> _Parsed:
    first_line = text.lstrip("\r\n").splitlines()[0]
    if _XDI_VERSION_LINE.match(first_line):
        return _read_xdi(path, text, encoding, mu_column)
    if _XDI_COLUMN_LINE.search(text):
        # BadFiles.txt bad_01: an XDI header without its version line must be refused, not read
        # as loose columns.
        raise SpectrumReadError(
            path,
            "has XDI header lines ('# Column.N: ...') but its first line is not the "
            f"'# XDI/1.0' version line (found {first_line.strip()[:40]!r}); not a valid XDI file",
        )
    return _read_columns(path, text, encoding, mu_column)


# --------------------------------------------------------------------------------------------
# file access and text decoding


def _decode_text(path: Path, raw: bytes) -> tuple[str, str]:
    """The file's text and the encoding it was decoded from."""
    encoding = _text_encoding(path, raw)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SpectrumReadError(
            path,
            f"looks like {encoding.upper()} text but is not valid {encoding.upper()} "
            f"(byte {exc.start}); save it again as UTF-8 text",
        ) from exc
    if not text.strip():
        raise SpectrumReadError(path, f"file is empty (no text after decoding it as {encoding})")
    if encoding not in ("utf-8", "latin-1"):
        logger.info("%s: decoded as %s", path, encoding)
    return text, encoding


def _read_bytes(path: Path) -> bytes:
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
    return raw


def _text_encoding(path: Path, raw: bytes) -> str:
    """The codec to decode ``raw`` with; raises for binary files (Athena projects, gzip, are
    recognised before this)."""
    for mark, encoding in _BYTE_ORDER_MARKS:
        if raw.startswith(mark):
            return encoding
    sample = raw[:TEXT_SAMPLE_BYTES]
    utf16 = _utf16_without_mark(sample)
    if utf16:
        return utf16
    if b"\x00" in sample:
        raise SpectrumReadError(path, "is a binary file (it holds NUL bytes), not an XDI or column text file")
    control = sum(byte in _CONTROL_BYTES for byte in sample)
    if control > MAX_CONTROL_FRACTION * len(sample):
        raise SpectrumReadError(
            path,
            f"is a binary file ({control} of its first {len(sample)} bytes are control "
            "characters), not an XDI or column text file",
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        # Old beamline files carry Latin-1 in comments; the numbers are ASCII either way.
        return "latin-1"
    return "utf-8"


def _utf16_without_mark(sample: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' for UTF-16 text saved without a byte-order mark, else None.

    ASCII text in UTF-16 has a NUL byte beside every character: in the odd bytes for little
    endian, the even bytes for big endian, and (almost) none in the others.
    """
    size = len(sample) - len(sample) % 2
    if size < 4:
        return None
    even, odd = sample[:size:2], sample[1:size:2]
    half = size // 2
    if odd.count(0) > 0.9 * half and even.count(0) < 0.1 * half:
        return "utf-16-le"
    if even.count(0) > 0.9 * half and odd.count(0) < 0.1 * half:
        return "utf-16-be"
    return None


# --------------------------------------------------------------------------------------------
# XDI


# Larch's XDI readers finish by converting angle <-> energy with ``Mono.d_spacing`` and raise
# when that value is not a number (BadFiles.txt bad_31, whose data are fine and must be read).
# Such a line is left out of the copy Larch reads, with a warning; energy and mu are formed in
# this module from ``data``, ``array_labels`` and ``array_units`` either way.
_D_SPACING_LINE = re.compile(r"^\s*#\s*mono(?:chromator)?\.d_spacing\s*:\s*(?P<value>.*)$", re.IGNORECASE)


def _unusable_d_spacing(text: str) -> str | None:
    """The ``Mono.d_spacing`` value when it is present and its first word is not a number."""
    for line in text.splitlines():
        match = _D_SPACING_LINE.match(line)
        if match:
            words = match.group("value").split()
            return None if words and _parse_number(words[0]) is not None else match.group("value").strip()
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


@contextlib.contextmanager
def _xdi_readable_path(path: Path, text: str, encoding: str) -> Iterator[Path]:
    """``path`` itself, or a UTF-8 copy of it for text the XDI C library cannot decode (or
    without an unusable ``Mono.d_spacing`` line)."""
    drop_d_spacing = _unusable_d_spacing(text) is not None
    if encoding not in _REENCODE_FOR_XDI and not drop_d_spacing:
        yield path
        return
    if drop_d_spacing:
        text = "\n".join(line for line in text.splitlines() if not _D_SPACING_LINE.match(line)) + "\n"
    with tempfile.TemporaryDirectory(prefix="xasflow-xdi-") as folder:
        copy = Path(folder) / path.name
        copy.write_text(text, encoding="utf-8")
        yield copy


@contextlib.contextmanager
def _utf8_readable_path(path: Path, text: str, encoding: str) -> Iterator[Path]:
    """``path`` itself, or a UTF-8 copy for a file in an encoding a Larch reader cannot decode."""
    if encoding not in _REENCODE_FOR_XDI:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="xasflow-text-") as folder:
        copy = Path(folder) / path.name
        copy.write_text(text, encoding="utf-8")
        yield copy


def _open_xdi(path: Path, text: str, encoding: str):
    """Parse the XDI file with Larch; returns (reader object, True if the C library was used)."""
    strict = _xdi_library_available()
    reader_class = XDIFile if strict else PyXDIFile
    with _xdi_readable_path(path, text, encoding) as readable:
        try:
            return reader_class(str(readable)), strict
        except Exception as exc:  # any Larch/ctypes failure becomes one clear line
            reason = _larch_error_text(exc).replace(str(readable), str(path))
            where = _xdi_table_problem(text)
            raise SpectrumReadError(
                path, f"invalid XDI file: {reason}" + (f" ({where})" if where else "")
            ) from exc


def _xdi_table_problem(text: str) -> str | None:
    """Where the XDI data table first breaks the rules: a row of another length, or a value that
    is not a finite number ('nan' is not allowed in XDI). None when the table looks fine."""
    first_count = None
    for line_number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or line.lstrip().startswith(_COMMENT_CHARS):
            continue
        bad = next((token for token in tokens if not _is_finite_number(token)), None)
        if bad is not None:
            return f"line {line_number}: {bad[:40]!r} is not a finite number"
        if first_count is None:
            first_count = (len(tokens), line_number)
        elif len(tokens) != first_count[0]:
            return f"line {line_number} has {len(tokens)} values, line {first_count[1]} has {first_count[0]}"
    return None


def _is_finite_number(token: str) -> bool:
    value = _parse_number(token)
    return value is not None and math.isfinite(value)


def _read_xdi(path: Path, text: str, encoding: str, mu_column: int | str | None) -> _Parsed:
    xdi, strict = _open_xdi(path, text, encoding)
    warnings = _xdi_status_warnings(path, xdi)
    d_spacing = _unusable_d_spacing(text)
    if d_spacing is not None:
        warnings.append(
            f"Mono.d_spacing {d_spacing!r} is not a number; ignored (energy is read from its column)"
        )
    data, labels, units = _xdi_table(path, xdi, text, warnings)
    attrs = {family: dict(entries) for family, entries in getattr(xdi, "attrs", {}).items()}
    warnings += _xdi_metadata_warnings(path, attrs, data.shape[0], strict)
    _refuse_2d_scan(path, xdi)
    energy, energy_source = _xdi_energy(path, data, labels, units, attrs, warnings)
    mu = _xdi_mu(path, data, labels, mu_column)
    element, edge = _xdi_element_edge(path, xdi, attrs, warnings)
    metadata = {
        "format": "xdi",
        "xdi_reader": "libxdifile" if strict else "larch-python",
        "xdi_version": _as_str(getattr(xdi, "xdi_version", "")).strip(),
        "column_labels": labels,
        "column_units": units,
        "energy_source": energy_source,
        "mu_source": mu.source,
        "xdi_attrs": attrs,
        "comments": _as_str(getattr(xdi, "comments", "")).strip(),
        "warnings": warnings,
    }
    if mu.channels:
        metadata["channels"] = list(mu.channels)
    return _Parsed(energy, mu.values, element, edge, metadata)


def _xdi_status_warnings(path: Path, xdi) -> list[str]:
    """The XDI library's warning (status > 0: a readable file that breaks a 'should')."""
    status = getattr(xdi, "status", 0) or 0
    if status <= 0:
        return []
    message = _as_str(getattr(xdi, "error_message", "")).strip()
    logger.warning("%s: XDI library warning %d: %s", path, status, message)
    return [f"XDI warning {status}: {message}"]


def _xdi_table(path: Path, xdi, text: str, warnings: list[str]):
    """The data table (n_columns, n_points), its column labels and units."""
    data = np.asarray(xdi.data, dtype=float)
    if data.ndim != 2 or data.shape[0] < 2:
        found = data.shape[0] if data.ndim == 2 else 0
        raise SpectrumReadError(
            path, f"XDI data table holds {found} column(s); at least 2 (energy and mu) are needed"
        )
    n_columns = data.shape[0]
    labels = [_as_str(label).strip() for label in xdi.array_labels][:n_columns]
    units = [_as_str(unit).strip() for unit in getattr(xdi, "array_units", [])][:n_columns]
    units += [""] * (n_columns - len(units))
    labels = _fill_generic_labels(labels, _last_header_words(text), warnings, path)
    return data, labels, units


def _xdi_metadata_warnings(path: Path, attrs: dict, n_columns: int, strict: bool) -> list[str]:
    """Warnings for metadata a reader may pass over (BadFiles.txt: 'file read', with a warning).

    Values are checked by the XDI library's own ``XDI_validate_item`` (dates in ISO 8601,
    temperatures, ring energy and current, d-spacing, Column.1), which Larch's ``XDIFile`` does
    not call; without the C library (Larch's Python reader) this check is left out. Missing
    recommended fields and ``Column.N`` labels beyond the data table are found here.
    """
    notes = []
    if strict:
        library = get_xdilib()
        message = ctypes.create_string_buffer(512)
        record = XDIFileStruct()
        record.error_message = ctypes.cast(message, ctypes.c_char_p)
        for family in XDI_VALIDATED_FAMILIES:
            for key, value in attrs.get(family, {}).items():
                code = library.XDI_validate_item(
                    ctypes.byref(record), family.encode(), str(key).encode(), str(value).encode()
                )
                if code:
                    reason = message.value.decode("utf-8", errors="replace").strip()
                    notes.append(f"{family.capitalize()}.{key} {value!r}: {reason}")
    missing = [
        field
        for field in XDI_RECOMMENDED_FIELDS
        if field.split(".")[1].lower() not in attrs.get(field.split(".")[0].lower(), {})
    ]
    if missing:
        notes.append(f"XDI recommended metadata missing: {', '.join(missing)}")
    extra = sorted(
        (int(key) for key in attrs.get("column", {}) if key.isdigit() and int(key) > n_columns),
    )
    if extra:
        names = ", ".join(f"Column.{number} {attrs['column'][str(number)]!r}" for number in extra)
        notes.append(f"{names} declared, but the data table has {n_columns} columns; ignored")
    for note in notes:
        logger.warning("%s: %s", path, note)
    return notes


def _refuse_2d_scan(path: Path, xdi) -> None:
    outer = np.asarray(getattr(xdi, "outer_array", []))
    if outer.size > 1:
        outer_label = _as_str(getattr(xdi, "outer_label", "")).strip() or "outer"
        raise SpectrumReadError(
            path,
            f"no single XAFS scan: the file holds a 2D scan ({outer.size} blocks of outer "
            f"variable {outer_label!r}); split it into one scan per file",
        )


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


def _column_name(index: int, label: str) -> str:
    """How messages and metadata name a column: 'column 1 (energy)', counted from 1."""
    return f"column {index + 1} ({label})"


def _xdi_energy(path, data, labels, units, attrs, warnings: list[str]) -> tuple[np.ndarray, str]:
    """Energy (eV) from the energy column, or from the angle column by Bragg's law."""
    lowered_units = [unit.split()[0].lower() if unit.split() else "" for unit in units]
    energy_index = _xdi_energy_index(labels, lowered_units)
    if energy_index is not None:
        energy = data[energy_index].copy()
        name = _column_name(energy_index, labels[energy_index])
        if lowered_units[energy_index] == "kev":
            return energy * 1000.0, f"{name}, keV converted to eV"
        return energy, name

    lowered = [label.lower() for label in labels]
    if "angle" in lowered:
        return _energy_from_angle(path, data, lowered.index("angle"), lowered_units, attrs, warnings)

    raise SpectrumReadError(
        path,
        f"no XAFS scan: no energy column (columns: {_describe_columns(labels, units)}); expected "
        "a column labelled 'energy' or with units eV/keV, or 'angle' with Mono.d_spacing",
    )


def _xdi_energy_index(labels: list[str], lowered_units: list[str]) -> int | None:
    lowered = [label.lower() for label in labels]
    if "energy" in lowered:
        return lowered.index("energy")
    # BadFiles.txt bad_32: 'Column.1: Energie eV' is an energy axis in all but spelling.
    return next((index for index, unit in enumerate(lowered_units) if unit in ("ev", "kev")), None)


def _energy_from_angle(path, data, angle_index: int, lowered_units: list[str], attrs, warnings: list[str]):
    d_spacing = _d_spacing(attrs)
    if d_spacing is None:
        d_spacing = _d_spacing_from_mono_name(attrs)
        if d_spacing is None:
            raise SpectrumReadError(
                path,
                "has an 'angle' column but no valid Mono.d_spacing (Angstrom) to convert it to "
                "energy, and Mono.name does not name a Si or Ge reflection; add "
                "'# Mono.d_spacing: <value>' to the header",
            )
        note = (
            f"no Mono.d_spacing: d={d_spacing:.5f} Angstrom computed from Mono.name "
            f"{attrs['mono']['name']!r}; energies are as good as that crystal's lattice constant"
        )
        warnings.append(note)
        logger.warning("%s: %s", path, note)
    angle = data[angle_index]
    if lowered_units[angle_index] not in ("rad", "radian", "radians"):
        angle = np.deg2rad(angle)
    with np.errstate(divide="ignore", invalid="ignore"):
        energy = PLANCK_HC / (2.0 * d_spacing * np.sin(angle))
    return energy, f"{_column_name(angle_index, 'angle')} via Bragg's law, d={d_spacing} Angstrom"


def _d_spacing_from_mono_name(attrs: dict) -> float | None:
    """d (Angstrom) of the reflection ``Mono.name`` names ('Si 111', 'Si(311)', 'Ge 220'), else
    None. Both crystals are cubic: d = a / sqrt(h^2 + k^2 + l^2)."""
    match = _MONO_REFLECTION.match(attrs.get("mono", {}).get("name", ""))
    if match is None:
        return None
    miller_square_sum = sum(int(digit) ** 2 for digit in match.group("hkl"))
    return CUBIC_MONO_LATTICE_CONSTANTS[match.group("crystal").capitalize()] / math.sqrt(miller_square_sum)


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
                path,
                f"mu_column={mu_column} is out of range: the file has {len(labels)} columns, "
                f"1 to {len(labels)} ({_describe_columns(labels)})",
            )
        return mu_column - 1
    lowered = [label.lower() for label in labels]
    if mu_column.lower() not in lowered:
        raise SpectrumReadError(
            path, f"mu_column={mu_column!r} not found; columns are {_describe_columns(labels)}"
        )
    return lowered.index(mu_column.lower())


def _xdi_mu(path, data, labels, mu_column) -> _MuChoice:
    """mu(E) from the XDI columns, in the order of preference of :func:`read_spectrum`."""
    if mu_column is not None:
        index = _column_index(path, labels, mu_column)
        return _MuChoice(data[index].copy(), labels[index])
    lowered = [label.lower() for label in labels]
    for former in (_explicit_mu, _transmission_mu, _fluorescence_mu, _summed_channels_mu):
        choice = former(path, data, labels, lowered)
        if choice is not None:
            return choice
    raise SpectrumReadError(
        path,
        f"no absorption column: need one of {', '.join(EXPLICIT_MU_LABELS)}, or i0 with itrans or "
        f"ifluor (columns: {_describe_columns(labels)}); pass mu_column to choose one",
    )


def _explicit_mu(path, data, labels, lowered) -> _MuChoice | None:
    name = next((name for name in EXPLICIT_MU_LABELS if name in lowered), None)
    if name is None:
        return None
    index = lowered.index(name)
    return _MuChoice(data[index].copy(), labels[index])


def _transmission_mu(path, data, labels, lowered) -> _MuChoice | None:
    if "i0" not in lowered or "itrans" not in lowered:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.log(data[lowered.index("i0")] / data[lowered.index("itrans")])
    _require_finite_ratio(path, mu, "ln(i0/itrans)", "i0 and itrans must be positive counts")
    return _MuChoice(mu, "ln(i0/itrans)")


def _fluorescence_mu(path, data, labels, lowered) -> _MuChoice | None:
    if "i0" not in lowered or "ifluor" not in lowered:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = data[lowered.index("ifluor")] / data[lowered.index("i0")]
    _require_finite_ratio(path, mu, "ifluor/i0", "i0 must be non-zero")
    return _MuChoice(mu, "ifluor/i0")


def _summed_channels_mu(path, data, labels, lowered) -> _MuChoice | None:
    """Sum of per-channel fluorescence ROIs, each times its dead-time factor if given, over i0."""
    channels = {}
    for index, label in enumerate(labels):
        match = _FLUORESCENCE_ROI_LABEL.match(label)
        if match:
            channels[int(match.group(1))] = index
    if "i0" not in lowered or not channels:
        return None
    fluorescence = np.zeros(data.shape[1])
    corrected = 0
    for channel, index in sorted(channels.items()):
        dead_time = f"dtfactor_mca{channel}"
        corrected += dead_time in lowered
        fluorescence += data[index] * (data[lowered.index(dead_time)] if dead_time in lowered else 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = fluorescence / data[lowered.index("i0")]
    names = tuple(labels[index] for _, index in sorted(channels.items()))
    source = f"sum({', '.join(names)})/i0"
    if corrected:
        source += f" with dead-time factors on {corrected} channels"
    _require_finite_ratio(path, mu, source, "i0 must be non-zero")
    return _MuChoice(mu, source, names)


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
    # Without Element.* it fills them with blanks, so each candidate is stripped before the
    # next is tried: Epics step scans (APS 13-ID, NSLS-II 4-BM) name the element and edge only
    # as ScanParameters.element / ScanParameters.edge.
    raw_symbol = _first_given(
        element_attrs.get("symbol"), _as_str(getattr(xdi, "element", "")), scan_parameters.get("element")
    )
    raw_edge = _first_given(
        element_attrs.get("edge"), _as_str(getattr(xdi, "edge", "")), scan_parameters.get("edge")
    )
    return _checked_element_edge(path, ("Element.symbol", raw_symbol), ("Element.edge", raw_edge), warnings)


def _first_given(*candidates: str | None) -> str:
    """The first candidate that is not blank, stripped; '' when none is."""
    return next((text.strip() for text in candidates if text and text.strip()), "")


def _checked_element_edge(path, symbol: tuple[str, str], edge: tuple[str, str], warnings: list[str]):
    """The valid element and edge of ``(field name, value as written)`` pairs; an invalid value is
    recorded as unknown (None), with a warning naming the field."""
    element = _valid_element(symbol[1])
    valid_edge = _valid_edge(edge[1], element)
    for (name, raw), valid in ((symbol, element), (edge, valid_edge)):
        if valid is not None:
            continue
        note = (
            f"{name} {raw!r} is not valid; recorded as unknown"
            if raw
            else f"{name} missing; recorded as unknown"
        )
        warnings.append(note)
        logger.warning("%s: %s", path, note)
    return element, valid_edge


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


def _split_fields(line: str) -> list[str]:
    """The fields of a table line: separated by ';' when it holds one, else by ',' when it holds
    one (CSV), else by whitespace.

    Splitting on ';' alone keeps decimal commas ('8979,5;0,12') whole, so that they are refused
    as non-numeric rather than read as two numbers; a trailing separator is ignored.
    """
    for separator in (";", ","):
        if separator in line:
            fields = [field.strip() for field in line.strip().split(separator)]
            return fields[:-1] if len(fields) > 1 and not fields[-1] else fields
    return line.split()


def _parse_numbers(line: str) -> list[float] | None:
    values = []
    for token in _split_fields(line):
        value = _parse_number(token)
        if value is None:
            return None
        values.append(value)
    return values or None


def _read_columns(path: Path, text: str, encoding: str, mu_column: int | str | None) -> _Parsed:
    beamline = _larch_beamline(text)
    if beamline is not None:
        return _read_beamline_columns(path, text, encoding, mu_column, beamline)
    header, data = _split_header_and_table(path, text)
    labels = _column_labels(header, data.shape[0])
    warnings: list[str] = []
    mu = _labelled_mu(path, data, labels, mu_column) or _second_column_mu(path, data, labels, warnings)
    header_values = _header_key_values(header)
    element = _valid_element(
        header_values.get("atom") or header_values.get("element.symbol") or header_values.get("element", "")
    )
    edge = _valid_edge(header_values.get("edge") or header_values.get("element.edge", ""), element)
    metadata = {
        "format": "columns",
        "column_labels": labels,
        "energy_source": _column_name(0, labels[0]),
        "mu_source": mu.source,
        "header": header_values,
        "warnings": warnings,
    }
    return _Parsed(data[0].copy(), mu.values, element, edge, metadata)


def _larch_beamline(text: str):
    """Larch's class for the beamline layout of a column file, None for a generic file.

    Beamline collectors (SSRL's EXAFS Data Collector, APS MRCAT/XSD/12-BM, NSLS XDAC, CLS,
    KEK-PF) write headers without comment characters, with numbers in them, and name the
    columns in a legend; :func:`larch.io.xafs_beamlines.guess_beamline` knows these layouts.
    """
    lines = [line.strip() for line in text.splitlines()[:BEAMLINE_HEADER_LINES] if line.strip()]
    beamline = guess_beamline(lines)
    return None if beamline is GenericBeamlineData else beamline


def _read_beamline_columns(path: Path, text: str, encoding: str, mu_column, beamline) -> _Parsed:
    """A beamline column file, parsed by Larch's ``read_ascii``: its data table is the last
    block of numeric lines, the labels come from the beamline's legend."""
    with _utf8_readable_path(path, text, encoding) as readable:
        try:
            group = read_ascii(str(readable))
        except Exception as exc:  # any Larch failure becomes one clear line
            raise SpectrumReadError(
                path,
                f"cannot be read as a {beamline.name} column file: {exc}".replace(str(readable), str(path)),
            ) from exc
    data = np.asarray(getattr(group, "data", []), dtype=float)
    if data.ndim != 2 or data.shape[0] < 2:
        raise SpectrumReadError(
            path, f"{beamline.name} column file without a numeric data table of at least 2 columns"
        )
    labels = [str(label) for label in group.array_labels][: data.shape[0]]
    # Larch's 1-based energy column ('Achieved Energy' for SSRL), clipped to the table.
    energy_index = min(max(int(getattr(group, "energy_column", 1)) - 1, 0), data.shape[0] - 1)
    energy_units = str(getattr(group, "energy_units", "eV"))
    if energy_units.lower() not in ("ev", "kev"):
        raise SpectrumReadError(
            path,
            f"{beamline.name} energy column {_column_name(energy_index, labels[energy_index])} is in "
            f"{energy_units!r}; only eV or keV can be read (convert the file to energy first)",
        )
    mu = _labelled_mu(path, data, labels, mu_column)
    if mu is None:
        raise _no_mu_error(path, labels)
    # Larch parses 'KEY: value' header lines of any layout into ``attrs``.
    header_values = {
        str(key).lower(): str(value) for key, value in vars(group.attrs).items() if not key.startswith("_")
    }
    element = _valid_element(header_values.get("element", ""))
    edge = _valid_edge(header_values.get("edge", ""), element)
    metadata = {
        "format": "columns",
        "column_reader": f"larch read_ascii, {beamline.name} layout (larch {larch.__version__})",
        "column_labels": labels,
        "energy_source": _column_name(energy_index, labels[energy_index]),
        "mu_source": mu.source,
        "header": header_values,
        "warnings": [],
    }
    energy = data[energy_index].copy()
    if energy_units.lower() == "kev":
        energy *= 1000.0
    return _Parsed(energy, mu.values, element, edge, metadata)


def _labelled_mu(path, data, labels: list[str], mu_column) -> _MuChoice | None:
    """mu(E) of a column file: ``mu_column``, else a column whose label says it holds mu, else
    ln(i0/it) or if/i0 from intensity columns the labels name; None when the labels say nothing."""
    if mu_column is not None:
        index = _column_index(path, labels, mu_column)
        return _MuChoice(data[index].copy(), _column_name(index, labels[index]))
    lowered = [label.lower() for label in labels]
    explicit = next((name for name in COLUMN_FILE_MU_LABELS if name in lowered), None)
    if explicit is not None:
        index = lowered.index(explicit)
        return _MuChoice(data[index].copy(), _column_name(index, labels[index]))
    if "i0" not in lowered:
        return None
    i0 = data[lowered.index("i0")]
    transmitted = next((name for name in TRANSMISSION_LABELS if name in lowered), None)
    if transmitted is not None:
        source = f"ln(i0/{transmitted})"
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = np.log(i0 / data[lowered.index(transmitted)])
        _require_finite_ratio(path, mu, source, f"i0 and {transmitted} must be positive counts")
        return _MuChoice(mu, source)
    fluorescence = next((name for name in FLUORESCENCE_LABELS if name in lowered), None)
    if fluorescence is not None:
        source = f"{fluorescence}/i0"
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = data[lowered.index(fluorescence)] / i0
        _require_finite_ratio(path, mu, source, "i0 must be non-zero")
        return _MuChoice(mu, source)
    return None


def _second_column_mu(path, data, labels: list[str], warnings: list[str]) -> _MuChoice:
    """Column 2 as mu: the convention of two- and three-column files (energy, mu[, i0]).

    With more columns and no labels this is a guess, and it says so: in
    ``generic_columns_no_header.dat`` column 2 is an ion-chamber intensity.
    """
    if data.shape[0] > 2 and all(_GENERIC_COLUMN_LABEL.match(label) for label in labels):
        note = (
            f"no column labels: column 2 of {data.shape[0]} taken as mu by convention; "
            "pass mu_column if another column holds mu"
        )
        warnings.append(note)
        logger.warning("%s: %s", path, note)
    else:
        logger.info("%s: no mu label in the header; using column 2 as mu", path)
    return _MuChoice(data[1].copy(), _column_name(1, labels[1]))


def _no_mu_error(path, labels: list[str]) -> SpectrumReadError:
    return SpectrumReadError(
        path,
        f"no absorption column: need one of {', '.join(COLUMN_FILE_MU_LABELS)}, or i0 with one of "
        f"{', '.join(TRANSMISSION_LABELS + FLUORESCENCE_LABELS)} (columns: {_describe_columns(labels)}); "
        "pass mu_column to choose one",
    )


def _split_header_and_table(path: Path, text: str) -> tuple[list[str], np.ndarray]:
    """Header lines (comments, and text lines before the first numeric line) and the numeric
    table, shape (n_columns, n_rows). Every data line must hold the same number of values."""
    header: list[str] = []
    rows: list[list[float]] = []
    table_start = 0
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or (rows and stripped.startswith(_COMMENT_CHARS)):
            continue
        values = None if stripped.startswith(_COMMENT_CHARS) else _parse_numbers(stripped)
        if values is None and not rows:
            # A comment, or a title line without a comment character, before any data.
            header.append(stripped)
            continue
        if values is None:
            raise _text_in_table_error(path, line_number, stripped, table_start)
        if not rows:
            table_start = line_number
            _require_two_columns(path, line_number, len(values))
        elif len(values) != len(rows[0]):
            raise SpectrumReadError(
                path,
                f"line {line_number}: {len(values)} values where the data table has "
                f"{len(rows[0])} columns (as on line {table_start}, its first line)",
            )
        rows.append(values)
    if not rows:
        decimal_comma = next((line for line in header if _has_decimal_commas(line)), None)
        if decimal_comma is not None:
            raise SpectrumReadError(
                path,
                f"numbers are written with decimal commas ({_split_fields(decimal_comma)[0][:20]!r}); "
                "save the file with decimal points",
            )
        raise SpectrumReadError(
            path,
            "no numeric data table found: expected lines of whitespace-, comma- or "
            "semicolon-separated numbers (energy first, then mu or detector counts), "
            "optionally after a '#' header",
        )
    return header, np.asarray(rows, dtype=float).T


def _has_decimal_commas(line: str) -> bool:
    """True for a line of numbers written with decimal commas ('8979,5;0,123')."""
    fields = _split_fields(line)
    return (
        len(fields) > 1
        and any("," in field for field in fields)
        and all(_parse_number(field.replace(",", ".")) is not None for field in fields)
    )


def _require_two_columns(path: Path, line_number: int, count: int) -> None:
    if count < 2:
        raise SpectrumReadError(
            path,
            f"line {line_number}: the data table has only 1 column; need at least 2 (energy and mu)",
        )


def _text_in_table_error(path: Path, line_number: int, line: str, table_start: int) -> SpectrumReadError:
    """A non-numeric line inside the data table: a stray value, or a header with numeric lines."""
    tokens = _split_fields(line)
    bad_token = next(token for token in tokens if _parse_number(token) is None)
    if any(_parse_number(token) is not None for token in tokens):
        return SpectrumReadError(
            path, f"line {line_number}: non-numeric value {bad_token[:40]!r} in the data table"
        )
    return SpectrumReadError(
        path,
        f"line {line_number}: text {line[:40]!r} inside the numeric data table that begins at "
        f"line {table_start}; start header lines with '#' so that the table begins after them",
    )


def _column_labels(header: list[str], n_columns: int) -> list[str]:
    """Labels from the last header line when it names every column, else 'col1', 'col2', ..."""
    words = _split_fields(header[-1].lstrip("".join(_COMMENT_CHARS))) if header else []
    if len(words) == n_columns and all(_parse_number(word) is None for word in words):
        return [word.lower() for word in words]
    return [f"col{index + 1}" for index in range(n_columns)]


def _header_key_values(header: list[str]) -> dict[str, str]:
    """``#%atom: Cu`` / ``# Element.symbol: Cu`` header lines as a lower-case key -> value dict."""
    values = {}
    for line in header:
        match = _HEADER_KEY_VALUE.match(line)
        if match and match.group(2):
            values.setdefault(match.group(1).lower(), match.group(2))
    return values


# --------------------------------------------------------------------------------------------
# Athena projects (read by xasflow.experiment.athena)


def _refuse_mu_column(path: Path, mu_column: int | str | None) -> None:
    if mu_column is not None:
        raise SpectrumReadError(
            path,
            f"mu_column={mu_column!r} applies to XDI and column files; an Athena project stores mu(E) itself",
        )


def _refuse_label(path: Path, label: str | None) -> None:
    if label is not None:
        raise SpectrumReadError(
            path,
            f"group {label!r} selected ('{GROUP_SEPARATOR}{label}'), but only Athena projects hold "
            "groups; this is a text spectrum file (XDI or columns)",
        )


def _listed(labels: list[str]) -> str:
    shown = ", ".join(repr(label) for label in labels[:MAX_LABELS_LISTED])
    more = len(labels) - MAX_LABELS_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _selected_group(project: Project, label: str) -> ProjectGroup:
    """The group labelled ``label`` (surrounding spaces ignored; case too when that is unique)."""
    wanted = label.strip()
    if not wanted:
        raise SpectrumReadError(
            project.path,
            f"empty group label after '{GROUP_SEPARATOR}'; its groups are: {_listed(project.labels)}",
        )
    exact = [group for group in project.groups if group.label == wanted]
    folded = [group for group in project.groups if group.label.casefold() == wanted.casefold()]
    if exact or len(folded) == 1:
        return (exact or folded)[0]
    raise SpectrumReadError(
        project.path, f"has no group labelled {wanted!r}; its groups are: {_listed(project.labels)}"
    )


def _only_group(project: Project) -> ProjectGroup:
    """The project's one mu(E) group; a project of several needs a label."""
    groups = _mu_groups(project)
    if len(groups) > 1:
        labels = _listed([group.label for group in groups])
        raise SpectrumReadError(
            project.path,
            f"is an Athena project of {len(groups)} groups; choose one as "
            f"'{project.path}{GROUP_SEPARATOR}<label>' (labels: {labels})",
        )
    return groups[0]


def _mu_groups(project: Project) -> list[ProjectGroup]:
    """The groups holding mu(E); the others are left out with a warning, none at all refused."""
    groups = [group for group in project.groups if group.data_type == MU_DATA_TYPE]
    others = [f"{group.label!r} ({group.data_type})" for group in project.groups if group not in groups]
    if not groups:
        raise SpectrumReadError(project.path, f"holds no mu(E) group, only {', '.join(others)}")
    if others:
        logger.warning("%s: left out groups that hold no mu(E): %s", project.path, ", ".join(others))
    return groups


def _group_spectrum(project: Project, group: ProjectGroup, min_points: int, require_edge: bool) -> Spectrum:
    """One group as a measured spectrum named ``"<project>:<label>"``."""
    source = group_reference(str(project.path), group.label)
    if group.data_type != MU_DATA_TYPE:
        raise SpectrumReadError(source, f"holds {group.data_type}, not mu(E); only mu(E) groups can be read")
    warnings = list(project.warnings)
    element, edge = _checked_element_edge(
        source,
        ("element stored in the project", group.element),
        ("edge stored in the project", group.edge),
        warnings,
    )
    metadata = {
        "format": "athena",
        "project": str(project.path),
        "group": group.label,
        "athena_id": group.athena_id,
        "athena_header": project.header.splitlines()[0].lstrip("# ").strip() if project.header else "",
        "larch_version": larch.__version__,
        "energy_source": f"stored energy + stored energy shift ({group.energy_shift:+.3f} eV)",
        "mu_source": "stored mu(E)",
        "energy_shift_eV": group.energy_shift,
        "column_labels": [],
    }
    energy, mu, notes = _clean_energy_axis(source, group.energy, group.mu, metadata, min_points)
    if require_edge:
        _require_edge_in_scan(source, energy, element, edge)
    metadata["warnings"] = [*warnings, *notes]
    _log_read(source, energy, element, edge, metadata)
    return Spectrum(energy, mu, source=source, kind="measured", element=element, edge=edge, metadata=metadata)


# --------------------------------------------------------------------------------------------
# checks common to all formats


def _clean_energy_axis(path, energy: np.ndarray, mu: np.ndarray, metadata: dict, min_points: int):
    """Check values, convert keV, sort and merge duplicates. Returns (energy eV, mu, notes)."""
    energy_source = metadata.get("energy_source")
    if energy.size < min_points:
        raise SpectrumReadError(
            path, f"only {energy.size} data points; at least {min_points} are needed for a spectrum"
        )
    _require_finite(path, energy, f"energy from {energy_source}")
    _require_finite(path, mu, f"mu from {metadata.get('mu_source')}")
    if energy.min() <= 0:
        raise SpectrumReadError(
            path,
            f"energy from {energy_source} has values <= 0 (min {energy.min():g}); "
            "photon energies must be positive",
        )
    notes: list[str] = []
    if energy.max() < KEV_THRESHOLD_EV:
        energy = energy * 1000.0
        notes.append(f"energy maximum below {KEV_THRESHOLD_EV:g}: taken as keV, converted to eV")
    energy, mu = _single_increasing_scan(path, energy, mu, notes)
    energy, mu = _merge_repeated_energies(energy, mu, notes)
    if energy.size < min_points:
        raise SpectrumReadError(
            path,
            f"only {energy.size} distinct energies in {energy_source}; "
            f"at least {min_points} are needed for a spectrum",
        )
    for note in notes:
        logger.info("%s: %s", path, note)
    return np.ascontiguousarray(energy, dtype=float), np.ascontiguousarray(mu, dtype=float), notes


def _require_edge_in_scan(path, energy: np.ndarray, element: str | None, edge: str | None) -> None:
    """Refuse a scan that ends below the tabulated edge of its element (an interrupted scan).

    Such a file may hold the foot of the edge (mu already rises twentyfold at the end of
    APS13ID_2019.dat) but no post-edge points, so there is no edge step to normalize by and
    nothing a model can compare. Checked only when the file names its element and edge.
    """
    if element is None or edge is None:
        return
    edge_energy = float(xraydb.xray_edge(element, edge).energy)
    if energy[-1] < edge_energy:
        raise SpectrumReadError(
            path,
            f"the scan stops at {energy[-1]:.1f} eV, {edge_energy - energy[-1]:.1f} eV below the "
            f"tabulated {element} {edge} edge ({edge_energy:.1f} eV): no post-edge data, so no "
            "edge step to normalize (an interrupted scan?)",
        )


def _require_finite(path, values: np.ndarray, what: str) -> None:
    not_finite = ~np.isfinite(values)
    if not_finite.any():
        first = int(np.flatnonzero(not_finite)[0])
        raise SpectrumReadError(
            path,
            f"{what} has non-finite values (nan/inf) at {int(not_finite.sum())} of {values.size} points, "
            f"first at data row {first + 1}",
        )


def _single_increasing_scan(path, energy: np.ndarray, mu: np.ndarray, notes: list[str]):
    """Reverse a high-to-low scan and sort small backward steps; refuse several sweeps."""
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
    return energy, mu


def _merge_repeated_energies(energy: np.ndarray, mu: np.ndarray, notes: list[str]):
    unique_energy, inverse, counts = np.unique(energy, return_inverse=True, return_counts=True)
    if unique_energy.size == energy.size:
        return energy, mu
    notes.append(f"{energy.size - unique_energy.size} repeated energies merged by averaging mu")
    return unique_energy, np.bincount(inverse, weights=mu) / counts
