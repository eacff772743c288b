"""Silent corruption is an error: damaged zarr stores and checkpoints are refused with one line.

Each test damages a file the way a disk, a copy or a user does (a flipped bit, a deleted chunk,
a rewritten value) and checks that reading it raises the project's error naming the file.
"""

from __future__ import annotations

import json
import random
import re
import shutil

import numpy as np
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


# --- checkpoints ----------------------------------------------------------------------------------


class ForeignObject:
    """Something only full unpickling (running code from the file) could rebuild."""


# ``checkpoint_path`` (a 3-epoch MLP on the synthetic Cu K dataset of test_models) is a fixture
# of tests/unit/conftest.py, shared with test_compatibility.


def _members(path):
    """(name, offset of the data, size) of each stored member of a checkpoint (a zip archive)."""
    import struct
    import zipfile

    raw = path.read_bytes()
    members = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name_length, extra_length = struct.unpack(
                "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
            )
            members.append(
                (info.filename, info.header_offset + 30 + name_length + extra_length, info.file_size)
            )
    return members


def _spectrum_file(folder, name="sample.dat"):
    """A measured-looking Cu K edge in two columns (energy in eV, mu)."""
    from test_dataset import _edge_spectrum

    energy, mu = _edge_spectrum(8979.0)
    path = folder / name
    np.savetxt(path, np.column_stack([energy, mu]), header="energy mu")
    return path


def test_eight_flipped_bytes_in_the_weights_are_refused_naming_the_file(checkpoint_path, tmp_path):
    from xasflow.inference.predict import load_predictor

    damaged = tmp_path / "model.ckpt"
    raw = bytearray(checkpoint_path.read_bytes())
    name, offset, size = max(
        (member for member in _members(checkpoint_path) if "/data/" in member[0]), key=lambda m: m[2]
    )
    for position in np.linspace(offset, offset + size - 1, 8).astype(int):
        raw[position] ^= 0x40
    damaged.write_bytes(bytes(raw))
    with pytest.raises(
        Exception, match=r"model\.ckpt: weights or hyperparameters do not match the checksum"
    ) as error:
        load_predictor(damaged)
    assert type(error.value).__name__ == "CheckpointError"


def test_flipped_bytes_anywhere_either_refuse_the_checkpoint_or_change_nothing(checkpoint_path, tmp_path):

    from xasflow.inference.predict import load_predictor

    mu = np.random.default_rng(0).random((3, 64))
    expected = load_predictor(checkpoint_path).predict(mu)
    good = checkpoint_path.read_bytes()
    rng = np.random.default_rng(5)
    refused = 0
    for trial in range(25):
        raw = bytearray(good)
        for position in rng.integers(0, len(raw), 8):
            raw[position] ^= 1 << int(rng.integers(8))
        damaged = tmp_path / f"damaged_{trial}.ckpt"
        damaged.write_bytes(bytes(raw))
        try:
            predicted = load_predictor(damaged).predict(mu)
        except Exception as error:  # noqa: BLE001 - every refusal must be the one-line user error
            assert type(error).__name__ == "CheckpointError", repr(error)
            assert str(damaged) in str(error) and "\n" not in str(error) and "weights_only" not in str(error)
            refused += 1
        else:
            for key, values in expected.items():
                np.testing.assert_array_equal(predicted[key], values)
    assert refused >= 20


