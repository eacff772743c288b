"""Atomic file output: a reader sees the old file or the complete new one, never a half-written one.

Every file xasflow publishes goes through these helpers: the content is written to a hidden
temporary sibling in the same folder (same filesystem) and moved over the target with
``os.replace``, which POSIX makes atomic. A failure on the way (disk full, kill) leaves the
previous target untouched and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it over ``target``.

    Use it for writers that want a path (``np.savez``, ``ase.io.write``, ``torch.save``).
    ``suffix`` keeps an extension that a writer inspects (``.npz``, ``.xyz``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        os.chmod(temporary_path, 0o666 & ~_umask())  # mkstemp makes it private; outputs are for everyone
        os.replace(temporary_path, target)
    finally:
        temporary_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(target: str | Path, mode: str = "w", **open_arguments) -> Iterator:
    """Open a temporary file beside ``target`` for writing; on success it replaces ``target``.

    ``mode`` is "w" (text, UTF-8 unless ``encoding`` is given) or "wb"; other keyword
    arguments go to ``open`` (``newline=""`` for the csv module).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    if mode == "w":
        open_arguments.setdefault("encoding", "utf-8")
    with (
        atomic_path(target, suffix=Path(target).suffix) as temporary,
        open(temporary, mode, **open_arguments) as handle,
    ):
        yield handle


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically; return the target path."""
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically; return the target path."""
    return atomic_write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def staged_directory(target: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty hidden staging folder beside ``target``; on success publish it as ``target``.

    With ``replace`` an existing ``target`` is swapped out only after the new folder is complete
    (the old one is renamed aside, the new one renamed in, then the old one removed), so a
    failure at any point before publication leaves the previous ``target`` as it was. Without
    ``replace`` an existing ``target`` wins, also when a concurrent writer publishes first
    (content-addressed stores: the same key means the same content), and the staging folder is
    discarded. Staging folders are removed on failure.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging.", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; the published folder is not
    try:
        yield staging
        if not replace:
            try:
                os.replace(staging, target)
            except OSError:
                if not target.is_dir():  # not a concurrent writer that published first
                    raise
            return
        if target.exists():
            retired = _move_aside(target, "retired")
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _move_aside(target: Path, reason: str) -> Path:
    """Rename ``target`` into a fresh hidden folder ``.<name>.<reason>.*`` beside it (atomic);
    return that folder."""
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.{reason}.", dir=target.parent))
    os.replace(target, aside / target.name)
    return aside


def discard_directory(target: str | Path) -> None:
    """Remove the folder ``target``: renamed aside first (atomic), so no reader meets it half
    removed. A folder another process removed first is not an error."""
    target = Path(target)
    try:
        aside = _move_aside(target, "discarded")
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def remove_staging_leftovers(target: str | Path) -> list[Path]:
    """Tidy what a killed writer left beside ``target``; return the paths removed.

    A kill between the two renames of ``staged_directory(replace=True)`` leaves no ``target``
    and the previous one in its retired folder: that copy, the last good one, is put back
    first. Staging, retired and discarded folders and temporary files are then removed.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    if not target.exists():
        for retired in sorted(target.parent.glob(f".{target.name}.retired.*/{target.name}")):
            os.replace(retired, target)
            logger.warning("restored %s from %s, left by an interrupted write", target, retired)
            break
    removed = []
    for leftover in target.parent.glob(f".{target.name}.*"):
        if leftover.name.endswith(".tmp") or any(
            f".{kind}." in leftover.name for kind in ("staging", "retired", "discarded")
        ):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            logger.warning("removed %s, left by an interrupted write", leftover)
            removed.append(leftover)
    return removed
