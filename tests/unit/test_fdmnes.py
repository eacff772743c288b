"""FDMNES adapter: input files, runner (with stand-in executables), parser on real FDMNES output."""

import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

from xasflow.spectra.fdmnes import (
    CONVOLUTED_OUTPUT,
    FdmnesParams,
    read_output,
    run,
    run_site,
    write_inputs,
)
from xasflow.spectra.feff import Cluster

RAW = "FDMNES_2022_Mo2C_out.dat"
CONVOLUTED = "FDMNES_2022_Mo2C_out_conv.dat"
DATA_ROW = re.compile(r"^\s*-?\d+\.\d+\s+-?\d+\.\d+E[+-]\d+\s*$")


def copper_cluster() -> Cluster:
    """Cu absorber, its 12 fcc nearest neighbours (2.556 Angstrom) and one second neighbour."""
    half = 3.615 / 2
    neighbours = [(sign_a * half, sign_b * half, 0.0) for sign_a in (1, -1) for sign_b in (1, -1)] + [
        (sign_a * half, 0.0, sign_b * half) for sign_a in (1, -1) for sign_b in (1, -1)
    ]
    neighbours += [(0.0, sign_a * half, sign_b * half) for sign_a in (1, -1) for sign_b in (1, -1)]
    positions = np.array([(0.0, 0.0, 0.0), *neighbours, (3.615, 0.0, 0.0)])
    return Cluster(symbols=("Cu",) * len(positions), positions=positions)


def molecule_atoms(text: str) -> list[list[float]]:
    lines = text.splitlines()
    start = lines.index("Molecule") + 2
    end = lines.index("", start)
    return [[float(value) for value in line.split()] for line in lines[start:end]]


def block(text: str, keyword: str) -> str:
    lines = text.splitlines()
    return lines[lines.index(keyword) + 1].strip()


# --- parser on real FDMNES 2022 output (Mo K edge of Mo2C) ---------------------------------------


@pytest.mark.parametrize(
    ("name", "convoluted", "first_energy"), [(RAW, False, -25.0), (CONVOLUTED, True, -40.0)]
)
def test_read_output_parses_real_fdmnes_files(shared_data, name, convoluted, first_energy):
    path = shared_data / "fdmnes-output" / name
    spectrum = read_output(path)
    data_lines = [line for line in path.read_text().splitlines() if DATA_ROW.match(line)]
    assert len(spectrum.energy) == len(spectrum.mu) == len(data_lines) > 500
    assert spectrum.columns == ("Energy", "<xanes>")
    assert spectrum.convoluted is convoluted
    assert spectrum.edge_energy == pytest.approx(20000.0)  # Mo K edge, eV
    assert np.all(np.diff(spectrum.energy) > 0)
    assert spectrum.energy[0] == pytest.approx(first_energy)
    assert spectrum.energy[-1] == pytest.approx(119.8)
    last = data_lines[-1].split()
    assert spectrum.mu[-1] == pytest.approx(float(last[1]))
    assert np.all(np.isfinite(spectrum.mu)) and np.all(spectrum.mu > 0)
    # Mbarn, not normalized: the post-edge of Mo2C is a few 1e-2, the pre-edge far lower.
    assert 0.01 < spectrum.mu[-1] < 1.0
    assert spectrum.mu[spectrum.energy < -20].mean() < 0.2 * spectrum.mu[spectrum.energy > 40].mean()


def test_convoluted_spectrum_is_smoother_than_raw(shared_data):
    raw = read_output(shared_data / "fdmnes-output" / RAW)
    convoluted = read_output(shared_data / "fdmnes-output" / CONVOLUTED)
    shared = convoluted.energy >= raw.energy[0]  # the convolution adds pre-edge points below -25 eV
    assert np.allclose(convoluted.energy[shared], raw.energy)

    def roughness(mu):
        return np.mean(np.abs(np.diff(mu / mu.max(), 2)))

    assert roughness(convoluted.mu[shared]) < 0.1 * roughness(raw.mu)
    # The broadening removes the sharp raw peaks: the raw maximum is well above the convoluted one.
    assert raw.mu.max() > 1.5 * convoluted.mu.max()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no column names"),
        ("# FDMNES\n    Energy    <xanes>\n", "no data rows"),
        ("    Energy    <xanes>\n   -1.0  abc\n", "not numeric"),
        ("    Energy    <xanes>\n   -1.0  1.0E-02  3.0\n", "has 3 values"),
        ("    Energy    <xanes>\n   -1.0  NaN\n    0.0  1.0E-02\n", "non-finite"),
        ("    Energy    <xanes>\n    1.0  1.0E-02\n    0.0  1.0E-02\n", "increase strictly"),
        ("some text\nmore text\n", "should name the columns"),
    ],
)
def test_read_output_rejects_malformed_files(tmp_path, content, message):
    path = tmp_path / "broken_conv.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as caught:
        read_output(path)
    assert str(path) in str(caught.value)


