"""FEFF: input generator -> runner -> parser -> sanity check.

Two runners share one input generator: the embedded FEFF10 of the ``feff10-rs`` wheel, and a
FEFF executable (a cluster's ``feff`` module, or FEFF 8.5L's module programs) run through
:mod:`xasflow.spectra.runner` in the site directory with a time limit. ``mode`` selects XANES
(full multiple scattering) or EXAFS (path expansion); ``dialect`` writes FEFF10/9 cards or
FEFF8 ones (FEFF8 has no COREHOLE/EGRID cards and takes the edge and S02 in HOLE).

Each site runs in its own directory ``{batch_dir}/{frame:03d}_{site:04d}_{El}/`` which keeps
``feff.inp``, FEFF's logs (``log*.dat``), ``xmu.dat`` and ``params.json``; FEFF's large binary
intermediates are deleted once the spectrum is read.

A site whose FEFF run fails for physical reasons (no convergence, a time limit, a spectrum that
fails its checks) is a result: ``SpectrumResult`` with status "failed" and the reason. A run
that fails because of the machine (disk full, quota, permissions, a missing program) raises
:class:`~xasflow.errors.EnvironmentFailure` instead, and is never recorded as a site's result.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list

from xasflow import __version__
from xasflow.errors import EnvironmentFailure, UserError
from xasflow.spectra.runner import (
    ProgramLaunch,
    environment_cause,
    require_writable,
    run_program,
    unwritable_cause,
)

logger = logging.getLogger(__name__)

KEEP_FILES = ("feff.inp", "xmu.dat", "chi.dat", "params.json", "feff.log")
#: FEFF10's self-consistent potential files, written by its POT stage and read by the later ones.
POTENTIAL_FILES = ("pot.bin", "apot.bin")
EDGE_INDEX = {"K": 1, "L1": 2, "L2": 3, "L3": 4}
EXCHANGE_MODELS = {"HL": 0, "DH": 2, "PNL": 5}
#: hbar^2 / 2 m_e in eV A^2: E - E0 = 3.81 k^2 (k in 1/A).
HBAR2_OVER_2M_EV_A2 = 3.80998
CORE_HOLE_CARDS = {"FSR": "COREHOLE FSR", "RPA": "COREHOLE RPA", "none": "COREHOLE NONE"}
#: ``SpectrumResult.energy_reference`` of absolute photon energies (FEFF's ``omega``).
ABSOLUTE_ENERGY = "absolute"
# Intel Fortran run-time errors (the exit code of a crashed FEFF10 stage) that mean FEFF could
# not use its files: a full disk, a quota or a file-size limit, or no permission.
FORTRAN_FILE_ERRORS = {9: "permission to access file denied", 38: "error during write"}
_FEFF10_STAGE_EXIT = re.compile(r"stage '([^']+)' failed \(exit code: (\d+)\)")


class SpectraInputError(UserError, ValueError):
    """A spectrum setting or batch input the user can fix; the message names the value and what
    is valid. Also a ``ValueError``, for callers written before it existed."""


@dataclass(frozen=True)
class FeffParams:
    """FEFF settings of a study. Radii in Angstrom, energies in eV relative to the edge."""

    edge: str = "K"
    cluster_radius: float = 6.0
    fms_radius: float = 4.6
    scf: bool = False
    scf_radius: float = 4.0
    scf_sharing: str = "system"
    exchange: str = "HL"
    core_hole: str = "FSR"
    s02: float = 1.0
    energy_min: float = -20.0
    energy_max: float = 60.0
    energy_step: float = 1.0
    time_limit: float = 900.0
    post_edge_tolerance: float = 0.35
    edge_tolerance: float = 30.0
    mode: str = "xanes"
    dialect: str = "feff10"
    exafs_kmax: float = 16.0

    def __post_init__(self):
        if self.mode not in ("xanes", "exafs"):
            raise SpectraInputError(f"spectra.mode is '{self.mode}'; use 'xanes' or 'exafs'")
        if self.dialect not in ("feff10", "feff8"):
            raise SpectraInputError(f"spectra.feff_dialect is '{self.dialect}'; use 'feff10' or 'feff8'")
        if self.edge not in EDGE_INDEX:
            raise SpectraInputError(f"spectra.edge is '{self.edge}'; use one of {sorted(EDGE_INDEX)}")
        if self.exchange not in EXCHANGE_MODELS:
            raise SpectraInputError(
                f"spectra.exchange is '{self.exchange}'; use one of {sorted(EXCHANGE_MODELS)}"
            )
        if self.scf_sharing not in ("system", "site"):
            raise SpectraInputError(f"spectra.scf_sharing is '{self.scf_sharing}'; use 'system' or 'site'")
        if self.dialect == "feff8" and self.mode == "xanes":
            raise SpectraInputError(
                "FEFF 8.5L (spectra.feff_dialect feff8) has no full multiple scattering: "
                "set spectra.mode to 'exafs'"
            )

    @classmethod
    def from_config(cls, spectra: dict) -> FeffParams:
        fields = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in spectra.items() if key in fields})


@dataclass(frozen=True)
class Cluster:
    """Atoms within ``radius`` of the absorber; positions relative to it (Angstrom), absorber first."""

    symbols: tuple[str, ...]
    positions: np.ndarray


def cut_cluster(atoms: Atoms, absorber_index: int, radius: float) -> Cluster:
    """Cluster around ``absorber_index``; periodic images are used for periodic snapshots."""
    first, second, vectors = neighbor_list("ijD", atoms, radius, self_interaction=False)
    mine = first == absorber_index
    neighbours, offsets = second[mine], vectors[mine]
    order = np.argsort(np.linalg.norm(offsets, axis=1), kind="stable")
    symbols = atoms.get_chemical_symbols()
    return Cluster(
        symbols=(symbols[absorber_index], *(symbols[j] for j in neighbours[order])),
        positions=np.vstack([np.zeros(3), offsets[order]]),
    )


def feff_input(cluster: Cluster, params: FeffParams, title: str) -> str:
    """Text of ``feff.inp``: XANES with full multiple scattering, or EXAFS by path expansion.

    Unique potentials: 0 for the absorber, then one per element present in the cluster, with
    the stoichiometry column (xnatph) set to the number of such atoms so FEFF10's potential
    construction sees the real composition of disordered clusters.
    """
    absorber = cluster.symbols[0]
    elements = sorted(set(cluster.symbols[1:]), key=lambda symbol: atomic_numbers[symbol])
    potential_of = {symbol: index + 1 for index, symbol in enumerate(elements)}
    counts = {symbol: cluster.symbols[1:].count(symbol) for symbol in elements}
    lines = [f"TITLE {title}", "CONTROL 1 1 1 1 1 1", "PRINT 0 0 0 0 0 0"]
    if params.dialect == "feff8":
        lines += [f"HOLE {EDGE_INDEX[params.edge]} {params.s02}", "EXCHANGE 0 0 0"]
    else:
        lines += [
            f"EDGE {params.edge}",
            f"S02 {params.s02}",
            f"EXCHANGE {EXCHANGE_MODELS[params.exchange]} 0 0 -1",
            CORE_HOLE_CARDS[params.core_hole],
        ]
    if params.scf:
        lines.append(f"SCF {params.scf_radius} 0 30 0.1 1")
    if params.mode == "xanes":
        lines += [
            f"XANES 4 {params.energy_step / 10:.3f} 0.1",
            f"FMS {params.fms_radius} 0",
            "EGRID",
            f"e_grid {params.energy_min} {params.energy_max} {params.energy_step}",
        ]
    else:
        lines += [f"EXAFS {params.exafs_kmax}", f"RPATH {params.cluster_radius}"]
    lines += [
        "",
        "POTENTIALS",
        "*  ipot  Z  tag  lmax1  lmax2  xnatph",
        f"   0 {atomic_numbers[absorber]:3d} {absorber:2s} -1 -1 0",
    ]
    for symbol in elements:
        lines.append(
            f"   {potential_of[symbol]} {atomic_numbers[symbol]:3d} {symbol:2s} -1 -1 {counts[symbol]}"
        )
    lines += ["", "ATOMS"]
    for index, (symbol, (x, y, z)) in enumerate(zip(cluster.symbols, cluster.positions, strict=True)):
        ipot = 0 if index == 0 else potential_of[symbol]
        distance = float(np.sqrt(x * x + y * y + z * z))
        lines.append(f"  {x:10.5f} {y:10.5f} {z:10.5f} {ipot:2d} {symbol:2s} {distance:8.5f}")
    lines.append("END")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SpectrumResult:
    """Outcome of one site: ``status`` is 'ok' or 'failed' (then ``reason`` says why).

    ``energy`` (n,) in eV on the axis ``energy_reference`` names: "absolute" (photon energy,
    FEFF's ``omega``) or "relative:<zero>" (eV above the named zero, e.g. FDMNES's own edge).
    ``mu`` (n,) is dimensionless, normalized to about 1 above the edge. Both are None for a
    failed site. ``engine_seconds`` is the time the spectrum code itself ran (s; 0 for a result
    from the cache), ``wall_seconds`` the whole site including input, checks and copies (s).
    """

    status: str
    reason: str
    energy: np.ndarray | None
    mu: np.ndarray | None
    engine_seconds: float
    wall_seconds: float
    directory: str
    energy_reference: str = ABSOLUTE_ENERGY


def read_xmu(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(omega, e relative to edge, mu) from a FEFF ``xmu.dat`` (eV, eV, normalized)."""
    rows = np.loadtxt(path, comments="#", ndmin=2)
    if rows.shape[0] < 2 or rows.shape[1] < 4:
        raise ValueError(f"{path}: expected at least 2 rows of 6 columns, got shape {rows.shape}")
    return rows[:, 0], rows[:, 1], rows[:, 3]


