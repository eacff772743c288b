"""Faults around a spectrum batch: the machine failing (file-size limit, missing program), a
damaged cache entry, progress a user can follow, labelled energies and errors a user can fix.

The machine's failures are simulated honestly and without root: a child process runs the CLI
under ``RLIMIT_FSIZE`` (``ulimit -f``), so every write beyond the limit fails with EFBIG, as a
full disk fails with ENOSPC, whether Python, FEFF10's Fortran or a FEFF executable writes.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import pytest

from xasflow.cli import main
from xasflow.spectra.batch import read_batch, run_batch
from xasflow.spectra.cache import SpectrumCache
from xasflow.spectra.engines import Feff10Engine
from xasflow.spectra.feff import FeffParams, SpectrumResult
from xasflow.structures.builders import BulkSpec, build_bulk
from xasflow.structures.sampling import SiteChoice, write_manifest

FAST_SETTINGS = {
    "cluster_radius": 5.0,
    "fms_radius": 4.0,
    "energy_min": -20.0,
    "energy_max": 60.0,
    "energy_step": 2.0,
}
FAST = FeffParams(**FAST_SETTINGS)
FILE_SIZE_LIMIT = 20_000  # bytes: feff.inp fits, FEFF10's first binary file (apot.bin) does not

LIMITED_CLI = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from xasflow.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def copper(tmp_path) -> tuple[Path, Path]:
    """(manifest, snapshots) of one bulk Cu site in batch 0."""
    snapshots = tmp_path / "snapshots.extxyz"
    ase.io.write(snapshots, [build_bulk(BulkSpec("Cu", "fcc", 3.615, (3, 3, 3)))], format="extxyz")
    manifest = write_manifest([SiteChoice("bulk", 0, 0, "Cu", 12, 0, 0)], tmp_path / "sites.csv")
    return manifest, snapshots


def spectra_run(manifest, snapshots, out_dir, cache_dir, spectra=None, batch=0, engine=None) -> list[str]:
    config = {"spectra": {**FAST_SETTINGS, **(spectra or {})}}
    if engine:
        config["spectra"]["engine"] = engine
    return [
        "spectra",
        "run",
        "--config-json",
        json.dumps(config),
        "--manifest",
        str(manifest),
        "--snapshots",
        str(snapshots),
        "--batch",
        str(batch),
        "--out-dir",
        str(out_dir),
        "--cache-dir",
        str(cache_dir),
    ]


def run_limited(args: list[str], limit: int = FILE_SIZE_LIMIT) -> subprocess.CompletedProcess:
    """``xasflow`` in a child process whose files cannot grow beyond ``limit`` bytes."""
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if "PYTHONPATH" not in environment:
        environment["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    return subprocess.run(
        [sys.executable, "-c", LIMITED_CLI.format(limit=limit), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("xasflow: error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def cache_entries(cache_dir: Path) -> list[Path]:
    return sorted(path.parent for path in cache_dir.rglob("entry.json"))


# --- the machine fails: the job stops (exit 2), nothing is recorded, a rerun recomputes ----------------


@pytest.mark.slow
def test_feff10_on_a_filesystem_that_takes_no_more_fails_the_job_and_a_rerun_recomputes(copper, tmp_path):
    manifest, snapshots = copper
    out_dir, cache_dir = tmp_path / "batch_000", tmp_path / "cache"
    args = spectra_run(manifest, snapshots, out_dir, cache_dir)
    limited = run_limited(args)
    # FEFF10's atomic stage dies with Fortran error 38 (error during write), as on a full disk
    assert limited.returncode == 2, limited.stderr[-3000:]
    message = error_line(limited.stderr)
    assert str(out_dir / "000_0000_Cu") in message and "FEFF10 could not write its files" in message
    assert "error during write" in message and "file size limit exceeded" in message
    # not a failed site: no results, nothing cached
    assert not (out_dir / "results.csv").exists() and not (out_dir / "spectra.npz").exists()
    assert cache_entries(cache_dir) == []

    assert main(args) == 0  # the space is back: the site is computed, not read from a record
    (row,) = read_batch(out_dir)
    assert row["status"] == "ok" and row["cache_hit"] == "0" and row["mu"].size > 10
    assert len(cache_entries(cache_dir)) == 1


def test_a_feff_executable_that_reports_a_write_error_fails_the_job(copper, tmp_path):
    manifest, snapshots = copper
    program = tmp_path / "feff_standin.py"
    program.write_text("open('xsect.bin', 'wb').write(bytes(100_000))\n")  # EFBIG beyond the limit
    out_dir, cache_dir = tmp_path / "batch_000", tmp_path / "cache"
    settings = {"feff_command": [sys.executable, str(program)], "feff_dialect": "feff10"}
    limited = run_limited(spectra_run(manifest, snapshots, out_dir, cache_dir, settings, engine="feff"))
    assert limited.returncode == 2, limited.stderr[-3000:]
    message = error_line(limited.stderr)
    assert str(out_dir / "000_0000_Cu") in message and "File too large" in message
    assert not (out_dir / "results.csv").exists() and cache_entries(cache_dir) == []


@pytest.mark.parametrize(
    ("engine", "settings", "message"),
    [
        ("feff", {"feff_command": ["/nonexistent/feff"]}, "cannot start FEFF '/nonexistent/feff'"),
        (
            "fdmnes",
            {"fdmnes": {"command": ["/nonexistent/fdmnes"]}},
            "cannot start FDMNES '/nonexistent/fdmnes'",
        ),
    ],
)
def test_a_missing_program_fails_the_job_naming_it(copper, tmp_path, capsys, engine, settings, message):
    manifest, snapshots = copper
    args = spectra_run(manifest, snapshots, tmp_path / "b", tmp_path / "cache", settings, engine=engine)
    assert main(args) == 2
    assert message in error_line(capsys.readouterr().err)
    assert not (tmp_path / "b" / "results.csv").exists()


def test_a_batch_folder_without_write_permission_fails_the_job(copper, tmp_path, capsys):
    manifest, snapshots = copper
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user writes into read-only folders (root with CAP_DAC_OVERRIDE)")
        assert main(spectra_run(manifest, snapshots, locked / "batch_000", tmp_path / "cache")) == 2
    finally:
        locked.chmod(0o755)
    assert "permission denied" in error_line(capsys.readouterr().err)


# --- a damaged cache entry is recomputed ------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 3] ^= 0xFF
    path.write_bytes(bytes(data))


def rewrite_arrays(path: Path, change) -> None:
    with np.load(path) as data:
        energy, mu = change(data["energy"], data["mu"])
    with open(path, "wb") as handle:
        np.savez(handle, energy=energy, mu=mu)


DAMAGES = {
    "truncated spectrum.npz": lambda entry: truncate(entry / "spectrum.npz"),
    "byte flipped in spectrum.npz": lambda entry: flip_byte(entry / "spectrum.npz"),
    "spectrum.npz missing": lambda entry: (entry / "spectrum.npz").unlink(),
    "entry.json not JSON": lambda entry: (entry / "entry.json").write_text('{"key": '),
    "non-finite mu": lambda entry: rewrite_arrays(
        entry / "spectrum.npz", lambda energy, mu: (energy, np.where(mu > 0.5, np.nan, mu))
    ),
    "mu shorter than energy": lambda entry: rewrite_arrays(
        entry / "spectrum.npz", lambda energy, mu: (energy, mu[:-3])
    ),
    "byte flipped in the kept xmu.dat": lambda entry: flip_byte(entry / "xmu.dat"),
}


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    """A batch computed once into a cache: (folder, manifest, snapshots, cache, original row)."""
    root = tmp_path_factory.mktemp("computed")
    snapshots = root / "snapshots.extxyz"
    ase.io.write(snapshots, [build_bulk(BulkSpec("Cu", "fcc", 3.615, (3, 3, 3)))], format="extxyz")
    manifest = write_manifest([SiteChoice("bulk", 0, 0, "Cu", 12, 0, 0)], root / "sites.csv")
    counts = run_batch(
        manifest, snapshots, 0, Feff10Engine(FAST), root / "batch", SpectrumCache(root / "cache"), 5.0
    )
    assert counts["succeeded"] == 1
    (row,) = read_batch(root / "batch")
    return root, manifest, snapshots, root / "cache", row


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_cache_entry_is_recomputed(computed, tmp_path, damage, caplog):
    root, manifest, snapshots, pristine, original = computed
    cache_dir = tmp_path / "cache"
    shutil.copytree(pristine, cache_dir)
    (entry,) = cache_entries(cache_dir)
    DAMAGES[damage](entry)
    with caplog.at_level(logging.WARNING, logger="xasflow.spectra.cache"):
        counts = run_batch(
            manifest, snapshots, 0, Feff10Engine(FAST), tmp_path / "batch", SpectrumCache(cache_dir), 5.0
        )
    assert counts == {"requested": 1, "succeeded": 1, "failed": 0, "computed": 1, "cached": 0}
    assert any(str(entry) in record.getMessage() for record in caplog.records)
    (row,) = read_batch(tmp_path / "batch")
    np.testing.assert_allclose(row["energy"], original["energy"])
    np.testing.assert_allclose(row["mu"], original["mu"])
    site = Path(row["directory"]) / "xmu.dat"
    assert site.read_bytes() == (Path(original["directory"]) / "xmu.dat").read_bytes()
    # the entry was stored again, whole: the next run reads it back
    stored = SpectrumCache(cache_dir).get(entry.name)
    assert stored is not None
    np.testing.assert_allclose(stored.mu, original["mu"])
    assert not [path for path in entry.parent.iterdir() if path.name.startswith(".")]  # nothing left aside


# --- progress, labelled energies, old results files ------------------------------------------------------


@dataclass(frozen=True)
class StandInEngine:
    """An engine that returns a smooth edge at once, for tests of the batch around it."""

    name: str = "stand-in"
    energy_reference: str = "absolute"

    def version(self) -> str:
        return "1"

    def key_parameters(self) -> dict:
        return {}

    def run_site(self, cluster, directory, title) -> SpectrumResult:
        Path(directory).mkdir(parents=True, exist_ok=True)
        energy = np.linspace(8960.0, 9040.0, 41)
        mu = 1 / (1 + np.exp(-(energy - 8979.0) / 2))
        return SpectrumResult("ok", "", energy, mu, 0.25, 0.3, str(directory))


@pytest.fixture
def two_sites(tmp_path) -> tuple[Path, Path]:
    snapshots = tmp_path / "snapshots.extxyz"
    ase.io.write(snapshots, [build_bulk(BulkSpec("Cu", "fcc", 3.615, (2, 2, 2)))], format="extxyz")
    sites = [SiteChoice("bulk", 0, 0, "Cu", 12, 0, 0), SiteChoice("bulk", 0, 1, "Cu", 12, 0, 0)]
    return write_manifest(sites, tmp_path / "sites.csv"), snapshots


def test_progress_is_reported_per_site_on_stderr_and_in_the_log(two_sites, tmp_path, capsys, caplog):
    manifest, snapshots = two_sites
    with caplog.at_level(logging.INFO, logger="xasflow.spectra.batch"):
        run_batch(manifest, snapshots, 0, StandInEngine(), tmp_path / "batch", None, 3.0)
    stderr = capsys.readouterr().err
    assert "bulk batch 0" in stderr and "2/2" in stderr
    assert "\r" not in stderr  # not a terminal: one line per redraw, readable in the job log
    lines = [record.getMessage() for record in caplog.records if "Cu: ok" in record.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith("bulk frame 0 site 0 Cu: ok in 0.3 s (engine 0.2 s)")
    assert "[1/2 sites, about" in lines[0] and "left]" in lines[0]
    assert "[2/2 sites, about 00:00 left]" in lines[1]


def test_results_name_the_engine_time_and_the_energy_axis_and_old_files_still_read(two_sites, tmp_path):
    manifest, snapshots = two_sites
    run_batch(manifest, snapshots, 0, StandInEngine(), tmp_path / "batch", None, 3.0)
    rows = read_batch(tmp_path / "batch")
    assert [row["energy_reference"] for row in rows] == ["absolute", "absolute"]
    assert [row["engine_seconds"] for row in rows] == ["0.250", "0.250"]
    assert "feff_seconds" not in rows[0]

    # a results.csv written before the rename (feff_seconds, no energy_reference) of an FDMNES run
    results = tmp_path / "batch" / "results.csv"
    with open(results, newline="") as handle:
        old = list(csv.DictReader(handle))
    columns = [
        ("feff_seconds" if name == "engine_seconds" else name)
        for name in old[0]
        if name != "energy_reference"
    ]
    with open(results, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in old:
            writer.writerow({**row, "feff_seconds": row["engine_seconds"], "engine": "fdmnes"})
    rows = read_batch(tmp_path / "batch")
    assert [row["engine_seconds"] for row in rows] == ["0.250", "0.250"]
    assert [row["energy_reference"] for row in rows] == ["relative:fdmnes_edge"] * 2


# --- errors a user can fix: one line, exit 2 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch": 5}, "batch 5 lists no sites (batches: [0])"),
        # the CLI validates the config sections a job receives against the schema
        (
            {"engine": "vasp"},
            "config key 'spectra.engine': 'vasp' is not one of ['feff10', 'feff', 'fdmnes']",
        ),
        ({"spectra": {"mode": "xas"}}, "config key 'spectra.mode': 'xas' is not one of ['xanes', 'exafs']"),
        (
            {"spectra": {"feff_command": "feff"}, "engine": "feff"},
            "config key 'spectra.feff_command': 'feff' is not of type 'array'",
        ),
        (
            {"spectra": {"fdmnes": {"radius": 3.0, "radii": 2}}, "engine": "fdmnes"},
            "unknown settings ['radii']",
        ),
    ],
)
def test_spectra_run_errors_a_user_can_fix_are_one_line(copper, tmp_path, capsys, change, message):
    manifest, snapshots = copper
    args = spectra_run(manifest, snapshots, tmp_path / "b", tmp_path / "cache", **change)
    assert main(args) == 2
    assert message in error_line(capsys.readouterr().err)


def test_a_frame_missing_from_the_snapshots_is_a_user_error(copper, tmp_path, capsys):
    _, snapshots = copper
    manifest = write_manifest([SiteChoice("bulk", 3, 0, "Cu", 12, 0, 0)], tmp_path / "late.csv")
    assert main(spectra_run(manifest, snapshots, tmp_path / "b", tmp_path / "cache")) == 2
    assert f"frame 3 is not in {snapshots} (frames 0..0)" in error_line(capsys.readouterr().err)


def test_a_missing_manifest_is_a_user_error_naming_it(copper, tmp_path, capsys):
    _, snapshots = copper
    missing = tmp_path / "nowhere" / "sites.csv"
    assert main(spectra_run(missing, snapshots, tmp_path / "b", tmp_path / "cache")) == 2
    assert f"{missing}: no such file; give the site manifest" in error_line(capsys.readouterr().err)
