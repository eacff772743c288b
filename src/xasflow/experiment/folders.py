"""Which files of a folder are measured spectra, and the spectra of an Athena project one by one.

A folder given to ``xasflow predict`` stands for the spectrum files directly inside it (not in
its subfolders), sorted by name. The name's suffix only chooses which files are tried; the
readers still recognise the format from the content (:mod:`xasflow.experiment.readers`), and a
file they cannot read is refused with its reason like any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xasflow.errors import SpectrumReadError, UserError
from xasflow.experiment.athena import MU_DATA_TYPE, looks_like_project, read_project
from xasflow.experiment.readers import split_group_selection
from xasflow.spectrum import group_reference

#: Suffixes (any case) of the files a folder contributes: XDI, the column files beamlines and
#: Athena export (``.xmu``, ``.mu``, ``.dat``, ``.txt``, ``.csv``) and Athena projects.
SPECTRUM_SUFFIXES = (".xdi", ".xmu", ".mu", ".dat", ".txt", ".csv", ".prj")


def spectrum_files(folder: str | Path, exclude: Iterable[str | Path] = ()) -> list[Path]:
    """The spectrum files directly in ``folder``, sorted by name: files (or links to files) whose
    suffix is one of :data:`SPECTRUM_SUFFIXES`, hidden files and ``exclude`` (e.g. the tables a
    prediction writes into the same folder) left out.

    Raises ``UserError`` naming the folder if it holds none.
    """
    folder = Path(folder)
    excluded = {Path(path).resolve() for path in exclude}
    files = [
        path
        for path in sorted(folder.iterdir(), key=lambda path: path.name)
        if path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in SPECTRUM_SUFFIXES
        and path.resolve() not in excluded
    ]
    if not files:
        raise UserError(
            f"{folder}: holds no spectrum files (looked for {', '.join(SPECTRUM_SUFFIXES)}; "
            "subfolders are not searched)"
        )
    return files


def expand_spectrum_arguments(
    arguments: Iterable[str | Path], exclude: Iterable[str | Path] = ()
) -> list[str]:
    """The spectrum references the command line names: a folder becomes its
    :func:`spectrum_files`; a file or ``"project.prj:LABEL"`` stays as it is. A reference named
    twice (a file given alone and inside its folder) is kept once, first."""
    exclude = list(exclude)
    references = []
    for argument in arguments:
        if Path(argument).is_dir():
            references += [str(path) for path in spectrum_files(argument, exclude)]
        else:
            references.append(str(argument))
    return list(dict.fromkeys(references))


def project_groups(reference: str | Path) -> list[str]:
    """``"<project>:<label>"`` of every mu(E) group when ``reference`` names a whole Athena project
    (:func:`~xasflow.spectrum.group_reference`); an empty list for anything else, including a
    project Larch cannot read (its reading error says why)."""
    path, label = split_group_selection(reference)
    if label is not None or not path.is_file():
        return []
    with open(path, "rb") as handle:
        if not looks_like_project(handle.read(512)):
            return []
    try:
        project = read_project(path)
    except SpectrumReadError:
        return []
    return [
        group_reference(str(path), group.label) for group in project.groups if group.data_type == MU_DATA_TYPE
    ]
