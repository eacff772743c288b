"""Energy calibration against reference foils and merging of repeated scans, on the shared
measured files and on spectra with a known shift or known noise."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from xasflow.errors import SpectrumReadError, UserError
from xasflow.experiment import read_spectrum
from xasflow.experiment.calibration import (
    Foil,
    FoilFile,
    Preparation,
    calibrate_with_reference_channel,
    foil_file_calibration,
    merge_scans,
    prepare_spectra,
    reference_channel,
)
from xasflow.experiment.normalization import normalize
from xasflow.spectrum import Spectrum


@pytest.fixture(scope="module")
def experimental(shared_data):
    return shared_data / "experimental"


def _write_columns(path, energy, columns: dict[str, np.ndarray], header: str = "") -> None:
    """A plain column file: energy, then the named columns (labels on the last header line)."""
    table = np.column_stack([energy, *columns.values()])
    labels = " ".join(["energy", *columns])
    np.savetxt(path, table, header=f"{header}{labels}", fmt="%.6f")


def _with_reference_channel(path, energy, sample_mu, foil_mu, header: str = "") -> None:
    """A transmission scan with a foil behind the sample: i0 -> sample -> itrans -> foil -> irefer."""
    i0 = np.full(energy.size, 1.0e5)
    itrans = i0 * np.exp(-sample_mu)
    irefer = itrans * np.exp(-foil_mu)
    _write_columns(path, energy, {"i0": i0, "itrans": itrans, "irefer": irefer}, header)


def _edge(energy, e0, width=1.5):
    """A smooth absorption edge whose dmu/dE peaks at ``e0`` (eV): an arctan step plus a white line."""
    return (
        0.2 + np.arctan((energy - e0) / width) / np.pi + 0.5 + 0.1 * np.exp(-(((energy - e0 - 12) / 6) ** 2))
    )


# --- calibration against the reference channel in the file --------------------------------------


def test_the_ag_foil_behind_the_ssrl_sample_calibrates_its_energies(experimental):
    """SSRL1_2006.dat (Ag:Cys, "I0=Ar, I1 and I2 =Kr, Ag foil in front of I1"): ln(I1/I2) rises
    through the Ag K edge, with its maximum slope 8.8 eV above the tabulated 25514 eV."""
    sample = read_spectrum(experimental / "SSRL1_2006.dat")
    reference, formula = reference_channel(sample)
    assert formula == "ln(i1/i2)"
    assert normalize(reference).edge_step > 0.5  # a foil's edge, not noise
    calibrated = calibrate_with_reference_channel(sample, Foil.parse("Ag"))
    record = calibrated.metadata["calibration"]
    assert record["foil"] == "Ag K" and record["tabulated_edge_eV"] == 25514.0
    assert record["reference_e0_eV"] == pytest.approx(25522.8, abs=0.5)
    assert record["energy_shift_eV"] == pytest.approx(-8.8, abs=0.5)
    np.testing.assert_allclose(calibrated.energy - sample.energy, record["energy_shift_eV"])
    np.testing.assert_array_equal(calibrated.mu, sample.mu)
    # the sample's own edge moves by the same shift, to within a few eV of the tabulated Ag K edge
    assert abs(normalize(calibrated).e0 - 25514.0) < 3.0


def test_a_reference_channel_shifted_by_3_ev_is_recovered(experimental, tmp_path):
    """The Cu foil of cu_metal_rt.xdi as sample and as reference, on an energy axis that reads
    3.0 eV high: the calibration shift is 3.0 eV more negative than that of the file as it is."""
    foil = read_spectrum(experimental / "cu_metal_rt.xdi")
    as_measured = tmp_path / "as_measured.dat"
    reads_high = tmp_path / "reads_3eV_high.dat"
    _with_reference_channel(as_measured, foil.energy, foil.mu, foil.mu)
    _with_reference_channel(reads_high, foil.energy + 3.0, foil.mu, foil.mu)
    shifts = [
        calibrate_with_reference_channel(read_spectrum(path), Foil.parse("Cu")).metadata["calibration"][
            "energy_shift_eV"
        ]
        for path in (as_measured, reads_high)
    ]
    assert shifts[0] == pytest.approx(8979.0 - 8980.5, abs=0.2)  # the foil's first inflection
    assert shifts[1] - shifts[0] == pytest.approx(-3.0, abs=0.2)


@pytest.mark.parametrize("offset", [3.0, 2.83, -1.37])
def test_a_known_offset_is_recovered_to_half_an_energy_step(tmp_path, offset):
    """An edge whose maximum slope is ``offset`` eV above the tabulated Cu K edge, on a 0.37 eV
    grid that does not line up with it: Larch's find_e0 returns a measured energy, so the shift
    is found to within half a step."""
    energy = np.arange(8779.13, 9400.0, 0.37)
    path = tmp_path / "sample.dat"
    _with_reference_channel(path, energy, _edge(energy, 8979.0 + offset), _edge(energy, 8979.0 + offset))
    calibrated = calibrate_with_reference_channel(read_spectrum(path), Foil.parse("cu:k"))
    assert calibrated.metadata["calibration"]["energy_shift_eV"] == pytest.approx(-offset, abs=0.2)


def test_a_file_without_a_reference_channel_is_refused_in_one_line(experimental):
    sample = read_spectrum(experimental / "cu_metal_rt.xdi")  # columns energy, i0, itrans, mutrans
    with pytest.raises(SpectrumReadError, match="has no reference channel") as error:
        calibrate_with_reference_channel(sample, Foil.parse("Cu"))
    message = str(error.value)
    assert message.startswith(f"{experimental / 'cu_metal_rt.xdi'}: ") and "\n" not in message
    assert "i0, itrans, mutrans" in message


def test_an_athena_group_has_no_reference_channel(experimental):
    group = read_spectrum(experimental / "Aunano.prj:swtp18b_85K.001")
    with pytest.raises(SpectrumReadError, match="Athena project.*as a separate foil"):
        reference_channel(group)


def test_a_reference_channel_without_an_edge_is_refused(experimental, tmp_path):
    foil = read_spectrum(experimental / "cu_metal_rt.xdi")
    path = tmp_path / "no_foil.dat"
    _with_reference_channel(path, foil.energy, foil.mu, np.full(foil.energy.size, 0.3))
    with pytest.raises(SpectrumReadError, match=r"reference channel ln\(itrans/irefer\)"):
        calibrate_with_reference_channel(read_spectrum(path), Foil.parse("Cu"))


def test_the_wrong_foil_element_is_refused(experimental, tmp_path):
    foil = read_spectrum(experimental / "cu_metal_rt.xdi")
    path = tmp_path / "cu.dat"
    _with_reference_channel(path, foil.energy, foil.mu, foil.mu)
    with pytest.raises(SpectrumReadError, match="no Fe edge inside the scan .*is the foil Fe"):
        calibrate_with_reference_channel(read_spectrum(path), Foil.parse("Fe"))
    # Zn K (9659 eV) lies inside this 8779-10146 eV scan, but the edge found is Cu's, 680 eV away
    with pytest.raises(SpectrumReadError, match="more than 30 eV: not that edge"):
        calibrate_with_reference_channel(read_spectrum(path), Foil.parse("Zn"))


@pytest.mark.parametrize(
    ("text", "message"),
    [("Qq", "'Qq' is not an element symbol"), ("Cu:L7", "Cu has no 'L7' edge"), ("", "not an element")],
)
def test_foil_names_are_checked(text, message):
    with pytest.raises(UserError, match=message):
        Foil.parse(text)


def test_foil_names_read_element_and_edge():
    assert Foil.parse("au:l3") == Foil("Au", "L3")
    assert FoilFile.parse("Aunano.prj:Au foil=Au:L3") == FoilFile("Aunano.prj:Au foil", Foil("Au", "L3"))
    with pytest.raises(UserError, match="FILE=ELEMENT"):
        FoilFile.parse("cu_foil.xdi")


# --- calibration against a foil in a file of its own --------------------------------------------


def test_the_au_foil_calibration_matches_the_shift_stored_in_athena(experimental):
    """Au.prj and Aunano.prj hold the same Au foil scan; the Au.prj author calibrated it in Athena
    by -0.924 eV (stored), Aunano.prj keeps it as measured. xasflow finds the same shift."""
    calibration = foil_file_calibration(FoilFile.parse(f"{experimental / 'Aunano.prj'}:Au foil=Au"))
    assert calibration.edge == "L3" and calibration.tabulated_edge == 11919.0
    assert calibration.energy_shift == pytest.approx(-0.924, abs=0.05)
    already_calibrated = foil_file_calibration(FoilFile.parse(f"{experimental / 'Au.prj'}:Au foil=Au:L3"))
    assert already_calibrated.energy_shift == pytest.approx(0.0, abs=0.05)


def test_a_cu_foil_file_calibrates_the_scans_taken_with_it(experimental):
    preparation = Preparation.from_options(reference_foil=f"{experimental / 'cu_metal_rt.xdi'}=Cu")
    scans = [read_spectrum(experimental / "cu_rt01.xmu")]
    (calibrated,) = prepare_spectra(scans, preparation)
    assert calibrated.metadata["calibration"]["energy_shift_eV"] == pytest.approx(-1.5, abs=0.01)
    np.testing.assert_allclose(calibrated.energy, scans[0].energy - 1.5)


def test_a_foil_file_of_another_element_is_refused(experimental):
    with pytest.raises(
        SpectrumReadError, match="fe_metal_rt.xdi: is a Fe K spectrum, but it was given as a Cu"
    ):
        foil_file_calibration(FoilFile.parse(f"{experimental / 'fe_metal_rt.xdi'}=Cu"))


def test_a_synthetic_foil_file_with_a_known_offset(tmp_path):
    energy = np.arange(25285.0, 26500.0, 2.0)
    path = tmp_path / "ag_foil.dat"
    _write_columns(path, energy, {"mu": _edge(energy, 25514.0 + 3.0, width=4.0)})
    calibration = foil_file_calibration(FoilFile.parse(f"{path}=Ag:K"))
    assert calibration.energy_shift == pytest.approx(-3.0, abs=0.5)  # 2 eV steps


def test_both_calibrations_at_once_are_refused():
    with pytest.raises(UserError, match="not both"):
        Preparation.from_options(calibrate_reference="Cu", reference_foil="foil.xdi=Cu")


# --- merging ------------------------------------------------------------------------------------


def test_merging_the_aunano_scans_gives_athenas_merge(experimental):
    """Aunano.prj holds three scans (swtp18b_85K.001-.003, aligned in Athena) and Athena's merge
    of them, which its author then shifted by +2.247 eV; the Larch merge is the same within
    0.03 % of the signal."""
    project = experimental / "Aunano.prj"
    scans = [read_spectrum(f"{project}:swtp18b_85K.00{number}") for number in (1, 2, 3)]
    merged = merge_scans(scans)
    assert merged.count == 3 and merged.spectrum.metadata["merge"]["scans"] == 3
    assert (merged.spectrum.element, merged.spectrum.edge) == ("Au", "L3")
    athena = read_spectrum(f"{project}:merge")
    stored_shift = athena.metadata["energy_shift_eV"]
    assert stored_shift == pytest.approx(2.247)
    athena_mu = np.interp(merged.spectrum.energy, athena.energy - stored_shift, athena.mu)
    assert np.abs(athena_mu - merged.spectrum.mu).max() < 5e-4
    # the scans differ by about 0.1 % of the edge step at each energy
    edge_step = normalize(merged.spectrum).edge_step
    assert 2e-4 < np.median(merged.spread) / edge_step < 5e-3


@pytest.mark.parametrize("count", [4, 9])
def test_merging_noisy_copies_reduces_the_noise_by_sqrt_n(count):
    energy = np.arange(8900.0, 9300.0, 0.5)
    truth = _edge(energy, 8979.0)
    sigma = 0.01
    rng = np.random.default_rng(13)
    scans = [
        Spectrum(
            energy, truth + rng.normal(0.0, sigma, energy.size), source=f"scan{index}.dat", kind="measured"
        )
        for index in range(count)
    ]
    merged = merge_scans(scans)
    np.testing.assert_array_equal(merged.spectrum.energy, energy)  # one grid: no interpolation
    noise = np.std(merged.spectrum.mu - truth)
    assert noise == pytest.approx(sigma / np.sqrt(count), rel=0.1)
    # the reported spread is the noise of one scan (std with ddof=0 over `count` scans)
    assert np.mean(merged.spread**2) ** 0.5 == pytest.approx(sigma * np.sqrt((count - 1) / count), rel=0.1)


def test_scans_that_do_not_overlap_are_refused_naming_them():
    low = np.arange(8900.0, 9000.0, 0.5)
    high = np.arange(9100.0, 9300.0, 0.5)
    scans = [
        Spectrum(low, _edge(low, 8979.0), source="low.dat", kind="measured"),
        Spectrum(high, _edge(high, 9200.0), source="high.dat", kind="measured"),
    ]
    with pytest.raises(UserError, match="do not overlap in energy") as error:
        merge_scans(scans)
    message = str(error.value)
    assert "low.dat 8900.0-8999.5 eV" in message and "high.dat 9100.0-9299.5 eV" in message
    assert "\n" not in message


def test_scans_of_different_edges_are_refused(experimental):
    scans = [read_spectrum(experimental / name) for name in ("cu_metal_rt.xdi", "ni_metal_rt.xdi")]
    with pytest.raises(
        UserError, match=r"different edges: .*cu_metal_rt.xdi \(Cu K\); .*ni_metal_rt.xdi \(Ni K\)"
    ):
        merge_scans(scans)


def test_scans_whose_edges_lie_far_apart_are_refused():
    energy = np.arange(8800.0, 9300.0, 0.5)
    scans = [
        Spectrum(energy, _edge(energy, e0), source=f"e0_{e0:.0f}.dat", kind="measured")
        for e0 in (8979.0, 9050.0)
    ]
    with pytest.raises(UserError, match="lie 71.0 eV apart"):
        merge_scans(scans)


def test_one_scan_is_not_a_merge(experimental):
    with pytest.raises(UserError, match="at least 2 scans, got 1"):
        merge_scans([read_spectrum(experimental / "cu_rt01.xmu")])


def test_calibration_then_merge_records_both(experimental, tmp_path):
    foil = read_spectrum(experimental / "cu_metal_rt.xdi")
    paths = []
    for offset in (0.0, 1.0):
        path = tmp_path / f"scan_{offset:.0f}.dat"
        _with_reference_channel(path, foil.energy + offset, foil.mu, foil.mu)
        paths.append(path)
    preparation = Preparation.from_options(calibrate_reference="Cu", merge=True)
    (merged,) = prepare_spectra([read_spectrum(path) for path in paths], preparation)
    shifts = merged.metadata["calibration"]["energy_shifts_eV"]
    assert shifts == pytest.approx([-1.5, -2.5], abs=0.01)
    assert merged.metadata["merge"]["scans"] == 2
    # after calibration the two scans lie on top of each other: no spread beyond interpolation
    assert merged.metadata["merge"]["median_spread"] < 1e-3


# --- xasflow predict ------------------------------------------------------------------------------


def _refusal(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("xasflow: error")]


def test_predict_refuses_a_file_without_reference_channel_in_one_line(experimental, tmp_path, capsys):
    from xasflow.cli import main

    spectrum = experimental / "cu_metal_rt.xdi"
    out = tmp_path / "predictions.csv"
    arguments = ["predict", str(spectrum), "--checkpoint", "unused.ckpt", "--out", str(out)]
    assert main([*arguments, "--calibrate-reference", "Cu"]) == 2
    lines = _refusal(capsys)
    assert len(lines) == 1 and f"{spectrum}: has no reference channel" in lines[0]
    assert main([*arguments, "--merge"]) == 2
    lines = _refusal(capsys)
    assert len(lines) == 1 and "merging needs at least 2 scans, got 1" in lines[0]
    assert not out.exists()


def test_predict_calibrates_and_merges(checkpoint_path, experimental, tmp_path):
    from xasflow.cli import main

    foil = read_spectrum(experimental / "cu_metal_rt.xdi")
    scan = tmp_path / "cu_reads_3eV_high.dat"
    _with_reference_channel(scan, foil.energy + 3.0, foil.mu, foil.mu)
    out = tmp_path / "predictions.csv"
    base = ["--checkpoint", str(checkpoint_path), "--out", str(out)]

    def rows():
        with open(out, newline="") as handle:
            return list(csv.DictReader(handle))

    assert main(["predict", str(scan), *base]) == 0
    (plain,) = rows()
    assert plain["energy_shift_eV"] == "" and plain["merged_scans"] == ""
    assert main(["predict", str(scan), *base, "--calibrate-reference", "Cu:K"]) == 0
    (calibrated,) = rows()
    assert float(calibrated["energy_shift_eV"]) == pytest.approx(-4.5, abs=0.01)
    assert float(plain["e0_eV"]) - float(calibrated["e0_eV"]) == pytest.approx(4.5, abs=0.01)
    reference = experimental / "cu_metal_rt.xdi"
    assert main(["predict", str(reference), str(experimental / "cu_rt01.xmu"), *base, "--merge"]) == 0
    (merged,) = rows()
    assert merged["merged_scans"] == "2" and merged["spectrum"].startswith("merge of 2 scans (")
    assert float(merged["merged_spread"]) < 1e-3  # cu_rt01.xmu is the same scan as cu_metal_rt.xdi
    assert (
        main(["predict", str(experimental / "cu_rt01.xmu"), *base, "--reference-foil", f"{reference}=Cu"])
        == 0
    )
    (foil_calibrated,) = rows()
    assert float(foil_calibrated["energy_shift_eV"]) == pytest.approx(-1.5, abs=0.01)
