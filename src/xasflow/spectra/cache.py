"""Content-addressed cache of computed spectra.

The key is the SHA-256 of the rounded cluster geometry and species, the engine, its version and
every parameter that changes the result. A stored entry is a folder ``{root}/{key[:2]}/{key}/``
holding ``spectrum.npz`` (energy, mu), ``entry.json`` and the calculation's kept files (input,
logs, raw output). Entries are written to a temporary folder in the same filesystem and renamed
into place, so concurrent jobs (threads, processes or SLURM jobs on a shared filesystem) never
see a half-written entry; when two jobs compute the same key, the first rename wins and the
other's copy is discarded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

GEOMETRY_DECIMALS = 3  # Angstrom: 0.001 A is far below any effect on a XANES spectrum


def cache_key(
    symbols: tuple[str, ...],
    positions: np.ndarray,
    engine: str,
    engine_version: str,
    parameters: dict,
    decimals: int = GEOMETRY_DECIMALS,
) -> str:
    """Hex SHA-256 identifying one calculation.

    ``positions`` (n, 3) are in Angstrom relative to the absorber (first atom). They are rounded
    to ``decimals`` and ``-0.0`` is folded into ``0.0`` so equal geometries hash equally.
    """
    rounded = np.round(np.asarray(positions, dtype=float), decimals) + 0.0
    payload = {
        "engine": engine,
        "engine_version": engine_version,
        "parameters": parameters,
        "symbols": list(symbols),
        "positions": [[f"{value:.{decimals}f}" for value in row] for row in rounded],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CachedSpectrum:
    key: str
    energy: np.ndarray
    mu: np.ndarray
    directory: Path
    metadata: dict


class SpectrumCache:
    """A cache folder shared by all jobs of a study (or of many studies)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> CachedSpectrum | None:
        entry = self._entry(key)
        try:
            with np.load(entry / "spectrum.npz") as data:
                energy, mu = data["energy"], data["mu"]
            metadata = json.loads((entry / "entry.json").read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, KeyError) as error:  # damaged entry: recompute, never trust it
            logger.warning("cache entry %s is unreadable (%s); it will be recomputed", entry, error)
            return None
        return CachedSpectrum(key=key, energy=energy, mu=mu, directory=entry, metadata=metadata)

    def put(self, key: str, energy: np.ndarray, mu: np.ndarray, files_from: Path, metadata: dict) -> Path:
        """Store a successful result with copies of the regular files in ``files_from``."""
        entry = self._entry(key)
        if entry.exists():
            return entry
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=entry.parent))
        try:
            for path in Path(files_from).iterdir():
                if path.is_file():
                    shutil.copy2(path, staging / path.name)
            with open(staging / "spectrum.npz", "wb") as handle:
                np.savez(handle, energy=np.asarray(energy), mu=np.asarray(mu))
            (staging / "entry.json").write_text(
                json.dumps({"key": key, **metadata}, indent=2, sort_keys=True)
            )
            try:
                os.rename(staging, entry)
            except OSError:
                if not entry.exists():
                    raise
                shutil.rmtree(staging)  # another job stored the same key first
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return entry

    def restore(self, cached: CachedSpectrum, directory: Path) -> None:
        """Copy a cached entry's files into a site directory (replacing what is there)."""
        if directory.exists():
            shutil.rmtree(directory)
        shutil.copytree(cached.directory, directory)
