"""Tests for xasflow.experiment: reading and normalizing measured spectra (real files)."""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xraydb

from xasflow.experiment import (
    NormalizedSpectrum,
    SpectrumReadError,
    normalize,
    read_spectrum,
    readers,
    to_relative_grid,
)
from xasflow.spectrum import Spectrum

# BadFiles.txt (xdi-baddata): each file's status ('error msg' or 'file read') and, for files
# read, a note. Notes 1 ("return value > 0, indicating Warning"), 2 (column labels ignored or
# set to 'colN'), 3 (lines with unrecognized comment characters ignored) and 7 (recommended
# metadata missing) promise a warning; notes 4-6 describe files that are valid after all.
BAD_FILE_ROW = re.compile(r"^(bad_\d\d\.xdi)\s+(error msg|file read)(?:\((\d)\))?", re.MULTILINE)
NOTES_WITH_WARNING = {"1", "2", "3", "7"}
# The bad files hold 12 points (bad_12: 8) of Cu pre-edge: fine for checking the XDI parsing,
# too few for a spectrum, and all below the Cu K edge.
BAD_FILE_POINTS = 8
# hc in eV * Angstrom (CODATA 2018), for Bragg's law.
PLANCK_HC_EV_ANGSTROM = 12398.419843320026


def _edge_energy(element: str, edge: str) -> float:
    return xraydb.xray_edge(element, edge).energy


def _write_columns(path: Path, energy, mu, header: str = "# energy mu\n") -> Path:
    rows = "".join(f"{e:.4f} {m:.6f}\n" for e, m in zip(energy, mu, strict=True))
    path.write_text(header + rows)
    return path


@pytest.fixture(scope="module")
def cu_foil(shared_data) -> Spectrum:
    return read_spectrum(shared_data / "experimental" / "cu_metal_rt.xdi")


@pytest.fixture(scope="module")
def cu_foil_normalized(cu_foil) -> NormalizedSpectrum:
    return normalize(cu_foil)


def _mean_norm(normalized: NormalizedSpectrum, low: float, high: float) -> float:
    relative = normalized.energy - normalized.e0
    return float(normalized.norm[(relative >= low) & (relative <= high)].mean())


# ---------------------------------------------------------------------------------------------
# real spectra


def test_cu_foil_xdi_reads_and_normalizes(cu_foil, cu_foil_normalized):
    assert cu_foil.element == "Cu"
    assert cu_foil.edge == "K"
    assert cu_foil.metadata["format"] == "xdi"
    assert cu_foil.metadata["mu_source"] == "mutrans"
    assert np.all(np.diff(cu_foil.energy) > 0)
    assert cu_foil.energy.shape == cu_foil.mu.shape

    normalized = cu_foil_normalized
    assert abs(normalized.e0 - 8979.0) <= 3.0
    assert normalized.edge_step > 0
    assert abs(_mean_norm(normalized, 50.0, 150.0) - 1.0) <= 0.05
    assert abs(_mean_norm(normalized, -150.0, -30.0)) <= 0.05
    pre1, pre2 = normalized.pre_edge_range
    norm1, norm2 = normalized.norm_range
    assert pre1 < pre2 < 0 < norm1 < norm2


def test_measured_arrays_are_read_only(cu_foil):
    with pytest.raises(ValueError):
        cu_foil.energy[0] = 0.0


@pytest.mark.parametrize(
    ("file_name", "element", "edge"),
    [("fe_metal_rt.xdi", "Fe", "K"), ("ni_metal_rt.xdi", "Ni", "K"), ("pt_metal_rt.xdi", "Pt", "L3")],
)
def test_other_foils_normalize_at_their_edge(shared_data, file_name, element, edge):
    spectrum = read_spectrum(shared_data / "experimental" / file_name)
    assert (spectrum.element, spectrum.edge) == (element, edge)
    normalized = normalize(spectrum)
    assert abs(normalized.e0 - _edge_energy(element, edge)) <= 3.0
    assert abs(_mean_norm(normalized, 50.0, 150.0) - 1.0) <= 0.06


