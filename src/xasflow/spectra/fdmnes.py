"""FDMNES XANES: input writer -> runner -> parser -> sanity check.

FDMNES is not a Python package: the user provides the executable and says how to launch it
(``FdmnesParams.command``, e.g. ``("mpirun", "-np", "4", "/opt/fdmnes/fdmnes_linux64")``). Each
site runs in its own directory, which FDMNES uses as its working directory and which keeps:

``fdmfile.txt``
    FDMNES's list of jobs (the count, then the job input name); FDMNES reads it from its cwd.
``fdmnes_in.txt``
    the job input (keyword blocks, the cluster as a ``Molecule``).
``params.json``
    how the input was made (parameters, command, xasflow version).
``fdmnes.log``
    FDMNES's stdout and stderr.
``fdmnes_out.txt``, ``fdmnes_out_conv.txt``
    the raw and the convoluted spectrum (``Filout`` + ``.txt`` / ``_conv.txt``), next to
    FDMNES's own listing ``fdmnes_out_bav.txt``.

Spectra keep FDMNES's energy axis: eV relative to the edge as FDMNES defines it (the ``Range``
of the input is on the same axis); results say so with ``energy_reference`` =
:data:`FDMNES_ENERGY_REFERENCE`. Cross-sections are in Mbarn, not normalized.

FDMNES is launched through :mod:`xasflow.spectra.runner` (own process group, stopped as a whole
at the time limit). A missing program, a full disk or a missing permission raises
:class:`~xasflow.errors.EnvironmentFailure`; they are never recorded as a failed site.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from xasflow import __version__
from xasflow.errors import EnvironmentFailure
from xasflow.spectra.feff import Cluster, SpectraInputError, SpectrumResult, check_spectrum
from xasflow.spectra.runner import (
    ProgramLaunch,
    ProgramRun,
    environment_evidence,
    require_writable,
    run_program,
)

logger = logging.getLogger(__name__)

FILE_LIST = "fdmfile.txt"
JOB_INPUT = "fdmnes_in.txt"
OUTPUT_PREFIX = "fdmnes_out"
LOG_FILE = "fdmnes.log"
RAW_OUTPUT = f"{OUTPUT_PREFIX}.txt"
CONVOLUTED_OUTPUT = f"{OUTPUT_PREFIX}_conv.txt"
EDGES = ("K", "L1", "L2", "L3")
METHODS = ("green", "fdm")
POST_EDGE_FRACTION = 0.2  # normalization window: the last 20 % of the energy range
TERMINATE_GRACE_SECONDS = 10.0  # after SIGTERM on timeout, before SIGKILL
#: ``SpectrumResult.energy_reference`` of FDMNES spectra: eV above FDMNES's own edge (its energy
#: zero); the header's ``E_edge`` is the tabulated edge energy to add for an approximate
#: absolute photon energy.
FDMNES_ENERGY_REFERENCE = "relative:fdmnes_edge"
# Fortran writes exponents of three digits without the "E": 1.2345678-100.
_FORTRAN_EXPONENT = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))([+-]\d{3})$")


@dataclass(frozen=True)
class FdmnesParams:
    """FDMNES settings of a study.

    ``radius`` is the radius of the sphere around the absorber in which FDMNES computes the
    final state (Angstrom); the cluster handed to :func:`write_inputs` should reach at least
    that far. ``energy_min``/``energy_max``/``energy_step`` give FDMNES's ``Range`` in eV
    relative to the edge. ``method`` is "green" (multiple scattering, muffin-tin potential,
    fast) or "fdm" (finite differences, full potential, slow). ``time_limit`` is the wall
    time allowed to one FDMNES run (s). ``command`` launches FDMNES (argv, no shell).
    ``post_edge_tolerance`` is handed to :func:`xasflow.spectra.feff.check_spectrum` after the
    spectrum is normalized to its mean over the last 20 % of the energy range.
    """

    radius: float = 6.0
    edge: str = "K"
    method: str = "green"
    energy_min: float = -10.0
    energy_max: float = 60.0
    energy_step: float = 0.5
    convolution: bool = True
    scf: bool = False
    quadrupole: bool = False
    time_limit: float = 3600.0
    command: tuple[str, ...] = ("fdmnes",)
    post_edge_tolerance: float = 0.35

    def __post_init__(self) -> None:
        if isinstance(self.command, str) or not isinstance(self.command, Sequence):
            raise SpectraInputError(
                f"FdmnesParams.command must be a sequence of arguments such as "
                f"('mpirun', '-np', '4', 'fdmnes'), not {self.command!r}"
            )
        # Lists from YAML become tuples so that the parameters stay immutable and hashable.
        object.__setattr__(self, "command", tuple(str(argument) for argument in self.command))
        if not self.command or not self.command[0]:
            raise SpectraInputError(
                "FdmnesParams.command is empty: give the FDMNES executable, e.g. ('fdmnes',)"
            )
        if self.edge not in EDGES:
            raise SpectraInputError(f"FdmnesParams.edge is {self.edge!r}; valid edges are {', '.join(EDGES)}")
        if self.method not in METHODS:
            raise SpectraInputError(
                f"FdmnesParams.method is {self.method!r}; valid methods are {', '.join(METHODS)}"
            )
        if not self.radius > 0:
            raise SpectraInputError(f"FdmnesParams.radius is {self.radius} Angstrom; it must be > 0")
        if not self.energy_max > self.energy_min:
            raise SpectraInputError(
                f"FdmnesParams.energy_max ({self.energy_max} eV) must be greater than "
                f"energy_min ({self.energy_min} eV)"
            )
        if not self.energy_step > 0:
            raise SpectraInputError(f"FdmnesParams.energy_step is {self.energy_step} eV; it must be > 0")
        if not self.time_limit > 0:
            raise SpectraInputError(f"FdmnesParams.time_limit is {self.time_limit} s; it must be > 0")
        if not self.post_edge_tolerance > 0:
            raise SpectraInputError(
                f"FdmnesParams.post_edge_tolerance is {self.post_edge_tolerance}; it must be > 0"
            )

    @classmethod
    def from_config(cls, spectra: dict) -> FdmnesParams:
        """Parameters from the ``spectra`` (or ``spectra.fdmnes``) section of the config."""
        fields = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in spectra.items() if key in fields})


def _number(value: float) -> str:
    """Shortest text that reads back as the same float (Fortran list-directed input accepts it)."""
    return repr(float(value))


def fdmnes_input(cluster: Cluster, params: FdmnesParams, title: str) -> str:
    """Text of the FDMNES job input for the XANES of the cluster's first atom.

    The cluster is written as a ``Molecule``: its first line holds cell-like parameters
    ``a b c alpha beta gamma`` and each following line ``Z x y z`` with x, y, z in units of
    a, b, c. With ``1.0 1.0 1.0 90.0 90.0 90.0`` the positions are therefore Cartesian
    Angstrom (the form larixite uses for clusters). FDMNES's keyword ``Cartesian`` is *not* used
    for this: it asks for Cartesian tensor output. ``Absorber 1`` selects the first atom of the
    list (1-based) as the only absorber; ``Z_absorber`` would instead compute every atom of
    that element that is not related to the first by the cluster's symmetry.
    """
    if len(cluster.symbols) == 0:
        raise ValueError(f"{title}: the cluster has no atoms")
    positions = np.asarray(cluster.positions, dtype=float)
    if positions.shape != (len(cluster.symbols), 3):
        raise ValueError(
            f"{title}: cluster positions have shape {positions.shape}, "
            f"expected ({len(cluster.symbols)}, 3) for {len(cluster.symbols)} symbols"
        )
    if not np.all(np.isfinite(positions)):
        raise ValueError(f"{title}: cluster positions contain NaN or infinity")
    unknown = sorted({symbol for symbol in cluster.symbols if symbol not in atomic_numbers})
    if unknown:
        raise ValueError(f"{title}: unknown chemical symbols {unknown} in the cluster")
    comment = " ".join(title.split())  # one line: FDMNES comments end at the line break
    lines = [
        f"! {comment}",
        f"! written by xasflow {__version__}: {params.edge} edge of {cluster.symbols[0]}, "
        f"{len(cluster.symbols)} atoms",
        "",
        "Filout",
        f"  {OUTPUT_PREFIX}",
        "",
        "Range",
        f"  {_number(params.energy_min)} {_number(params.energy_step)} {_number(params.energy_max)}",
        "",
        "Radius",
        f"  {_number(params.radius)}",
        "",
        "Edge",
        f"  {params.edge}",
        "",
    ]
    if params.method == "green":
        lines += ["Green", ""]
    if params.quadrupole:
        lines += ["Quadrupole", ""]
    if params.scf:
        lines += ["SCF", ""]
    lines += ["Absorber", "  1", "", "Molecule", "  1.0 1.0 1.0 90.0 90.0 90.0"]
    for symbol, (x, y, z) in zip(cluster.symbols, positions, strict=True):
        lines.append(f"  {atomic_numbers[symbol]:3d} {x:12.6f} {y:12.6f} {z:12.6f}")
    lines.append("")
    if params.convolution:
        lines += ["Convolution", ""]
    lines.append("End")
    return "\n".join(lines) + "\n"


def write_inputs(cluster: Cluster, params: FdmnesParams, directory: str | Path, title: str) -> Path:
    """Write ``fdmfile.txt``, ``fdmnes_in.txt`` and ``params.json`` into ``directory``.

    ``cluster.positions`` are Angstrom relative to the absorber, which is the first atom.
    The directory is created if missing; files of an earlier run are not removed (see
    :func:`run_site`). Returns the path of the job input.
    """
    directory = Path(directory)
    text = fdmnes_input(cluster, params, title)
    directory.mkdir(parents=True, exist_ok=True)
    job_input = directory / JOB_INPUT
    job_input.write_text(text)
    # Relative name: FDMNES runs with the site directory as cwd, so the directory can move.
    (directory / FILE_LIST).write_text(f"1\n{JOB_INPUT}\n")
    (directory / "params.json").write_text(
        json.dumps(
            {
                "title": title,
                "n_atoms_cluster": len(cluster.symbols),
                "absorber": cluster.symbols[0],
                "fdmnes": asdict(params),
                "engine": "fdmnes",
                "command": list(params.command),
                "xasflow_version": __version__,
            },
            indent=2,
        )
    )
    return job_input


def run(directory: str | Path, params: FdmnesParams) -> ProgramRun:
    """Run ``params.command`` in ``directory`` (its cwd); a failing FDMNES is not an error here.

    stdout and stderr go to ``directory / "fdmnes.log"``. After ``params.time_limit`` seconds
    the whole process group (mpirun or srun and their ranks) gets SIGTERM, then SIGKILL after
    :data:`TERMINATE_GRACE_SECONDS`. Raises :class:`~xasflow.errors.EnvironmentFailure` when
    FDMNES cannot be started or the machine made it fail (see
    :func:`xasflow.spectra.runner.run_program`), and ValueError when ``directory`` holds no
    ``fdmfile.txt`` (call :func:`write_inputs` first).
    """
    directory = Path(directory)
    if not (directory / FILE_LIST).is_file():
        raise ValueError(f"{directory}: no {FILE_LIST}; call write_inputs first")
    launch = ProgramLaunch(params.command, "FDMNES", TERMINATE_GRACE_SECONDS)
    return run_program(launch, directory, params.time_limit, LOG_FILE)


@dataclass(frozen=True)
class FdmnesSpectrum:
    """One FDMNES spectrum file.

    ``energy`` (n,) is in eV relative to the edge (FDMNES's own axis; add ``edge_energy`` for
    an approximate absolute photon energy). ``mu`` (n,) is the ``<xanes>`` column (the first
    absorption column if that name is absent), a cross-section in Mbarn. ``columns`` are the
    names of all columns of the file, ``table`` (n, len(columns)) their values.
    ``convoluted`` tells a ``*_conv`` file (broadened by FDMNES's ``Convolution``) from a raw one.
    """

    energy: np.ndarray
    mu: np.ndarray
    columns: tuple[str, ...]
    convoluted: bool
    path: str
    edge_energy: float | None = None
    table: np.ndarray | None = None


def _to_float(token: str) -> float:
    try:
        return float(token)
    except ValueError:
        match = _FORTRAN_EXPONENT.match(token)
        if match is None:
            raise
        return float(f"{match[1]}E{match[2]}")


def _header_values(text: str) -> dict[str, float]:
    """``"20000.0 1.25 = E_edge, Gamma_hole"`` -> {"E_edge": 20000.0, "Gamma_hole": 1.25}.

    Values that do not parse, and names or values without a partner, are left out.
    """
    values_text, _, names_text = text.partition("=")
    values = {}
    for name, token in zip(
        (name.strip() for name in names_text.split(",")), values_text.split(), strict=False
    ):
        try:
            values[name] = _to_float(token)
        except ValueError:
            continue
    return values


def read_output(path: str | Path) -> FdmnesSpectrum:
    """Read a raw (``Filout.txt``) or convoluted (``Filout_conv.txt``) FDMNES spectrum.

    Both start with header lines: ``#`` comments (program version, date; in the convoluted
    file also ``values = E_edge, Gamma_hole, Gamma_max, E_cut`` and ``values = Shift``) and,
    in the raw file, one uncommented ``values = E_edge, Z, n_edge, ...`` line. Then comes the
    line of column names (``Energy <xanes> ...``) and one row of numbers per energy.
    Raises ValueError naming the file for a missing file, a missing column line, no data
    rows, rows that are not numbers or have the wrong length, non-finite values, or
    energies that do not increase strictly.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    lines = path.read_text(errors="replace").splitlines()
    header, columns, first_row = _read_header(path, lines)
    table = _read_table(path, lines, columns, first_row)
    _check_table(path, table)
    mu_column = columns.index("<xanes>") if "<xanes>" in columns else 1
    convoluted = "Gamma_hole" in header or path.stem.endswith("_conv")
    return FdmnesSpectrum(
        energy=table[:, 0].copy(),
        mu=table[:, mu_column].copy(),
        columns=columns,
        convoluted=convoluted,
        path=str(path),
        edge_energy=header.get("E_edge"),
        table=table,
    )


