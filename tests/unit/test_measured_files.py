"""Every file of ``shared/data/experimental`` is read, or refused with the reason a scientist
would give; the spectra read sit at their element's edge and rise across it.

The table below is the one in the README ("Measured files"); a file added to the folder
without a row here fails ``test_every_measured_file_has_an_expected_outcome``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import xraydb

from xasflow.experiment import SpectrumReadError, normalize, read_spectra


class Read(NamedTuple):
    """A file that reads: its element and edge, how many spectra, and how far its e0 may lie from
    the tabulated edge (eV): metals within a few eV, oxidized compounds shifted up."""

    element: str
    edge: str
    n_spectra: int = 1
    e0_shift: tuple[float, float] = (-3.0, 3.0)
    element_in_file: bool = True  # False: the file does not name it; found from e0
    options: dict | None = None
    warning: str | None = None  # a fragment of a warning the reader must give


class Refused(NamedTuple):
    """A file that is refused: a fragment of the one-line reason."""

    reason: str


COMPOUND = (-3.0, 16.0)  # chemical shift: oxidized Fe, Se, Zn, Ag edges lie up to ~15 eV higher

EXPECTED = {
    "APS13ID_2019.dat": Refused(
        "the scan stops at 6537.0 eV, 2.0 eV below the tabulated Mn K edge (6539.0 eV): no post-edge data"
    ),
    "Au.prj": Read("Au", "L3", n_spectra=14),
    "Aunano.prj": Read("Au", "L3", n_spectra=5),
    "PtData.prj": Read("Pt", "L3", n_spectra=6),
    "SSRL1_2006.dat": Read("Ag", "K", e0_shift=COMPOUND, element_in_file=False),
    "co_metal_rt.xdi": Read("Co", "K"),
    "cu_10k.xmu": Read("Cu", "K"),
    "cu_150k.xmu": Read("Cu", "K"),
    "cu_50k.xmu": Read("Cu", "K"),
    "cu_metal_10K.xdi": Read("Cu", "K"),
    "cu_metal_rt.xdi": Read("Cu", "K"),
    "cu_rt01.xmu": Read("Cu", "K"),
    "fe2o3_rt.xdi": Read("Fe", "K", e0_shift=COMPOUND),
    "fe3c_rt.xdi": Read("Fe", "K", e0_shift=COMPOUND),
    "fe_metal_rt.xdi": Read("Fe", "K"),
    "fe_xanes_8ch.xdi": Refused(
        "the scan stops at 7108.6 eV, 3.4 eV below the tabulated Fe K edge (7112.0 eV): no post-edge data"
    ),
    "fen_rt.xdi": Read("Fe", "K", e0_shift=COMPOUND),
    "feo_rt1.xdi": Read("Fe", "K", e0_shift=COMPOUND),
    # Seven unlabelled columns: column 2 (an ion chamber) is mu by convention, with a warning;
    # column 7 holds the Ge K edge of the reference foil.
    "generic_columns_no_header.dat": Read(
        "Ge",
        "K",
        element_in_file=False,
        options={"mu_column": 7},
        warning="no column labels: column 2 of 7 taken as mu",
    ),
    "ni_metal_rt.xdi": Read("Ni", "K"),
    "nonxafs_1d.xdi": Refused("no XAFS scan: no energy column (columns: x [mm], i0, itrans, mutrans)"),
    "nonxafs_2d.xdi": Refused("no single XAFS scan: the file holds a 2D scan (41 blocks"),
    "nonxafs_negvalues.xdi": Refused("no XAFS scan: no energy column (columns: X, Y, Z)"),
    "pt_metal_rt.xdi": Read("Pt", "L3"),
    "se_na2so4_rt.xdi": Read("Se", "K", e0_shift=COMPOUND),
    "se_znse_rt.xdi": Read("Se", "K", e0_shift=COMPOUND),
    "zn_znse_rt.xdi": Read("Zn", "K", e0_shift=COMPOUND),
}


def _mean_mu(spectrum, e0: float, low: float, high: float) -> float:
    relative = spectrum.energy - e0
    return float(spectrum.mu[(relative >= low) & (relative <= high)].mean())


def test_every_measured_file_has_an_expected_outcome(shared_data):
    assert {path.name for path in (shared_data / "experimental").iterdir()} == set(EXPECTED)


@pytest.mark.parametrize("file_name", sorted(EXPECTED))
def test_measured_file_is_read_or_refused_as_expected(shared_data, file_name):
    path = shared_data / "experimental" / file_name
    expected = EXPECTED[file_name]
    if isinstance(expected, Refused):
        with pytest.raises(SpectrumReadError) as caught:
            read_spectra(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ")
        assert "\n" not in message
        assert expected.reason in message
        return

    if expected.warning is not None:
        (default,) = read_spectra(path)
        assert any(expected.warning in warning for warning in default.metadata["warnings"])
    spectra = read_spectra(path, **(expected.options or {}))
    assert len(spectra) == expected.n_spectra
    edge_energy = xraydb.xray_edge(expected.element, expected.edge).energy
    for spectrum in spectra:
        if expected.element_in_file:
            assert (spectrum.element, spectrum.edge) == (expected.element, expected.edge)
        else:
            assert spectrum.element is None
        assert np.all(np.diff(spectrum.energy) > 0)
        normalized = normalize(spectrum)
        if not expected.element_in_file:
            assert xraydb.guess_edge(normalized.e0) == (expected.element, expected.edge)
        low, high = expected.e0_shift
        assert low <= normalized.e0 - edge_energy <= high, spectrum.source
        # mu rises across the edge, and the normalized post-edge sits near 1.
        assert _mean_mu(spectrum, normalized.e0, 30.0, 80.0) > _mean_mu(spectrum, normalized.e0, -80.0, -30.0)
        relative = normalized.energy - normalized.e0
        assert abs(normalized.norm[(relative >= 50.0) & (relative <= 150.0)].mean() - 1.0) <= 0.15


def test_ssrl_column_file_is_read_through_larch_as_transmission(shared_data):
    """SSRL's EXAFS Data Collector writes its header without '#', numbers inside it, and a legend
    after 'Data:'. Larch names the columns; mu is ln(I0/I1) on the achieved energy."""
    from larch.io import read_ascii

    path = shared_data / "experimental" / "SSRL1_2006.dat"
    (spectrum,) = read_spectra(path)
    assert spectrum.metadata["mu_source"] == "ln(i0/i1)"
    assert spectrum.metadata["energy_source"] == "column 3 (achieved_energy)"
    assert "SSRL" in spectrum.metadata["column_reader"]
    assert spectrum.energy.size == 455  # 'PTS: 455' in its header
    table = np.loadtxt(path, skiprows=26)  # an independent reading of the 455 data rows
    assert table.shape == (455, 6)
    order = np.argsort(table[:, 2])
    np.testing.assert_allclose(spectrum.energy, table[order, 2])
    np.testing.assert_allclose(spectrum.mu, np.log(table[order, 3] / table[order, 4]))
    assert read_ascii(str(path)).array_labels[3:5] == ["i0", "i1"]


@pytest.mark.parametrize("separator", [",", ", ", ";", "\t"])
def test_delimited_text_reads_like_the_whitespace_file(shared_data, tmp_path, separator):
    """CSV (and ';' or tab separated) copies of cu_rt01.xmu read to the same spectrum."""
    source = shared_data / "experimental" / "cu_rt01.xmu"
    (expected,) = read_spectra(source)
    rows = np.loadtxt(source)
    path = tmp_path / "cu_rt01.csv"
    lines = [separator.join(["energy", "mu", "i0"])]
    lines += [separator.join(repr(float(value)) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    (spectrum,) = read_spectra(path)
    assert spectrum.metadata["column_labels"] == ["energy", "mu", "i0"]
    assert spectrum.metadata["mu_source"] == "column 2 (mu)"
    np.testing.assert_array_equal(spectrum.energy, expected.energy)
    np.testing.assert_array_equal(spectrum.mu, expected.mu)


def test_csv_of_intensities_forms_transmission_mu(shared_data, tmp_path):
    """A CSV export with energy, i0 and it columns (as from the SSRL file) forms ln(i0/it)."""
    table = np.loadtxt(shared_data / "experimental" / "SSRL1_2006.dat", skiprows=26)
    path = tmp_path / "ag_transmission.csv"
    rows = [f"{row[2]},{row[3]},{row[4]}" for row in table.tolist()]
    path.write_text("energy,i0,it\n" + "\n".join(rows) + "\n")
    (spectrum,) = read_spectra(path)
    assert spectrum.metadata["mu_source"] == "ln(i0/it)"
    order = np.argsort(table[:, 2])
    np.testing.assert_allclose(spectrum.mu, np.log(table[order, 3] / table[order, 4]))


def test_decimal_commas_are_refused_not_misread(shared_data, tmp_path):
    rows = np.loadtxt(shared_data / "experimental" / "cu_rt01.xmu")
    path = tmp_path / "cu_decimal_comma.csv"
    lines = [";".join(f"{value:.4f}".replace(".", ",") for value in row) for row in rows]
    path.write_text("energy;mu;i0\n" + "\n".join(lines) + "\n")
    with pytest.raises(SpectrumReadError, match=r"decimal commas \('8779,0000'\); save the file") as caught:
        read_spectra(path)
    assert str(caught.value).startswith(f"{path}: ")