#: EXAFS mode: below this k (1/A) path expansion is not meant to be accurate, and mu at FEFF's
#: first grid points (k = 0) can dip a little below zero; the negative-mu check starts here.
EXAFS_CHECK_K_MIN = 1.0


def check_spectrum(relative_energy: np.ndarray, mu: np.ndarray, tolerance: float, mode: str = "xanes") -> str:
    """Empty string for a physical spectrum, else the reason it is not.

    Checks: finite values, no negative mu (in EXAFS mode from k = :data:`EXAFS_CHECK_K_MIN` up,
    k counted from the first point of FEFF's EXAFS grid), and mean mu 25-55 eV above the edge
    within ``tolerance`` of 1 (FEFF normalizes mu to the atomic background at the edge).
    """
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(relative_energy))):
        return "non-finite mu or energy in xmu.dat"
    checked = mu
    if mode == "exafs":
        k = np.sqrt(np.maximum(relative_energy - relative_energy[0], 0.0) / HBAR2_OVER_2M_EV_A2)
        checked = mu[k >= EXAFS_CHECK_K_MIN]
    if np.any(checked < -1e-3):
        return f"negative mu (min {checked.min():.3g})"
    window = (relative_energy >= 25) & (relative_energy <= 55)
    if window.sum() < 3:
        return "xmu.dat does not reach 25-55 eV above the edge"
    post_edge = float(mu[window].mean())
    if abs(post_edge - 1.0) > tolerance:
        return f"mean mu 25-55 eV above the edge is {post_edge:.3f}, not within {tolerance} of 1"
    return ""