def _read_header(path: Path, lines: list[str]) -> tuple[dict[str, float], tuple[str, ...], int]:
    """(header values, column names, index of the first data line) of an FDMNES output file."""
    header: dict[str, float] = {}
    for number, line in enumerate(lines):
        text = line.strip()
        if not text:
            continue
        if "=" in text:  # "values = names", commented (#) or not
            header.update(_header_values(text.lstrip("#")))
            continue
        if text.startswith("#"):
            continue
        columns = tuple(text.split())
        if columns[0].lower() != "energy" or len(columns) < 2:
            raise ValueError(
                f"{path}: line {number + 1} should name the columns ('Energy <xanes> ...'), found {line!r}"
            )
        return header, columns, number + 1
    raise ValueError(f"{path}: no column names (expected a line 'Energy <xanes> ...'); is it empty?")


def _read_table(path: Path, lines: list[str], columns: tuple[str, ...], first_row: int) -> np.ndarray:
    """The numbers below the column names, (n, len(columns)); Fortran exponents understood."""
    rows = []
    for number, line in enumerate(lines[first_row:], start=first_row + 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != len(columns):
            raise ValueError(
                f"{path}: line {number} has {len(tokens)} values, "
                f"expected {len(columns)} ({' '.join(columns)})"
            )
        try:
            rows.append([_to_float(token) for token in tokens])
        except ValueError:
            raise ValueError(f"{path}: line {number} is not numeric: {line.strip()!r}") from None
    if not rows:
        raise ValueError(f"{path}: no data rows after the column names {' '.join(columns)}")
    return np.asarray(rows, dtype=float)


def _check_table(path: Path, table: np.ndarray) -> None:
    """Every value finite, energies (first column) strictly increasing."""
    if not np.all(np.isfinite(table)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(table), axis=1))[0])
        raise ValueError(f"{path}: non-finite value (NaN or infinity) in data row {bad + 1}")
    energy = table[:, 0]
    if np.any(np.diff(energy) <= 0):
        bad = int(np.flatnonzero(np.diff(energy) <= 0)[0])
        raise ValueError(
            f"{path}: energies do not increase strictly ({energy[bad]} eV then {energy[bad + 1]} eV)"
        )


