"""Per-system structure stage: build -> MD -> snapshots (extended XYZ) -> labels.

Each function reads and writes files for one system, so Snakemake rebuilds only the systems
whose config entry changed. Systems arrive as typed specs (``xasflow.study.SystemSpec``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from xasflow import __version__
from xasflow.fileio import atomic_write_text
from xasflow.structures.ase_md import CalculatorPotential, run_ase_md
from xasflow.structures.builders import (
    BulkSpec,
    NanoparticleSpec,
    build_bulk,
    build_nanoparticle,
    decorate,
)
from xasflow.structures.io import read_snapshots, write_frames, write_labels
from xasflow.structures.labels import (
    CNA_TYPES,
    LabelParams,
    cna_cutoff,
    composition_of,
    compute_site_labels,
    grain_boundary_flags,
    reference_number_density,
)
from xasflow.structures.lammps_runner import (
    MDParams,
    MDStage,
    Potential,
    SwapParams,
    file_sha256,
    lammps_version,
    resolve_potential,
    run_md,
    structure_types,
)
from xasflow.study import (
    AmorphousSystem,
    BulkSystem,
    LatticeSystem,
    NanoparticleSystem,
    PolycrystalSystem,
    SystemSpec,
)

logger = logging.getLogger(__name__)

CRYSTALLINE_KINDS = ("bulk", "crystal", "nanoparticle", "polycrystal")


def _lattice_structure(spec: SystemSpec) -> Atoms:
    """The undecorated structure of a lattice-based system, built with its host element."""
    host = spec.host_element
    if isinstance(spec, BulkSystem):  # and CrystalSystem
        return build_bulk(BulkSpec(host, spec.lattice, spec.lattice_constant, spec.supercell, spec.c_over_a))
    if isinstance(spec, NanoparticleSystem):
        return build_nanoparticle(
            NanoparticleSpec(host, spec.shape, spec.shells, spec.lattice_constant, spec.reentrance)
        )
    if isinstance(spec, PolycrystalSystem):
        from xasflow.structures.polycrystal import build_polycrystal

        return build_polycrystal(
            host, spec.lattice, spec.lattice_constant, spec.box_length, spec.n_grains, spec.structure_seed
        )
    raise TypeError(f"{spec.name}: no lattice builder for kind '{spec.kind}'")


def initial_structure(spec: SystemSpec) -> Atoms:
    """Starting structure of one system.

    Alloys (more than one element in the composition) are decorated at random from
    ``structure_seed``: the chemically random reference that MC swaps then equilibrate.
    """
    if isinstance(spec, AmorphousSystem):
        from xasflow.structures.amorphous import build_random_packing

        return build_random_packing(dict(spec.composition), spec.n_atoms, spec.density, spec.structure_seed)
    atoms = _lattice_structure(spec)
    if spec.is_alloy:
        atoms = decorate(atoms, dict(spec.composition), spec.structure_seed)
    return atoms


def md_params(spec: SystemSpec) -> MDParams:
    """The MD protocol of a system."""
    pre_stages: tuple[MDStage, ...] = ()
    ensemble = "auto"
    if isinstance(spec, AmorphousSystem):
        from xasflow.structures.amorphous import melt_quench_stages

        pre_stages = melt_quench_stages(
            spec.melt_temperature, spec.temperature, spec.melt_steps, spec.quench_steps
        )
        ensemble = "nvt"  # the density is part of the model
    swap = None
    if spec.mc and spec.is_alloy:
        swap = SwapParams(spec.mc.interval, spec.mc.attempts, spec.mc.temperature)
    md = spec.md
    minimize = md.minimize if md.minimize is not None else spec.kind in ("polycrystal", "amorphous")
    return MDParams(
        temperature=float(spec.temperature),
        equilibration_steps=md.equilibration_steps,
        snapshot_interval=md.snapshot_interval,
        n_snapshots=md.n_snapshots,
        timestep=md.timestep,
        seed=md.seed,
        ensemble=ensemble,
        minimize=minimize,
        pre_stages=pre_stages,
        swap=swap,
    )


def system_potential(spec: SystemSpec, out_dir: Path) -> Potential | CalculatorPotential:
    """The potential of a system: an ASE calculator, a given LAMMPS file, or a
    Zhou-Johnson-Wadley (2004) EAM/alloy file generated into ``out_dir`` for its elements."""
    section = spec.potential
    if section is None:
        raise TypeError(f"{spec.name}: a {spec.kind} system has no potential")
    species = spec.elements
    if section.calculator:
        return CalculatorPotential(section.calculator, species, dict(section.parameters or {}))
    if section.generator == "zhou2004":
        from xasflow.structures.zhou_eam import write_setfl

        path = write_setfl(species, Path(out_dir) / f"zhou2004_{'-'.join(species)}.eam.alloy")
        return Potential("eam/alloy", path.resolve(), species)
    return Potential(section.style, resolve_potential(section.file), species)


def lammps_potential(spec: SystemSpec, out_dir: Path) -> Potential | None:
    """The system's LAMMPS potential (relaxes snapshots before CNA); None for a crystal or an
    ASE calculator, whose snapshots are analysed as they are."""
    if spec.potential is None or spec.potential.calculator:
        return None
    potential = system_potential(spec, out_dir)
    return potential if isinstance(potential, Potential) else None


def _potential_record(potential: Potential | CalculatorPotential) -> dict:
    """What identifies the potential: file and checksum, or calculator, version and weights."""
    if isinstance(potential, CalculatorPotential):
        record = potential.provenance()
        return {
            "potential_style": potential.style,
            "potential_file": record.get("calculator_weights", potential.name),
            "potential_sha256": record.get("calculator_weights_sha256", ""),
            **record,
        }
    return {
        "potential_style": potential.style,
        "potential_file": str(potential.file),
        "potential_sha256": file_sha256(potential.file),
        "lammps_version": lammps_version(),
    }


def _md_provenance(
    spec: SystemSpec,
    atoms: Atoms,
    potential: Potential | CalculatorPotential,
    params: MDParams,
    seconds: float,
) -> dict:
    return {
        "system": spec.name,
        "n_atoms": len(atoms),
        "species": list(potential.elements),
        **_potential_record(potential),
        "seed": params.seed,
        "structure_seed": spec.structure_seed,
        "temperature_K": params.temperature,
        "md_steps": sum(stage.steps for stage in params.pre_stages)
        + params.equilibration_steps
        + params.n_snapshots * params.snapshot_interval,
        "md_seconds": round(seconds, 3),
        "seconds_per_snapshot": round(seconds / params.n_snapshots, 3),
        "xasflow_version": __version__,
        "spec": spec.to_dict(),
    }


def simulate_system(spec: SystemSpec, out_dir: str | Path) -> Path:
    """Run the MD of one system and write ``snapshots.extxyz``, ``initial.extxyz`` (the built
    structure before MD: for an alloy, the chemically random reference), the MD log
    (``lammps.log``, or ``md.log`` for an ASE calculator) and ``md.json``.

    Returns the snapshots path. Each snapshot's ``info`` records system, frame, temperature,
    potential file and checksum, LAMMPS version and seed (and MC swap counts).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.kind == "crystal":
        return _static_crystal(spec, out_dir)
    potential = system_potential(spec, out_dir)
    params = md_params(spec)
    atoms = initial_structure(spec)
    atoms.info.update({"system": spec.name, "frame": -1, "structure": "initial (before MD)"})
    write_frames([atoms], out_dir / "initial.extxyz")
    started = time.perf_counter()
    if isinstance(potential, CalculatorPotential):
        snapshots = run_ase_md(atoms, potential, params, spec.name, out_dir / "md.log")
    else:
        snapshots = run_md(atoms, potential, params, spec.name, out_dir / "lammps.log")
    seconds = time.perf_counter() - started
    provenance = _md_provenance(spec, atoms, potential, params, seconds)
    if params.swap:
        last = snapshots[-1].info
        provenance["mc_swap_attempts"] = last.get("swap_attempts", 0)
        provenance["mc_swap_accepted"] = last.get("swap_accepted", 0)
    for frame, snapshot in enumerate(snapshots):
        snapshot.info.update(
            {
                "system": spec.name,
                "frame": frame,
                "potential_file": Path(provenance["potential_file"]).name,
                "potential_sha256": provenance["potential_sha256"],
                "lammps_version": provenance.get("lammps_version", "not used"),
                "seed": params.seed,
            }
        )
    snapshots_path = write_frames(snapshots, out_dir / "snapshots.extxyz")
    atomic_write_text(out_dir / "md.json", json.dumps(provenance, indent=2, sort_keys=True))
    logger.info("%s: %d snapshots of %d atoms in %.1f s", spec.name, len(snapshots), len(atoms), seconds)
    return snapshots_path


