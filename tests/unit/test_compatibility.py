"""A model refuses spectra it was not trained to read: another element or edge, or a scan that
does not cover its energy grid. Real measurements from shared data, one line per refusal."""

from __future__ import annotations

import logging
import pickle
from dataclasses import replace

import numpy as np
import pytest

from xasflow.experiment import read_spectrum
from xasflow.experiment.alignment import normalize_xanes
from xasflow.inference.compatibility import (
    EDGE_ENERGY_TOLERANCE_EV,
    IncompatibleSpectrumError,
    check_compatible,
)

CU_K = {"absorber": "Cu", "edge": "K"}
NI_K = {"absorber": "Ni", "edge": "K"}
PT_L3 = {"absorber": "Pt", "edge": "L3"}
#: the default study's model window: -12..+20 eV relative to E0, 0.75 eV steps
MODEL_ENERGY = np.arange(-12.0, 20.0 + 1e-9, 0.75)


def _normalized(shared_data, name, **read_options):
    return normalize_xanes(read_spectrum(shared_data / "experimental" / name, **read_options))


def _refusal(spectrum, card, energy=MODEL_ENERGY, name="cnn") -> str:
    with pytest.raises(IncompatibleSpectrumError) as error:
        check_compatible(spectrum, card, energy, name)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{spectrum.path}: ")
    return message


@pytest.fixture(scope="module")
def cu_foil(shared_data):
    return _normalized(shared_data, "cu_metal_rt.xdi")


@pytest.fixture(scope="module")
def cu_without_element(shared_data, tmp_path_factory):
    """cu_10k.xmu with its header removed: two columns, nothing naming the element or edge."""
    source = shared_data / "experimental" / "cu_10k.xmu"
    lines = [line for line in source.read_text().splitlines() if not line.lstrip().startswith("#")]
    path = tmp_path_factory.mktemp("headerless") / "cu_10k_columns.dat"
    path.write_text("\n".join(lines) + "\n")
    return normalize_xanes(read_spectrum(path))


def test_a_cu_foil_passes_a_cu_k_model(cu_foil):
    assert (cu_foil.element, cu_foil.edge) == ("Cu", "K")
    check_compatible(cu_foil, CU_K, MODEL_ENERGY, "cnn")


def test_an_fe_foil_is_refused_by_a_cu_k_model_naming_file_and_both_elements(shared_data):
    iron = _normalized(shared_data, "fe_metal_rt.xdi")
    message = _refusal(iron, CU_K)
    assert "fe_metal_rt.xdi" in message
    assert "is a Fe K-edge spectrum" in message and "model cnn reads Cu K-edge spectra" in message


def test_a_cu_file_without_element_is_checked_by_its_edge_energy(cu_without_element):
    assert cu_without_element.element is None and cu_without_element.edge is None
    check_compatible(cu_without_element, CU_K, MODEL_ENERGY, "cnn")
    message = _refusal(cu_without_element, NI_K, name="ni_model")
    # Cu K (8979 eV) is 646 eV above Ni K (8333 eV)
    assert f"E0 = {cu_without_element.e0:.1f} eV" in message and "Ni K edge (8333.0 eV" in message
    assert "model ni_model reads Ni K-edge spectra" in message and "looks like Cu K" in message


def test_a_headerless_ge_column_file_is_refused_by_a_cu_k_model(shared_data):
    # columns only; column 7 is the transmission mu of a Ge K edge (11103 eV)
    germanium = _normalized(shared_data, "generic_columns_no_header.dat", mu_column=7)
    assert germanium.element is None
    message = _refusal(germanium, CU_K)
    assert "Cu K edge (8979.0 eV" in message and "looks like Ge K" in message


def test_measured_foils_lie_well_inside_the_edge_energy_tolerance(shared_data):
    """The tolerance's comment quotes these offsets; a K edge of the neighbouring element would
    be ~600 eV away."""
    import xraydb

    for name, element, edge in [
        ("cu_metal_rt.xdi", "Cu", "K"),
        ("ni_metal_rt.xdi", "Ni", "K"),
        ("fe2o3_rt.xdi", "Fe", "K"),
        ("pt_metal_rt.xdi", "Pt", "L3"),
    ]:
        e0 = _normalized(shared_data, name).e0
        assert abs(e0 - xraydb.xray_edge(element, edge).energy) < EDGE_ENERGY_TOLERANCE_EV / 4, name