def test_a_checkpoint_without_checksum_is_refused(checkpoint_path, tmp_path):
    import torch

    from xasflow.inference.predict import load_predictor

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    del checkpoint["xasflow_sha256"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(Exception, match=r"old\.ckpt: has no xasflow checksum"):
        load_predictor(tmp_path / "old.ckpt")


def _rewritten(checkpoint_path, path, change):
    """A copy of the checkpoint after ``change(checkpoint)``, with a valid checksum (as a tool or a
    person would make it): only the hyperparameter checks can refuse it."""
    import torch

    from xasflow.models import module

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    change(checkpoint)
    if hasattr(module, "checkpoint_checksum"):  # (xasflow before checksums read files unchecked)
        checkpoint["xasflow_sha256"] = module.checkpoint_checksum(
            checkpoint["state_dict"], checkpoint["hyper_parameters"]
        )
    torch.save(checkpoint, path)
    return path


def test_hyperparameters_asking_for_a_huge_network_are_refused_before_building_it(
    checkpoint_path, tmp_path, monkeypatch
):
    from xasflow.inference.predict import load_predictor
    from xasflow.models import module

    def huge(checkpoint):
        checkpoint["hyper_parameters"]["params"]["hidden_sizes"] = [60000, 60000]

    path = _rewritten(checkpoint_path, tmp_path / "huge.ckpt", huge)
    built = []

    def refuse_to_build(self, *args, **kwargs):
        built.append(kwargs)
        raise AssertionError("the network was built before its size was checked")

    monkeypatch.setattr(module.SpectrumRegressor, "__init__", refuse_to_build)
    with pytest.raises(
        Exception,
        match=r"huge\.ckpt: .*network of 3,607,620,061 weights \(mlp\), above the limit of 50,000,000",
    ):
        load_predictor(path)
    assert not built


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["hyper_parameters"]["params"].update(architecture="transformer"), "architecture"),
        (lambda c: c["hyper_parameters"].update(energy=c["hyper_parameters"]["energy"][:-1]), "shape"),
        (lambda c: c["hyper_parameters"]["params"].update(energy_min=0.0, energy_max=10.0), "model window"),
        (lambda c: c["hyper_parameters"].update(ood_reference_count=10**9), "out-of-distribution reference"),
        (lambda c: c["hyper_parameters"].update(r=list(range(200_000))), "valid: 2..100000"),
    ],
    ids=["architecture", "energy_length", "window", "ood_count", "r_length"],
)
def test_inconsistent_hyperparameters_are_one_line_refusals(checkpoint_path, tmp_path, change, message):
    from xasflow.inference.predict import load_predictor

    path = _rewritten(checkpoint_path, tmp_path / "odd.ckpt", change)
    with pytest.raises(Exception, match=message) as error:
        load_predictor(path)
    assert type(error.value).__name__ == "CheckpointError"
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_checkpoint_that_needs_unpickling_is_refused_without_advising_weights_only_false(tmp_path, capsys):
    import torch

    from xasflow.cli import main

    torch.save({"state_dict": {}, "custom": ForeignObject()}, tmp_path / "foreign.ckpt")
    code = main(
        [
            "predict",
            str(_spectrum_file(tmp_path)),
            "--checkpoint",
            str(tmp_path / "foreign.ckpt"),
            "--out",
            str(tmp_path / "p.csv"),
        ]
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("xasflow: error")]
    assert code == 2 and len(lines) == 1
    assert "foreign.ckpt: not a readable xasflow model checkpoint" in lines[0]
    assert "weights_only" not in err and "can still be loaded" not in err


