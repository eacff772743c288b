"""`xasflow predict` over a folder: refused files listed, the rest predicted, one figure per spectrum."""

from __future__ import annotations

import csv
import logging
import shutil

import matplotlib.image
import numpy as np
import pytest

from xasflow.cli import main
from xasflow.experiment.folders import expand_spectrum_arguments
from xasflow.inference.spectrum_figures import figure_names, nearest_training_spectra
from xasflow.models.ood import nearest_distance, nearest_references

READABLE = ("cu_metal_rt.xdi", "cu_10k.xmu")  # Cu K foils the test model (Cu K, -20..60 eV) reads
BROKEN = "broken.dat"
BROKEN_TEXT = "# energy mu\n8900.0 0.1\n8901.0 0.2\n8902.0 overflow\n8903.0 0.4\n"


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def folder(tmp_path, shared_data):
    """Two readable shared Cu foils (links), one malformed file, and a note that is no spectrum."""
    folder = tmp_path / "beamtime"
    folder.mkdir()
    for name in READABLE:
        (folder / name).symlink_to(shared_data / "experimental" / name)
    (folder / BROKEN).write_text(BROKEN_TEXT)
    (folder / "notes.md").write_text("sample changer positions\n")
    return folder


@pytest.fixture
def two_models(checkpoint_path, tmp_path):
    """The session's tiny Cu K model under two names (model column: mlp, second)."""
    second = tmp_path / "second" / "model.ckpt"
    second.parent.mkdir()
    shutil.copy(checkpoint_path, second)
    return [checkpoint_path, second]


def test_a_folder_predicts_what_it_can_and_lists_what_it_refused(folder, two_models, tmp_path, caplog):
    out = tmp_path / "out" / "predictions.csv"
    figures = tmp_path / "out" / "spectra"
    arguments = ["predict", str(folder), "--out", str(out), "--spectrum-figures", str(figures)]
    for checkpoint in two_models:
        arguments += ["--checkpoint", str(checkpoint)]
    with caplog.at_level(logging.WARNING, logger="xasflow"):
        code = main(arguments)
    assert code == 1  # something was refused: the scientist must notice

    rows = _rows(out)
    assert sorted((row["model"], row["spectrum"]) for row in rows) == sorted(
        (model, str(folder / name)) for model in ("mlp", "second") for name in READABLE
    )
    assert all(float(row["predicted_coordination_number"]) > 0 for row in rows)
    assert (tmp_path / "out" / "predictions_rdf.csv").exists()

    refused = _rows(tmp_path / "out" / "predictions_refused.csv")
    assert len(refused) == 1
    assert refused[0]["file"] == str(folder / BROKEN) and refused[0]["model"] == ""
    assert "line 4" in refused[0]["reason"] and "overflow" in refused[0]["reason"]
    warnings = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    assert any(str(folder / BROKEN) in message and "\n" not in message for message in warnings)

    pngs = sorted(figures.iterdir())
    assert [path.name for path in pngs] == sorted(f"{name}.png" for name in READABLE)
    for path in pngs:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(path).shape
        assert width == 1000 and height == round((0.6 + 3.4 * 2) * 100)  # a row of panels per model


def test_without_refusals_a_batch_exits_0_with_an_empty_refused_table(folder, checkpoint_path, tmp_path):
    (folder / BROKEN).unlink()
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(folder), "--checkpoint", str(checkpoint_path), "--out", str(out)]) == 0
    assert len(_rows(out)) == len(READABLE)
    assert _rows(tmp_path / "predictions_refused.csv") == []


