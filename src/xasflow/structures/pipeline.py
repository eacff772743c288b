"""Per-system structure stage: build -> MD -> snapshots (extended XYZ) -> labels.

Each function reads and writes files for one system, so Snakemake rebuilds only the systems
whose config entry changed.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from xasflow import __version__
from xasflow.config import system_elements
from xasflow.structures.builders import (
    BulkSpec,
    NanoparticleSpec,
    build_bulk,
    build_nanoparticle,
    decorate,
)
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

logger = logging.getLogger(__name__)

CRYSTALLINE_KINDS = ("bulk", "crystal", "nanoparticle", "polycrystal")


def _composition(spec: dict) -> dict[str, float]:
    return dict(spec["composition"]) if spec.get("composition") else {spec["element"]: 1.0}


def _host_element(spec: dict) -> str:
    """The element a lattice is built with before an alloy composition is applied."""
    composition = _composition(spec)
    return max(sorted(composition), key=lambda symbol: composition[symbol])


def initial_structure(spec: dict) -> Atoms:
    """Starting structure of one system from its validated config entry.

    Alloys (more than one element in ``composition``) are decorated at random from
    ``structure_seed``: the chemically random reference that MC swaps then equilibrate.
    """
    kind = spec["kind"]
    seed = spec.get("structure_seed", 1)
    host = _host_element(spec)
    if kind in ("bulk", "crystal"):
        atoms = build_bulk(
            BulkSpec(
                host,
                spec["lattice"],
                spec["lattice_constant"],
                tuple(spec["supercell"]),
                spec.get("c_over_a", 1.0),
            )
        )
    elif kind == "nanoparticle":
        atoms = build_nanoparticle(
            NanoparticleSpec(
                host, spec["shape"], spec["shells"], spec["lattice_constant"], spec.get("reentrance", 0)
            )
        )
    elif kind == "polycrystal":
        from xasflow.structures.polycrystal import build_polycrystal

        atoms = build_polycrystal(
            host, spec["lattice"], spec["lattice_constant"], spec["box_length"], spec["n_grains"], seed
        )
    elif kind == "amorphous":
        from xasflow.structures.amorphous import build_random_packing

        return build_random_packing(_composition(spec), spec["n_atoms"], spec["density"], seed)
    else:
        raise ValueError(f"system kind '{kind}' is not known")
    if len(_composition(spec)) > 1:
        atoms = decorate(atoms, _composition(spec), seed)
    return atoms


def md_params(spec: dict) -> MDParams:
    """The MD protocol of a system's config entry."""
    md = spec["md"]
    pre_stages: tuple[MDStage, ...] = ()
    ensemble = "auto"
    if spec["kind"] == "amorphous":
        from xasflow.structures.amorphous import melt_quench_stages

        pre_stages = melt_quench_stages(
            spec["melt_temperature"], spec["temperature"], spec["melt_steps"], spec["quench_steps"]
        )
        ensemble = "nvt"  # the density is part of the model
    swap = None
    if spec.get("mc") and len(system_elements(spec)) > 1:
        mc = spec["mc"]
        swap = SwapParams(mc["interval"], mc["attempts"], mc.get("temperature"))
    return MDParams(
        temperature=float(spec["temperature"]),
        equilibration_steps=md["equilibration_steps"],
        snapshot_interval=md["snapshot_interval"],
        n_snapshots=md["n_snapshots"],
        timestep=md["timestep"],
        seed=md["seed"],
        ensemble=ensemble,
        minimize=md.get("minimize", spec["kind"] in ("polycrystal", "amorphous")),
        pre_stages=pre_stages,
        swap=swap,
    )


def system_potential(spec: dict, out_dir: Path) -> Potential:
    """The LAMMPS potential of a system: a given file, or a Zhou-Johnson-Wadley (2004)
    EAM/alloy file generated into ``out_dir`` for the system's elements."""
    section = spec["potential"]
    species = system_elements(spec)
    if section.get("generator") == "zhou2004":
        from xasflow.structures.zhou_eam import write_setfl

        path = write_setfl(species, out_dir / f"zhou2004_{'-'.join(species)}.eam.alloy")
        return Potential("eam/alloy", path.resolve(), species)
    return Potential(section["style"], resolve_potential(section["file"]), species)


def _write_frames(frames: list[Atoms], path: Path) -> Path:
    partial = path.with_suffix(".extxyz.partial")
    ase.io.write(partial, frames, format="extxyz")
    partial.replace(path)
    return path