def normalize_post_edge(
    energy: np.ndarray, mu: np.ndarray, fraction: float = POST_EDGE_FRACTION
) -> np.ndarray:
    """``mu`` divided by its mean over the last ``fraction`` of the energy range (by eV, not points).

    FDMNES gives cross-sections in Mbarn; this brings the post-edge to about 1 like FEFF's
    normalized mu. Raises ValueError when that mean is not positive.
    """
    start = energy[-1] - fraction * (energy[-1] - energy[0])
    level = float(np.mean(mu[energy >= start]))
    if not level > 0:
        raise ValueError(f"mean mu over the last {fraction:.0%} of the energy range is {level:.3g}, not > 0")
    return mu / level


def output_path(directory: str | Path, convoluted: bool) -> Path:
    """Where FDMNES writes the convoluted or the raw spectrum of a job written by this module."""
    return Path(directory) / (CONVOLUTED_OUTPUT if convoluted else RAW_OUTPUT)


def run_site(cluster: Cluster, params: FdmnesParams, directory: str | Path, title: str) -> SpectrumResult:
    """Run FDMNES for one cluster in ``directory``; an FDMNES failure is a failed result.

    The directory is emptied first so that no spectrum of an earlier run is read back. The
    convoluted spectrum is used when ``params.convolution`` is set, the raw one otherwise.
    In the result, ``energy`` is FDMNES's energy in eV *relative to the edge*
    (``energy_reference`` is :data:`FDMNES_ENERGY_REFERENCE`, not absolute like FEFF's
    ``omega``), and ``mu`` is the cross-section divided by its mean over the last 20 % of the
    energy range (dimensionless, post-edge about 1), the normalization that
    :func:`check_spectrum` expects. ``engine_seconds`` is FDMNES's run time (s).

    Raises :class:`~xasflow.errors.EnvironmentFailure`, recording nothing, when FDMNES cannot
    be started or failed because of the machine (its log reports a full disk or a missing
    permission, or the directory cannot be written).
    """
    directory = Path(directory)
    started = time.perf_counter()
    if directory.exists():
        shutil.rmtree(directory)
    write_inputs(cluster, params, directory, title)
    outcome = run(directory, params)
    energy = mu = None
    if outcome.timed_out:
        reason = f"FDMNES timed out after {params.time_limit:g} s"
    elif outcome.returncode != 0:
        reason = f"FDMNES failed: exit code {outcome.returncode}"
    else:
        reason, energy, mu = _read_site_spectrum(directory, params)
    if reason:
        require_writable(directory, "FDMNES")
        logger.warning("%s: %s (log in %s)", title, reason, outcome.log_path)
    return SpectrumResult(
        status="failed" if reason else "ok",
        reason=reason,
        energy=None if reason else energy,
        mu=None if reason else mu,
        engine_seconds=outcome.seconds,
        wall_seconds=time.perf_counter() - started,
        directory=str(directory),
        energy_reference=FDMNES_ENERGY_REFERENCE,
    )


