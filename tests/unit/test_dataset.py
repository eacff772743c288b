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


# --- assembling batches into the dataset ----------------------------------------------------------

STUDY_GRID = {"energy_min": -12.0, "energy_max": 45.0, "energy_step": 1.5}


def _edge_spectrum(e0: float) -> tuple[np.ndarray, np.ndarray]:
    """A FEFF-like K edge: an arctan step at ``e0`` (eV) with a white line and EXAFS wiggles."""
    energy = np.linspace(e0 - 30.0, e0 + 70.0, 201)
    relative = energy - e0
    mu = 0.5 + np.arctan(relative / 1.5) / np.pi
    mu = mu + 0.4 * np.exp(-(((relative - 6.0) / 4.0) ** 2)) + 0.03 * np.sin(relative / 4.0) * (relative > 10)
    return energy, mu


def _write_batch(folder, sites, failed=()):
    """results.csv and spectra.npz of one batch as ``run_batch`` writes them; ``failed`` sites
    carry a FEFF failure."""
    import csv

    from xasflow.spectra.batch import RESULT_COLUMNS

    folder.mkdir(parents=True)
    rows, arrays = [], {}
    for number, choice in enumerate(sites):
        ok = choice.site not in failed
        rows.append(
            {
                "system": choice.system,
                "frame": choice.frame,
                "site": choice.site,
                "element": choice.element,
                "status": "ok" if ok else "failed",
                "reason": "" if ok else "FEFF found no potential",
                "engine": "feff10",
                "energy_reference": "absolute",
                "cache_hit": 0,
                "cache_key": "",
                "engine_seconds": "1.0",
                "wall_seconds": "1.0",
                "directory": f"{choice.frame:03d}_{choice.site:04d}_Cu",
            }
        )
        if ok:
            arrays[f"energy_{number}"], arrays[f"mu_{number}"] = _edge_spectrum(8979.0 + 0.2 * choice.site)
    with open(folder / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    np.savez_compressed(folder / "spectra.npz", **arrays)
    return folder


def _write_labels(path, n_atoms, n_r):
    """A labels.npz of a one-element (Cu) system of ``n_atoms`` atoms in one frame."""
    labels = {
        "species": np.array(["Cu"]),
        "r": np.linspace(1.5, 6.0, n_r),
        "shell_edges": np.array([3.0, 4.0]),
        "frame": np.zeros(n_atoms, int),
        "site": np.arange(n_atoms),
        "element": np.array(["Cu"] * n_atoms),
        "coordination_number": 12.0 - np.arange(n_atoms),
        "rdf": np.ones((n_atoms, n_r)),
        "surface": (np.arange(n_atoms) > 2).astype(int),
        "partial_cn": (12.0 - np.arange(n_atoms))[:, None],
        "local_composition": np.ones((n_atoms, 1)),
        "partial_rdf": np.ones((n_atoms, 1, n_r)),
        "shell_cn": np.ones((n_atoms, 1)),
        "valence": np.full(n_atoms, -1),
        "grain_boundary": np.zeros(n_atoms, int),
        "structure_type": np.full(n_atoms, -1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **labels)
    return path


def _study(tmp_path, n_sites=5, failed=(), **dataset):
    """Arguments of ``assemble`` for one system of ``n_sites`` sites in one batch."""
    import json

    from xasflow.structures.sampling import SiteChoice, write_manifest

    sites = [SiteChoice("np", 0, site, "Cu", 12 - site, int(site > 2), 0) for site in range(n_sites)]
    inputs = tmp_path / f"inputs_{len(failed)}_{n_sites}"
    manifest = write_manifest(sites, inputs / "sites.csv")
    batch = _write_batch(inputs / "batch_000", sites, failed)
    n_r = 8
    _write_labels(inputs / "labels.npz", n_sites, n_r)
    (inputs / "md.json").write_text(json.dumps({"potential_sha256": "0"}))
    config = {
        "study": "test",
        "absorber": "Cu",
        "systems": {"np": {"kind": "nanoparticle"}},
        "spectra": {"engine": "feff10"},
        "labels": {"n_r": n_r},
        "sampling": {"seed": 0},
        "dataset": {**STUDY_GRID, **dataset},
    }
    return {
        "manifests": [manifest],
        "batch_dirs": [batch],
        "labels_paths": {"np": inputs / "labels.npz"},
        "md_provenance_paths": {"np": inputs / "md.json"},
        "config": config,
        "out_path": tmp_path / "dataset" / "spectra.zarr",
        "failures_path": tmp_path / "dataset" / "failures.csv",
        "summary_path": tmp_path / "dataset" / "summary.json",
    }


def _files(folder):
    return {
        path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def test_assemble_writes_store_manifest_failures_and_summary(tmp_path):
    import json

    from xasflow.dataset.assemble import assemble

    arguments = _study(tmp_path, failed=(4,))  # 1 of 5 failed: 20 %, at the default limit
    summary = assemble(**arguments)
    assert (summary["requested"], summary["succeeded"], summary["failed"]) == (5, 4, 1)
    dataset = open_dataset(arguments["out_path"])
    assert dataset.sizes["spectrum"] == 4 and dataset.sizes["energy"] == 39
    manifest = json.loads((tmp_path / "dataset" / "spectra.zarr.json").read_text())
    assert manifest["n_spectrum"] == 4 and manifest["config_hash"] == dataset.attrs["config_hash"]
    assert "FEFF found no potential" in arguments["failures_path"].read_text()
    assert json.loads(arguments["summary_path"].read_text()) == summary


def test_too_many_failures_stop_the_dataset_and_keep_the_previous_store(tmp_path):
    from xasflow.dataset.assemble import assemble

    good = _study(tmp_path)
    assemble(**good)
    before = _files(good["out_path"])
    bad = _study(tmp_path, failed=(1, 2))  # 2 of 5 failed: 40 %, above the default 20 %
    bad.update({key: good[key] for key in ("out_path", "failures_path", "summary_path")})
    with pytest.raises(
        Exception, match=r"2 of 5 spectra failed \(40\.0%\), above dataset\.max_failed_fraction 0\.2:"
    ) as error:
        assemble(**bad)
    assert str(good["failures_path"]) in str(error.value)
    assert type(error.value).__name__ == "UserError"
    # the user can read why, and the last good dataset is still there, unchanged and readable
    assert _failed_sites(good["failures_path"]) == [("np", "1"), ("np", "2")]
    assert _files(good["out_path"]) == before
    assert open_dataset(good["out_path"]).sizes["spectrum"] == 5


def _failed_sites(path):
    import csv

    with open(path, newline="") as handle:
        return [(row["system"], row["site"]) for row in csv.DictReader(handle)]


def test_max_failed_fraction_must_be_a_share(tmp_path):
    from xasflow.dataset.assemble import DatasetParams

    assert DatasetParams.from_config(STUDY_GRID).max_failed_fraction == 0.2
    with pytest.raises(
        Exception, match=r"config key 'dataset\.max_failed_fraction': 1\.5 is greater than the maximum of 1"
    ):
        DatasetParams.from_config({**STUDY_GRID, "max_failed_fraction": 1.5})


def test_a_damaged_batch_file_is_one_line_naming_the_batch(tmp_path, capsys):
    import json

    from xasflow.cli import main

    arguments = _study(tmp_path)
    spectra = arguments["batch_dirs"][0] / "spectra.npz"
    data = bytearray(spectra.read_bytes())
    data[len(data) // 3] ^= 0x10  # a flipped bit inside a compressed array
    spectra.write_bytes(bytes(data))
    command = [
        "dataset",
        "--config-json",
        json.dumps(arguments["config"]),
        "--manifests",
        *map(str, arguments["manifests"]),
        "--batches",
        *map(str, arguments["batch_dirs"]),
        "--labels",
        f"np={arguments['labels_paths']['np']}",
        "--md",
        f"np={arguments['md_provenance_paths']['np']}",
        "--out",
        str(arguments["out_path"]),
        "--failures",
        str(arguments["failures_path"]),
        "--summary",
        str(arguments["summary_path"]),
    ]
    assert main(command) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("xasflow: error")]
    assert len(lines) == 1 and "batch_000: results.csv or spectra.npz is missing or damaged" in lines[0]
    assert not arguments["out_path"].exists()


def test_assemble_removes_what_an_interrupted_write_left(tmp_path):
    from xasflow.dataset.assemble import assemble

    arguments = _study(tmp_path)
    staging = arguments["out_path"].parent / ".spectra.zarr.staging.abc123"
    (staging / "mu").mkdir(parents=True)
    (staging / "mu" / "zarr.json").write_text("{}")
    assemble(**arguments)
    assert not staging.exists()
    assert sorted(path.name for path in arguments["out_path"].parent.iterdir()) == [
        "failures.csv",
        "spectra.zarr",
        "spectra.zarr.json",
        "summary.json",
    ]


def test_a_store_retired_by_a_killed_write_is_restored_not_removed(tmp_path):
    """A kill between the two renames of a store swap leaves only the retired (last good) copy."""
    import os

    from xasflow.dataset.assemble import assemble

    good = _study(tmp_path)
    assemble(**good)
    before = _files(good["out_path"])
    retired = good["out_path"].parent / ".spectra.zarr.retired.k1ll3d"
    retired.mkdir()
    os.replace(good["out_path"], retired / "spectra.zarr")
    spectra = good["batch_dirs"][0] / "spectra.npz"  # and this rebuild stops on a damaged batch
    spectra.write_bytes(spectra.read_bytes()[:-40])
    with pytest.raises(Exception, match="not a zip file"):
        assemble(**good)
    assert _files(good["out_path"]) == before
    assert not retired.exists()
