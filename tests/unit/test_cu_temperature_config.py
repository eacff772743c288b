"""The Cu temperature-series example runs its MD at effective temperatures from the correlated
Debye model (config/examples/cu_temperature.yaml); the mapping lives in its benchmark script."""

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def series():
    path = ROOT / "benchmarks" / "cu_temperature_series.py"
    spec = importlib.util.spec_from_file_location("cu_temperature_series", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_correlated_debye_sigma2_of_cu_first_shell(series):
    # zero-point motion leaves about 0.003 A^2 at 10 K; about 0.009 A^2 at room temperature
    assert series.correlated_debye_sigma2(10.0) == pytest.approx(0.0031, abs=0.0002)
    assert series.correlated_debye_sigma2(300.0) == pytest.approx(0.0089, abs=0.0004)


def test_effective_temperature_is_classical_at_high_temperature(series):
    assert series.effective_temperature(10.0) > 100.0  # zero point: far above the nominal 10 K
    assert series.effective_temperature(2000.0) == pytest.approx(2000.0, rel=0.01)
    ladder = [series.effective_temperature(t) for t in (10.0, 50.0, 150.0, 300.0)]
    assert ladder == sorted(ladder)


def test_example_runs_its_md_at_the_effective_temperatures(series):
    config = yaml.safe_load((ROOT / "config" / "examples" / "cu_temperature.yaml").read_text())
    ladder = series.check_config_temperatures(config)  # raises if a temperature is off by 0.5 K
    assert [nominal for nominal, _ in ladder.values()] == [10, 30, 50, 80, 100, 150, 200, 250, 300, 350]
