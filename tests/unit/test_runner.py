"""The external-program runner: a run stopped at its time limit takes its whole process group
(mpirun's ranks, any grandchild) with it, through the FEFF-executable and FDMNES engines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from xasflow.spectra import fdmnes
from xasflow.spectra.engines import FeffExecutableEngine
from xasflow.spectra.feff import Cluster, FeffParams

FAST = FeffParams(cluster_radius=5.0, fms_radius=4.0, energy_min=-20.0, energy_max=60.0, energy_step=2.0)
CLUSTER = Cluster(("Cu", "Cu"), np.array([[0.0, 0.0, 0.0], [2.556, 0.0, 0.0]]))


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for a parent to reap it is not)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc").is_dir():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def launcher_script(tmp_path: Path, pid_file: Path, grandchild: str, then: str) -> Path:
    """A stand-in for ``mpirun``: starts a grandchild in the background, records its pid, then
    runs ``then`` (``wait`` keeps it running until it is stopped)."""
    script = tmp_path / "launcher.sh"
    script.write_text(f"#!/bin/sh\n{grandchild} &\necho $! > {pid_file}\n{then}\n")
    return script


def wait_for_pid(pid_file: Path) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = pid_file.read_text().strip() if pid_file.is_file() else ""
        if text:
            return int(text)
        time.sleep(0.05)
    raise AssertionError(f"{pid_file} was never written")


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def grandchild_pid_file(tmp_path):
    """Where the stand-in launcher writes its grandchild's pid; the grandchild is killed at the
    end whatever the test found, so a failing run leaves nothing behind."""
    pid_file = tmp_path / "grandchild.pid"
    yield pid_file
    if pid_file.is_file() and pid_file.read_text().strip():
        pid = int(pid_file.read_text())
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_timed_out_feff_executable_takes_its_grandchildren_with_it(tmp_path, grandchild_pid_file):
    script = launcher_script(tmp_path, grandchild_pid_file, "sleep 1000", "wait")
    engine = FeffExecutableEngine(replace(FAST, time_limit=1.0), ("sh", str(script)))
    started = time.monotonic()
    result = engine.run_site(CLUSTER, tmp_path / "site", "Cu dimer")
    # a time limit is the site's outcome, recorded with its reason
    assert result.status == "failed" and result.reason == "FEFF executable timed out after 1 s"
    assert time.monotonic() - started < 8
    grandchild = wait_for_pid(grandchild_pid_file)
    assert gone_within(grandchild, 2), f"grandchild {grandchild} outlived the FEFF run"
    assert "stopped FEFF at the time limit of 1 s" in (tmp_path / "site" / "feff.log").read_text()


def test_fdmnes_ranks_that_ignore_sigterm_are_killed_after_the_grace_period(
    tmp_path, grandchild_pid_file, monkeypatch
):
    monkeypatch.setattr(fdmnes, "TERMINATE_GRACE_SECONDS", 0.5)
    # a rank that ignores SIGTERM, under a launcher that exits on it
    script = launcher_script(tmp_path, grandchild_pid_file, "sh -c \"trap '' TERM; exec sleep 1000\"", "wait")
    params = fdmnes.FdmnesParams(command=("sh", str(script)), time_limit=1.0)
    result = fdmnes.run_site(CLUSTER, params, tmp_path / "site", "Cu dimer")
    assert result.status == "failed" and result.reason == "FDMNES timed out after 1 s"
    grandchild = wait_for_pid(grandchild_pid_file)
    assert gone_within(grandchild, 2), f"rank {grandchild} outlived the FDMNES run"


def test_processes_a_program_leaves_behind_when_it_exits_are_stopped(tmp_path, grandchild_pid_file):
    script = launcher_script(tmp_path, grandchild_pid_file, "sleep 1000", "exit 0")
    result = fdmnes.run_site(CLUSTER, fdmnes.FdmnesParams(command=("sh", str(script))), tmp_path / "s", "Cu")
    assert result.status == "failed" and result.reason.startswith("FDMNES wrote no")
    grandchild = wait_for_pid(grandchild_pid_file)
    assert gone_within(grandchild, 2), f"process {grandchild} left by FDMNES is still running"


def test_the_program_runs_in_its_directory_with_no_stdin_and_its_output_in_the_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "site"
    fdmnes.write_inputs(CLUSTER, fdmnes.FdmnesParams(), directory, "Cu")
    command = ("sh", "-c", "pwd; echo to-stderr >&2; cat; exit 3")  # cat ends at once on /dev/null
    outcome = fdmnes.run(directory, fdmnes.FdmnesParams(command=command, time_limit=20.0))
    assert outcome.returncode == 3 and not outcome.timed_out and outcome.seconds < 10
    assert outcome.log_path == directory / "fdmnes.log"
    assert outcome.log_path.read_text().split() == [str(directory.resolve()), "to-stderr"]


CANCELLED_JOB = """
import sys
import numpy as np
from xasflow.spectra import fdmnes
from xasflow.spectra.feff import Cluster
cluster = Cluster(("Cu", "Cu"), np.array([[0.0, 0.0, 0.0], [2.556, 0.0, 0.0]]))
params = fdmnes.FdmnesParams(command=("sh", sys.argv[1]), time_limit=600.0)
fdmnes.run_site(cluster, params, sys.argv[2], "Cu dimer")
"""


def test_a_cancelled_job_takes_the_running_program_with_it(tmp_path, grandchild_pid_file):
    """SIGTERM to xasflow (Snakemake or SLURM cancelling the job) stops the program's group,
    which runs in its own session and so does not get the job's signals itself."""
    script = launcher_script(tmp_path, grandchild_pid_file, "sleep 1000", "wait")
    environment = {**os.environ}
    environment.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2] / "src"))
    job = subprocess.Popen(
        [sys.executable, "-c", CANCELLED_JOB, str(script), str(tmp_path / "site")], env=environment
    )
    try:
        grandchild = wait_for_pid(grandchild_pid_file)
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=30) != 0
    finally:
        if job.poll() is None:
            job.kill()
    assert gone_within(grandchild, 2), f"FDMNES's process {grandchild} outlived the cancelled job"
