"""Shared pytest fixtures."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def _candidate_folders() -> list[Path]:
    """Where ``shared/data`` may be: beside this repository, or beside the repository it was
    cloned from (CI tests a fresh clone that may live anywhere, e.g. /tmp/ci-check)."""
    root = Path(__file__).resolve().parents[1]
    candidates = [root.parent / "shared" / "data"]
    origin = subprocess.run(
        ["git", "-C", str(root), "config", "--get", "remote.origin.url"], capture_output=True, text=True
    ).stdout.strip()
    if origin and "://" not in origin and ":" not in origin.split("/")[0]:  # a local path, not a URL
        candidates.append(Path(origin).expanduser().resolve().parent / "shared" / "data")
    return candidates


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference data folder (``../shared/data`` from the repository root, or from the
    repository this clone came from).

    Overridden by the environment variable ``XASFLOW_SHARED_DATA``; tests that need it are
    skipped when the folder is absent.
    """
    override = os.environ.get("XASFLOW_SHARED_DATA")
    candidates = [Path(override)] if override else _candidate_folders()
    for folder in candidates:
        if folder.is_dir():
            return folder
    pytest.skip(
        f"reference data folder not found (looked in {', '.join(map(str, candidates))}); "
        "set XASFLOW_SHARED_DATA to the shared/data folder"
    )