def test_a_prediction_that_is_not_a_number_is_refused_naming_spectrum_and_model(
    checkpoint_path, tmp_path, capsys
):
    from xasflow.cli import main

    def diverged(checkpoint):
        checkpoint["state_dict"]["network.members.0.heads.heads.coordination_number.bias"][:] = float("nan")

    model = _rewritten(checkpoint_path, tmp_path / "diverged.ckpt", diverged)
    spectrum = _spectrum_file(tmp_path)
    out = tmp_path / "predictions.csv"
    code = main(["predict", str(spectrum), "--checkpoint", str(model), "--out", str(out)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("xasflow: error")]
    assert code == 2 and len(lines) == 1
    assert str(spectrum) in lines[0] and "diverged.ckpt" in lines[0] and "NaN or inf" in lines[0]
    assert not out.exists() and not (tmp_path / "predictions_rdf.csv").exists()


def test_the_model_column_is_never_empty(checkpoint_path, tmp_path, monkeypatch):
    import csv

    from xasflow.inference.run import predict_files

    monkeypatch.chdir(tmp_path)
    shutil.copy(checkpoint_path, tmp_path / "model.ckpt")
    shutil.copy(checkpoint_path, tmp_path / "cu_foil_mlp.ckpt")
    spectrum = _spectrum_file(tmp_path)
    rows = predict_files(["model.ckpt", "cu_foil_mlp.ckpt", checkpoint_path], [spectrum], "predictions.csv")
    assert [row["model"] for row in rows] == ["model", "cu_foil_mlp", "mlp"]
    with open(tmp_path / "predictions.csv", newline="") as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["model", "cu_foil_mlp", "mlp"]
    assert (tmp_path / "predictions_rdf.csv").stat().st_size > 0


def test_training_logs_one_line_per_epoch(checkpoint_path, tmp_path, caplog):
    import logging

    from test_models import _params, _synthetic_dataset

    from xasflow.models import train_model

    dataset = write_dataset(_synthetic_dataset(), tmp_path / "spectra.zarr")
    with caplog.at_level(logging.INFO, logger="xasflow.models.train"):
        train_model(dataset, _params(max_epochs=2), tmp_path / "mlp")
    epochs = [record.getMessage() for record in caplog.records if ": epoch " in record.getMessage()]
    assert len(epochs) == 2
    assert epochs[0].startswith("mlp: epoch 1/2, train loss ") and "val loss " in epochs[0]
    assert epochs[1].endswith("about 0 s left")


# --- the dataset rule under Snakemake -------------------------------------------------------------

SMALL_STUDY = """
study: integrity
absorber: Cu
labels: {n_r: 8}
systems:
  bulk_a:
    {kind: bulk, element: Cu, supercell: [2, 2, 2], temperature: 300, n_sites: 2,
     potential: {style: eam, file: Cu_u3.eam}}
  np_b:
    {kind: nanoparticle, element: Cu, shape: cuboctahedron, shells: 2, temperature: 300, n_sites: 2,
     potential: {style: eam, file: Cu_u3.eam}}
sampling: {seed: 7, strategy: uniform}
spectra: {batch_size: 2}
dataset: {energy_min: -12.0, energy_max: 45.0, energy_step: 1.5}
training: {models: {mlp: {architecture: mlp}}}
inference: {spectra: []}
"""


def _results_tree(workdir):
    """Every file the dataset rule and the rules before it write, made without MD or FEFF,
    older files first (so that Snakemake sees nothing to redo upstream)."""
    import os

    from test_dataset import _write_batch, _write_labels

    from xasflow.structures.sampling import SiteChoice, write_manifest

    results = workdir / "results"
    made = []
    for system in ("bulk_a", "np_b"):
        structures = results / "structures" / system
        structures.mkdir(parents=True)
        for name in ("snapshots.extxyz", "initial.extxyz"):
            (structures / name).write_text("")
        (structures / "md.json").write_text(json.dumps({"potential_sha256": "0"}))
        made += [structures / "snapshots.extxyz", structures / "initial.extxyz", structures / "md.json"]
        made.append(_write_labels(structures / "labels.npz", 2, 8))
        (structures / "labels.json").write_text("{}")
        made.append(structures / "labels.json")
        sites = [SiteChoice(system, 0, site, "Cu", 12, 0, 0) for site in range(2)]
        made.append(write_manifest(sites, results / "sites" / f"{system}.csv"))
        batch = _write_batch(results / "spectra" / system / "batch_000", sites)
        made += [batch / "results.csv", batch / "spectra.npz"]
    for age, path in enumerate(made):
        os.utime(path, (1_700_000_000 + age, 1_700_000_000 + age))
    return results


@pytest.mark.slow
def test_a_failed_rebuild_under_snakemake_keeps_the_last_good_store(tmp_path, run_snakemake):
    def _snakemake(workdir, *arguments):
        return run_snakemake(workdir, workdir / "study.yaml", *arguments, cores=1, timeout=600)

    (tmp_path / "study.yaml").write_text(SMALL_STUDY)
    results = _results_tree(tmp_path)
    store = results / "dataset" / "spectra.zarr"
    target = "dataset"  # the rule: its outputs differ between versions
    first = _snakemake(tmp_path, target)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {path.relative_to(store): path.read_bytes() for path in store.rglob("*") if path.is_file()}
    assert open_dataset(store).sizes["spectrum"] == 4

    # a damaged spectra.npz is a declared input: its change alone reruns the dataset job
    spectra = results / "spectra" / "np_b" / "batch_000" / "spectra.npz"
    data = bytearray(spectra.read_bytes())
    data[len(data) // 3] ^= 0x10
    spectra.write_bytes(bytes(data))
    planned = _snakemake(tmp_path, target, "-n")
    assert planned.returncode == 0 and re.search(r"^dataset\s+1$", planned.stdout, re.M), planned.stdout[
        -2000:
    ]

    failed = _snakemake(tmp_path, target)
    assert failed.returncode != 0
    log = (results / "logs" / "dataset.log").read_text()
    assert "np_b/batch_000: results.csv or spectra.npz is missing or damaged" in log
    # Snakemake removed the declared outputs of the failed job; the store it never declared is intact
    assert not (results / "dataset" / "spectra.zarr.json").exists()
    after = {path.relative_to(store): path.read_bytes() for path in store.rglob("*") if path.is_file()}
    assert after == before
    assert open_dataset(store).sizes["spectrum"] == 4
