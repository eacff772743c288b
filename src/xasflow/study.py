"""The study configuration as typed, frozen values.

``config.validate_config`` checks a study against the JSON schema and fills every default
there; this module turns the validated mapping into frozen dataclasses that library code
takes instead of dicts. The classes carry **no defaults of their own**: every value comes from
the schema (``workflow/schemas/config.schema.yaml``), so a default lives in one place. A field
typed ``X | None`` is one the schema leaves optional with no default (``None`` = not given).

A system is one of five kinds, each its own class (``BulkSystem``, ``CrystalSystem``,
``NanoparticleSystem``, ``AmorphousSystem``, ``PolycrystalSystem``) with only the keys its
kind uses; ``system_spec(name, entry)`` picks the class from ``kind``.

Units: lengths in Angstrom, temperatures in K, MD timestep in ps, densities in g/cm^3.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from xasflow.config import ConfigError


@dataclass(frozen=True)
class PotentialSpec:
    """A LAMMPS potential: ``style`` + ``file`` (a path or a file shipped with LAMMPS), or a
    ``generator`` (zhou2004: an EAM/alloy file made for the system's elements); or an ASE
    ``calculator`` (chgnet, or ``package.module:ClassName``) with its constructor
    ``parameters``, run by ``xasflow.structures.ase_md``."""

    style: str | None
    file: str | None
    generator: str | None
    calculator: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True)
class MDSpec:
    """MD protocol: timestep (ps), equilibration steps, steps between snapshots, snapshots, seed;
    ``minimize`` None = minimize only the kinds that start with close pairs."""

    timestep: float
    equilibration_steps: int
    snapshot_interval: int
    n_snapshots: int
    seed: int
    minimize: bool | None


@dataclass(frozen=True)
class MCSpec:
    """Monte Carlo swaps: MD steps between rounds, attempts per round and pair, Metropolis
    temperature (K; None = the MD temperature)."""

    interval: int
    attempts: int
    temperature: float | None


@dataclass(frozen=True)
class SystemSpec:
    """What every structure model has. ``composition`` holds (element, amount) pairs, sorted by
    element; a one-element system has a single pair with amount 1."""

    kind: ClassVar[str] = ""
    name: str
    composition: tuple[tuple[str, float], ...]
    structure_seed: int
    temperature: float | None
    potential: PotentialSpec | None
    md: MDSpec
    mc: MCSpec | None
    n_sites: int | None
    sampling_strategy: str | None
    engine: str | None

    @property
    def elements(self) -> tuple[str, ...]:
        """Elements, sorted: the LAMMPS atom types follow this order."""
        return tuple(element for element, _ in self.composition)

    @property
    def is_alloy(self) -> bool:
        return len(self.composition) > 1

    @property
    def host_element(self) -> str:
        """The most abundant element (ties: alphabetical): the lattice is built with it before
        an alloy composition is applied."""
        amounts = dict(self.composition)
        return max(self.elements, key=lambda element: amounts[element])

    def to_dict(self) -> dict[str, Any]:
        """The entry as plain JSON-able data (for provenance records)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class LatticeSystem(SystemSpec):
    """A system built on a crystal lattice (a, Angstrom; c/a for bct on the Bain path)."""

    lattice: str
    lattice_constant: float
    c_over_a: float


@dataclass(frozen=True)
class BulkSystem(LatticeSystem):
    """A periodic crystal equilibrated by NPT MD; ``supercell`` repeats of the conventional cell."""

    kind: ClassVar[str] = "bulk"
    supercell: tuple[int, int, int]


@dataclass(frozen=True)
class CrystalSystem(BulkSystem):
    """The ideal static lattice: one frame, no MD; inequivalent sites with multiplicities."""

    kind: ClassVar[str] = "crystal"


@dataclass(frozen=True)
class NanoparticleSystem(LatticeSystem):
    """A free cluster (NVT MD): ``shells`` including the centre; ``reentrance`` for decahedra."""

    kind: ClassVar[str] = "nanoparticle"
    shape: str
    shells: int
    reentrance: int


@dataclass(frozen=True)
class AmorphousSystem(SystemSpec):
    """A random packing of ``n_atoms`` at ``density`` (g/cm^3), melted at ``melt_temperature``
    (K) and quenched linearly to ``temperature`` (NVT)."""

    kind: ClassVar[str] = "amorphous"
    n_atoms: int
    density: float
    melt_temperature: float
    melt_steps: int
    quench_steps: int


@dataclass(frozen=True)
class PolycrystalSystem(LatticeSystem):
    """A Voronoi polycrystal of ``n_grains`` in a periodic cube of edge ``box_length`` (Angstrom)."""

    kind: ClassVar[str] = "polycrystal"
    box_length: float
    n_grains: int


SYSTEM_KINDS: dict[str, type[SystemSpec]] = {
    cls.kind: cls
    for cls in (BulkSystem, CrystalSystem, NanoparticleSystem, AmorphousSystem, PolycrystalSystem)
}


def _is_optional(annotation: Any) -> bool:
    return isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation)