def test_pt_foil_mu_formed_from_i0_and_itrans(shared_data):
    spectrum = read_spectrum(shared_data / "experimental" / "pt_metal_rt.xdi")
    assert spectrum.metadata["mu_source"] == "ln(i0/itrans)"


def test_xmu_column_file_with_header(shared_data):
    spectrum = read_spectrum(shared_data / "experimental" / "cu_rt01.xmu")
    assert spectrum.metadata["format"] == "columns"
    assert spectrum.metadata["mu_source"] == "column 2 (mu)"
    assert (spectrum.element, spectrum.edge) == ("Cu", "K")  # from '#%atom: Cu', '#%edge: K'
    normalized = normalize(spectrum)
    assert abs(normalized.e0 - _edge_energy("Cu", "K")) <= 3.0
    assert abs(_mean_norm(normalized, 50.0, 150.0) - 1.0) <= 0.05


def test_headerless_column_file_with_chosen_mu_column(shared_data):
    path = shared_data / "experimental" / "generic_columns_no_header.dat"
    # Column 7 is ln(col5/col6), the transmission mu; column 2 is an intensity.
    spectrum = read_spectrum(path, mu_column=7)
    assert spectrum.element is None
    normalized = normalize(spectrum)
    # 10.9-11.5 keV holds the Ge K edge (11103 eV).
    assert xraydb.guess_edge(normalized.e0) == ("Ge", "K")
    assert abs(normalized.e0 - _edge_energy("Ge", "K")) <= 5.0
    assert abs(_mean_norm(normalized, 50.0, 150.0) - 1.0) <= 0.1


def test_headerless_column_file_default_mu_is_column_two(shared_data):
    path = shared_data / "experimental" / "generic_columns_no_header.dat"
    spectrum = read_spectrum(path)
    assert spectrum.metadata["mu_source"] == "column 2 (col2)"
    # Column 2 is an ion-chamber intensity: it falls at the edge, and that must not pass as a
    # (Larch reports |step|) normalized spectrum.
    with pytest.raises(SpectrumReadError, match=r"edge step .* is not positive"):
        normalize(spectrum)


@pytest.mark.parametrize(
    ("file_name", "roi", "n_channels"), [("fe_xanes_8ch.xdi", "fe_ka", 8), ("APS13ID_2019.dat", "mn_ka", 4)]
)
def test_multichannel_fluorescence_is_summed_like_larch(shared_data, file_name, roi, n_channels):
    # Both scans stop below their edge (refused by default, see below); read as they are, mu
    # must equal what Larch's own GSE reader gives: the ROIs times DTFactor, summed, over i0.
    from larch.io import read_gsexdi

    path = shared_data / "experimental" / file_name
    spectrum = read_spectrum(path, require_edge=False)
    assert spectrum.metadata["mu_source"].endswith(f"/i0 with dead-time factors on {n_channels} channels")
    assert len(spectrum.metadata["channels"]) == n_channels
    larch_group = read_gsexdi(str(path))
    assert larch_group.dtc_mode == "dtfactor"
    order = np.argsort(larch_group.energy)
    expected = (getattr(larch_group, roi) / larch_group.i0)[order]
    np.testing.assert_allclose(spectrum.energy, larch_group.energy[order])
    np.testing.assert_allclose(spectrum.mu, expected, rtol=1e-12)
    # The dead-time factors matter: the uncorrected sum is smaller everywhere.
    assert np.all((getattr(larch_group, f"{roi}_nodtc") / larch_group.i0)[order] < spectrum.mu)


@pytest.mark.parametrize(
    ("file_name", "stop", "below", "element_edge", "edge_energy"),
    [("fe_xanes_8ch.xdi", 7108.6, 3.4, "Fe K", 7112.0), ("APS13ID_2019.dat", 6537.0, 2.0, "Mn K", 6539.0)],
)
def test_scan_that_stops_below_its_edge_is_refused(
    shared_data, file_name, stop, below, element_edge, edge_energy
):
    # Element and edge come from 'ScanParameters.element/edge' (Epics step scans have no
    # Element.* lines); both scans were interrupted before the edge.
    path = shared_data / "experimental" / file_name
    with pytest.raises(SpectrumReadError) as caught:
        read_spectrum(path)
    assert str(caught.value) == (
        f"{path}: the scan stops at {stop:.1f} eV, {below:.1f} eV below the tabulated {element_edge} edge "
        f"({edge_energy:.1f} eV): no post-edge data, so no edge step to normalize (an interrupted scan?)"
    )