def test_read_output_names_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file") as caught:
        read_output(tmp_path / "absent.txt")
    assert "absent.txt" in str(caught.value)


def test_read_output_reads_fortran_three_digit_exponents_and_picks_xanes(tmp_path):
    path = tmp_path / "job.txt"
    path.write_text(
        " 8979.000   29  1  1  0.0 = E_edge, Z, n_edge, j_edge, Abs_before_edge\n"
        "    Energy    dipole    <xanes>\n"
        "   -1.000  1.0000000-100  2.0E-03\n"
        "    0.000  1.0E-02  3.0E-03\n"
    )
    spectrum = read_output(path)
    assert spectrum.columns == ("Energy", "dipole", "<xanes>")
    assert np.allclose(spectrum.mu, [2e-3, 3e-3])
    assert spectrum.table.shape == (2, 3) and spectrum.table[0, 1] == pytest.approx(1e-100)
    assert spectrum.edge_energy == pytest.approx(8979.0)
    assert not spectrum.convoluted


# --- parameters and input files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"edge": "M5"}, "edge"),
        ({"method": "fem"}, "method"),
        ({"radius": 0.0}, "radius"),
        ({"energy_min": 60.0, "energy_max": 10.0}, "energy_max"),
        ({"energy_step": -0.5}, "energy_step"),
        ({"command": "fdmnes"}, "command"),
        ({"command": ()}, "command"),
    ],
)
def test_params_reject_invalid_values_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        FdmnesParams(**changes)


def test_params_from_config_turns_a_command_list_into_a_tuple():
    params = FdmnesParams.from_config({"command": ["srun", "fdmnes"], "radius": 5.0, "fms_radius": 4.0})
    assert params.command == ("srun", "fdmnes") and params.radius == 5.0
    hash(params)  # frozen and hashable


def test_write_inputs_green(tmp_path):
    cluster = copper_cluster()
    params = FdmnesParams(radius=4.5, energy_min=-12.0, energy_max=55.0, energy_step=0.25)
    job_input = write_inputs(cluster, params, tmp_path / "site" / "000_0001_Cu", "Cu bulk site 1")
    directory = job_input.parent
    assert directory.is_dir() and job_input.name == "fdmnes_in.txt"
    assert (directory / "fdmfile.txt").read_text().split() == ["1", "fdmnes_in.txt"]
    text = job_input.read_text()
    assert [float(value) for value in block(text, "Range").split()] == [-12.0, 0.25, 55.0]
    assert float(block(text, "Radius")) == 4.5
    assert block(text, "Edge") == "K"
    assert block(text, "Absorber") == "1"
    assert block(text, "Filout") == "fdmnes_out"
    assert "Green" in text.splitlines()
    assert "Convolution" in text.splitlines()
    assert "SCF" not in text.splitlines() and "Quadrupole" not in text.splitlines()
    assert text.splitlines()[-1] == "End"
    assert [float(value) for value in block(text, "Molecule").split()] == [1, 1, 1, 90, 90, 90]
    atoms = np.array(molecule_atoms(text))
    assert atoms.shape == (len(cluster.symbols), 4)
    assert np.all(atoms[:, 0] == 29)
    assert np.allclose(atoms[0, 1:], 0.0)  # absorber first, at the origin
    assert np.allclose(atoms[:, 1:], cluster.positions, atol=1e-6)
    recorded = json.loads((directory / "params.json").read_text())
    assert recorded["fdmnes"]["radius"] == 4.5 and recorded["n_atoms_cluster"] == 14


def test_write_inputs_fdm_with_options(tmp_path):
    params = FdmnesParams(method="fdm", edge="L3", scf=True, quadrupole=True, convolution=False)
    text = write_inputs(copper_cluster(), params, tmp_path, "Cu L3").read_text()
    lines = text.splitlines()
    assert "Green" not in lines
    assert "Convolution" not in lines
    assert "SCF" in lines and "Quadrupole" in lines
    assert block(text, "Edge") == "L3"