def simulate_system(system: str, spec: dict, out_dir: str | Path) -> Path:
    """Run the MD of ``system`` and write ``snapshots.extxyz``, ``initial.extxyz`` (the built
    structure before MD: for an alloy, the chemically random reference), ``lammps.log`` and
    ``md.json``.

    Returns the snapshots path. Each snapshot's ``info`` records system, frame, temperature,
    potential file and checksum, LAMMPS version and seed (and MC swap counts).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec["kind"] == "crystal":
        return _static_crystal(system, spec, out_dir)
    potential = system_potential(spec, out_dir)
    params = md_params(spec)
    atoms = initial_structure(spec)
    atoms.info.update({"system": system, "frame": -1, "structure": "initial (before MD)"})
    _write_frames([atoms], out_dir / "initial.extxyz")
    started = time.perf_counter()
    snapshots = run_md(atoms, potential, params, system, out_dir / "lammps.log")
    seconds = time.perf_counter() - started
    provenance = {
        "system": system,
        "n_atoms": len(atoms),
        "species": list(potential.elements),
        "potential_style": potential.style,
        "potential_file": str(potential.file),
        "potential_sha256": file_sha256(potential.file),
        "lammps_version": lammps_version(),
        "seed": params.seed,
        "structure_seed": spec.get("structure_seed", 1),
        "temperature_K": params.temperature,
        "md_steps": sum(stage.steps for stage in params.pre_stages)
        + params.equilibration_steps
        + params.n_snapshots * params.snapshot_interval,
        "md_seconds": round(seconds, 3),
        "seconds_per_snapshot": round(seconds / params.n_snapshots, 3),
        "xasflow_version": __version__,
        "spec": spec,
    }
    if params.swap:
        last = snapshots[-1].info
        provenance["mc_swap_attempts"] = last.get("swap_attempts", 0)
        provenance["mc_swap_accepted"] = last.get("swap_accepted", 0)
    for frame, snapshot in enumerate(snapshots):
        snapshot.info.update(
            {
                "system": system,
                "frame": frame,
                "potential_file": potential.file.name,
                "potential_sha256": provenance["potential_sha256"],
                "lammps_version": provenance["lammps_version"],
                "seed": params.seed,
            }
        )
    snapshots_path = _write_frames(snapshots, out_dir / "snapshots.extxyz")
    (out_dir / "md.json").write_text(json.dumps(provenance, indent=2, sort_keys=True))
    logger.info("%s: %d snapshots of %d atoms in %.1f s", system, len(snapshots), len(atoms), seconds)
    return snapshots_path


def _static_crystal(system: str, spec: dict, out_dir: Path) -> Path:
    """The ideal lattice as the single frame of a crystal system (no MD, no thermal disorder)."""
    atoms = initial_structure(spec)
    atoms.info.update({"system": system, "frame": 0, "md": "none (static crystal)"})
    snapshots_path = _write_frames([atoms], out_dir / "snapshots.extxyz")
    _write_frames([atoms], out_dir / "initial.extxyz")
    provenance = {"system": system, "n_atoms": len(atoms), "md": "none (static crystal)", "spec": spec}
    provenance["xasflow_version"] = __version__
    (out_dir / "md.json").write_text(json.dumps(provenance, indent=2, sort_keys=True))
    return snapshots_path


def read_snapshots(path: str | Path) -> list[Atoms]:
    """All frames of an extended XYZ file, as written by ``simulate_system``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: snapshots file does not exist")
    frames = ase.io.read(path, index=":", format="extxyz")
    return frames if isinstance(frames, list) else [frames]


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


