"""Read the groups of an Athena project file (``.prj``) with Larch's ``AthenaProject``.

Athena (Demeter) and Larix save a session as a project: one gzip-compressed (sometimes plain)
text file holding, per group, the energy and mu(E) arrays as imported and the processing
parameters the user chose. Larch parses both generations of the format (Perl-style and JSON);
this module only asks it for the stored arrays and parameters and turns its failures into one
line naming the file.

What is taken from each group, and why:

* ``energy`` (eV) plus the group's stored energy shift (Athena ``bkg_eshift``, Larix
  ``energy_shift``): Athena and Larix plot and export ``energy + shift``, the user's
  calibration, so that is the energy a user sees for the group;
* ``mu`` as stored, never Athena's normalized arrays: xasflow normalizes every measured
  spectrum itself (:mod:`xasflow.experiment.normalization`), the same way for XDI files;
* element and edge where the project stores them (``atsym``/``edge``, or the background
  parameters' ``z`` and the transform parameters' ``edge``). Athena fills these in from the edge
  energy unless the user changed them; left empty when absent.

Groups that hold no mu(E) (chi(k), R-space, difference or background groups) are returned with
their ``data_type`` so that the caller can refuse or skip them.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import math
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import larch
import numpy as np
from larch.io import AthenaProject

from xasflow.errors import SpectrumReadError

logger = logging.getLogger(__name__)

#: Athena's flags for groups that hold something other than mu(E), and what each one holds.
NON_MU_DATA_TYPES = {
    "is_chi": "chi(k)",
    "is_rsp": "chi(R)",
    "is_qsp": "chi(q)",
    "is_diff": "a difference spectrum",
    "is_bkg": "a background function",
    "is_pixel": "pixel (dispersive) data",
}
MU_DATA_TYPE = "mu(E)"
_GZIP_MAGIC = b"\x1f\x8b"
# Larch's own test for a project (its first 500 characters name the format)
_PROJECT_MARK = b"Athena project file -- "


@dataclass(frozen=True, eq=False)
class ProjectGroup:
    """One group of an Athena project, as stored.

    Attributes:
        label: the group's label in Athena (``"10wt% 20K"``), unique within its project.
        athena_id: Athena's internal key of the group (5 letters).
        data_type: ``"mu(E)"``, or what else the group holds (``"chi(k)"``, ...).
        energy: photon energy, eV, shape (n,), the stored energies plus ``energy_shift``
            (as Larch sorted them); empty for groups that hold no mu(E).
        mu: mu(E) as stored (raw, arbitrary units), shape (n,); empty for groups without mu(E).
        energy_shift: eV, the calibration shift stored with the group (0 when none).
        element: the element symbol stored with the group, as written (``""`` when absent).
        edge: the edge stored with the group, as written (``""`` when absent).
    """

    label: str
    athena_id: str
    data_type: str
    energy: np.ndarray
    mu: np.ndarray
    energy_shift: float
    element: str
    edge: str


@dataclass(frozen=True, eq=False)
class Project:
    """An Athena project: its groups in file order, and what its reading noticed."""

    path: Path
    groups: tuple[ProjectGroup, ...]
    header: str
    warnings: tuple[str, ...]

    @property
    def labels(self) -> list[str]:
        return [group.label for group in self.groups]


def looks_like_project(raw: bytes) -> bool:
    """True for gzip-compressed data (how Athena saves) or text that opens like a project."""
    return raw[:2] == _GZIP_MAGIC or _PROJECT_MARK in raw[:500]


def read_project(path: str | Path) -> Project:
    """Read every group of the Athena project ``path`` with Larch's ``AthenaProject.read``.

    Raises:
        SpectrumReadError: one line naming ``path``: damaged gzip data, text that is not an
            Athena project, a project Larch cannot parse (truncated inside a group), or one
            that holds no groups.
    """
    path = Path(path)
    project = AthenaProject()
    # Larch prints its notes ('ignoring Athena Entry ...'); they go to the log instead. It also
    # decodes the file with sys.stdout.encoding, so the stand-in must have one (StringIO's is None).
    printed = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    try:
        with contextlib.redirect_stdout(printed):
            project.read(str(path), do_preedge=False, do_bkg=False, do_fft=False, use_hashkey=True)
    except Exception as exc:  # any Larch failure becomes one line naming the file
        raise SpectrumReadError(path, _failure_reason(path, exc)) from exc
    finally:
        for line in printed.buffer.getvalue().decode("utf-8", errors="replace").splitlines():
            if line.strip():
                logger.debug("%s: Larch: %s", path, line.strip())
    groups = tuple(_project_group(key, group) for key, group in project.groups.items())
    if not groups:
        raise SpectrumReadError(path, "is an Athena project that holds no groups")
    warnings = _lost_groups(path, list(project.group_names), len(groups))
    header = str(project.header or "")
    logger.info(
        "read Athena project %s with Larch %s: %d groups (%s)",
        path,
        larch.__version__,
        len(groups),
        ", ".join(group.label for group in groups),
    )
    return Project(path=path, groups=groups, header=header, warnings=tuple(warnings))


def _failure_reason(path: Path, exc: Exception) -> str:
    """Why the project cannot be read: damaged compression said plainly, else Larch's reason."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            return (
                f"is a damaged gzip file ({error}); the Athena project was cut short or corrupted "
                "(save it again from Athena or Larix)"
            )
        if _PROJECT_MARK not in raw[:500]:
            return (
                "is gzip-compressed but is no Athena project (its text does not open with "
                "'# Athena project file'); uncompress it if it holds an XDI or column file"
            )
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return (
        f"is not a readable Athena project (Larch {larch.__version__}: {type(exc).__name__}: {reason}); "
        "the file may be truncated or not a project"
    )