def _read_site_spectrum(
    directory: Path, params: FdmnesParams
) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """(reason, energy, normalized mu) of a finished run: reason '' for a good spectrum.

    FDMNES often exits 0 when it could not write; a missing spectrum whose log reports a
    machine failure raises :class:`~xasflow.errors.EnvironmentFailure`.
    """
    spectrum_path = output_path(directory, params.convolution)
    if not spectrum_path.is_file():
        evidence = environment_evidence(directory / LOG_FILE)
        if evidence:
            raise EnvironmentFailure(
                f"{directory}: FDMNES wrote no {spectrum_path.name} because of the machine "
                f"({evidence!r} in {LOG_FILE}); free space or fix permissions there and rerun"
            )
        return f"FDMNES wrote no {spectrum_path.name}{_error_hint(directory)}", None, None
    try:
        spectrum = read_output(spectrum_path)
    except ValueError as error:
        return f"unreadable {spectrum_path.name}: {error}", None, None
    try:
        mu = normalize_post_edge(spectrum.energy, spectrum.mu)
    except ValueError as error:
        return f"{spectrum_path.name}: {error}", None, None
    return check_spectrum(spectrum.energy, mu, params.post_edge_tolerance), spectrum.energy, mu


def _error_hint(directory: Path) -> str:
    """First line of FDMNES's ``fdmnes_error.txt`` if it wrote one (it often exits 0 on input errors)."""
    error_file = directory / "fdmnes_error.txt"
    if error_file.is_file():
        for line in error_file.read_text(errors="replace").splitlines():
            if line.strip():
                return f" ({error_file.name}: {line.strip()})"
    return f" (see {LOG_FILE})"