def label_system(
    snapshots_path: str | Path,
    spec: dict,
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
    species = system_elements(spec)
    kind = spec["kind"]
    lattice = spec.get("lattice", "fcc")
    reference_density = None
    if kind in ("nanoparticle", "crystal", "bulk"):
        reference_density = reference_number_density(
            lattice, spec["lattice_constant"], spec.get("c_over_a", 1.0)
        )
    cna = kind in CRYSTALLINE_KINDS and lattice in ("fcc", "bcc")
    columns: dict[str, list] = {key: [] for key in PER_ATOM_LABELS}
    surface_compositions = []
    snapshots = read_snapshots(snapshots_path)
    for frame, snapshot in enumerate(snapshots):
        labels = compute_site_labels(snapshot, label_params, reference_density, species)
        n_atoms = len(snapshot)
        types = np.full(n_atoms, -1, dtype=np.int64)
        if cna:
            types = structure_types(snapshot, cna_cutoff(lattice, spec["lattice_constant"]), potential)
        grain_boundary = np.zeros(n_atoms, dtype=np.int8)
        if kind == "polycrystal":
            grain_boundary = grain_boundary_flags(types, lattice).astype(np.int8)
        per_atom = {key: getattr(labels, key) for key in PER_ATOM_LABELS if hasattr(labels, key)}
        per_atom.update(
            frame=np.full(n_atoms, frame),
            site=np.arange(n_atoms),
            structure_type=types,
            grain_boundary=grain_boundary,
        )
        for key in PER_ATOM_LABELS:
            columns[key].append(per_atom[key])
        if not snapshot.pbc.all():
            surface_compositions.append(composition_of(labels.element, labels.surface, species))
    arrays = {key: np.concatenate(values) for key, values in columns.items()}
    extra: dict[str, np.ndarray] = {
        "species": np.asarray(species),
        "r": label_params.r_grid,
        "shell_edges": np.asarray(label_params.shell_edges, dtype=float),
    }
    reference = None
    if surface_compositions:
        extra["frame_surface_composition"] = np.array([[c[s] for s in species] for c in surface_compositions])
        if initial_path is not None and Path(initial_path).is_file():
            initial = read_snapshots(initial_path)[0]
            initial_labels = compute_site_labels(initial, label_params, reference_density, species)
            reference = composition_of(initial_labels.element, initial_labels.surface, species)
            extra["reference_surface_composition"] = np.array([reference[s] for s in species])
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path.with_suffix(".partial"), "wb") as handle:
        np.savez_compressed(handle, **extra, **arrays)
    summary = summarize_labels({**arrays, **extra}, spec, label_params, reference)
    summary["n_frames"] = len(snapshots)
    summary_path = out_path.with_suffix(".json")
    summary_path.with_suffix(".json.partial").write_text(json.dumps(summary, indent=2, sort_keys=True))
    out_path.with_suffix(".partial").replace(out_path)
    summary_path.with_suffix(".json.partial").replace(summary_path)
    return out_path


def _histogram(values: np.ndarray) -> dict[str, int]:
    unique, counts = np.unique(values, return_counts=True)
    return {str(int(value)): int(count) for value, count in zip(unique, counts, strict=True)}


def summarize_labels(
    labels: dict[str, np.ndarray], spec: dict, params: LabelParams, reference: dict | None = None
) -> dict:
    """Statistics of one system's labels (all frames pooled), for the record and the notes:
    per element the CN distribution and mean partial/shell CNs; the valence distribution; the
    surface composition against the random reference (clusters); grain-boundary fraction and
    compositions (polycrystals); CNA structure-type fractions."""
    species = [str(symbol) for symbol in labels["species"]]
    element = labels["element"]
    summary: dict = {"kind": spec["kind"], "species": species, "n_labels": int(element.size)}
    per_element = {}
    for symbol in species:
        mine = element == symbol
        if not mine.any():
            continue
        entry = {
            "count": int(mine.sum()),
            "coordination_number_mean": float(labels["coordination_number"][mine].mean()),
            "coordination_number_histogram": _histogram(labels["coordination_number"][mine]),
            "partial_cn_mean": {
                other: float(labels["partial_cn"][mine, column].mean())
                for column, other in enumerate(species)
            },
        }
        if labels["shell_cn"].shape[1]:
            entry["shell_cn_mean"] = [float(value) for value in labels["shell_cn"][mine].mean(axis=0)]
        if params.valence_ligand and symbol != params.valence_ligand:
            entry["valence_histogram"] = _histogram(labels["valence"][mine])
            entry["valence_mean"] = float(labels["valence"][mine].mean())
        per_element[symbol] = entry
    summary["elements"] = per_element
    if "frame_surface_composition" in labels:
        surface = labels["frame_surface_composition"]
        summary["surface_fraction"] = float(labels["surface"].mean())
        summary["surface_composition_per_frame"] = [
            {symbol: float(row[column]) for column, symbol in enumerate(species)} for row in surface
        ]
        summary["surface_composition_mean"] = {
            symbol: float(np.nanmean(surface[:, column])) for column, symbol in enumerate(species)
        }
        if reference is not None:
            summary["reference_surface_composition"] = reference
            summary["surface_segregation"] = {
                symbol: summary["surface_composition_mean"][symbol] - reference[symbol] for symbol in species
            }
    types = labels["structure_type"]
    if np.any(types >= 0):
        names = {value: name for name, value in CNA_TYPES.items()}
        summary["structure_type_fractions"] = {
            names[int(value)]: float(np.mean(types == value)) for value in np.unique(types[types >= 0])
        }
    if spec["kind"] == "polycrystal":
        boundary = labels["grain_boundary"].astype(bool)
        summary["grain_boundary_fraction"] = float(boundary.mean())
        summary["grain_boundary_composition"] = composition_of(element, boundary, species)
        summary["grain_interior_composition"] = composition_of(element, ~boundary, species)
    return summary


def read_labels(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
