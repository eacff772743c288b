"""Silent corruption is an error: damaged zarr stores and checkpoints are refused with one line.

Each test damages a file the way a disk, a copy or a user does (a flipped bit, a deleted chunk,
a rewritten value) and checks that reading it raises the project's error naming the file.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest
import zarr

from xasflow.dataset.schema import DatasetSchemaError, open_dataset, write_dataset


def _small_dataset(n=4):
    from test_dataset import _dataset  # tests/unit is on sys.path under pytest

    return _dataset(n)


# --- zarr store -----------------------------------------------------------------------------------


def test_a_value_rewritten_on_disk_is_refused_naming_store_and_variable(tmp_path):
    path = write_dataset(_small_dataset(), tmp_path / "spectra.zarr")
    # a valid, finite value where another was: the schema alone cannot see it
    zarr.open_array(path / "mu", mode="r+")[1, 3] = 2.5e38
    with pytest.raises(DatasetSchemaError, match=r"spectra\.zarr: variable 'mu' does not match the checksum"):
        open_dataset(path)


def test_a_rewritten_label_is_refused(tmp_path):
    path = write_dataset(_small_dataset(), tmp_path / "spectra.zarr")
    zarr.open_array(path / "coordination_number", mode="r+")[0] = 7.0
    with pytest.raises(DatasetSchemaError, match="'coordination_number'"):
        open_dataset(path)


def test_a_deleted_chunk_is_reported_as_a_missing_chunk_not_as_nan(tmp_path):
    path = write_dataset(_small_dataset(), tmp_path / "spectra.zarr")
    chunks = [chunk for chunk in (path / "mu").rglob("*") if chunk.is_file() and chunk.name != "zarr.json"]
    assert chunks
    chunks[0].unlink()
    with pytest.raises(DatasetSchemaError, match=r"variable 'mu' has 1 of 1 chunk files missing") as error:
        open_dataset(path)
    assert "NaN" not in str(error.value)


def test_an_all_zero_variable_still_has_its_chunk_on_disk(tmp_path):
    dataset = _small_dataset()
    dataset["surface"][:] = 0  # the fill value: zarr skips such chunks unless told otherwise
    path = write_dataset(dataset, tmp_path / "spectra.zarr")
    assert open_dataset(path)["surface"].values.tolist() == [0, 0, 0, 0]
    assert [chunk for chunk in (path / "surface").rglob("*") if chunk.name != "zarr.json" and chunk.is_file()]


def test_single_bit_flips_anywhere_in_the_store_never_change_what_is_read(tmp_path):
    """Every flipped bit is either refused or leaves every value, dim and attribute as written."""
    good = write_dataset(_small_dataset(), tmp_path / "good.zarr")
    reference = open_dataset(good)
    files = sorted(path for path in good.rglob("*") if path.is_file())
    rng = random.Random(10)
    outcomes = {"refused": 0, "unchanged": 0}
    for trial in range(60):
        damaged = tmp_path / f"damaged_{trial}.zarr"
        shutil.copytree(good, damaged)
        victim = damaged / rng.choice(files).relative_to(good)
        data = bytearray(victim.read_bytes())
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        victim.write_bytes(bytes(data))
        try:
            read = open_dataset(damaged)
        except DatasetSchemaError as error:
            assert str(damaged) in str(error)
            outcomes["refused"] += 1
        else:
            assert read.identical(reference), f"silently changed by a flip in {victim}"
            outcomes["unchanged"] += 1
        shutil.rmtree(damaged)
    assert outcomes["refused"] > 40, outcomes


def test_the_manifest_beside_the_store_holds_its_checksums(tmp_path):
    from xasflow.dataset.schema import manifest_path

    path = write_dataset(_small_dataset(), tmp_path / "spectra.zarr")
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest_path(path).name == "spectra.zarr.json"
    assert manifest["store"] == "spectra.zarr" and manifest["n_spectrum"] == 4
    recorded = json.loads(zarr.open_group(path, mode="r").attrs["checksums"])
    assert manifest["checksums"] == recorded
    assert set(recorded["variables"]) >= {"mu", "energy", "system", "coordination_number"}


def test_a_failed_write_keeps_the_previous_store(tmp_path, monkeypatch):
    path = write_dataset(_small_dataset(), tmp_path / "spectra.zarr")
    before = {file.relative_to(path): file.read_bytes() for file in path.rglob("*") if file.is_file()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    import xarray as xr

    monkeypatch.setattr(xr.Dataset, "to_zarr", disk_full)
    with pytest.raises(OSError):
        write_dataset(_small_dataset(2), path)
    after = {file.relative_to(path): file.read_bytes() for file in path.rglob("*") if file.is_file()}
    assert after == before
    assert open_dataset(path).sizes["spectrum"] == 4
    assert not [leftover for leftover in tmp_path.iterdir() if leftover.name.startswith(".")]
