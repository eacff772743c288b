"""Shared pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtual environment's xasflow, snakemake, ...


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


@pytest.fixture(scope="session")
def workflow_environment() -> dict[str, str]:
    """Environment for the subprocesses tests start: this environment's executables first on
    PATH, this checkout's sources first on PYTHONPATH, one thread per process."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPOSITORY / "src"),
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="session")
def run_snakemake(workflow_environment) -> Callable[..., subprocess.CompletedProcess]:
    """``run(workdir, configfiles, *arguments, cores=2, timeout=1500)``: the repository's
    Snakefile run in ``workdir`` with the given config file(s); returns the finished process."""

    def run(
        workdir: Path,
        configfiles: Path | list[Path],
        *arguments: str,
        cores: int = 2,
        timeout: float = 1500,
    ) -> subprocess.CompletedProcess:
        files = configfiles if isinstance(configfiles, list) else [configfiles]
        command = [
            str(BIN / "snakemake"),
            "--snakefile",
            str(REPOSITORY / "Snakefile"),
            "--configfile",
            *map(str, files),
            "--directory",
            str(workdir),
            "--cores",
            str(cores),
            *arguments,
        ]
        return subprocess.run(
            command, capture_output=True, text=True, env=workflow_environment, timeout=timeout
        )

    return run


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory):
    """model.ckpt of a 3-epoch MLP on the synthetic dataset of test_models (absorber Cu, K edge,
    energy grid -20..+60 eV relative to E0), trained once per test session; tests copy it before
    changing it."""
    import torch
    from test_models import _params, _synthetic_dataset

    from xasflow.dataset.schema import write_dataset
    from xasflow.models import train_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("checkpoint")
        dataset = write_dataset(_synthetic_dataset(), folder / "spectra.zarr")
        train_model(dataset, _params(max_epochs=3), folder / "mlp")
    finally:
        torch.set_num_threads(threads)
    return folder / "mlp" / "model.ckpt"
