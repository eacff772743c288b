"""Spectrum engines (embedded FEFF10, FEFF executables) and the content-addressed cache."""

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from xasflow.spectra.cache import SpectrumCache, cache_key
from xasflow.spectra.engines import Feff10Engine, FeffExecutableEngine, build_engine, run_site_cached
from xasflow.spectra.feff import FeffParams, check_edge_position, cut_cluster, read_xmu
from xasflow.structures.builders import BulkSpec, build_bulk

FAST = FeffParams(cluster_radius=5.0, fms_radius=4.0, energy_min=-20.0, energy_max=60.0, energy_step=2.0)
FEFF8L = Path(__import__("larch").__file__).parent / "bin" / "linux64" / "feff8l.sh"


@pytest.fixture(scope="module")
def copper_cluster():
    return cut_cluster(build_bulk(BulkSpec("Cu", "fcc", 3.615, (3, 3, 3))), 0, FAST.cluster_radius)


def test_cache_key_ignores_rounding_noise_but_not_real_changes(copper_cluster):
    engine = Feff10Engine(FAST)
    parameters = engine.key_parameters()
    key = cache_key(copper_cluster.symbols, copper_cluster.positions, "feff10", "v", parameters)
    jitter = copper_cluster.positions + 1e-5
    assert cache_key(copper_cluster.symbols, jitter, "feff10", "v", parameters) == key
    moved = copper_cluster.positions.copy()
    moved[1, 0] += 0.01
    assert cache_key(copper_cluster.symbols, moved, "feff10", "v", parameters) != key
    assert cache_key(copper_cluster.symbols, copper_cluster.positions, "feff10", "v2", parameters) != key
    other = Feff10Engine(replace(FAST, fms_radius=4.5)).key_parameters()
    assert cache_key(copper_cluster.symbols, copper_cluster.positions, "feff10", "v", other) != key
    # how long we are willing to wait does not change the spectrum
    assert Feff10Engine(replace(FAST, time_limit=5.0)).key_parameters() == parameters


