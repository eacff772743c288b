"""Molecular dynamics and Monte Carlo atom swaps through an ASE calculator.

LAMMPS is the engine for the potentials it has; this module runs the same protocol
(``MDParams``: equilibration, snapshots, MC swaps every ``interval`` steps) with any ASE
calculator, so machine-learned universal potentials whose weights ship in their wheel
(CHGNet) cover alloys no shipped LAMMPS potential does (Pt-Ru). A user's own calculator
plugs in as ``package.module:ClassName`` with keyword ``parameters``.

Protocol differences from LAMMPS, on purpose:
- periodic cells are relaxed to zero stress at 0 K (FIRE on a ``FrechetCellFilter``) and then
  run NVT, instead of NPT at temperature: ASE's NPT integrators need compressibilities per
  system, and the thermal expansion missed (about 0.5 % in Pt at 600 K) is far below what
  XANES resolves;
- thermostat: Langevin (friction 0.01/fs); cluster snapshots are re-centred.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes

from xasflow.progress import progress_bar
from xasflow.structures.lammps_runner import CLUSTER_MARGIN, MDError, MDParams

logger = logging.getLogger(__name__)

NAMED_CALCULATORS = ("chgnet",)
LANGEVIN_FRICTION = 0.01  # 1/fs
# an atom with no neighbour within this distance (Angstrom) has left the particle
LOST_ATOM_DISTANCE = 4.0


@dataclass(frozen=True)
class CalculatorPotential:
    """An ASE calculator as the interatomic potential of a system.

    ``name`` is one of ``NAMED_CALCULATORS`` or ``package.module:ClassName``; ``parameters``
    are keyword arguments of its constructor (for chgnet: ``model``, a pretrained version such
    as '0.3.0'); ``elements`` the system's elements, sorted.
    """

    name: str
    elements: tuple[str, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def style(self) -> str:
        return f"ase:{self.name}"

    def make(self) -> Calculator:
        """A fresh calculator instance."""
        if self.name == "chgnet":
            return _chgnet_calculator(dict(self.parameters))
        return _imported_calculator(self.name, dict(self.parameters))

    def provenance(self) -> dict[str, Any]:
        """Name, version and weights checksum, recorded like a LAMMPS potential file's."""
        if self.name == "chgnet":
            return _chgnet_provenance(dict(self.parameters))
        module_name = self.name.split(":")[0]
        module = importlib.import_module(module_name)
        top = importlib.import_module(module_name.split(".")[0])
        return {
            "calculator": self.name,
            "calculator_version": getattr(top, "__version__", "unknown"),
            "calculator_parameters": dict(self.parameters),
            "calculator_source": str(getattr(module, "__file__", "")),
        }