def _static_crystal(spec: SystemSpec, out_dir: Path) -> Path:
    """The ideal lattice as the single frame of a crystal system (no MD, no thermal disorder)."""
    atoms = initial_structure(spec)
    atoms.info.update({"system": spec.name, "frame": 0, "md": "none (static crystal)"})
    snapshots_path = write_frames([atoms], out_dir / "snapshots.extxyz")
    write_frames([atoms], out_dir / "initial.extxyz")
    provenance = {
        "system": spec.name,
        "n_atoms": len(atoms),
        "md": "none (static crystal)",
        "spec": spec.to_dict(),
        "xasflow_version": __version__,
    }
    atomic_write_text(out_dir / "md.json", json.dumps(provenance, indent=2, sort_keys=True))
    return snapshots_path


PER_ATOM_LABELS = (
    "frame",
    "site",
    "element",
    "coordination_number",
    "partial_cn",
    "shell_cn",
    "surface",
    "valence",
    "local_composition",
    "structure_type",
    "grain_boundary",
    "rdf",
    "partial_rdf",
)


def _reference_density(spec: SystemSpec) -> float | None:
    """Number density of the ideal lattice (atoms/A^3) for kinds whose surface is judged against it."""
    if spec.kind in ("nanoparticle", "crystal", "bulk") and isinstance(spec, LatticeSystem):
        return reference_number_density(spec.lattice, spec.lattice_constant, spec.c_over_a)
    return None


