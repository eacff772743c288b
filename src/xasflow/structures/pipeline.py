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
from xasflow.structures.builders import BulkSpec, NanoparticleSpec, build_bulk, build_nanoparticle
from xasflow.structures.labels import LabelParams, compute_site_labels, reference_number_density
from xasflow.structures.lammps_runner import (
    MDParams,
    Potential,
    file_sha256,
    lammps_version,
    resolve_potential,
    run_md,
)

logger = logging.getLogger(__name__)


def initial_structure(spec: dict) -> Atoms:
    """Starting structure of one system from its validated config entry."""
    if spec["kind"] in ("bulk", "crystal"):
        return build_bulk(
            BulkSpec(spec["element"], spec["lattice"], spec["lattice_constant"], tuple(spec["supercell"]))
        )
    return build_nanoparticle(
        NanoparticleSpec(
            spec["element"],
            spec["shape"],
            spec["shells"],
            spec["lattice_constant"],
            spec.get("reentrance", 0),
        )
    )


def simulate_system(system: str, spec: dict, out_dir: str | Path) -> Path:
    """Run the MD of ``system`` and write ``snapshots.extxyz``, ``lammps.log`` and ``md.json``.

    Returns the snapshots path. Each snapshot's ``info`` records system, frame, temperature,
    potential file and checksum, LAMMPS version and seed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec["kind"] == "crystal":
        return _static_crystal(system, spec, out_dir)
    potential_file = resolve_potential(spec["potential"]["file"])
    potential = Potential(spec["potential"]["style"], potential_file, (spec["element"],))
    md = spec["md"]
    params = MDParams(
        temperature=float(spec["temperature"]),
        equilibration_steps=md["equilibration_steps"],
        snapshot_interval=md["snapshot_interval"],
        n_snapshots=md["n_snapshots"],
        timestep=md["timestep"],
        seed=md["seed"],
    )
    atoms = initial_structure(spec)
    started = time.perf_counter()
    snapshots = run_md(atoms, potential, params, system, out_dir / "lammps.log")
    seconds = time.perf_counter() - started
    provenance = {
        "system": system,
        "n_atoms": len(atoms),
        "potential_style": potential.style,
        "potential_file": str(potential_file),
        "potential_sha256": file_sha256(potential_file),
        "lammps_version": lammps_version(),
        "seed": params.seed,
        "temperature_K": params.temperature,
        "md_seconds": round(seconds, 3),
        "xasflow_version": __version__,
        "spec": spec,
    }
    for frame, snapshot in enumerate(snapshots):
        snapshot.info.update(
            {
                "system": system,
                "frame": frame,
                "potential_file": potential_file.name,
                "potential_sha256": provenance["potential_sha256"],
                "lammps_version": provenance["lammps_version"],
                "seed": params.seed,
            }
        )
    snapshots_path = out_dir / "snapshots.extxyz"
    partial = snapshots_path.with_suffix(".extxyz.partial")
    ase.io.write(partial, snapshots, format="extxyz")
    partial.replace(snapshots_path)
    (out_dir / "md.json").write_text(json.dumps(provenance, indent=2, sort_keys=True))
    logger.info("%s: %d snapshots of %d atoms in %.1f s", system, len(snapshots), len(atoms), seconds)
    return snapshots_path


def _static_crystal(system: str, spec: dict, out_dir: Path) -> Path:
    """The ideal lattice as the single frame of a crystal system (no MD, no thermal disorder)."""
    atoms = initial_structure(spec)
    atoms.info.update({"system": system, "frame": 0, "md": "none (static crystal)"})
    snapshots_path = out_dir / "snapshots.extxyz"
    partial = snapshots_path.with_suffix(".extxyz.partial")
    ase.io.write(partial, [atoms], format="extxyz")
    partial.replace(snapshots_path)
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


def label_system(
    snapshots_path: str | Path, spec: dict, label_params: LabelParams, out_path: str | Path
) -> Path:
    """Labels of every atom of every snapshot, written to ``out_path`` (.npz).

    Arrays: frame, site, element, coordination_number, surface (n_labels,), rdf (n_labels, n_r), r.
    """
    reference_density = reference_number_density(spec["lattice"], spec["lattice_constant"])
    columns: dict[str, list] = {
        key: [] for key in ("frame", "site", "element", "coordination_number", "surface", "rdf")
    }
    r_grid = label_params.r_grid
    for frame, snapshot in enumerate(read_snapshots(snapshots_path)):
        labels = compute_site_labels(snapshot, label_params, reference_density)
        columns["frame"].append(np.full(len(snapshot), frame))
        columns["site"].append(np.arange(len(snapshot)))
        columns["element"].append(labels.element)
        columns["coordination_number"].append(labels.coordination_number)
        columns["surface"].append(labels.surface)
        columns["rdf"].append(labels.rdf)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {key: np.concatenate(values) for key, values in columns.items()}
    with open(out_path.with_suffix(".partial"), "wb") as handle:
        np.savez_compressed(handle, r=r_grid, **arrays)
    out_path.with_suffix(".partial").replace(out_path)
    return out_path


def read_labels(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
