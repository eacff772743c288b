"""Content-addressed cache through the real workflow: FEFF runs executed

1. on an unchanged rerun of every spectrum job (snakemake --forcerun feff_batch): must be 0;
2. after changing one of N structure models: must be that model's share of the sites.

    .venv/bin/python benchmarks/cache.py
"""

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def study(temperature_of_first: float) -> dict:
    particle = {
        "kind": "nanoparticle",
        "element": "Cu",
        "shells": 3,
        "potential": {"style": "eam", "file": "Cu_u3.eam"},
        "md": {"equilibration_steps": 200, "snapshot_interval": 100, "n_snapshots": 1},
    }
    systems = {
        "cubo": {**particle, "shape": "cuboctahedron", "temperature": temperature_of_first},
        "ico": {**particle, "shape": "icosahedron", "temperature": 300},
        "deca": {**particle, "shape": "decahedron", "temperature": 300},
    }
    return {
        "study": "cache-benchmark",
        "systems": systems,
        "sampling": {"sites_per_system": 3},
        "spectra": {"cluster_radius": 5.0, "fms_radius": 4.0, "energy_step": 2.0, "batch_size": 3},
        # the default models are never trained: the benchmark stops at the dataset (--until)
    }


def snakemake(workdir: Path, config: Path, *extra: str) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    command = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--configfile", str(config)]
    command += ["-d", str(workdir), "--cores", "2", "--until", "dataset", *extra]
    subprocess.run(command, check=True, env=env, capture_output=True)


def feff_runs(workdir: Path, since: float) -> tuple[int, int]:
    """(engine runs, sites) in batch results written after ``since``."""
    executed = sites = 0
    for results in (workdir / "results" / "spectra").glob("*/batch_*/results.csv"):
        if results.stat().st_mtime < since:
            continue
        with open(results) as handle:
            for row in csv.DictReader(handle):
                sites += 1
                executed += row["cache_hit"] == "0"
    return executed, sites


def _now(workdir: Path) -> float:
    """The filesystem's current time (a file's mtime), to compare with output mtimes."""
    marker = workdir / ".mark"
    marker.write_text("")
    return marker.stat().st_mtime


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        config = workdir / "study.yaml"
        config.write_text(yaml.safe_dump(study(300)))
        snakemake(workdir, config)
        total = feff_runs(workdir, 0)[1]

        mark = _now(workdir)
        snakemake(workdir, config, "--forcerun", "feff_batch")
        executed, rerun_sites = feff_runs(workdir, mark)
        print(f"unchanged rerun: {rerun_sites} sites recomputed by Snakemake, {executed} FEFF runs executed")
        print(f"  ratio executed/sites (must be 0): {executed / rerun_sites:.3f}")

        config.write_text(yaml.safe_dump(study(350)))  # one of three structure models changes
        mark = _now(workdir)
        snakemake(workdir, config)
        executed, _ = feff_runs(workdir, mark)
        print(f"one of 3 models changed: {executed} FEFF runs executed of {total} sites")
        share = 3 / total
        print(f"  ratio executed/all sites (must be that model's share, {share:.3f}): {executed / total:.3f}")


if __name__ == "__main__":
    main()