def _frame_labels(
    snapshot: Atoms,
    frame: int,
    spec: SystemSpec,
    params: LabelParams,
    potential: Potential | None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per-atom labels of one snapshot (keys of ``PER_ATOM_LABELS``), plus elements and surface flags."""
    labels = compute_site_labels(snapshot, params, _reference_density(spec), spec.elements)
    n_atoms = len(snapshot)
    types = np.full(n_atoms, -1, dtype=np.int64)
    lattice = spec.lattice if isinstance(spec, LatticeSystem) else None
    if spec.kind in CRYSTALLINE_KINDS and lattice in ("fcc", "bcc"):
        types = structure_types(snapshot, cna_cutoff(lattice, spec.lattice_constant), potential)
    grain_boundary = np.zeros(n_atoms, dtype=np.int8)
    if isinstance(spec, PolycrystalSystem):
        grain_boundary = grain_boundary_flags(types, spec.lattice).astype(np.int8)
    per_atom = {key: getattr(labels, key) for key in PER_ATOM_LABELS if hasattr(labels, key)}
    per_atom.update(
        frame=np.full(n_atoms, frame),
        site=np.arange(n_atoms),
        structure_type=types,
        grain_boundary=grain_boundary,
    )
    return per_atom, labels.element, labels.surface


def _reference_surface(initial_path: str | Path | None, spec: SystemSpec, params: LabelParams) -> dict | None:
    """Surface composition of the structure before MD (the random alloy), if it was written."""
    if initial_path is None or not Path(initial_path).is_file():
        return None
    initial = read_snapshots(initial_path)[0]
    labels = compute_site_labels(initial, params, _reference_density(spec), spec.elements)
    return composition_of(labels.element, labels.surface, spec.elements)


def label_system(
    snapshots_path: str | Path,
    spec: SystemSpec,
    label_params: LabelParams,
    out_path: str | Path,
    initial_path: str | Path | None = None,
    potential: Potential | None = None,
) -> Path:
    """Labels of every atom of every snapshot, written to ``out_path`` (.npz), and a summary of
    their statistics beside it (same name, .json).

    With ``potential`` (the system's MD potential), CNA structure types are those of each
    snapshot's inherent structure (energy-minimized copy); labels other than structure_type
    and grain_boundary always describe the thermal snapshot itself.

    Per-atom arrays (n_labels rows): see ``PER_ATOM_LABELS`` and ``SiteLabels``;
    structure_type is the LAMMPS CNA type (1 fcc, 2 hcp, 3 bcc, 4 ico, 5 other; -1 not
    computed), grain_boundary is 1 for a polycrystal atom whose CNA type is not its lattice's.
    Also: species, r, shell_edges, and for clusters frame_surface_composition (n_frames,
    n_species) and, given ``initial_path``, reference_surface_composition (n_species,) of the
    structure before MD, so MC segregation is measured against the random alloy.
    """
    species = spec.elements
    columns: dict[str, list] = {key: [] for key in PER_ATOM_LABELS}
    surface_compositions = []
    snapshots = read_snapshots(snapshots_path)
    for frame, snapshot in enumerate(snapshots):
        per_atom, elements, surface = _frame_labels(snapshot, frame, spec, label_params, potential)
        for key in PER_ATOM_LABELS:
            columns[key].append(per_atom[key])
        if not snapshot.pbc.all():
            surface_compositions.append(composition_of(elements, surface, species))
    arrays = {key: np.concatenate(values) for key, values in columns.items()}
    arrays.update(
        species=np.asarray(species),
        r=label_params.r_grid,
        shell_edges=np.asarray(label_params.shell_edges, dtype=float),
    )
    reference = None
    if surface_compositions:
        arrays["frame_surface_composition"] = np.array(
            [[c[s] for s in species] for c in surface_compositions]
        )
        reference = _reference_surface(initial_path, spec, label_params)
        if reference is not None:
            arrays["reference_surface_composition"] = np.array([reference[s] for s in species])
    summary = summarize_labels(arrays, spec, label_params, reference)
    summary["n_frames"] = len(snapshots)
    return write_labels(out_path, arrays, summary)


def _histogram(values: np.ndarray) -> dict[str, int]:
    unique, counts = np.unique(values, return_counts=True)
    return {str(int(value)): int(count) for value, count in zip(unique, counts, strict=True)}


def _element_summary(
    labels: dict[str, np.ndarray], mine: np.ndarray, species: list[str], params: LabelParams, symbol: str
) -> dict:
    """CN distribution and mean partial/shell CNs (and valence) of the atoms selected by ``mine``."""
    entry = {
        "count": int(mine.sum()),
        "coordination_number_mean": float(labels["coordination_number"][mine].mean()),
        "coordination_number_histogram": _histogram(labels["coordination_number"][mine]),
        "partial_cn_mean": {
            other: float(labels["partial_cn"][mine, column].mean()) for column, other in enumerate(species)
        },
    }
    if labels["shell_cn"].shape[1]:
        entry["shell_cn_mean"] = [float(value) for value in labels["shell_cn"][mine].mean(axis=0)]
    if params.valence_ligand and symbol != params.valence_ligand:
        entry["valence_histogram"] = _histogram(labels["valence"][mine])
        entry["valence_mean"] = float(labels["valence"][mine].mean())
    return entry


def _surface_summary(labels: dict[str, np.ndarray], species: list[str], reference: dict | None) -> dict:
    """Surface fraction and composition per frame and mean, and segregation against the reference."""
    surface = labels["frame_surface_composition"]
    summary: dict = {
        "surface_fraction": float(labels["surface"].mean()),
        "surface_composition_per_frame": [
            {symbol: float(row[column]) for column, symbol in enumerate(species)} for row in surface
        ],
        "surface_composition_mean": {
            symbol: float(np.nanmean(surface[:, column])) for column, symbol in enumerate(species)
        },
    }
    if reference is not None:
        summary["reference_surface_composition"] = reference
        summary["surface_segregation"] = {
            symbol: summary["surface_composition_mean"][symbol] - reference[symbol] for symbol in species
        }
    return summary


def summarize_labels(
    labels: dict[str, np.ndarray], spec: SystemSpec, params: LabelParams, reference: dict | None = None
) -> dict:
    """Statistics of one system's labels (all frames pooled), for the record and the notes:
    per element the CN distribution and mean partial/shell CNs; the valence distribution; the
    surface composition against the random reference (clusters); grain-boundary fraction and
    compositions (polycrystals); CNA structure-type fractions."""
    species = [str(symbol) for symbol in labels["species"]]
    element = labels["element"]
    summary: dict = {"kind": spec.kind, "species": species, "n_labels": int(element.size)}
    summary["elements"] = {
        symbol: _element_summary(labels, element == symbol, species, params, symbol)
        for symbol in species
        if np.any(element == symbol)
    }
    if "frame_surface_composition" in labels:
        summary.update(_surface_summary(labels, species, reference))
    types = labels["structure_type"]
    if np.any(types >= 0):
        names = {value: name for name, value in CNA_TYPES.items()}
        summary["structure_type_fractions"] = {
            names[int(value)]: float(np.mean(types == value)) for value in np.unique(types[types >= 0])
        }
    if spec.kind == "polycrystal":
        boundary = labels["grain_boundary"].astype(bool)
        summary["grain_boundary_fraction"] = float(boundary.mean())
        summary["grain_boundary_composition"] = composition_of(element, boundary, species)
        summary["grain_interior_composition"] = composition_of(element, ~boundary, species)
    return summary
