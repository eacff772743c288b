"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference data folder (``../shared/data`` from the repository root).

    Overridden by the environment variable ``XASFLOW_SHARED_DATA``; tests that need it are
    skipped when the folder is absent.
    """
    override = os.environ.get("XASFLOW_SHARED_DATA")
    # tests/conftest.py -> parents[2] is the folder that holds the repository and shared/.
    folder = Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not folder.is_dir():
        pytest.skip(
            f"reference data folder {folder} not found; set XASFLOW_SHARED_DATA to the shared/data folder"
        )
    return folder