def _from_mapping(cls: type, entry: dict[str, Any], where: str, **given: Any) -> Any:
    """Build dataclass ``cls`` from a validated mapping: nested dataclasses and tuples converted,
    optional keys absent -> None. A required key absent is a schema/class mismatch (a bug)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = dict(given)
    for field in dataclasses.fields(cls):
        if field.name in values:
            continue
        annotation = hints[field.name]
        if field.name not in entry or entry[field.name] is None:
            if not _is_optional(annotation):
                raise ConfigError(f"config key '{where}.{field.name}' is required")
            values[field.name] = None
            continue
        value = entry[field.name]
        nested = [arg for arg in typing.get_args(annotation) if dataclasses.is_dataclass(arg)]
        if dataclasses.is_dataclass(annotation) or nested:
            target = annotation if dataclasses.is_dataclass(annotation) else nested[0]
            value = _from_mapping(target, value, f"{where}.{field.name}")
        elif isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    return cls(**values)


def system_spec(name: str, entry: dict[str, Any]) -> SystemSpec:
    """The typed spec of one validated ``systems`` entry (its class chosen by ``kind``)."""
    try:
        cls = SYSTEM_KINDS[entry["kind"]]
    except KeyError:
        raise ConfigError(
            f"config key 'systems.{name}.kind': '{entry.get('kind')}' is not one of {sorted(SYSTEM_KINDS)}"
        ) from None
    if entry.get("composition"):
        composition = tuple(
            sorted((element, float(amount)) for element, amount in entry["composition"].items())
        )
    else:
        composition = ((entry["element"], 1.0),)
    return _from_mapping(cls, entry, f"systems.{name}", name=name, composition=composition)


@dataclass(frozen=True)
class SamplingSpec:
    """Site sampling: seed, default sites per system, strategy and the label to stratify by."""

    seed: int
    sites_per_system: int
    strategy: str
    stratify_by: str


def sampling_spec(section: dict[str, Any]) -> SamplingSpec:
    return _from_mapping(SamplingSpec, section, "sampling")


@dataclass(frozen=True)
class SiteSampling:
    """How the absorbing sites of one system are chosen: ``strategy`` (stratified, uniform or
    inequivalent), ``n_sites`` requested (ignored by inequivalent) and the sampling settings."""

    strategy: str
    n_sites: int
    seed: int
    stratify_by: str


def site_sampling(system: SystemSpec, sampling: SamplingSpec) -> SiteSampling:
    """The sampling of ``system``: its own overrides, else the study's (a crystal: inequivalent)."""
    default = "inequivalent" if system.kind == "crystal" else sampling.strategy
    return SiteSampling(
        strategy=system.sampling_strategy or default,
        n_sites=system.n_sites or sampling.sites_per_system,
        seed=sampling.seed,
        stratify_by=sampling.stratify_by,
    )
