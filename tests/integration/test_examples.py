"""Each example study under config/examples/ runs through the normal workflow at tiny size.

The tiny layer (tests/configs/examples/NAME.tiny.yaml) only shrinks sizes and steps; Snakemake
merges it into the example, so the example's science (kinds, potentials, labels, edge) is what
runs: MD -> labels -> sites -> FEFF10 -> dataset -> model.
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from xasflow.dataset.schema import open_dataset
from xasflow.structures.io import read_labels

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _example_configs(name: str) -> list[Path]:
    return [
        ROOT / "config" / "examples" / f"{name}.yaml",
        ROOT / "tests" / "configs" / "examples" / f"{name}.tiny.yaml",
    ]


def _finished(name: str, tmp_path_factory, run_snakemake, overlay: dict | None = None) -> Path:
    workdir = tmp_path_factory.mktemp(name)
    configs = _example_configs(name)
    if overlay:  # e.g. absolute paths of the shared data, which the example names relative to the repo
        configs.append(workdir / "overlay.yaml")
        configs[-1].write_text(yaml.safe_dump(overlay))
    result = run_snakemake(workdir, configs, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    results = workdir / "results"
    summary = json.loads((results / "dataset" / "summary.json").read_text())
    assert summary["requested"] == summary["succeeded"] + summary["failed"]
    assert summary["succeeded"] >= 1
    assert (results / "models" / "mlp" / "metrics.json").is_file()
    for record in (results / "structures").glob("*/md.json"):
        provenance = json.loads(record.read_text())
        assert len(provenance["potential_sha256"]) == 64
        assert provenance.get("lammps_version") or provenance.get("calculator_version")
    return results


def test_iron_bcc_fcc_and_bain_path(tmp_path_factory, run_snakemake):
    results = _finished("fe_bcc_fcc", tmp_path_factory, run_snakemake)
    bcc = read_labels(results / "structures" / "bcc_300K" / "labels.npz")
    # thermal motion at 300 K keeps the bcc shells apart: about 8 + 6 neighbours
    assert bcc["shell_cn"].mean(axis=0) == pytest.approx([8, 6], abs=0.5)
    assert bcc["r"][-1] >= 6.0
    fcc = read_labels(results / "structures" / "fcc_1200K" / "labels.npz")
    assert fcc["coordination_number"].mean() == pytest.approx(12, abs=1.0)
    dataset = open_dataset(results / "dataset" / "spectra.zarr")
    assert set(dataset["absorber"].values) == {"Fe"}
    assert dataset["shell_cn"].shape[1] == 2


def test_pt_cu_nanoparticles_segregate_under_monte_carlo(tmp_path_factory, run_snakemake):
    results = _finished("ptcu_nanoparticles", tmp_path_factory, run_snakemake)
    segregated = json.loads((results / "structures" / "ptcu_cubo147_mc" / "labels.json").read_text())
    random = json.loads((results / "structures" / "ptcu_cubo147_random" / "labels.json").read_text())
    assert segregated["surface_segregation"]["Cu"] > random["surface_segregation"]["Cu"]
    dataset = open_dataset(results / "dataset" / "spectra.zarr")
    assert list(dataset["element"].values) == ["Cu", "Pt"]
    assert set(dataset["absorber"].values) == {"Pt"}
    # partial CNs add up to the total for every absorber
    assert np.allclose(dataset["partial_cn"].sum("element"), dataset["coordination_number"])


def test_pt_ru_nanoparticles_with_chgnet_and_the_measured_pt(tmp_path_factory, run_snakemake, shared_data):
    """CHGNet MD with MC swaps for every Pt-Ru system, FEFF Pt L3, fidelity against the Pt foil,
    the foil and every group of PtData.prj predicted by both models, and the deconvolution."""
    experimental = shared_data / "experimental"
    overlay = {
        "references": {"pt_foil_rt": {"path": str(experimental / "pt_metal_rt.xdi")}},
        "inference": {
            "spectra": [
                {"name": "pt_metal_rt", "path": str(experimental / "pt_metal_rt.xdi")},
                {"name": "pt_supported", "path": str(experimental / "PtData.prj")},
            ]
        },
    }
    results = _finished("ptru_nanoparticles", tmp_path_factory, run_snakemake, overlay)
    for system in ("ptru_cubo55_mc", "pt3ru_cubo147_random", "pt_bulk"):
        record = json.loads((results / "structures" / system / "md.json").read_text())
        assert record["potential_style"] == "ase:chgnet"
        assert record["calculator_model"] == "0.3.0"
    swapped = json.loads((results / "structures" / "ptru_cubo55_mc" / "md.json").read_text())
    assert swapped["mc_swap_attempts"] == 4 * 10  # 20 steps, a round of 10 tries every 5
    bulk = read_labels(results / "structures" / "pt_bulk" / "labels.npz")
    assert bulk["coordination_number"].mean() == pytest.approx(12, abs=0.5)
    dataset = open_dataset(results / "dataset" / "spectra.zarr")
    assert list(dataset["element"].values) == ["Pt", "Ru"]
    assert set(dataset["absorber"].values) == {"Pt"}
    assert np.allclose(dataset["partial_cn"].sum("element"), dataset["coordination_number"])
    with open(results / "inference" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    foil = [row for row in rows if row["spectrum"].endswith("pt_metal_rt.xdi")]
    assert {row["model"] for row in foil} == {"mlp", "multiscale"}
    for row in foil:
        assert 11000 < float(row["e0_eV"]) < 12000
        assert np.isfinite(float(row["predicted_partial_cn_Pt"]))
    # cross-system intervals exist even at tiny size (8 calibration spectra, one per system)
    (mlp,) = [row for row in foil if row["model"] == "mlp"]
    assert float(mlp["partial_cn_Pt_low_68"]) < float(mlp["partial_cn_Pt_high_68"])
    # every group of the Athena project of supported Pt is read and predicted by both models
    supported = [row for row in rows if "PtData.prj:" in row["spectrum"]]
    assert len(supported) == 6 * 2
    assert all(np.isfinite(float(row["predicted_partial_cn_Ru"])) for row in supported)
    # one deconvolution per bulk alloy; at one site per system every particle is accounted for,
    # deconvolved or reported as not deconvolvable (no interior or no surface site computed)
    for bulk, particles in (("ptru_bulk", 4), ("pt3ru_bulk", 2)):
        summary = json.loads((results / "deconvolution" / bulk / "summary.json").read_text())
        deconvolved = {row["particle"] for row in summary["rows"]}
        assert len(deconvolved | {entry["particle"] for entry in summary["skipped"]}) == particles
        assert summary["held_out"] is True


def test_al_cu_polycrystal_grain_boundaries(tmp_path_factory, run_snakemake):
    results = _finished("alcu_polycrystal", tmp_path_factory, run_snakemake)
    for system in ("alcu5_random", "alcu5_mc", "alcu2_mc", "alcu5_zhou_mc"):
        summary = json.loads((results / "structures" / system / "labels.json").read_text())
        # two grains in a 20 A box: both grain interiors (fcc) and boundaries are present
        assert 0.02 < summary["grain_boundary_fraction"] < 0.98
        assert summary["structure_type_fractions"]["fcc"] > 0.02
        boundary = summary["grain_boundary_composition"]["Cu"]
        interior = summary["grain_interior_composition"]["Cu"]
        # boundary and interior compositions, weighted by their fractions, give the whole cell's
        overall = np.mean(read_labels(results / "structures" / system / "labels.npz")["element"] == "Cu")
        fraction = summary["grain_boundary_fraction"]
        assert fraction * boundary + (1 - fraction) * interior == pytest.approx(overall, abs=1e-9)
    labels = read_labels(results / "structures" / "alcu5_mc" / "labels.npz")
    cu = labels["element"] == "Cu"
    assert np.allclose(labels["local_composition"][cu].sum(axis=1), 1.0)
    dataset = open_dataset(results / "dataset" / "spectra.zarr")
    assert set(dataset["absorber"].values) == {"Cu"}
    assert set(np.unique(dataset["grain_boundary"].values)) <= {0, 1}


def test_siox_glasses_at_nine_compositions_and_silica(tmp_path_factory, run_snakemake):
    results = _finished("siox_amorphous", tmp_path_factory, run_snakemake)
    means = {}
    for record in sorted((results / "structures").glob("siox_*/labels.json")):
        summary = json.loads(record.read_text())
        histogram = summary["elements"]["Si"]["valence_histogram"]
        assert all(0 <= int(valence) <= 6 for valence in histogram)
        means[record.parent.name] = summary["elements"]["Si"]["valence_mean"]
    assert len(means) == 10
    # more oxygen, more O around each Si (tiny quenches: only the trend is checked)
    assert means["siox_20"] > means["siox_10"] > means["siox_02"]
    dataset = open_dataset(results / "dataset" / "spectra.zarr")
    assert set(dataset["absorber"].values) == {"Si"}
    assert np.all(dataset["valence"].values >= 0)
    assert list(dataset["element"].values) == ["O", "Si"]


def _first_shell_width(labels: dict) -> float:
    """Angstrom: the spread (second moment) of the mean first peak of 4 pi r^2 g(r) in the labels."""
    r, rdf = labels["r"], labels["rdf"].mean(axis=0)
    first = r <= labels["shell_edges"][0]
    weights = r[first] ** 2 * rdf[first]
    mean = np.average(r[first], weights=weights)
    return float(np.sqrt(np.average((r[first] - mean) ** 2, weights=weights)))


def test_cu_temperature_series_read_from_measured_foils(tmp_path_factory, run_snakemake, shared_data):
    """Bulk Cu MD on a ladder of effective temperatures and two particles, FEFF10 EXAFS, chi
    models, and two of the measured temperature series (10 K and room temperature) predicted."""
    experimental = shared_data / "experimental"
    foils = ("cu_10k.xmu", "cu_rt01.xmu")
    overlay = {
        "inference": {
            "spectra": [{"name": Path(foil).stem, "path": str(experimental / foil)} for foil in foils]
        }
    }
    results = _finished("cu_temperature", tmp_path_factory, run_snakemake, overlay)
    structures = results / "structures"
    # classical MD at T_eff 110, 178, 362 K (nominal 10, 150, 350 K): the first shell broadens
    widths = [
        _first_shell_width(read_labels(structures / system / "labels.npz"))
        for system in ("cu_T010", "cu_T150", "cu_T350")
    ]
    assert widths[0] < widths[1] < widths[2]
    assert read_labels(structures / "cu_T010" / "labels.npz")["shell_cn"].mean() == pytest.approx(
        12, abs=0.01
    )
    # the particles put first-shell CNs below 12 into training
    assert read_labels(structures / "np_ico55_T300" / "labels.npz")["shell_cn"].mean() < 11
    dataset = open_dataset(results / "dataset" / "spectra.zarr")
    assert dataset["shell_cn"].values.min() < 12 <= dataset["shell_cn"].values.max()
    n_r = read_labels(structures / "cu_T010" / "labels.npz")["r"].size
    with open(results / "inference" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    with open(results / "inference" / "predictions_rdf.csv") as handle:
        curves = list(csv.DictReader(handle))
    for foil in foils:
        read = [row for row in rows if row["spectrum"].endswith(foil)]
        assert [row["model"] for row in read] == ["mlp"]
        for row in read:
            assert 8970 < float(row["e0_eV"]) < 9000
            assert np.isfinite(float(row["predicted_shell_cn_1"]))
            # every foil's g(r), on the labels' r grid, from every model
            curve = [
                line
                for line in curves
                if line["spectrum"] == row["spectrum"] and line["model"] == row["model"]
            ]
            assert [line["target"] for line in curve] == ["rdf"] * n_r
            assert all(np.isfinite(float(line["predicted_g"])) for line in curve)