def _imported_calculator(name: str, parameters: dict) -> Calculator:
    module_name, _, class_name = name.partition(":")
    if not class_name:
        raise MDError(
            f"calculator '{name}': name one of {list(NAMED_CALCULATORS)} or 'package.module:ClassName'"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise MDError(f"calculator '{name}' cannot be imported: {error}") from error
    return cls(**parameters)


def _chgnet_model_path(version: str) -> Path:
    """The pretrained weights file of CHGNet ``version``, shipped inside the chgnet wheel."""
    import chgnet

    folder = Path(chgnet.__file__).parent / "pretrained" / version
    files = sorted(folder.glob("*.pth.tar"))
    if not files:
        raise MDError(f"calculator chgnet: no pretrained weights '{version}' in {folder.parent}")
    return files[0]


def _chgnet_calculator(parameters: dict) -> Calculator:
    """CHGNet with the cheapest task for what is asked: energy alone for MC swaps (about 4x
    faster than energy+forces+stress+magmoms), energy and forces for MD, stress only for the
    cell relaxation."""
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    version = str(parameters.pop("model", "0.3.0"))

    class TaskAwareCHGNet(CHGNetCalculator):
        def calculate(self, atoms=None, properties=None, system_changes=None, task=None):
            asked = set(properties or ["energy"])
            if task is None:
                task = "efs" if "stress" in asked else ("ef" if "forces" in asked else "e")
            super().calculate(atoms, list(asked), system_changes or all_changes, task=task)

    model = CHGNet.load(model_name=version, use_device="cpu", verbose=False)
    return TaskAwareCHGNet(model=model, use_device="cpu", **parameters)


def _chgnet_provenance(parameters: dict) -> dict[str, Any]:
    import chgnet

    version = str(parameters.get("model", "0.3.0"))
    weights = _chgnet_model_path(version)
    return {
        "calculator": "chgnet",
        "calculator_version": chgnet.__version__,
        "calculator_model": version,
        "calculator_weights": weights.name,
        "calculator_weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }


@dataclass
class SwapCounter:
    attempts: int = 0
    accepted: int = 0


def run_ase_md(
    atoms: Atoms,
    potential: CalculatorPotential,
    params: MDParams,
    system: str,
    log_path: str | Path | None = None,
) -> list[Atoms]:
    """Run ``params`` on ``atoms`` with the ASE calculator and return ``params.n_snapshots``
    snapshots (clusters centred in a box with ``CLUSTER_MARGIN`` Angstrom of vacuum).

    With ``params.swap``: every ``interval`` MD steps, ``attempts`` swaps per pair of species
    at fixed positions, accepted by the Metropolis rule at the swap temperature (K); swapped
    atoms keep their kinetic energy (velocities scaled by the square root of the mass ratio).
    Each snapshot's info holds the cumulative attempts and acceptances. Raises ``MDError``
    naming ``system`` if an atom leaves a cluster or the energy stops being finite.
    """
    missing = sorted(set(atoms.get_chemical_symbols()) - set(potential.elements))
    if missing:
        raise MDError(
            f"{system}: calculator {potential.name} is set up for {potential.elements}, not {missing}"
        )
    if params.pre_stages:
        raise MDError(f"{system}: melt-quench stages are not supported with an ASE calculator")
    atoms = atoms.copy()
    periodic = bool(atoms.pbc.all())
    if not periodic:
        atoms.center(vacuum=CLUSTER_MARGIN)
        atoms.pbc = False
    atoms.calc = potential.make()
    rng = np.random.default_rng(params.seed)
    log_lines = ["# step temperature_K potential_energy_eV swap_attempts swap_accepted"]
    try:
        if periodic:
            _relax_cell(atoms, system)
        elif params.minimize:
            _relax_positions(atoms, system)
        return _integrate(atoms, params, system, rng, log_lines)
    finally:
        if log_path is not None:
            Path(log_path).write_text("\n".join(log_lines) + "\n")


def _integrate(
    atoms: Atoms, params: MDParams, system: str, rng: np.random.Generator, log_lines: list[str]
) -> list[Atoms]:
    """Equilibration and snapshots, with swap rounds; thermodynamic lines go to ``log_lines``."""
    periodic = bool(atoms.pbc.all())
    total_steps = params.equilibration_steps + params.n_snapshots * params.snapshot_interval
    swap_temperature = (params.swap.temperature or params.temperature) if params.swap else 0.0
    counter = SwapCounter()
    dynamics = _langevin(atoms, params, rng)
    snapshots: list[Atoms] = []
    with progress_bar(total_steps, f"MD {system}", unit="step") as bar:
        for step in range(1, total_steps + 1):
            dynamics.run(1)
            if params.swap and step % params.swap.interval == 0:
                _swap_round(atoms, params.swap.attempts, swap_temperature, rng, counter)
                # the integrator keeps per-atom masses and noise amplitudes: a swapped atom
                # integrated with its old mass heats the particle until it flies apart
                dynamics.masses = atoms.get_masses()[:, np.newaxis]
                dynamics.updatevars()
            if step % params.thermo_interval == 0 or step == total_steps:
                log_lines.append(_thermo_line(atoms, step, counter, system))
            past = step - params.equilibration_steps
            if past > 0 and past % params.snapshot_interval == 0:
                snapshots.append(_snapshot(atoms, counter, system, periodic))
            bar.update(1)
    return snapshots


def _langevin(atoms: Atoms, params: MDParams, rng: np.random.Generator):
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

    thermalize_momenta(atoms, temperature_K=params.temperature, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.all():
        ZeroRotation(atoms)
    return Langevin(
        atoms,
        timestep=params.timestep * 1000 * units.fs,  # params.timestep is in ps
        temperature_K=params.temperature,
        friction=LANGEVIN_FRICTION / units.fs,
        fixcm=False,  # deprecated in ASE; snapshots are re-centred instead
        rng=rng,
    )


def _relax_cell(atoms: Atoms, system: str, fmax: float = 0.05, steps: int = 200) -> None:
    """Positions and cell to zero stress at 0 K (isotropic strain kept by the filter's
    hydrostatic option, so an orthorhombic cell stays orthorhombic)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    optimizer = FIRE(FrechetCellFilter(atoms, hydrostatic_strain=True), logfile=None)
    optimizer.run(fmax=fmax, steps=steps)
    _check_energy(atoms, system)


def _relax_positions(atoms: Atoms, system: str, fmax: float = 0.05, steps: int = 200) -> None:
    from ase.optimize import FIRE

    FIRE(atoms, logfile=None).run(fmax=fmax, steps=steps)
    _check_energy(atoms, system)


def _swap_round(
    atoms: Atoms, attempts: int, temperature: float, rng: np.random.Generator, counter: SwapCounter
) -> None:
    """``attempts`` Metropolis swap trials for each pair of species present."""
    present = sorted(set(atoms.get_chemical_symbols()))
    thermal_energy = units.kB * temperature
    energy = atoms.get_potential_energy()
    for first_index, first in enumerate(present):
        for second in present[first_index + 1 :]:
            for _ in range(attempts):
                symbols = np.array(atoms.get_chemical_symbols())
                i = rng.choice(np.flatnonzero(symbols == first))
                j = rng.choice(np.flatnonzero(symbols == second))
                _exchange(atoms, i, j)
                trial = atoms.get_potential_energy()
                counter.attempts += 1
                delta = trial - energy
                if delta <= 0 or rng.random() < math.exp(-delta / thermal_energy):
                    energy = trial
                    counter.accepted += 1
                else:
                    _exchange(atoms, i, j)


def _exchange(atoms: Atoms, i: int, j: int) -> None:
    """Swap the species of atoms i and j, keeping each site's kinetic energy."""
    numbers = atoms.get_atomic_numbers()
    masses = atoms.get_masses()
    momenta = atoms.get_momenta()
    # p = m v and KE = p^2 / 2m: the same KE with the other mass needs p * sqrt(m_new / m_old)
    momenta[i] *= math.sqrt(masses[j] / masses[i])
    momenta[j] *= math.sqrt(masses[i] / masses[j])
    numbers[i], numbers[j] = numbers[j], numbers[i]
    atoms.set_atomic_numbers(numbers)
    atoms.set_masses()  # default masses of the new species
    atoms.set_momenta(momenta)


def _check_energy(atoms: Atoms, system: str) -> float:
    energy = float(atoms.get_potential_energy())
    if not math.isfinite(energy):
        raise MDError(f"{system}: the potential energy is no longer finite ({energy})")
    return energy


def _check_lost_atoms(atoms: Atoms, system: str) -> None:
    from ase.neighborlist import neighbor_list

    first = neighbor_list("i", atoms, LOST_ATOM_DISTANCE)
    lonely = np.setdiff1d(np.arange(len(atoms)), first)
    if lonely.size:
        raise MDError(
            f"{system}: {lonely.size} atom(s) left the particle (no neighbour within "
            f"{LOST_ATOM_DISTANCE} A), e.g. atom {int(lonely[0])}"
        )


def _thermo_line(atoms: Atoms, step: int, counter: SwapCounter, system: str) -> str:
    energy = _check_energy(atoms, system)
    return f"{step} {atoms.get_temperature():.1f} {energy:.5f} {counter.attempts} {counter.accepted}"


def _snapshot(atoms: Atoms, counter: SwapCounter, system: str, periodic: bool) -> Atoms:
    _check_energy(atoms, system)
    if not periodic:
        _check_lost_atoms(atoms, system)
    # the same layout as LAMMPS snapshots: a cell only for periodic systems, clusters centred
    if periodic:
        snapshot = Atoms(
            atoms.get_chemical_symbols(), atoms.get_positions(wrap=True), cell=atoms.cell, pbc=True
        )
    else:
        snapshot = Atoms(atoms.get_chemical_symbols(), atoms.get_positions())
        snapshot.positions -= snapshot.positions.mean(axis=0)
    snapshot.info["potential_energy_eV"] = float(atoms.get_potential_energy())
    snapshot.info["temperature_K"] = float(atoms.get_temperature())
    snapshot.info["swap_attempts"] = counter.attempts
    snapshot.info["swap_accepted"] = counter.accepted
    return snapshot