# ---------------------------------------------------------------------------------------------
# XDI files that must be refused or read


def _bad_files_table(shared_data) -> dict[str, tuple[str, str | None]]:
    table = (shared_data / "xdi-baddata" / "BadFiles.txt").read_text()
    return {name: (status, note or None) for name, status, note in BAD_FILE_ROW.findall(table)}


def test_badfiles_txt_describes_every_bad_file(shared_data):
    table = _bad_files_table(shared_data)
    on_disk = {path.name for path in (shared_data / "xdi-baddata").glob("bad_*.xdi")}
    assert set(table) == on_disk
    assert len(table) == 36


@pytest.mark.parametrize("number", range(36))
def test_bad_xdi_file_behaves_as_badfiles_txt_says(shared_data, number):
    """'error msg': refused with one line naming the file and its defect. 'file read': read,
    with a warning in the spectrum's metadata where BadFiles.txt's note promises one."""
    path = shared_data / "xdi-baddata" / f"bad_{number:02d}.xdi"
    status, note = _bad_files_table(shared_data)[path.name]
    if status == "error msg":
        with pytest.raises(SpectrumReadError) as caught:
            read_spectrum(path, min_points=BAD_FILE_POINTS, require_edge=False)
        message = str(caught.value)
        assert message.startswith(f"{path}: ")
        assert "\n" not in message
        assert "data points" not in message  # refused for its defect, not for being short
        return
    spectrum = read_spectrum(path, min_points=BAD_FILE_POINTS, require_edge=False)
    warnings = spectrum.metadata["warnings"]
    if note in NOTES_WITH_WARNING:
        assert warnings, f"{path.name}: BadFiles.txt note ({note}) promises a warning"
        assert all("\n" not in warning for warning in warnings)
    else:
        assert warnings == []
    # bad_07/08/10 lose Column.N labels; the label line above the data restores 'mutrans'.
    assert spectrum.metadata["mu_source"] == "mutrans"
    assert np.all(np.isfinite(spectrum.mu))
    assert np.all(np.diff(spectrum.energy) > 0)
    if path.name != "bad_12.xdi":  # the one angle scan
        assert spectrum.energy.size == 12
        assert spectrum.energy[0] == pytest.approx(8779.0)


def test_default_reading_refuses_the_bad_files_as_spectra(shared_data):
    # Read as spectra (not as XDI exercises) every one is refused: too short, or pre-edge only.
    for path in sorted((shared_data / "xdi-baddata").glob("bad_*.xdi")):
        with pytest.raises(SpectrumReadError) as caught:
            read_spectrum(path)
        assert str(caught.value).startswith(f"{path}: ")


def test_angle_without_d_spacing_uses_the_crystal_mono_name_names(shared_data):
    # bad_12: 'Column.1: angle degrees', no Mono.d_spacing, but 'Mono.name: Si 111'.
    path = shared_data / "xdi-baddata" / "bad_12.xdi"
    spectrum = read_spectrum(path, min_points=BAD_FILE_POINTS, require_edge=False)
    d_si111 = 5.431020511 / np.sqrt(3.0)
    angles = np.array([12.3, 12.2, 12.1, 12.0, 11.9, 11.8, 11.7, 11.6])
    expected = np.sort(PLANCK_HC_EV_ANGSTROM / (2.0 * d_si111 * np.sin(np.deg2rad(angles))))
    np.testing.assert_allclose(spectrum.energy, expected, rtol=1e-6)
    assert any("computed from Mono.name 'Si 111'" in warning for warning in spectrum.metadata["warnings"])
    assert "via Bragg's law" in spectrum.metadata["energy_source"]