def test_named_files_stay_strict_unless_told_to_keep_going(
    folder, checkpoint_path, shared_data, tmp_path, capsys
):
    iron = shared_data / "experimental" / "fe_metal_rt.xdi"
    copper = folder / READABLE[0]
    out = tmp_path / "predictions.csv"
    strict = ["predict", str(copper), str(iron), "--checkpoint", str(checkpoint_path), "--out", str(out)]
    # figures do not change that: the first refusal ends the run before anything is written
    code = main([*strict, "--spectrum-figures", str(tmp_path / "figures")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("xasflow: error")]
    assert code == 2 and len(errors) == 1 and f"{iron}: is a Fe K-edge spectrum" in errors[0]
    assert not out.exists() and not (tmp_path / "figures").exists()

    assert main([*strict, "--keep-going"]) == 1
    assert [row["spectrum"] for row in _rows(out)] == [str(copper)]
    refused = _rows(tmp_path / "predictions_refused.csv")
    assert [(row["file"], row["model"]) for row in refused] == [(str(iron), "mlp")]
    assert refused[0]["reason"].startswith("is a Fe K-edge spectrum")


def test_a_folder_is_its_spectrum_files_sorted_without_the_outputs_written_into_it(folder):
    (folder / "predictions.csv").write_text("spectrum,model\n")
    (folder / ".hidden.xdi").write_text("")
    (folder / "nested").mkdir()
    (folder / "nested" / "more.xdi").write_text("")
    references = expand_spectrum_arguments(
        [folder, folder / READABLE[0]], exclude=[folder / "predictions.csv"]
    )
    assert references == [str(folder / name) for name in sorted([*READABLE, BROKEN])]


def test_an_empty_folder_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(
        ["predict", str(tmp_path / "empty"), "--checkpoint", "unused.ckpt", "--out", str(tmp_path / "p.csv")]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith(f"xasflow: error: {tmp_path / 'empty'}: holds no spectrum files")


def test_figure_names_are_safe_and_unique():
    labels = ["a/cu foil.xdi", "b/cu foil.xdi", "B/CU FOIL.XDI", "PtData.prj:10wt% 20K", "../.."]
    assert figure_names(labels) == [
        "cu_foil.xdi.png",
        "cu_foil.xdi_2.png",
        "CU_FOIL.XDI_3.png",  # a case-insensitive file system would merge it with the first
        "PtData.prj_10wt_20K.png",
        "spectrum.png",
    ]


def test_the_nearest_training_input_of_a_training_spectrum_is_itself(checkpoint_path):
    from xasflow.inference.predict import load_predictor
    from xasflow.models.data import SpectrumDataModule

    model = load_predictor(checkpoint_path).model
    datamodule = SpectrumDataModule(checkpoint_path.parents[1] / "spectra.zarr", model.params)
    datamodule.setup("fit")
    training = datamodule.arrays("train").mu
    for row in (0, len(training) // 2, len(training) - 1):
        neighbours = nearest_training_spectra(model, training[row])
        assert neighbours.index[0] == row  # the references start with the training spectra
        assert neighbours.distance[0] < 1e-5 and np.all(np.diff(neighbours.distance) >= 0)
        assert len(neighbours.index) == 3
        np.testing.assert_allclose(neighbours.spectra[0], training[row], atol=1e-5)  # un-standardized


def test_the_nearest_references_agree_with_the_out_of_distribution_distance():
    rng = np.random.default_rng(3)
    references, query = rng.normal(size=(40, 12)), rng.normal(size=12)
    index, distance = nearest_references(references, query, 5)
    assert distance[0] == pytest.approx(nearest_distance(references, query)[0])
    assert np.all(np.diff(distance) >= 0) and len(set(index)) == 5
    everything = np.abs(references - query).max(axis=1)
    assert distance[-1] == pytest.approx(np.sort(everything)[4])


def test_named_files_get_their_figures_too(folder, checkpoint_path, tmp_path):
    from xasflow.inference.run import predict_files

    spectra = [folder / name for name in READABLE]
    predict_files([checkpoint_path], spectra, tmp_path / "predictions.csv", figure_dir=tmp_path / "figures")
    names = sorted(path.name for path in (tmp_path / "figures").iterdir())
    assert names == sorted(f"{name}.png" for name in READABLE)
    height, width, _ = matplotlib.image.imread(tmp_path / "figures" / names[0]).shape
    assert (height, width) == (round((0.6 + 3.4) * 100), 1000)  # one model: one row of panels
