"""Spectrum engines behind one interface, and the cached site runner.

An engine turns a ``Cluster`` into a ``SpectrumResult`` inside a directory it is given. Each
engine states its name, its version and the parameters that change its result; together with
the rounded geometry these form the cache key, so a calculation already done for the same
cluster and settings is never run again. Each engine also states the energy axis of its spectra
(``energy_reference``: "absolute" or "relative:<zero>").

Only physics outcomes are cached or returned as results; a failure of the machine (disk full,
no permission, a missing program) raises :class:`~xasflow.errors.EnvironmentFailure`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from xasflow.config import validate_sections
from xasflow.spectra import feff
from xasflow.spectra.cache import SpectrumCache, cache_key
from xasflow.spectra.fdmnes import FDMNES_ENERGY_REFERENCE
from xasflow.spectra.feff import (
    ABSOLUTE_ENERGY,
    Cluster,
    FeffParams,
    SpectraInputError,
    SpectrumResult,
    run_site,
    run_site_executable,
)
from xasflow.spectra.runner import environment_guard

logger = logging.getLogger(__name__)

# parameters that decide when to give up or reject, not what is computed
NOT_IN_KEY = ("time_limit", "post_edge_tolerance", "edge_tolerance")


ENGINE_NAMES = ("feff10", "feff", "fdmnes")


class Engine(Protocol):
    name: str
    energy_reference: str  # the axis of the energies it returns: "absolute" or "relative:<zero>"

    def version(self) -> str: ...

    def key_parameters(self) -> dict: ...

    def run_site(self, cluster: Cluster, directory: Path, title: str) -> SpectrumResult: ...

    def write_inputs(self, cluster: Cluster, directory: Path, title: str) -> Path: ...

    def read_spectrum(self, directory: Path) -> tuple[np.ndarray, np.ndarray]: ...


def _key_parameters(params) -> dict:
    return {key: value for key, value in asdict(params).items() if key not in NOT_IN_KEY}


class _FeffFiles:
    """Input writing and output reading shared by both FEFF runners (one input generator)."""

    def write_inputs(self, cluster: Cluster, directory: Path, title: str) -> Path:
        feff.write_inputs(cluster, self.params, Path(directory), title, {"engine": self.name})
        return Path(directory) / "feff.inp"

    def read_spectrum(self, directory: Path) -> tuple[np.ndarray, np.ndarray]:
        """(absolute energy in eV, mu) from ``directory/xmu.dat``; SpectraInputError if unreadable."""
        path = Path(directory) / "xmu.dat"
        try:
            energy, _, mu = feff.read_xmu(path)
        except (OSError, ValueError) as error:
            raise SpectraInputError(f"{path}: not a readable FEFF spectrum ({error})") from error
        return energy, mu


@dataclass(frozen=True)
class SharedPotential:
    """A FEFF10 SCF potential computed once for a system: its folder and its cache key."""

    directory: Path
    key: str


@dataclass(frozen=True)
class Feff10Engine(_FeffFiles):
    """FEFF10 embedded through the ``feff10-rs`` wheel.

    With ``potential`` set, every site reuses that SCF potential (FEFF's POT stage is skipped);
    its key is part of each site's cache key, since the spectrum depends on it.
    """

    params: FeffParams
    name: str = "feff10"
    potential: SharedPotential | None = None
    energy_reference: str = ABSOLUTE_ENERGY

    def version(self) -> str:
        from importlib.metadata import version

        return f"feff10-rs {version('feff10-rs')}"

    def key_parameters(self) -> dict:
        parameters = _key_parameters(self.params)
        if self.potential is not None:
            parameters["shared_potential"] = self.potential.key
        return parameters

    @property
    def shares_potential(self) -> bool:
        """Whether sites of one system should share one SCF potential (``scf_sharing: system``)."""
        return self.params.scf and self.params.scf_sharing == "system" and self.params.mode == "xanes"

    def run_site(self, cluster: Cluster, directory: Path, title: str) -> SpectrumResult:
        potential_dir = None if self.potential is None else self.potential.directory
        return run_site(cluster, self.params, directory, title, potential_dir=potential_dir)


def with_shared_potential(
    engine: Engine, cache: SpectrumCache | None, cluster: Cluster, directory: Path, title: str
) -> Engine:
    """The engine, set to reuse one SCF potential computed for ``cluster`` (the system's
    representative site) in ``directory``, or taken from ``cache``; unchanged for engines or
    settings that do not share potentials. Raises :class:`feff.PotentialError` if FEFF fails,
    :class:`~xasflow.errors.EnvironmentFailure` if the machine does (disk full, permissions)."""
    if not isinstance(engine, Feff10Engine) or not engine.shares_potential:
        return engine
    key = cache_key(
        cluster.symbols, cluster.positions, "feff10-potential", engine.version(), engine.key_parameters()
    )
    directory = Path(directory)
    with environment_guard(directory, f"computing the {title}"):
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            cache.restore(cached, directory)
            logger.info("%s: SCF potential from the cache", title)
        else:
            seconds = feff.compute_potential(cluster, engine.params, directory, title)
            logger.info("%s: SCF potential computed in %.1f s", title, seconds)
            if cache is not None:
                empty = np.zeros(0)
                metadata = {"engine": "feff10-potential", "first_title": title}
                cache.put(key, empty, empty, directory, metadata)
    return replace(engine, potential=SharedPotential(directory, key))


def _executable_fingerprint(command: tuple[str, ...]) -> str:
    """Name and SHA-256 prefix of the program a command starts (the last path-like word, so
    ``mpirun -np 4 /opt/feff/feff`` fingerprints FEFF, not mpirun)."""
    programs = [word for word in command if shutil.which(word)]
    program = shutil.which(programs[-1]) if programs else None
    if program is None:
        return f"{' '.join(command)} (not found)"
    digest = hashlib.sha256(Path(program).read_bytes()).hexdigest()[:16]
    return f"{Path(program).name} sha256:{digest}"


@dataclass(frozen=True)
class FeffExecutableEngine(_FeffFiles):
    """A FEFF program run as a subprocess (a cluster's FEFF9/FEFF10, or FEFF 8.5L's modules)."""

    params: FeffParams
    command: tuple[str, ...]
    name: str = "feff"
    energy_reference: str = ABSOLUTE_ENERGY

    def version(self) -> str:
        return _executable_fingerprint(self.command)

    def key_parameters(self) -> dict:
        return _key_parameters(self.params)

    def run_site(self, cluster: Cluster, directory: Path, title: str) -> SpectrumResult:
        return run_site_executable(cluster, self.params, self.command, directory, title)


@dataclass(frozen=True)
class FdmnesEngine:
    """FDMNES, an executable the user provides (optionally through mpirun or srun)."""

    params: object  # xasflow.spectra.fdmnes.FdmnesParams
    name: str = "fdmnes"
    energy_reference: str = FDMNES_ENERGY_REFERENCE

    def version(self) -> str:
        return _executable_fingerprint(tuple(self.params.command))

    def key_parameters(self) -> dict:
        parameters = _key_parameters(self.params)
        parameters.pop("command", None)  # how it is launched does not change the spectrum
        return parameters

    def run_site(self, cluster: Cluster, directory: Path, title: str) -> SpectrumResult:
        from xasflow.spectra import fdmnes

        return fdmnes.run_site(cluster, self.params, directory, title)

    def write_inputs(self, cluster: Cluster, directory: Path, title: str) -> Path:
        from xasflow.spectra import fdmnes

        return fdmnes.write_inputs(cluster, self.params, directory, title)

    def read_spectrum(self, directory: Path) -> tuple[np.ndarray, np.ndarray]:
        """(energy in eV relative to FDMNES's edge, mu in Mbarn); SpectraInputError if unreadable."""
        from xasflow.spectra import fdmnes

        path = fdmnes.output_path(directory, self.params.convolution)
        try:
            spectrum = fdmnes.read_output(path)
        except ValueError as error:
            raise SpectraInputError(f"not a readable FDMNES spectrum: {error}") from error
        return spectrum.energy, spectrum.mu


def build_engine(spectra: dict, engine_name: str | None = None) -> Engine:
    """The engine a validated ``spectra`` config section (and optional per-system override) asks for.

    The section is validated against the config schema, which fills every default (one place
    for them). Raises ``ConfigError`` for a key or value the schema refuses and
    :class:`SpectraInputError` for an unknown engine name or FDMNES setting.
    """
    spectra = validate_sections({"spectra": spectra}, source="spectra")["spectra"]
    name = engine_name or spectra["engine"]
    if name not in ENGINE_NAMES:
        raise SpectraInputError(
            f"spectrum engine '{name}' is not known; use one of {', '.join(ENGINE_NAMES)}"
        )
    if name == "fdmnes":
        return FdmnesEngine(_fdmnes_params(dict(spectra["fdmnes"])))
    params = FeffParams.from_config(spectra)
    if name == "feff10":
        return Feff10Engine(params)
    command = spectra["feff_command"]
    if not command or isinstance(command, str):
        raise SpectraInputError(
            f"spectrum engine 'feff' needs spectra.feff_command as a list of arguments, e.g. [feff] "
            f"or [mpirun, -n, '4', feff]; got {command!r}"
        )
    return FeffExecutableEngine(
        replace(params, dialect=spectra["feff_dialect"]), tuple(str(word) for word in command)
    )


def _fdmnes_params(settings: dict):
    from xasflow.spectra.fdmnes import FdmnesParams

    unknown = sorted(set(settings) - set(FdmnesParams.__dataclass_fields__))
    if unknown:
        raise SpectraInputError(
            f"spectra.fdmnes has unknown settings {unknown}; valid are "
            f"{', '.join(sorted(FdmnesParams.__dataclass_fields__))}"
        )
    if "command" in settings and not isinstance(settings["command"], str):
        settings["command"] = tuple(settings["command"])
    return FdmnesParams(**settings)


@dataclass(frozen=True)
class SiteOutcome:
    result: SpectrumResult
    cache_hit: bool
    cache_key: str


def run_site_cached(
    engine: Engine, cache: SpectrumCache | None, cluster: Cluster, directory: Path, title: str
) -> SiteOutcome:
    """Reuse a cached result for this exact cluster and settings, or compute and store it.

    Only successful results are stored. Raises :class:`~xasflow.errors.EnvironmentFailure`
    when the machine fails the site (disk full, no permission, missing program): such a site
    has no result, and a rerun after the fix computes it.
    """
    key = cache_key(
        cluster.symbols, cluster.positions, engine.name, engine.version(), engine.key_parameters()
    )
    with environment_guard(directory, f"computing {title}"):
        if cache is not None:
            cached = cache.get(key)
            if cached is not None:
                started = time.perf_counter()
                cache.restore(cached, directory)
                result = SpectrumResult(
                    status="ok",
                    reason="",
                    energy=np.asarray(cached.energy),
                    mu=np.asarray(cached.mu),
                    engine_seconds=0.0,
                    wall_seconds=time.perf_counter() - started,
                    directory=str(directory),
                    energy_reference=engine.energy_reference,
                )
                return SiteOutcome(result, True, key)
        result = engine.run_site(cluster, directory, title)
        if cache is not None and result.status == "ok":
            metadata = {
                "engine": engine.name,
                "engine_version": engine.version(),
                "energy_reference": result.energy_reference,
                "first_title": title,
            }
            cache.put(key, result.energy, result.mu, Path(directory), metadata)
    return SiteOutcome(result, False, key)