def test_angle_without_any_d_spacing_is_refused(shared_data, tmp_path):
    text = (shared_data / "xdi-baddata" / "bad_12.xdi").read_text()
    path = tmp_path / "angle_multilayer.xdi"
    path.write_text(text.replace("# Mono.name: Si 111", "# Mono.name: W/B4C multilayer"))
    with pytest.raises(SpectrumReadError, match="Mono.d_spacing") as caught:
        read_spectrum(path, min_points=BAD_FILE_POINTS, require_edge=False)
    assert str(caught.value).startswith(f"{path}: ")
    assert "Si or Ge reflection" in str(caught.value)


@pytest.mark.parametrize(
    ("file_name", "element", "edge"),
    [
        ("bad_02.xdi", "Cu", None),
        ("bad_03.xdi", None, "K"),
        ("bad_04.xdi", "Cu", None),
        ("bad_05.xdi", None, "K"),
        ("bad_30.xdi", None, None),
    ],
)
def test_invalid_element_or_edge_is_recorded_as_unknown(shared_data, file_name, element, edge):
    spectrum = read_spectrum(
        shared_data / "xdi-baddata" / file_name, min_points=BAD_FILE_POINTS, require_edge=False
    )
    assert (spectrum.element, spectrum.edge) == (element, edge)


@pytest.mark.parametrize("file_name", ["nonxafs_1d.xdi", "nonxafs_2d.xdi", "nonxafs_negvalues.xdi"])
def test_xdi_without_xafs_scan_is_rejected(shared_data, file_name):
    path = shared_data / "experimental" / file_name
    with pytest.raises(SpectrumReadError, match="XAFS scan") as caught:
        read_spectrum(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_python_xdi_fallback_reads_a_foil(shared_data, monkeypatch):
    # Platforms without the bundled XDI C library use Larch's Python reader.
    monkeypatch.setattr(readers, "_xdi_library_available", lambda: False)
    spectrum = read_spectrum(shared_data / "experimental" / "cu_metal_rt.xdi")
    assert spectrum.metadata["xdi_reader"] == "larch-python"
    assert (spectrum.element, spectrum.edge) == ("Cu", "K")
    assert spectrum.energy.size == 408


# ---------------------------------------------------------------------------------------------
# problems a user can cause, on small files written here


def test_missing_file(tmp_path):
    path = tmp_path / "nothing_here.xdi"
    with pytest.raises(SpectrumReadError, match="does not exist") as caught:
        read_spectrum(path)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.dat"
    path.write_text(content)
    with pytest.raises(SpectrumReadError, match="empty") as caught:
        read_spectrum(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_non_numeric_value_in_data(tmp_path, cu_foil):
    path = _write_columns(tmp_path / "text.dat", cu_foil.energy[:40], cu_foil.mu[:40])
    lines = path.read_text().splitlines()
    lines[10] = "8888.0 oops"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpectrumReadError, match=r"line 11: non-numeric value 'oops'"):
        read_spectrum(path)


def test_ragged_columns(tmp_path, cu_foil):
    path = _write_columns(tmp_path / "ragged.dat", cu_foil.energy[:40], cu_foil.mu[:40])
    with path.open("a") as stream:
        stream.write("10200.0 1.0 2.0\n")
    with pytest.raises(SpectrumReadError, match="3 values where the data table has 2 columns"):
        read_spectrum(path)


def test_single_column(tmp_path, cu_foil):
    path = tmp_path / "one_column.dat"
    path.write_text("".join(f"{e}\n" for e in cu_foil.energy[:40]))
    with pytest.raises(SpectrumReadError, match="need at least 2"):
        read_spectrum(path)


def test_too_few_points(tmp_path, cu_foil):
    path = _write_columns(tmp_path / "short.dat", cu_foil.energy[:10], cu_foil.mu[:10])
    with pytest.raises(SpectrumReadError, match="only 10 data points"):
        read_spectrum(path)


def test_non_finite_mu(tmp_path, cu_foil):
    mu = np.array(cu_foil.mu[:40])
    mu[5] = np.nan
    path = _write_columns(tmp_path / "nan.dat", cu_foil.energy[:40], mu)
    with pytest.raises(SpectrumReadError, match="non-finite"):
        read_spectrum(path)


def test_energy_in_kev_is_converted(tmp_path, cu_foil):
    path = _write_columns(tmp_path / "kev.dat", cu_foil.energy / 1000.0, cu_foil.mu)
    spectrum = read_spectrum(path)
    np.testing.assert_allclose(spectrum.energy, cu_foil.energy, atol=0.06)
    normalized = normalize(spectrum)
    assert abs(normalized.e0 - 8979.0) <= 3.0


def test_descending_scan_with_repeated_energies(tmp_path, cu_foil):
    energy = np.concatenate([cu_foil.energy[::-1], cu_foil.energy[100:103][::-1]])
    mu = np.concatenate([cu_foil.mu[::-1], cu_foil.mu[100:103][::-1] + 0.2])
    order = np.argsort(-energy, kind="stable")
    path = _write_columns(tmp_path / "descending.dat", energy[order], mu[order])
    spectrum = read_spectrum(path)
    assert np.all(np.diff(spectrum.energy) > 0)
    assert spectrum.energy.size == cu_foil.energy.size
    # repeated points are averaged: (mu + mu + 0.2) / 2
    np.testing.assert_allclose(spectrum.mu[100:103], cu_foil.mu[100:103] + 0.1, atol=1e-6)


def test_scrambled_energy_axis_is_rejected(tmp_path, cu_foil):
    order = np.random.default_rng(0).permutation(cu_foil.energy.size)
    path = _write_columns(tmp_path / "scrambled.dat", cu_foil.energy[order], cu_foil.mu[order])
    with pytest.raises(SpectrumReadError, match="not monotonic"):
        read_spectrum(path)


def test_xdi_header_without_version_line(tmp_path, shared_data):
    text = (shared_data / "experimental" / "cu_metal_rt.xdi").read_text()
    path = tmp_path / "no_version.xdi"
    path.write_text("\n".join(text.splitlines()[1:]) + "\n")
    with pytest.raises(SpectrumReadError, match="version line"):
        read_spectrum(path)


def test_unknown_mu_column(shared_data):
    with pytest.raises(SpectrumReadError, match=r"mu_column='murefer' not found"):
        read_spectrum(shared_data / "experimental" / "cu_metal_rt.xdi", mu_column="murefer")


def test_error_message_survives_pickling(tmp_path):
    error = SpectrumReadError(tmp_path / "x.dat", "file is\nempty")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) == f"{tmp_path / 'x.dat'}: file is empty"