def test_write_inputs_rejects_a_malformed_cluster(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_inputs(Cluster(("Cu", "Cu"), np.zeros((3, 3))), FdmnesParams(), tmp_path, "bad")
    with pytest.raises(ValueError, match="Xx"):
        write_inputs(Cluster(("Cu", "Xx"), np.zeros((2, 3))), FdmnesParams(), tmp_path, "bad")


# --- runner and run_site with stand-in executables ------------------------------------------------------


def test_a_missing_executable_stops_the_job_instead_of_failing_the_site(tmp_path):
    params = FdmnesParams(command=("/nonexistent/fdmnes",))
    with pytest.raises(Exception, match="cannot start FDMNES '/nonexistent/fdmnes'") as raised:
        run_site(copper_cluster(), params, tmp_path / "site", "Cu")
    assert raised.type.__name__ == "EnvironmentFailure"  # a UserError: the job exits 2
    log = tmp_path / "site" / "fdmnes.log"
    assert log.is_file() and "No such file or directory" in log.read_text()


def test_run_site_reports_the_exit_code(tmp_path):
    result = run_site(copper_cluster(), FdmnesParams(command=("false",)), tmp_path / "site", "Cu")
    assert result.status == "failed"
    assert result.reason == "FDMNES failed: exit code 1"
    assert (tmp_path / "site" / "fdmnes.log").is_file()


def test_run_site_reports_a_timeout(tmp_path):
    params = FdmnesParams(command=("sleep", "20"), time_limit=0.3)
    result = run_site(copper_cluster(), params, tmp_path / "site", "Cu")
    assert result.status == "failed" and result.reason == "FDMNES timed out after 0.3 s"
    assert result.wall_seconds < 10


def test_run_site_reports_a_missing_spectrum(tmp_path):
    result = run_site(copper_cluster(), FdmnesParams(command=("true",)), tmp_path / "site", "Cu")
    assert result.status == "failed" and result.reason.startswith("FDMNES wrote no fdmnes_out_conv.txt")


def fake_fdmnes(tmp_path, spectrum) -> tuple[str, ...]:
    """A stand-in FDMNES that checks its cwd like the real one and writes a stored spectrum."""
    script = tmp_path / "fake_fdmnes.py"
    script.write_text(
        "import pathlib, shutil, sys\n"
        "job = pathlib.Path('fdmfile.txt').read_text().split()[1]\n"  # relative to the cwd
        "assert pathlib.Path(job).is_file(), job\n"
        f"shutil.copy({str(spectrum)!r}, {CONVOLUTED_OUTPUT!r})\n"
        "print('fake FDMNES done')\n"
    )
    return (sys.executable, str(script))


def test_run_site_normalizes_a_real_convoluted_spectrum(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a different process cwd must not matter
    command = fake_fdmnes(tmp_path, shared_data / "fdmnes-output" / CONVOLUTED)
    directory = tmp_path / "batch" / "000_0003_Mo"
    (directory).mkdir(parents=True)
    (directory / CONVOLUTED_OUTPUT).write_text("stale output of an earlier run\n")
    result = run_site(copper_cluster(), FdmnesParams(command=command), directory, "Mo2C site 3")
    assert result.status == "ok", result.reason
    assert result.energy[0] == pytest.approx(-40.0)  # relative to the edge, as FDMNES wrote it
    assert result.energy_reference == "relative:fdmnes_edge"  # and the result says so
    assert 0 < result.engine_seconds <= result.wall_seconds
    tail = result.energy >= result.energy[-1] - 0.2 * (result.energy[-1] - result.energy[0])
    assert result.mu[tail].mean() == pytest.approx(1.0)
    assert "fake FDMNES done" in (directory / "fdmnes.log").read_text()


def test_run_writes_the_log_in_the_given_directory(tmp_path):
    directory = tmp_path / "site"
    write_inputs(copper_cluster(), FdmnesParams(), directory, "Cu")
    outcome = run(directory, FdmnesParams(command=("sh", "-c", "pwd; echo oops >&2; exit 3")))
    assert outcome.returncode == 3 and not outcome.timed_out and outcome.seconds >= 0
    log = outcome.log_path.read_text()
    assert str(directory.resolve()) in log and "oops" in log


def test_run_needs_the_file_list(tmp_path):
    with pytest.raises(ValueError, match="fdmfile.txt"):
        run(tmp_path, FdmnesParams())


# --- a real FDMNES, where one is installed -------------------------------------------------------------


@pytest.mark.external
def test_real_fdmnes_copper_k_edge(tmp_path):
    executable = os.environ.get("XASFLOW_FDMNES") or shutil.which("fdmnes")
    if not executable:
        pytest.skip("no FDMNES executable: set XASFLOW_FDMNES=/path/to/fdmnes")
    params = FdmnesParams(
        radius=3.0, energy_min=-10.0, energy_max=60.0, energy_step=1.0, command=(executable,)
    )
    result = run_site(copper_cluster(), params, tmp_path / "cu", "Cu fcc K edge")
    assert result.status == "ok", result.reason
    assert result.energy[0] < 0 < result.energy[-1]
    spectrum = read_output(tmp_path / "cu" / "fdmnes_out_conv.txt")
    assert spectrum.convoluted and np.all(spectrum.mu > 0)
