"""Files of the structure stage: snapshots (extended XYZ) and per-atom labels (.npz + .json).

Readers and writers live here, apart from the LAMMPS pipeline, so that later stages (spectra,
dataset) read structures without importing the MD machinery. Every writer publishes its file
atomically (``xasflow.fileio``): a reader sees the previous file or the complete new one.
"""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from xasflow.errors import UserError
from xasflow.fileio import atomic_path, atomic_write_text


def write_frames(frames: list[Atoms], path: str | Path) -> Path:
    """Write ``frames`` to ``path`` as extended XYZ (atomically); return the path."""
    path = Path(path)
    with atomic_path(path, suffix=".extxyz") as temporary:
        ase.io.write(temporary, frames, format="extxyz")
    return path


def read_snapshots(path: str | Path) -> list[Atoms]:
    """All frames of an extended XYZ file, as written by ``write_frames``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: snapshots file does not exist")
    frames = ase.io.read(path, index=":", format="extxyz")
    return frames if isinstance(frames, list) else [frames]


def write_labels(path: str | Path, arrays: dict[str, np.ndarray], summary: dict) -> Path:
    """Write per-atom label arrays to ``path`` (.npz) and their summary beside it (.json)."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as temporary:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    atomic_write_text(path.with_suffix(".json"), json.dumps(summary, indent=2, sort_keys=True))
    return path


def read_labels(path: str | Path) -> dict[str, np.ndarray]:
    """Per-atom label arrays of one system (see ``structures.pipeline.label_system``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: labels file does not exist")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