# ---------------------------------------------------------------------------------------------
# normalization of short scans and grids


def _cropped(spectrum: Spectrum, low: float, high: float, edge: float) -> Spectrum:
    keep = (spectrum.energy >= edge + low) & (spectrum.energy <= edge + high)
    return replace(
        spectrum, energy=spectrum.energy[keep], mu=spectrum.mu[keep], source=spectrum.source + "[xanes]"
    )


@pytest.mark.parametrize(
    "ranges",
    [{}, {"pre1": -150.0, "pre2": -30.0, "norm1": 150.0, "norm2": 400.0}],
    ids=["larch-defaults", "exafs-ranges"],
)
def test_short_xanes_scan_normalizes_inside_its_range(cu_foil, cu_foil_normalized, ranges, caplog):
    xanes = _cropped(cu_foil, -20.0, 60.0, cu_foil_normalized.e0)
    with caplog.at_level(logging.WARNING, logger="xasflow.experiment.normalization"):
        normalized = normalize(xanes, **ranges)
    relative = xanes.energy - normalized.e0
    assert abs(normalized.e0 - cu_foil_normalized.e0) <= 1.0
    assert relative[0] <= normalized.pre_edge_range[0] < normalized.pre_edge_range[1] < 0
    assert 0 < normalized.norm_range[0] < normalized.norm_range[1] <= relative[-1]
    assert abs(_mean_norm(normalized, 30.0, 60.0) - 1.0) <= 0.1
    assert abs(_mean_norm(normalized, -20.0, -10.0)) <= 0.05
    if ranges:
        assert "does not fit the data" in caplog.text


