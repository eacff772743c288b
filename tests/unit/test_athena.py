"""Athena projects (.prj) as users have them: the Larch example projects of shared data, read
group by group, selected by label, and refused in one line when damaged."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from xasflow.experiment import SpectrumReadError, read_spectra, read_spectrum
from xasflow.experiment.alignment import normalize_xanes
from xasflow.experiment.readers import split_group_selection

PT_LABELS = ["10wt% 20K", "10wt% 150K", "10wt% 300K", "20wt% 20K", "20wt% 150K", "20wt% 300K"]
PT_L3_EV = 11564.0  # tabulated Pt L3 edge (xraydb)
AU_L3_EV = 11919.0  # tabulated Au L3 edge (xraydb)


def _one_line_refusal(reference, **options) -> str:
    with pytest.raises(SpectrumReadError) as caught:
        read_spectra(reference, **options)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def pt_project(shared_data):
    return shared_data / "experimental" / "PtData.prj"


@pytest.fixture(scope="module")
def pt_groups(pt_project):
    return read_spectra(pt_project)


def test_ptdata_reads_into_six_labelled_pt_l3_groups(pt_project, pt_groups):
    assert [spectrum.metadata["group"] for spectrum in pt_groups] == PT_LABELS
    assert [spectrum.source for spectrum in pt_groups] == [f"{pt_project}:{label}" for label in PT_LABELS]
    assert {(spectrum.element, spectrum.edge) for spectrum in pt_groups} == {("Pt", "L3")}
    # the 300 K scans are shorter than the 20 K and 150 K ones
    assert [spectrum.energy.size for spectrum in pt_groups] == [518, 518, 428, 518, 518, 428]
    for spectrum in pt_groups:
        assert spectrum.metadata["format"] == "athena" and spectrum.kind == "measured"
        assert 11300 < spectrum.energy[0] < PT_L3_EV - 150 and spectrum.energy[-1] > PT_L3_EV + 1200


def test_ptdata_groups_carry_their_stored_energy_shift(pt_project, pt_groups):
    # Athena stores the calibration shift (bkg_eshift) beside the raw energies; 10wt% 20K: -0.68 eV
    first = pt_groups[0]
    assert first.metadata["energy_shift_eV"] == pytest.approx(-0.68)
    assert first.energy[0] == pytest.approx(11359.82488 - 0.68)


def test_ptdata_groups_normalize_at_the_pt_l3_edge(pt_groups):
    for spectrum in pt_groups:
        normalized = normalize_xanes(spectrum)
        assert abs(normalized.e0 - PT_L3_EV) < 5.0, spectrum.source
        assert np.isfinite(normalized.edge_step) and 0.25 < normalized.edge_step < 0.7, spectrum.source
        # the Pt L3 white line: 1.25-1.34 edge steps, 5-6 eV above E0
        near_edge = (normalized.energy > normalized.e0) & (normalized.energy < normalized.e0 + 15)
        assert 1.2 < normalized.norm[near_edge].max() < 1.45, spectrum.source


def test_the_300k_groups_have_the_smallest_edge_step_of_their_loading(pt_groups):
    steps = {spectrum.metadata["group"]: normalize_xanes(spectrum).edge_step for spectrum in pt_groups}
    assert steps["10wt% 300K"] < min(steps["10wt% 20K"], steps["10wt% 150K"])
    assert steps["20wt% 300K"] < min(steps["20wt% 20K"], steps["20wt% 150K"])


def test_au_project_reads_fourteen_au_l3_groups(shared_data):
    groups = read_spectra(shared_data / "experimental" / "Au.prj")
    assert len(groups) == 14
    assert groups[0].metadata["group"] == "Au foil" and groups[-1].metadata["group"] == "Au thiomalate aq"
    assert {(spectrum.element, spectrum.edge) for spectrum in groups} == {("Au", "L3")}
    foil = normalize_xanes(groups[0])
    assert abs(foil.e0 - AU_L3_EV) < 5.0 and 0.5 < foil.edge_step < 0.8


def test_aunano_reads_its_three_scans_and_their_merge(shared_data):
    labels = [
        spectrum.metadata["group"] for spectrum in read_spectra(shared_data / "experimental" / "Aunano.prj")
    ]
    assert labels == ["Au foil", "swtp18b_85K.001", "swtp18b_85K.002", "swtp18b_85K.003", "merge"]


def test_a_label_selects_one_group(pt_project, pt_groups):
    (selected,) = read_spectra(f"{pt_project}:20wt% 150K")
    assert selected.source == f"{pt_project}:20wt% 150K"
    np.testing.assert_array_equal(selected.mu, pt_groups[4].mu)
    assert read_spectrum(f"{pt_project}:20wt% 150K").energy.size == 518
    # case and surrounding spaces are forgiven when the match is unique
    assert read_spectrum(f"{pt_project}: 20WT% 150k ").metadata["group"] == "20wt% 150K"


def test_an_unknown_label_is_refused_with_the_labels_listed(pt_project):
    message = _one_line_refusal(f"{pt_project}:30wt% 20K")
    assert message.startswith(f"{pt_project}: has no group labelled '30wt% 20K'")
    assert all(repr(label) in message for label in PT_LABELS)


def test_read_spectrum_needs_a_label_for_a_project_of_several_groups(shared_data):
    path = shared_data / "experimental" / "Au.prj"
    with pytest.raises(SpectrumReadError) as caught:
        read_spectrum(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: is an Athena project of 14 groups; choose one as '{path}:<label>'")
    assert "'Au foil'" in message and "\n" not in message


def test_a_truncated_project_is_refused_in_one_line_naming_it(pt_project, tmp_path):
    truncated = tmp_path / "PtData_cut.prj"
    truncated.write_bytes(pt_project.read_bytes()[:30000])
    message = _one_line_refusal(truncated)
    assert message.startswith(f"{truncated}: is a damaged gzip file")


def test_a_project_cut_inside_a_group_is_refused(pt_project, tmp_path):
    # intact gzip, but the text stops in the middle of a group's arrays
    text = gzip.decompress(pt_project.read_bytes())
    cut = tmp_path / "PtData_half.prj"
    cut.write_bytes(gzip.compress(text[:40000]))
    message = _one_line_refusal(cut)
    assert message.startswith(f"{cut}: is not a readable Athena project (Larch ")


def test_an_empty_project_and_a_gzipped_non_project_are_refused(pt_project, tmp_path):
    empty = tmp_path / "empty.prj"
    empty.write_bytes(b"")
    assert _one_line_refusal(empty) == f"{empty}: file is empty"
    header_only = tmp_path / "header_only.prj"
    header_only.write_bytes(gzip.compress(gzip.decompress(pt_project.read_bytes())[:200]))
    assert _one_line_refusal(header_only) == f"{header_only}: is an Athena project that holds no groups"
    not_a_project = tmp_path / "spectrum.xdi.gz"
    not_a_project.write_bytes(gzip.compress(b"# XDI/1.0\n"))
    assert "is gzip-compressed but is no Athena project" in _one_line_refusal(not_a_project)


def test_selections_are_refused_where_they_cannot_apply(shared_data, pt_project):
    foil = shared_data / "experimental" / "cu_metal_rt.xdi"
    message = _one_line_refusal(f"{foil}:Cu")
    assert (
        message.startswith(f"{foil}: group 'Cu' selected") and "only Athena projects hold groups" in message
    )
    message = _one_line_refusal(pt_project, mu_column=2)
    assert message.startswith(f"{pt_project}: mu_column=2 applies to XDI and column files")
    missing = shared_data / "experimental" / "missing.prj"
    assert _one_line_refusal(f"{missing}:10wt% 20K") == f"{missing}: file does not exist"


def test_split_group_selection(tmp_path):
    odd = tmp_path / "scan:1.xdi"  # an existing file whose name holds the separator is that file
    odd.write_text("x")
    assert split_group_selection(odd) == (odd, None)
    project = tmp_path / "p.prj"
    project.write_bytes(b"")
    assert split_group_selection(f"{project}:a:b") == (project, "a:b")
    assert split_group_selection(f"{tmp_path}/gone.PRJ:x") == (tmp_path / "gone.PRJ", "x")
    assert split_group_selection(f"{tmp_path}/gone.xdi:x") == (tmp_path / "gone.xdi:x", None)


# --- prediction: a project is one row per group -------------------------------------------------


@pytest.fixture(scope="module")
def pt_checkpoint(tmp_path_factory):
    """model.ckpt of the conftest's 3-epoch MLP, trained on the same synthetic spectra labelled
    as Pt L3-edge spectra (absorber Pt, edge L3 in the model card)."""
    import json

    import torch
    from test_models import _params, _synthetic_dataset

    from xasflow.dataset.schema import write_dataset
    from xasflow.models import train_model

    synthetic = _synthetic_dataset()
    synthetic = synthetic.assign_coords(absorber=("spectrum", ["Pt"] * synthetic.sizes["spectrum"]))
    synthetic.attrs["provenance"] = json.dumps({"source": "synthetic", "spectra": {"edge": "L3"}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("pt_checkpoint")
        dataset = write_dataset(synthetic, folder / "spectra.zarr")
        train_model(dataset, _params(max_epochs=3), folder / "pt_mlp")
    finally:
        torch.set_num_threads(threads)
    return folder / "pt_mlp" / "model.ckpt"


def test_a_cu_k_model_refuses_the_pt_groups_in_one_line(checkpoint_path, pt_project, tmp_path, capsys):
    from xasflow.cli import main

    out = tmp_path / "predictions.csv"
    code = main(["predict", str(pt_project), "--checkpoint", str(checkpoint_path), "--out", str(out)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("xasflow: error")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert errors[0] == (
        f"xasflow: error: {pt_project}:10wt% 20K: is a Pt L3-edge spectrum (file header); "
        "model mlp reads Cu K-edge spectra"
    )
    assert not out.exists() and not (tmp_path / "predictions_rdf.csv").exists()


def test_a_pt_l3_model_predicts_every_group_of_the_project(pt_checkpoint, pt_project, pt_groups, tmp_path):
    import csv

    from xasflow.inference.run import predict_files

    out = tmp_path / "predictions.csv"
    rows = predict_files([pt_checkpoint], [pt_project, f"{pt_project}:20wt% 300K"], out)
    expected = [*(f"{pt_project}:{label}" for label in PT_LABELS), f"{pt_project}:20wt% 300K"]
    assert [row["spectrum"] for row in rows] == expected
    assert {row["model"] for row in rows} == {"pt_mlp"}
    for row, spectrum in zip(rows, [*pt_groups, pt_groups[-1]], strict=True):
        normalized = normalize_xanes(spectrum)
        assert float(row["e0_eV"]) == pytest.approx(normalized.e0, abs=0.01)
        assert float(row["edge_step"]) == pytest.approx(normalized.edge_step, rel=1e-3)
        assert np.isfinite(float(row["predicted_coordination_number"]))
    # the group named alone and the same group within the whole project: the same prediction
    assert rows[-1]["predicted_coordination_number"] == rows[5]["predicted_coordination_number"]
    with out.open(newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [row["spectrum"] for row in written] == expected


def test_a_fidelity_reference_may_be_one_group_of_a_project(pt_project):
    from test_config import _minimal

    from xasflow.config import validate_config
    from xasflow.spectra.reference import ReferenceSpec
    from xasflow.spectrum import group_reference

    config = _minimal()
    config["references"] = {
        "pt_10wt": {"path": str(pt_project), "group": "10wt% 20K", "element": "Pt", "edge": "L3"},
        "pt_foil": {"path": "pt_metal_rt.xdi", "element": "Pt", "edge": "L3"},
    }
    for entry in config["references"].values():
        entry.update(lattice="fcc", lattice_constant=3.924)
    references = validate_config(config)["references"]
    assert references["pt_foil"]["group"] == ""
    entry = references["pt_10wt"]
    spec = ReferenceSpec.from_config("pt_10wt", {key: value for key, value in entry.items() if key != "edge"})
    measured = read_spectrum(group_reference(spec.path, spec.group))
    assert measured.source == f"{pt_project}:10wt% 20K" and measured.energy.size == 518


# --- a project written by Larch: repeated labels, a chi(k) group, an energy shift --------------


@pytest.fixture(scope="module")
def written_project(shared_data, tmp_path_factory):
    """A project saved by Larch (JSON inside gzip, as Larix writes) from the Cu foil: 'Cu foil'
    twice (the second with twice the mu), a chi(k) group 'Cu chi' and 'Cu 3x', the foils with a
    +1.5 eV energy shift."""
    from larch import Group
    from larch.io import create_athena

    foil = read_spectrum(shared_data / "experimental" / "cu_metal_rt.xdi")
    path = tmp_path_factory.mktemp("written") / "cu_written.prj"
    project = create_athena(str(path))
    for label, scale, shift in (
        ("Cu foil", 1.0, 1.5),
        ("Cu foil", 2.0, 1.5),
        ("Cu chi", 1.0, 0.0),
        ("Cu 3x", 3.0, 0.0),
    ):
        group = Group(energy=foil.energy.copy(), mu=scale * foil.mu, filename=label, energy_shift=shift)
        project.add_group(group)
    chi_key = list(project.groups)[2]
    project.groups[chi_key].args["is_chi"] = "1"  # as Athena marks a group holding chi(k)
    project.save()
    return path, foil


def test_repeated_labels_are_reported_and_chi_groups_left_out(written_project):
    path, foil = written_project
    spectra = read_spectra(path)
    assert [spectrum.metadata["group"] for spectrum in spectra] == ["Cu foil", "Cu 3x"]
    # Larch keeps the last of the repeated labels: the one with twice the mu
    np.testing.assert_allclose(spectra[0].mu, 2.0 * foil.mu, rtol=1e-6)
    np.testing.assert_allclose(spectra[0].energy, foil.energy + 1.5, atol=1e-6)
    assert spectra[0].metadata["energy_shift_eV"] == pytest.approx(1.5)
    assert spectra[0].metadata["warnings"] == [
        "labels repeat (Cu_foil): Larch keeps the last group of each label, so 1 of 4 groups are not "
        "read; rename them in Athena to read them all"
    ]
    # Larch stores the element and edge it finds (from E0) with each group
    assert (spectra[1].element, spectra[1].edge) == ("Cu", "K")
    message = _one_line_refusal(f"{path}:Cu chi")
    assert message == f"{path}:Cu chi: holds chi(k), not mu(E); only mu(E) groups can be read"