def _lost_groups(path: Path, group_names: list[str], kept: int) -> list[str]:
    """Larch names groups after their labels, so groups whose labels coincide (as Python names)
    overwrite each other: say so rather than lose them silently."""
    repeated = {name: count for name, count in Counter(group_names).items() if count > 1}
    if not repeated:
        return []
    note = (
        f"labels repeat ({', '.join(repeated)}): Larch keeps the last group of each label, so "
        f"{len(group_names) - kept} of {len(group_names)} groups are not read; rename them in Athena "
        "to read them all"
    )
    logger.warning("%s: %s", path, note)
    return [note]


def _project_group(key: str, group) -> ProjectGroup:
    parameters = getattr(group, "athena_params", None)
    background = getattr(parameters, "bkg", None)
    transform = getattr(parameters, "fft", None)
    label = str(getattr(group, "label", "") or key).strip()
    data_type = _data_type(parameters, group)
    energy_shift = _number(getattr(background, "eshift", 0.0))
    if data_type == MU_DATA_TYPE:
        energy = np.asarray(group.energy, dtype=float) + energy_shift
        mu = np.asarray(group.mu, dtype=float)
    else:
        energy = mu = np.empty(0)
    return ProjectGroup(
        label=label,
        athena_id=str(getattr(group, "athena_id", key)),
        data_type=data_type,
        energy=energy,
        mu=mu,
        energy_shift=energy_shift,
        element=_text(getattr(group, "atsym", "") or getattr(background, "z", "")),
        edge=_text(getattr(group, "edge", "") or getattr(transform, "edge", "")),
    )


def _data_type(parameters, group) -> str:
    for flag, data_type in NON_MU_DATA_TYPES.items():
        if _number(getattr(parameters, flag, 0.0)):
            return data_type
    if getattr(group, "energy", None) is None or getattr(group, "mu", None) is None:
        return "no energy and mu arrays"
    return MU_DATA_TYPE


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _text(value) -> str:
    return "" if value is None else str(value).strip()
