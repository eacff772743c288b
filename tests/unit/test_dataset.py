"""The dataset schema on write and read, and the zarr round trip on disk."""

import numpy as np
import pytest

from xasflow.dataset.assemble import EnergyGrid, to_edge_grid
from xasflow.dataset.schema import DatasetSchemaError, build_dataset, open_dataset, validate, write_dataset


def _dataset(n=4):
    energy = np.linspace(-10, 40, 21)
    r = np.linspace(1.5, 6, 10)
    rng = np.random.default_rng(0)
    return build_dataset(
        energy=energy,
        r=r,
        mu=rng.random((n, energy.size)),
        e0=np.full(n, 8980.0),
        coordination_number=np.arange(n, dtype=float) + 6,
        rdf=rng.random((n, r.size)),
        surface=np.array([1, 1, 0, 0][:n]),
        system=["a", "a", "b", "b"][:n],
        frame=np.zeros(n, int),
        site=np.arange(n),
        absorber=["Cu"] * n,
        attrs={"xasflow_version": "0", "config_hash": "abc", "provenance": {"feff": 1}},
    )


def test_round_trip_through_zarr_on_disk(tmp_path):
    dataset = _dataset()
    path = write_dataset(dataset, tmp_path / "spectra.zarr")
    assert (path / "zarr.json").is_file()
    back = open_dataset(path)
    np.testing.assert_allclose(back["mu"].values, dataset["mu"].values, rtol=1e-6)
    assert list(back["system"].values) == ["a", "a", "b", "b"]
    assert back["energy"].attrs["units"] == "eV"
    assert back.attrs["config_hash"] == "abc"
    # rewriting replaces the store rather than mixing old and new arrays
    write_dataset(_dataset(2), path)
    assert open_dataset(path).sizes["spectrum"] == 2


def test_schema_rejects_missing_variable_and_bad_grid():
    dataset = _dataset()
    with pytest.raises(DatasetSchemaError, match="'rdf' is missing"):
        validate(dataset.drop_vars("rdf"), "x.zarr")
    reversed_grid = dataset.assign_coords(energy=dataset["energy"].values[::-1])
    with pytest.raises(DatasetSchemaError, match="strictly increasing"):
        validate(reversed_grid)
    nan_mu = dataset.copy(deep=True)
    nan_mu["mu"][0, 0] = np.nan
    with pytest.raises(DatasetSchemaError, match="NaN"):
        validate(nan_mu)


def test_open_names_a_missing_or_foreign_store(tmp_path):
    with pytest.raises(DatasetSchemaError, match="does not exist"):
        open_dataset(tmp_path / "none.zarr")
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(DatasetSchemaError, match="junk.zarr"):
        open_dataset(tmp_path / "junk.zarr")


def test_edge_grid_interpolation():
    grid = EnergyGrid(-10, 40, 0.5).values
    assert grid[0] == -10 and grid[-1] == 40 and grid.size == 101
    energy = np.linspace(8960, 9060, 201)
    mu = energy - 8960
    np.testing.assert_allclose(to_edge_grid(energy, mu, 8980.0, grid), grid + 20)
    assert to_edge_grid(energy, mu, 9050.0, grid) is None


def test_half_step_energy_is_single_valued_where_the_derivative_maximum_is_not():
    from xasflow.experiment.alignment import half_step_energy

    energy = np.linspace(8960, 9040, 801)
    # a shoulder at 8982 eV and the main rise at 8990 eV with derivative maxima of equal height
    mu = 0.3 / (1 + np.exp(-(energy - 8982) / 0.6)) + 0.7 / (1 + np.exp(-(energy - 8990) / 1.4))
    # the shoulder is complete (0.3) there, so 0.7 * sigmoid = 0.2: x = 8990 + 1.4 ln(0.2 / 0.5)
    assert half_step_energy(energy, mu) == pytest.approx(8990 + 1.4 * np.log(0.4), abs=0.02)
    # a glitch far below the edge is ignored when the search is centred on the edge
    glitched = mu.copy()
    glitched[:5] = 0.9
    assert half_step_energy(energy, glitched, near=8986) == pytest.approx(8990 + 1.4 * np.log(0.4), abs=0.02)
    with pytest.raises(ValueError, match="does not rise through"):
        half_step_energy(energy, 0.3 * mu)