def check_edge_position(
    energy: np.ndarray, mu: np.ndarray, absorber: str, edge: str, tolerance: float
) -> str:
    """Empty string if the half-step energy of ``mu`` lies within ``tolerance`` eV of the
    tabulated edge of ``absorber`` (xraydb), else the reason. FEFF without SCF places edges
    within ~10 eV of the tabulated value; a larger offset means a wrong absorber or edge."""
    import xraydb

    from xasflow.experiment.alignment import half_step_energy

    tabulated = float(xraydb.xray_edge(absorber, edge).energy)
    try:
        edge_energy = half_step_energy(energy, mu)  # FEFF normalizes mu to ~1 above the edge
    except ValueError as error:
        return f"no absorption edge found ({error})"
    if abs(edge_energy - tabulated) > tolerance:
        offset = edge_energy - tabulated
        return (
            f"edge at {edge_energy:.1f} eV is {offset:+.1f} eV from the tabulated "
            f"{absorber} {edge} edge ({tabulated:.1f} eV)"
        )
    return ""


def write_inputs(cluster: Cluster, params: FeffParams, directory: Path, title: str, engine: dict) -> str:
    """Empty ``directory`` and write ``feff.inp`` and ``params.json``; return the input text."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    text = feff_input(cluster, params, title)
    (directory / "feff.inp").write_text(text)
    record = {
        "title": title,
        "n_atoms_cluster": len(cluster.symbols),
        "feff": asdict(params),
        **engine,
        "xasflow_version": __version__,
    }
    (directory / "params.json").write_text(json.dumps(record, indent=2))
    return text


def _finish(
    cluster: Cluster,
    params: FeffParams,
    directory: Path,
    title: str,
    reason: str,
    engine_seconds: float,
    started: float,
) -> SpectrumResult:
    """Read and check ``xmu.dat`` unless the run already failed; prune; build the result.

    Before a failure is recorded, the directory must still take a small file: a FEFF that
    could not write its output failed for the machine's reasons (:class:`EnvironmentFailure`).
    """
    energy = mu = None
    xmu_path = directory / "xmu.dat"
    if not reason:
        if not xmu_path.is_file():
            reason = "FEFF finished but wrote no xmu.dat"
        else:
            try:
                energy, relative, mu = read_xmu(xmu_path)
                reason = check_spectrum(
                    relative, mu, params.post_edge_tolerance, params.mode
                ) or check_edge_position(energy, mu, cluster.symbols[0], params.edge, params.edge_tolerance)
            except ValueError as error:
                reason = f"unreadable xmu.dat: {error}"
    if reason:
        require_writable(directory, "FEFF")  # before pruning frees what FEFF filled the disk with
    _prune(directory)
    if reason:
        logger.warning("%s: %s (logs in %s)", title, reason, directory)
    return SpectrumResult(
        status="failed" if reason else "ok",
        reason=reason,
        energy=None if reason else energy,
        mu=None if reason else mu,
        engine_seconds=engine_seconds,
        wall_seconds=time.perf_counter() - started,
        directory=str(directory),
        energy_reference=ABSOLUTE_ENERGY,
    )


def run_site(
    cluster: Cluster,
    params: FeffParams,
    directory: str | Path,
    title: str,
    potential_dir: str | Path | None = None,
) -> SpectrumResult:
    """Run the embedded FEFF10 for one cluster in ``directory``; a FEFF failure is a failed result.

    Raises :class:`EnvironmentFailure` (and records nothing) when FEFF10 failed because the
    directory could not be written (disk full, quota, file-size limit, permissions).

    With ``potential_dir`` (a folder written by :func:`compute_potential`) the SCF potential is
    read from there and FEFF's POT stage is skipped: the later stages (cross-section, FMS) use
    this cluster's geometry with that potential.
    """
    import feff10

    directory = Path(directory)
    started = time.perf_counter()
    engine = {"engine": "feff10-rs", "engine_version": getattr(feff10, "__version__", "unknown")}
    if potential_dir is not None:
        engine["shared_potential"] = str(potential_dir)
    text = write_inputs(cluster, params, directory, title, engine)
    stages = None
    if potential_dir is not None:
        for name in POTENTIAL_FILES:
            shutil.copy2(Path(potential_dir) / name, directory / name)
        stages = [stage for stage in feff10.Stage.default_pipeline() if stage != feff10.Stage.POT]
    feff_seconds = 0.0
    reason = ""
    try:
        feff_input_object = feff10.FeffInput.parse(text)
        config = feff10.FeffConfig(
            str(directory), feff_input_object, stages=stages, stage_timeout=params.time_limit
        )
        result = feff10.FeffPipeline(config).run()
        feff_seconds = float(result.total_duration_secs)
    except (feff10.FeffError, OSError, TimeoutError) as error:  # recorded per site, never raised
        _raise_if_machine_failed(error, directory)
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = f"FEFF10 failed: {type(error).__name__}: {message}"
    return _finish(cluster, params, directory, title, reason, feff_seconds, started)


class PotentialError(RuntimeError):
    """FEFF10 could not compute the shared SCF potential of a system (its logs are kept)."""


def compute_potential(cluster: Cluster, params: FeffParams, directory: str | Path, title: str) -> float:
    """Run FEFF10 up to its POT stage (SCF potential) for ``cluster`` in ``directory``.

    Keeps ``feff.inp``, ``params.json``, the logs and :data:`POTENTIAL_FILES`; returns FEFF's
    seconds. Raises :class:`PotentialError` naming the folder when FEFF fails, and
    :class:`EnvironmentFailure` when it failed because the folder could not be written.
    """
    import feff10

    directory = Path(directory)
    engine = {"engine": "feff10-rs", "engine_version": getattr(feff10, "__version__", "unknown")}
    text = write_inputs(cluster, params, directory, title, {**engine, "stage": "potential"})
    pipeline = feff10.Stage.default_pipeline()
    stages = pipeline[: pipeline.index(feff10.Stage.POT) + 1]
    try:
        config = feff10.FeffConfig(
            str(directory), feff10.FeffInput.parse(text), stages=stages, stage_timeout=params.time_limit
        )
        result = feff10.FeffPipeline(config).run()
    except (feff10.FeffError, OSError, TimeoutError) as error:
        _raise_if_machine_failed(error, directory)
        raise PotentialError(
            f"{directory}: FEFF10 SCF potential failed: {type(error).__name__}: {error}"
        ) from error
    missing = [name for name in POTENTIAL_FILES if not (directory / name).is_file()]
    if missing:
        raise PotentialError(f"{directory}: FEFF10 POT stage wrote no {', '.join(missing)}")
    for path in directory.iterdir():
        keep = path.name in KEEP_FILES or path.name in POTENTIAL_FILES or path.name.startswith("log")
        if not keep and path.is_file():
            path.unlink()
    return float(result.total_duration_secs)


def run_site_executable(
    cluster: Cluster, params: FeffParams, command: tuple[str, ...], directory: str | Path, title: str
) -> SpectrumResult:
    """Run a FEFF executable (``command``, e.g. ``("feff",)`` or FEFF8L's module script) in
    ``directory`` with a time limit of ``params.time_limit`` seconds; output goes to feff.log.

    The program runs in its own process group, stopped as a whole at the time limit (see
    :func:`xasflow.spectra.runner.run_program`). A missing program raises
    :class:`EnvironmentFailure`; a failing or timed-out one is a failed result.
    """
    directory = Path(directory)
    started = time.perf_counter()
    write_inputs(cluster, params, directory, title, {"engine": "feff-executable", "command": list(command)})
    run = run_program(ProgramLaunch(tuple(command), "FEFF"), directory, params.time_limit, "feff.log")
    reason = ""
    if run.timed_out:
        reason = f"FEFF executable timed out after {params.time_limit:g} s"
    elif run.returncode != 0:
        reason = f"FEFF executable failed: exit code {run.returncode}"
    return _finish(cluster, params, directory, title, reason, run.seconds, started)


def _raise_if_machine_failed(error: BaseException, directory: Path) -> None:
    """Raise :class:`EnvironmentFailure` if a FEFF10 error comes from the machine: an OS error
    such as ENOSPC (Rust reports "(os error 28)"), or a stage that crashed with a Fortran
    file error (exit code 38, "error during write", is what a full disk gives)."""
    cause = environment_cause(error)
    if not cause:
        stage = _FEFF10_STAGE_EXIT.search(str(error))
        if stage is None or int(stage[2]) not in FORTRAN_FILE_ERRORS:
            return
        cause = (
            f"stage '{stage[1]}' stopped with Fortran run-time error {stage[2]}, "
            f"{FORTRAN_FILE_ERRORS[int(stage[2])]}"
        )
    probed = unwritable_cause(directory)  # the errno behind a Fortran error, if still there
    if probed and probed not in cause:
        cause = f"{cause}; the directory reports: {probed}"
    if directory.is_dir():
        _prune(directory)  # FEFF's partial intermediates may be what fills the disk
    raise EnvironmentFailure(
        f"{directory}: FEFF10 could not write its files ({cause}); "
        "free space or fix permissions there and rerun"
    ) from error


def _prune(directory: Path) -> None:
    """Keep inputs, logs and the spectrum; drop FEFF's binary intermediates (MBs per site)."""
    for path in directory.iterdir():
        if path.name in KEEP_FILES or (path.name.startswith("log") and path.suffix == ".dat"):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