def test_a_pt_l3_foil_is_read_by_a_pt_l3_model_only(shared_data):
    platinum = _normalized(shared_data, "pt_metal_rt.xdi")
    assert (platinum.element, platinum.edge) == ("Pt", "L3")
    check_compatible(platinum, PT_L3, MODEL_ENERGY, "pt_cnn")
    assert "is a Pt L3-edge spectrum" in _refusal(platinum, CU_K)
    message = _refusal(platinum, {"absorber": "Pt", "edge": "K"})
    assert "is a Pt L3-edge spectrum" in message and "reads Pt K-edge spectra" in message


def test_a_card_listing_several_absorbers_reads_each_of_them(shared_data, cu_foil):
    card = {"absorber": "Cu,Ni", "edge": "K"}
    check_compatible(cu_foil, card, MODEL_ENERGY, "cnn")
    check_compatible(_normalized(shared_data, "ni_metal_rt.xdi"), card, MODEL_ENERGY, "cnn")
    assert "reads Cu or Ni K-edge spectra" in _refusal(_normalized(shared_data, "fe_metal_rt.xdi"), card)


def test_a_scan_stopping_before_the_end_of_the_model_grid_is_refused_with_both_energies(cu_foil):
    inside = cu_foil.energy <= cu_foil.e0 + 10.0
    truncated = replace(cu_foil, energy=cu_foil.energy[inside], norm=cu_foil.norm[inside])
    grid = np.arange(-20.0, 20.0 + 1e-9, 1.0)
    message = _refusal(truncated, CU_K, energy=grid)
    assert f"the data end at {truncated.energy[-1]:.1f} eV" in message
    assert f"reads up to {cu_foil.e0 + 20.0:.1f} eV (E0 +20.0 eV)" in message


def test_a_scan_starting_above_the_model_grid_is_refused(cu_foil):
    inside = cu_foil.energy >= cu_foil.e0 - 5.0
    late = replace(cu_foil, energy=cu_foil.energy[inside], norm=cu_foil.norm[inside])
    message = _refusal(late, CU_K, energy=np.arange(-20.0, 20.0 + 1e-9, 1.0))
    assert f"the data start at {late.energy[0]:.1f} eV" in message
    assert f"reads from {cu_foil.e0 - 20.0:.1f} eV (E0 -20.0 eV)" in message


def test_a_scan_short_by_less_than_one_grid_step_passes(cu_foil):
    last = float(cu_foil.energy[-1] - cu_foil.e0)
    check_compatible(cu_foil, CU_K, np.arange(-20.0, last + 0.5, 0.75), "cnn")  # 0.5 eV beyond
    _refusal(cu_foil, CU_K, energy=np.arange(-20.0, last + 1.5, 0.75))  # 1.5 eV beyond


def test_an_old_card_without_absorber_skips_the_element_check_with_a_warning(shared_data, caplog):
    iron = _normalized(shared_data, "fe_metal_rt.xdi")
    with caplog.at_level(logging.WARNING, logger="xasflow.inference.compatibility"):
        check_compatible(iron, {}, MODEL_ENERGY, "old_model")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "old_model" in warnings[0] and "no absorber and edge" in warnings[0]


def test_the_refusal_survives_pickling():
    error = IncompatibleSpectrumError("a.xdi", "is a Fe K-edge spectrum")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == "a.xdi: is a Fe K-edge spectrum" and copy.path == "a.xdi"


# --- end to end: `xasflow predict` with a trained checkpoint ------------------------------------


def test_predict_refuses_the_fe_foil_before_writing_anything(checkpoint_path, shared_data, tmp_path, capsys):
    from xasflow.cli import main

    copper = shared_data / "experimental" / "cu_metal_rt.xdi"
    iron = shared_data / "experimental" / "fe_metal_rt.xdi"
    out = tmp_path / "predictions.csv"
    code = main(["predict", str(copper), str(iron), "--checkpoint", str(checkpoint_path), "--out", str(out)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("xasflow: error")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert f"{iron}: is a Fe K-edge spectrum" in errors[0]
    assert "model mlp reads Cu K-edge spectra" in errors[0]
    assert not out.exists() and not (tmp_path / "predictions_rdf.csv").exists()


def test_predict_files_accepts_the_cu_foil(checkpoint_path, shared_data, tmp_path):
    from xasflow.inference.run import predict_files

    out = tmp_path / "predictions.csv"
    rows = predict_files([checkpoint_path], [shared_data / "experimental" / "cu_metal_rt.xdi"], out)
    assert [row["model"] for row in rows] == ["mlp"] and out.exists()