def test_e0_outside_data_is_rejected(cu_foil):
    with pytest.raises(SpectrumReadError, match="outside the data range"):
        normalize(cu_foil, e0=5000.0)


def test_falling_edge_is_rejected(cu_foil):
    inverted = replace(cu_foil, mu=-cu_foil.mu)
    with pytest.raises(SpectrumReadError, match="not positive") as caught:
        normalize(inverted)
    assert str(caught.value).startswith(f"{cu_foil.source}: ")


def test_relative_grid_across_the_cu_edge(cu_foil_normalized):
    grid = np.arange(-15.0, 60.0 + 0.25, 0.5)
    values = to_relative_grid(cu_foil_normalized, grid)
    assert values.shape == grid.shape
    assert np.all(np.isfinite(values))
    assert np.all(values[grid <= -10.0] < 0.3)
    assert abs(values[grid >= 40.0].mean() - 1.0) <= 0.1


def test_relative_grid_small_overhang_takes_the_end_value(cu_foil_normalized):
    normalized = cu_foil_normalized
    top = normalized.energy[-1] - normalized.e0
    values = to_relative_grid(normalized, np.array([top - 10.0, top + 0.5]))
    assert values[1] == pytest.approx(normalized.norm[-1])


def test_relative_grid_beyond_the_data_is_rejected(cu_foil_normalized):
    bottom = cu_foil_normalized.energy[0] - cu_foil_normalized.e0
    with pytest.raises(SpectrumReadError, match="beyond the data range") as caught:
        to_relative_grid(cu_foil_normalized, np.linspace(bottom - 5.0, 50.0, 20))
    assert str(caught.value).startswith(f"{cu_foil_normalized.path}: ")


def test_xanes_normalization_of_the_cu_foil_matches_the_simulation_reference(shared_data):
    from xasflow.experiment.alignment import XanesNormalization, normalize_xanes

    foil = normalize_xanes(read_spectrum(shared_data / "experimental" / "cu_metal_rt.xdi"))
    ranges = XanesNormalization()
    # E0 (0.3 of the step) sits on the rise into the 1s->4p shoulder, at the tabulated edge (8979 eV)
    assert 8979 < foil.e0 < 8990
    relative = foil.energy - foil.e0
    post = (relative > ranges.norm1) & (relative < ranges.norm2)
    # the edge step is the post-edge line at E0; the XANES wiggles over 15-50 eV average near it
    assert abs(foil.norm[post].mean() - 1) < 0.15
    assert foil.pre_edge_range == (ranges.pre1, ranges.pre2)
    assert abs(np.interp(foil.e0, foil.energy, foil.norm) - ranges.edge_level) < 1e-6


# ---------------------------------------------------------------------------------------------
# the Spectrum the reader returns


def test_reader_returns_a_measured_spectrum_with_its_provenance(shared_data, cu_foil):
    assert isinstance(cu_foil, Spectrum)
    assert cu_foil.kind == "measured"
    assert cu_foil.is_absolute
    assert cu_foil.source == str(shared_data / "experimental" / "cu_metal_rt.xdi")
    assert cu_foil.metadata["encoding"] == "utf-8"
    assert cu_foil.metadata["energy_source"] == "column 1 (energy)"


def test_summed_fluorescence_channels_are_listed(shared_data):
    spectrum = read_spectrum(shared_data / "experimental" / "fe_xanes_8ch.xdi", require_edge=False)
    assert spectrum.metadata["channels"] == [f"Fe_Ka_mca{channel}" for channel in range(1, 9)]


def test_normalization_keeps_a_relative_energy_axis(cu_foil, cu_foil_normalized):
    relative = replace(cu_foil, energy=cu_foil.energy - 8979.0, energy_reference="relative:edge")
    normalized = normalize(relative)
    assert normalized.energy_reference == "relative:edge"
    assert cu_foil_normalized.energy_reference == "absolute"
    assert normalized.e0 == pytest.approx(cu_foil_normalized.e0 - 8979.0, abs=1e-6)
    np.testing.assert_allclose(normalized.norm, cu_foil_normalized.norm, atol=1e-9)