def test_concurrent_writers_leave_one_complete_entry(tmp_path):
    cache = SpectrumCache(tmp_path / "cache")
    source = tmp_path / "site"
    source.mkdir()
    (source / "xmu.dat").write_text("1 2 3\n")
    key = "ab" + "0" * 62
    energy, mu = np.linspace(0, 1, 50), np.linspace(1, 2, 50)
    errors = []

    def store():
        try:
            cache.put(key, energy, mu, source, {"engine": "test"})
        except Exception as error:  # a writer must never fail because another won the race
            errors.append(error)

    threads = [threading.Thread(target=store) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(path.name for path in (tmp_path / "cache" / "ab").iterdir()) == [key]  # no staging left
    cached = cache.get(key)
    np.testing.assert_array_equal(cached.mu, mu)
    assert (cached.directory / "xmu.dat").read_text() == "1 2 3\n"


def test_a_damaged_entry_is_recomputed_not_trusted(tmp_path):
    cache = SpectrumCache(tmp_path)
    entry = tmp_path / "cd" / ("cd" + "1" * 62)
    entry.mkdir(parents=True)
    (entry / "spectrum.npz").write_bytes(b"not a numpy file")
    (entry / "entry.json").write_text("{}")
    assert cache.get("cd" + "1" * 62) is None
    assert cache.get("ef" + "2" * 62) is None


@pytest.mark.slow
def test_second_run_of_the_same_cluster_is_served_from_the_cache(copper_cluster, tmp_path):
    engine = Feff10Engine(FAST)
    cache = SpectrumCache(tmp_path / "cache")
    first = run_site_cached(engine, cache, copper_cluster, tmp_path / "a", "first")
    assert first.result.status == "ok" and not first.cache_hit and first.result.engine_seconds > 0
    second = run_site_cached(engine, cache, copper_cluster, tmp_path / "b", "second")
    assert second.cache_hit and second.cache_key == first.cache_key
    assert second.result.engine_seconds == 0
    np.testing.assert_array_equal(second.result.mu, first.result.mu)
    assert (tmp_path / "b" / "feff.inp").read_text() == (tmp_path / "a" / "feff.inp").read_text()
    # the cached spectrum still passes the tabulated-edge check, a wrong element does not
    energy, _, mu = read_xmu(tmp_path / "b" / "xmu.dat")
    assert check_edge_position(energy, mu, "Cu", "K", 30.0) == ""
    assert "tabulated Zn K edge" in check_edge_position(energy, mu, "Zn", "K", 30.0)


@pytest.mark.slow
def test_feff10_exafs_by_path_expansion(copper_cluster, tmp_path):
    engine = Feff10Engine(replace(FAST, mode="exafs", exafs_kmax=12.0))
    outcome = run_site_cached(engine, None, copper_cluster, tmp_path / "exafs", "Cu EXAFS")
    assert outcome.result.status == "ok", outcome.result.reason
    chi = np.loadtxt(tmp_path / "exafs" / "chi.dat", comments="#")
    assert chi[:, 0].max() == pytest.approx(12.0, abs=0.5)  # k in 1/A
    assert np.abs(chi[:, 1]).max() > 0.01
    # the dataset keeps FEFF's normalized mu from k = 0 (the first point of its EXAFS grid): a
    # Larch pre-edge normalization has nothing below the edge to fit
    from xasflow.dataset.assemble import normalize_spectra

    xmu = np.loadtxt(tmp_path / "exafs" / "xmu.dat", comments="#")
    assert xmu[0, 2] == pytest.approx(0.0)  # k of FEFF's first EXAFS point
    row = {"status": "ok", "energy": outcome.result.energy, "mu": outcome.result.mu, "directory": "exafs"}
    grid = np.arange(0.0, 400.0, 1.0)
    spectra, failures = normalize_spectra([dict(row)], grid, mode="exafs")
    assert not failures and spectra[0]["e0"] == pytest.approx(xmu[0, 0], abs=0.01)
    assert np.all(np.isfinite(spectra[0]["norm_mu"])) and spectra[0]["norm_mu"][100:].mean() == pytest.approx(
        1.0, abs=0.1
    )
    _, refused = normalize_spectra([dict(row, energy_reference="absolute")], grid - 16.0, mode="xanes")
    assert "below the edge" in refused[0]["reason"] or "pre-edge" in refused[0]["reason"]


@pytest.mark.slow
@pytest.mark.skipif(not FEFF8L.exists(), reason="xraylarch's FEFF 8.5L modules are not installed")
def test_feff85l_executable_modules_compute_exafs(copper_cluster, tmp_path):
    params = replace(FAST, mode="exafs", dialect="feff8", exafs_kmax=12.0)
    engine = FeffExecutableEngine(params, ("bash", str(FEFF8L)))
    outcome = run_site_cached(engine, None, copper_cluster, tmp_path / "feff8l", "Cu EXAFS feff8l")
    assert outcome.result.status == "ok", outcome.result.reason
    inp = (tmp_path / "feff8l" / "feff.inp").read_text()
    assert "HOLE 1 1.0" in inp and "COREHOLE" not in inp and "FMS" not in inp
    assert (tmp_path / "feff8l" / "feff.log").stat().st_size > 0
    assert "feff8l.sh sha256:" in engine.version()


def test_a_failing_executable_is_recorded_and_a_missing_one_stops_the_job(copper_cluster, tmp_path):
    failing = FeffExecutableEngine(FAST, ("false",)).run_site(copper_cluster, tmp_path / "f", "f")
    assert failing.status == "failed" and failing.reason == "FEFF executable failed: exit code 1"
    assert (tmp_path / "f" / "feff.inp").exists() and (tmp_path / "f" / "feff.log").exists()
    # a missing program is the machine's failure, not the site's: nothing is recorded
    missing = FeffExecutableEngine(FAST, ("/nonexistent/feff",))
    with pytest.raises(Exception, match="cannot start FEFF '/nonexistent/feff'") as raised:
        run_site_cached(missing, SpectrumCache(tmp_path / "cache"), copper_cluster, tmp_path / "m", "m")
    assert raised.type.__name__ == "EnvironmentFailure"  # a UserError: the job exits 2
    assert not (tmp_path / "cache").exists()


def test_build_engine_from_config():
    from xasflow.config import validate_config

    config = validate_config(
        {
            "systems": {
                "c": {
                    "kind": "bulk",
                    "element": "Cu",
                    "temperature": 300,
                    "potential": {"style": "eam", "file": "Cu_u3.eam"},
                }
            },
            "spectra": {"engine": "feff", "feff_command": ["feff"], "mode": "exafs"},
            "dataset": {"energy_min": 0.0, "energy_max": 400.0},  # EXAFS mode: from E0 up
        }
    )
    engine = build_engine(config["spectra"])
    assert isinstance(engine, FeffExecutableEngine) and engine.command == ("feff",)
    assert engine.params.mode == "exafs"
    assert isinstance(build_engine(config["spectra"], "feff10"), Feff10Engine)
    with pytest.raises(ValueError, match="mode"):
        replace(FAST, mode="xas")


def test_spectra_generate_and_parse_commands(copper_cluster, tmp_path, capsys):
    import ase.io

    from xasflow.cli import main

    config = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    structure = tmp_path / "cu.extxyz"
    ase.io.write(structure, build_bulk(BulkSpec("Cu", "fcc", 3.615, (3, 3, 3))), format="extxyz")
    args = ["spectra", "generate", "--config", config, "--structure", str(structure)]
    assert main([*args, "--absorber-index", "5", "--out-dir", str(tmp_path / "site")]) == 0
    text = (tmp_path / "site" / "feff.inp").read_text()
    assert "FMS 4.0 0" in text and text.count(" Cu ") > 40
    assert main([*args, "--absorber-index", "500", "--out-dir", str(tmp_path / "bad")]) == 2
    assert "absorber index 500 is not in 0..107" in capsys.readouterr().err
    # parse reads what an engine wrote: FEFF's xmu.dat columns omega and mu
    rows = "# omega e k mu mu0 chi\n8970 -10 0 0.01 0.01 0\n9000 20 2 1.1 1 0.1\n"
    (tmp_path / "site" / "xmu.dat").write_text(rows)
    out = tmp_path / "spectrum.csv"
    assert main(["spectra", "parse", "--config", config, str(tmp_path / "site"), "--out", str(out)]) == 0
    np.testing.assert_allclose(np.loadtxt(out, delimiter=",", skiprows=1), [[8970, 0.01], [9000, 1.1]])
