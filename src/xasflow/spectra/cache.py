"""Content-addressed cache of computed spectra.

The key is the SHA-256 of the rounded cluster geometry and species, the engine, its version and
every parameter that changes the result. A stored entry is a folder ``{root}/{key[:2]}/{key}/``
holding ``spectrum.npz`` (energy, mu), ``entry.json`` (how it was made, and the SHA-256 of every
file of the entry) and the calculation's kept files (input, logs, raw output). Entries are
written to a staging folder in the same filesystem and renamed into place
(:func:`xasflow.fileio.staged_directory`), so concurrent jobs (threads, processes or SLURM jobs
on a shared filesystem) never see a half-written entry; when two jobs compute the same key, the
first rename wins and the other's copy is discarded.

An entry that cannot be trusted (a truncated or garbled file, a missing file, bad metadata,
arrays of the wrong shape or with non-finite values) is logged, removed and reported as a miss,
so the calculation runs again and stores a good entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xasflow.fileio import discard_directory, staged_directory
from xasflow.spectra.runner import environment_cause

logger = logging.getLogger(__name__)

SPECTRUM_FILE = "spectrum.npz"
METADATA_FILE = "entry.json"
# What reading a damaged .npz can raise (numpy reads it as a zip archive of .npy files).
_NPZ_DAMAGE = (ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, struct.error)
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
    """A stored result: ``energy`` (n,) in eV on the engine's axis, ``mu`` (n,), the entry's
    folder (with the calculation's files) and its ``entry.json`` as ``metadata``."""

    key: str
    energy: np.ndarray
    mu: np.ndarray
    directory: Path
    metadata: dict


class DamagedEntry(Exception):
    """A cache entry that cannot be trusted (internal: :meth:`SpectrumCache.get` recomputes it)."""


class SpectrumCache:
    """A cache folder shared by all jobs of a study (or of many studies)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> CachedSpectrum | None:
        """The stored result of ``key``, or None when there is none or it is damaged.

        A damaged entry is logged as a warning naming its folder and removed, so the caller
        recomputes and stores it again. Errors of the machine (no permission to read the
        cache) are raised as ``OSError``.
        """
        entry = self._entry(key)
        if not entry.is_dir():
            return None
        try:
            return _read_entry(key, entry)
        except DamagedEntry as damage:
            logger.warning(
                "cache entry %s is damaged (%s); removing it, it will be recomputed", entry, damage
            )
            _discard(entry)
            return None

    def put(self, key: str, energy: np.ndarray, mu: np.ndarray, files_from: Path, metadata: dict) -> Path:
        """Store a successful result with copies of the regular files in ``files_from``.

        ``energy`` and ``mu`` are 1-D arrays of equal length (eV on the engine's axis, and
        dimensionless). An entry already stored under ``key`` is kept (same key, same result).
        """
        entry = self._entry(key)
        if entry.exists():
            return entry
        try:
            with staged_directory(entry, replace=False) as staging:
                for path in Path(files_from).iterdir():
                    if path.is_file():
                        shutil.copy2(path, staging / path.name)
                with open(staging / SPECTRUM_FILE, "wb") as handle:
                    np.savez(handle, energy=np.asarray(energy), mu=np.asarray(mu))
                files = {path.name: _sha256(path) for path in sorted(staging.iterdir())}
                record = {**metadata, "key": key, "files": files}
                (staging / METADATA_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
        except OSError:
            if entry.is_dir():  # another job published the same key between our check and rename
                return entry
            raise
        return entry

    def restore(self, cached: CachedSpectrum, directory: Path) -> None:
        """Copy a cached entry's files into a site directory (replacing what is there)."""
        if directory.exists():
            shutil.rmtree(directory)
        shutil.copytree(cached.directory, directory)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _damage_or_raise(error: OSError) -> DamagedEntry:
    """A read error of an entry's file as damage; re-raise what the machine reports (EACCES)."""
    if environment_cause(error):
        raise error
    return DamagedEntry(f"{type(error).__name__}: {error}")


def _read_entry(key: str, entry: Path) -> CachedSpectrum:
    """Read and check one entry; raise :class:`DamagedEntry` saying what is wrong with it."""
    try:
        metadata = json.loads((entry / METADATA_FILE).read_text())
    except OSError as error:
        raise _damage_or_raise(error) from error
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise DamagedEntry(f"{METADATA_FILE} is not JSON: {error}") from error
    if not isinstance(metadata, dict) or metadata.get("key", key) != key:
        raise DamagedEntry(f"{METADATA_FILE} does not describe key {key}")
    _check_files(entry, metadata.get("files"))
    try:
        with np.load(entry / SPECTRUM_FILE, allow_pickle=False) as data:
            energy, mu = np.asarray(data["energy"]), np.asarray(data["mu"])
    except OSError as error:
        raise _damage_or_raise(error) from error
    except _NPZ_DAMAGE as error:
        raise DamagedEntry(f"{SPECTRUM_FILE} is unreadable: {type(error).__name__}: {error}") from error
    _check_arrays(energy, mu)
    return CachedSpectrum(key=key, energy=energy, mu=mu, directory=entry, metadata=metadata)


def _check_files(entry: Path, files: dict | None) -> None:
    """Every file ``entry.json`` lists is there with its SHA-256 (entries written before the
    list existed are checked by their arrays alone)."""
    if files is None:
        return
    if not isinstance(files, dict):
        raise DamagedEntry(f"{METADATA_FILE} lists its files as {type(files).__name__}, not a mapping")
    for name, expected in sorted(files.items()):
        try:
            actual = _sha256(entry / name)
        except OSError as error:
            raise _damage_or_raise(error) from error
        if actual != expected:
            raise DamagedEntry(f"{name} has changed since it was stored (SHA-256 {actual[:12]}...)")


def _check_arrays(energy: np.ndarray, mu: np.ndarray) -> None:
    if energy.ndim != 1 or mu.shape != energy.shape:
        raise DamagedEntry(f"energy {energy.shape} and mu {mu.shape} are not two 1-D arrays of one length")
    if not (np.issubdtype(energy.dtype, np.number) and np.issubdtype(mu.dtype, np.number)):
        raise DamagedEntry(f"energy ({energy.dtype}) or mu ({mu.dtype}) is not numeric")
    if not (np.all(np.isfinite(energy)) and np.all(np.isfinite(mu))):
        raise DamagedEntry("energy or mu holds NaN or infinity")


def _discard(entry: Path) -> None:
    """Remove a damaged entry (renamed aside first, so no reader meets it half removed)."""
    try:
        discard_directory(entry)
    except OSError as error:
        logger.warning("cannot move damaged cache entry %s aside (%s); removing it in place", entry, error)
        shutil.rmtree(entry, ignore_errors=True)
