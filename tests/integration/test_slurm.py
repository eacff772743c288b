"""The tiny config through a real single-node Slurm (sbatch) with the repository's profile.

The test installs Slurm from Debian packages when it is missing (root and apt-get needed),
starts it with workflow/scripts/local-slurm.sh, runs the workflow once locally and once through
`snakemake --executor slurm`, and stops Slurm. One spectrum batch is made to fail once (a
wrapper in front of the real `xasflow` on PATH exits non-zero the first time that batch runs):
Snakemake must resubmit it and the dataset must come out complete and equal to the local one.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xasflow.dataset.schema import open_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
SCRIPT = ROOT / "workflow" / "scripts" / "local-slurm.sh"
BIN = Path(sys.executable).parent
FAILING_BATCH = "np_cubo_55/batch_000"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("a local Slurm needs root to install and start its daemons")
    if shutil.which("slurmctld") is None:
        if shutil.which("apt-get") is None:
            pytest.skip("Slurm is not installed and apt-get is not available to install it")
        install = subprocess.run([str(SCRIPT), "install"], capture_output=True, text=True, timeout=1200)
        if install.returncode != 0:
            pytest.skip(f"Slurm could not be installed: {(install.stderr or install.stdout)[-500:]}")
    start = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, f"Slurm is installed but did not start: {start.stderr[-2000:]}"
    yield
    subprocess.run([str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120)


def _snakemake(workdir: Path, extra: list[str], path_prefix: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{path_prefix}{BIN}{os.pathsep}{env.get('PATH', '')}"
    command = [
        str(BIN / "snakemake"),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--configfile",
        str(TINY),
        "--directory",
        str(workdir),
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)


def _failing_xasflow(folder: Path, marker: Path) -> Path:
    """An `xasflow` in front of the real one that fails the first run of one batch."""
    folder.mkdir()
    wrapper = folder / "xasflow"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f'if [[ "$*" == *"spectra run"* && "$*" == *"{FAILING_BATCH}"* && ! -e "{marker}" ]]; then\n'
        f'    touch "{marker}"\n'
        '    echo "xasflow-test: injected failure of this batch" >&2\n'
        "    exit 3\n"
        "fi\n"
        f'exec "{BIN / "xasflow"}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return folder


def test_tiny_config_through_sbatch_matches_a_local_run(slurm_cluster, tmp_path):
    local = tmp_path / "local"
    result = _snakemake(local, ["--cores", "2"])
    assert result.returncode == 0, result.stderr[-3000:]

    cluster = tmp_path / "slurm"
    marker = tmp_path / "failed-once"
    wrapper_dir = _failing_xasflow(tmp_path / "wrapper", marker)
    result = _snakemake(
        cluster,
        [
            "--profile",
            str(ROOT / "workflow" / "profiles" / "slurm"),
            "--slurm-status-command",
            "squeue",
            "--slurm-no-account",
            "--set-resources",
            "train:gpu=0",
            "--slurm-init-seconds-before-status-checks",
            "1",
        ],
        path_prefix=f"{wrapper_dir}{os.pathsep}",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]

    # every job except the local `all` went through sbatch and got a Slurm job id and log
    submissions = re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", output)
    jobs_local = int(re.search(r"^total\s+(\d+)$", _snakemake(local, ["-n", "-F"]).stdout, re.M).group(1))
    assert len(submissions) == jobs_local - 1 + 1  # all jobs but `all`, plus the one retry
    for job_id, log in submissions:
        assert Path(log).name == f"{job_id}.log" and Path(log).exists()

    # the injected failure happened, is visible, and the batch was resubmitted
    assert marker.exists()
    batch_logs = [Path(log) for _, log in submissions if "rule_feff_batch/np_cubo_55_000" in log]
    assert len(batch_logs) == 2
    assert "Error in rule feff_batch" in output
    attempts = [log.read_text() for log in batch_logs]
    assert sum("non-zero exit status 3" in text for text in attempts) == 1

    # the cluster run computed the same dataset as the local run
    ours, theirs = (open_dataset(root / "results/dataset/spectra.zarr") for root in (cluster, local))
    assert ours.sizes == theirs.sizes
    assert list(ours["system"].values) == list(theirs["system"].values)
    np.testing.assert_array_equal(ours["site"].values, theirs["site"].values)
    np.testing.assert_allclose(ours["mu"].values, theirs["mu"].values, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ours["coordination_number"].values, theirs["coordination_number"].values)
    summaries = [json.loads((root / "results/dataset/summary.json").read_text()) for root in (cluster, local)]
    assert summaries[0] == summaries[1]
    assert summaries[0]["failed"] == 0
    assert (cluster / "results/inference/predictions.csv").exists()
