"""Surface/bulk deconvolution: the algebra, its uncertainty, the surface weight, and whole runs.

The end-to-end runs use the synthetic Cu K dataset of test_models with its 3-epoch MLP (the
``checkpoint_path`` fixture) and labels computed by the label pipeline on built clusters.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from xasflow.cli import main
from xasflow.config import ConfigError, read_yaml, validate_config
from xasflow.dataset.schema import build_dataset, open_dataset, write_dataset
from xasflow.experiment import read_spectrum
from xasflow.experiment.alignment import normalize_xanes
from xasflow.experiment.normalization import to_relative_grid
from xasflow.inference.deconvolution import (
    DeconvolutionError,
    closed_shell_surface_weight,
    draw_surface_spectra,
    noise_from_residual,
    simulated_particle,
    surface_spectrum,
    surface_weight_from_labels,
)
from xasflow.inference.deconvolution_run import DeconvolutionParams
from xasflow.inference.run import predict_files
from xasflow.structures.builders import NanoparticleSpec, build_nanoparticle
from xasflow.structures.io import read_labels, write_frames
from xasflow.structures.labels import LabelParams
from xasflow.structures.pipeline import label_system
from xasflow.study import system_spec

ENERGY = np.linspace(-20.0, 60.0, 161)  # eV relative to E0


def _xanes(white_line: float, position: float) -> np.ndarray:
    """A smooth normalized XANES: arctan edge plus a Gaussian white line (edge steps)."""
    edge = 0.5 + np.arctan(ENERGY / 1.5) / np.pi
    return edge + white_line * np.exp(-(((ENERGY - position) / 3.0) ** 2))


# --- the algebra ----------------------------------------------------------------------------------


def test_the_algebra_recovers_a_constructed_surface_spectrum_exactly():
    surface, bulk = _xanes(0.6, 4.0), _xanes(0.3, 7.0)
    weight = 0.37
    particle = weight * surface + (1 - weight) * bulk
    recovered, sigma = surface_spectrum(particle, bulk, weight, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(recovered, surface, rtol=0, atol=1e-12)
    assert np.all(sigma == 0)
    # each term alone: P's noise is amplified by 1/w, B's by (1-w)/w, w's by |P - B|/w^2
    _, from_particle = surface_spectrum(particle, bulk, weight, 0.01, 0.0, 0.0)
    _, from_bulk = surface_spectrum(particle, bulk, weight, 0.0, 0.01, 0.0)
    _, from_weight = surface_spectrum(particle, bulk, weight, 0.0, 0.0, 0.02)
    np.testing.assert_allclose(from_particle, 0.01 / 0.37)
    np.testing.assert_allclose(from_bulk, 0.01 * 0.63 / 0.37)
    np.testing.assert_allclose(from_weight, np.abs(particle - bulk) * 0.02 / 0.37**2)
    with pytest.raises(ValueError, match="outside"):
        surface_spectrum(particle, bulk, 0.0, 0.0, 0.0, 0.0)


def test_the_propagated_sigma_matches_a_monte_carlo_estimate():
    surface, bulk = _xanes(0.6, 4.0), _xanes(0.2, 8.0)
    weight = 0.5
    particle = weight * surface + (1 - weight) * bulk
    particle_sigma = 0.004 + 0.004 * (ENERGY > 0)  # per point: noisier above the edge
    bulk_sigma = np.full(ENERGY.shape, 0.006)
    surface_hat, sigma = surface_spectrum(particle, bulk, weight, particle_sigma, bulk_sigma, 0.02)
    draws, weights = draw_surface_spectra(
        particle, bulk, weight, particle_sigma, bulk_sigma, 0.02, 20000, np.random.default_rng(5)
    )
    assert draws.shape == (20000, ENERGY.size)
    assert weights.min() > 0 and weights.max() <= 1
    assert abs(weights.std() - 0.02) < 0.001
    ratio = draws.std(axis=0) / sigma
    # 20000 draws estimate a std to 0.5 %; the first-order formula misses (sigma_w/w)^2 ~ 0.2 %
    assert np.all(np.abs(ratio - 1) < 0.03), (ratio.min(), ratio.max())
    np.testing.assert_allclose(draws.mean(axis=0), surface_hat, atol=4 * sigma.max() / np.sqrt(20000) + 1e-3)


def test_noise_is_read_from_the_high_frequency_residual():
    fine = np.arange(-20.0, 60.0, 0.25)
    smooth = 0.5 + np.arctan(fine / 1.5) / np.pi + 0.5 * np.exp(-(((fine - 5.0) / 3.0) ** 2))
    noisy = smooth + np.random.default_rng(2).normal(0.0, 0.01, fine.size)
    assert noise_from_residual(noisy) == pytest.approx(0.01, rel=0.1)
    assert noise_from_residual(smooth) < 0.002  # the smooth curvature alone is far below the noise


# --- the surface weight ---------------------------------------------------------------------------


def _surface_atoms(atoms) -> np.ndarray:
    """Atoms with fewer than 12 neighbours within 1.2 nearest-neighbour distances (ASE alone)."""
    first, _ = neighbor_list("ij", atoms, 1.2 * np.min(neighbor_list("d", atoms, 4.0)))
    return np.bincount(first, minlength=len(atoms)) < 12


@pytest.mark.parametrize("shape", ["cuboctahedron", "icosahedron"])
def test_closed_shell_dispersion_counts_the_outer_shell_of_built_clusters(shape):
    for shells, expected in ((3, 42), (4, 92), (5, 162)):
        atoms = build_nanoparticle(NanoparticleSpec("Pt", shape, shells, 3.92))
        assert _surface_atoms(atoms).sum() == expected
        assert closed_shell_surface_weight(len(atoms)).value == pytest.approx(expected / len(atoms))
    assert 92 / 147 < closed_shell_surface_weight(100).value < 42 / 55
    with pytest.raises(DeconvolutionError, match="no interior"):
        closed_shell_surface_weight(12)


def _labels(tmp_path, frames, name="np"):
    """labels.npz of ``frames`` made by the label pipeline for a Pt-Cu cuboctahedron system."""
    entry = {
        "kind": "nanoparticle",
        "composition": {"Pt": 0.5, "Cu": 0.5},
        "shape": "cuboctahedron",
        "shells": 4,
        "lattice_constant": 3.92,
        "temperature": 300,
        "potential": {"generator": "zhou2004"},
    }
    config = validate_config({"absorber": "Pt", "systems": {name: entry}})
    snapshots = write_frames(frames, tmp_path / f"{name}.extxyz")
    spec = system_spec(name, config["systems"][name])
    return label_system(snapshots, spec, LabelParams.from_config(config["labels"]), tmp_path / f"{name}.npz")


def _cuboctahedron():
    atoms = build_nanoparticle(NanoparticleSpec("Pt", "cuboctahedron", 4, 3.92))
    return atoms, np.flatnonzero(_surface_atoms(atoms)), np.flatnonzero(~_surface_atoms(atoms))


def test_the_weight_from_labels_of_a_built_cuboctahedron_pools_frames(tmp_path):
    pure, surface, inside = _cuboctahedron()
    assert (surface.size, inside.size) == (92, 55)
    alloy = pure.copy()
    symbols = np.array(alloy.get_chemical_symbols())
    symbols[surface[:46]] = "Cu"  # half the surface and 10 inner atoms become Cu
    symbols[inside[:10]] = "Cu"
    alloy.set_chemical_symbols(symbols.tolist())
    labels = read_labels(_labels(tmp_path, [pure, alloy]))
    weight = surface_weight_from_labels(labels, "Pt", source="np.npz")
    # Pt at the surface: 92 of 147 in frame 0, 46 of 91 in frame 1
    assert weight.value == pytest.approx((92 + 46) / (147 + 91))
    assert weight.sigma == pytest.approx(abs(92 / 147 - 46 / 91) / np.sqrt(2))
    assert "138 of 238 Pt atoms" in weight.source
    with pytest.raises(DeconvolutionError, match="np.npz: no Au atoms"):
        surface_weight_from_labels(labels, "Au", source="np.npz")


# --- whole runs on the synthetic dataset ----------------------------------------------------------


PARTICLE, BULK = "np_mixed_300K", "interior_copy"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A synthetic Cu K dataset (test_models) in which every E0 is the same and the bulk system
    ``interior_copy`` is a copy of the interior sites of ``np_mixed_300K``: a deconvolution of it
    must give back its surface spectrum. Labels from the label pipeline on a 147-atom
    cuboctahedron: the particle's all Cu but 40 surface Pt atoms (52 of 107 Cu atoms at the
    surface), and ``np_small_300K``'s a Pt shell around a 55-atom Cu core (w = 0)."""
    from test_models import _synthetic_dataset

    folder = tmp_path_factory.mktemp("deconvolution")
    source = _synthetic_dataset()
    systems = np.array(source["system"].values.tolist(), dtype=str)
    interior = np.flatnonzero((systems == PARTICLE) & (source["surface"].values == 0))
    rows = np.concatenate([np.arange(systems.size), interior])
    dataset = build_dataset(
        energy=source["energy"].values,
        r=source["r"].values,
        mu=source["mu"].values[rows],
        e0=np.full(rows.size, 8979.0),
        coordination_number=source["coordination_number"].values[rows],
        rdf=source["rdf"].values[rows],
        surface=source["surface"].values[rows],
        system=[*systems, *[BULK] * interior.size],
        frame=source["frame"].values[rows],
        site=source["site"].values[rows],
        absorber=["Cu"] * rows.size,
        attrs={"xasflow_version": "test", "config_hash": "0" * 16, "provenance": {"source": "synthetic"}},
    )
    path = write_dataset(dataset, folder / "spectra.zarr")
    pure, surface, inside = _cuboctahedron()
    mixed = pure.copy()
    symbols = np.full(len(mixed), "Cu")
    symbols[surface[:40]] = "Pt"  # 52 of 107 Cu atoms at the surface
    mixed.set_chemical_symbols(symbols.tolist())
    core = pure.copy()
    symbols = np.full(len(core), "Pt")
    symbols[inside] = "Cu"
    core.set_chemical_symbols(symbols.tolist())
    return {
        "dataset": path,
        "particle_labels": _labels(folder, [mixed], PARTICLE),
        "core_labels": _labels(folder, [core], "np_small_300K"),
        "folder": folder,
    }


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_simulated_particle_is_deconvolved_verified_and_reported(study, checkpoint_path, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "deconvolve",
            "--dataset",
            str(study["dataset"]),
            "--bulk-system",
            BULK,
            "--particle-system",
            PARTICLE,
            "np_small_300K",
            "--labels",
            f"{PARTICLE}={study['particle_labels']}",
            f"np_small_300K={study['core_labels']}",
            "--checkpoint",
            f"mlp={checkpoint_path}",
            "--out-dir",
            str(out),
            "--draws",
            "50",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weights"][PARTICLE]["value"] == pytest.approx(52 / 107)
    metrics = summary["particles"][PARTICLE]
    # the bulk is the particle's interior: S comes back but for the edge alignment of two spectra
    # whose edges differ only through the white line's tail (measured 1e-4 edge steps)
    assert metrics["rmse_mu"] < 2e-3
    assert metrics["rmse_interior_as_bulk"] == pytest.approx(metrics["rmse_mu"], abs=1e-6)
    assert metrics["rmse_particle_as_surface"] > 10 * metrics["rmse_mu"]
    assert [entry["particle"] for entry in summary["skipped"]] == ["np_small_300K"]
    assert "0 of 55 Cu atoms at the surface" in summary["skipped"][0]["reason"]

    dataset = open_dataset(study["dataset"])
    systems = np.array(dataset["system"].values.tolist(), dtype=str)
    cn, surface = dataset["coordination_number"].values, dataset["surface"].values == 1
    (row,) = [row for row in summary["rows"] if row["target"] == "coordination_number"]
    assert row["surface_true"] == pytest.approx(cn[(systems == PARTICLE) & surface].mean(), rel=1e-6)
    assert row["bulk_true"] == pytest.approx(cn[systems == BULK].mean(), rel=1e-6)
    assert row["particle_true"] == pytest.approx(
        52 / 107 * row["surface_true"] + 55 / 107 * row["bulk_true"], rel=1e-6
    )
    assert row["split"] == "test"  # np_mixed_300K is the synthetic study's test system
    assert row["sign_agrees"] == (
        np.sign(row["surface_true"] - row["bulk_true"]) == np.sign(row["difference_predicted"])
    )

    predictions = _read_csv(out / "predictions.csv")
    kinds = {(row["particle"], row["spectrum"], row["target"]) for row in predictions}
    assert kinds == {
        (PARTICLE, kind, "coordination_number") for kind in ("particle", "bulk", "surface", "true_surface")
    }
    (surface_row,) = [row for row in predictions if row["spectrum"] == "surface"]
    assert int(surface_row["mc_draws"]) == 50
    assert float(surface_row["mc_low_90"]) <= float(surface_row["predicted"]) + 3 * float(
        surface_row["mc_std"]
    )
    assert float(surface_row["mc_std"]) > 0
    spectra = _read_csv(out / "spectra.csv")
    assert len(spectra) == dataset.sizes["energy"]
    for name in ("summary.md", "summary.csv", f"plots/{PARTICLE}.png", "plots/np_small_300K.png"):
        assert (out / name).stat().st_size > 0
    assert "not deconvolved: np_small_300K: no absorber atom at the surface" in capsys.readouterr().out


def test_a_measured_spectrum_goes_through_the_predict_path(study, checkpoint_path, tmp_path):
    """P of the simulated particle, noised and written as a two-column file, is read, normalized
    and predicted exactly as `xasflow predict` does, and deconvolved with the propagated sigma."""
    dataset = open_dataset(study["dataset"])
    weight = surface_weight_from_labels(read_labels(study["particle_labels"]), "Cu")
    case = simulated_particle(dataset, PARTICLE, weight)
    fine = np.arange(case.particle.energy[0], case.particle.energy[-1], 0.25)
    mu = np.interp(fine, case.particle.energy, case.particle.mu)
    mu = mu + np.random.default_rng(0).normal(0.0, 0.003, fine.size)
    path = tmp_path / "particle.dat"
    np.savetxt(path, np.column_stack([case.particle.e0 + fine, mu]), header="energy mu")
    out = tmp_path / "out"
    arguments = [
        "deconvolve",
        "--dataset",
        str(study["dataset"]),
        "--bulk-system",
        BULK,
        "--spectrum",
        str(path),
        "--checkpoint",
        f"mlp={checkpoint_path}",
        "--out-dir",
        str(out),
        "--draws",
        "20",
    ]
    assert main([*arguments, "--surface-weight", "0.4", "--weight-sigma", "0.02"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weights"]["particle"]["sigma"] == 0.02
    spectra = _read_csv(out / "spectra.csv")
    numbers = [key for key in spectra[0] if key.endswith(("mu", "sigma")) and key != "true_surface_mu"]
    column = {key: np.array([float(row[key]) for row in spectra]) for key in numbers}
    assert all(row["true_surface_mu"] == "" for row in spectra)
    # P is the file as `xasflow predict` reads it: Larch normalization, on the grid from its E0
    normalized = normalize_xanes(read_spectrum(path))
    expected = to_relative_grid(normalized, dataset["energy"].values)
    np.testing.assert_allclose(column["particle_mu"], expected, atol=1e-4)  # the CSV's 4 decimals
    assert column["particle_sigma"][0] == pytest.approx(0.003 / normalized.edge_step, rel=0.25)  # estimated
    particle, bulk = column["particle_mu"], column["bulk_mu"]
    np.testing.assert_allclose(column["surface_mu"], (particle - 0.6 * bulk) / 0.4, atol=5e-4)
    sigma = np.sqrt(
        (column["particle_sigma"] / 0.4) ** 2
        + (0.6 / 0.4 * column["bulk_sigma"]) ** 2
        + ((particle - bulk) / 0.4**2 * 0.02) ** 2
    )
    np.testing.assert_allclose(column["surface_sigma"], sigma, atol=5e-4)
    # the particle row predicts what `xasflow predict` predicts for the file
    predict_files([checkpoint_path], [path], tmp_path / "predicted.csv")
    (predicted,) = _read_csv(tmp_path / "predicted.csv")
    (row,) = [row for row in _read_csv(out / "predictions.csv") if row["spectrum"] == "particle"]
    assert float(row["predicted"]) == pytest.approx(
        float(predicted["predicted_coordination_number"]), abs=2e-3
    )
    # the dispersion of a 147-atom cluster instead of a given weight
    assert main([*arguments, "--particle-atoms", "147"]) == 0
    assert json.loads((out / "summary.json").read_text())["weights"]["particle"]["value"] == pytest.approx(
        92 / 147
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--spectrum", "{missing}", "--surface-weight", "0.5"], "missing.dat"),
        (["--spectrum", "{file}", "--surface-weight", "0"], "surface weight 0.0 is outside (0, 1]"),
        (["--spectrum", "{file}"], "give either --surface-weight W or --particle-atoms N"),
        (["--particle-system", PARTICLE], f"--labels SYSTEM=labels.npz is missing for {PARTICLE}"),
        (["--particle-system", "nowhere", "--labels", "nowhere={labels}"], "system 'nowhere' has no spectra"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(study, checkpoint_path, tmp_path, capsys, arguments, message):
    measured = tmp_path / "particle.dat"
    energy = 8979.0 + np.arange(-20.0, 60.0, 0.5)
    np.savetxt(measured, np.column_stack([energy, 0.5 + np.arctan((energy - 8979.0) / 1.5) / np.pi]))
    values = {
        "missing": str(tmp_path / "missing.dat"),
        "file": str(measured),
        "labels": str(study["particle_labels"]),
    }
    arguments = [argument.format(**values) for argument in arguments]
    code = main(
        [
            "deconvolve",
            "--dataset",
            str(study["dataset"]),
            "--bulk-system",
            BULK,
            *arguments,
            "--checkpoint",
            f"mlp={checkpoint_path}",
            "--out-dir",
            str(tmp_path / "out"),
        ]
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert error[-1].startswith("xasflow: error: ") and message in error[-1]
    assert not (tmp_path / "out").exists()


def test_the_run_defaults_are_the_schema_defaults():
    from xasflow.config import load_schema

    section = load_schema()["properties"]["deconvolution"]["properties"]
    defaults = DeconvolutionParams()
    assert (defaults.draws, defaults.seed) == (section["draws"]["default"], section["seed"]["default"])


def test_the_config_section_names_known_particles_bulks_and_models():
    from pathlib import Path

    study = read_yaml(Path(__file__).resolve().parents[2] / "config" / "examples" / "ptcu_nanoparticles.yaml")
    filled = validate_config(study)["deconvolution"]
    assert filled == {
        "particles": {
            "ptcu_cubo147_mc": "ptcu_bulk",
            "ptcu_cubo147_random": "ptcu_bulk",
            "pt3cu_ico147_mc": "pt3cu_bulk",
            "pt3cu_ico147_random": "pt3cu_bulk",
            "pt3cu_cubo147_random": "pt3cu_bulk",
            "ptcu3_cubo147_mc": "ptcu3_bulk",
            "ptcu3_cubo147_random": "ptcu3_bulk",
        },
        "models": ["mlp"],
        "draws": 200,
        "seed": 0,
        "held_out": True,
    }
    for section, message in (
        ({"particles": {"ptcu_cubo147_mc": "ptcu_cubo147_random"}}, "which is a nanoparticle"),
        ({"particles": {"ptcu_bulk": "ptcu_bulk"}}, "not a nanoparticle"),
        ({"particles": {"ptcu_cubo147_mc": "ptcu_bulk"}, "models": ["gnn"]}, "'gnn', which is not in"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate_config({**study, "deconvolution": section})


def test_held_out_reads_a_trained_particle_with_the_fold_that_left_it_out(checkpoint_path, tmp_path):
    import shutil

    from xasflow.inference.deconvolution_run import case_models, held_out_checkpoint
    from xasflow.inference.predict import load_predictor

    predictor = load_predictor(checkpoint_path)
    split = predictor.model_card["split"]
    trained, tested = split["train"][0], split["test"][0]
    model = tmp_path / "mlp" / "model.ckpt"
    model.parent.mkdir()
    shutil.copy(checkpoint_path, model)
    assert held_out_checkpoint(model, predictor, trained) is None  # a split model keeps no folds
    fold = tmp_path / "mlp" / "crossval" / "folds" / trained / "model.ckpt"
    fold.parent.mkdir(parents=True)
    shutil.copy(checkpoint_path, fold)
    assert held_out_checkpoint(model, predictor, trained) == fold
    assert held_out_checkpoint(model, predictor, tested) is None  # the model never saw it
    assert case_models({"mlp": model}, {"mlp": predictor}, trained, held_out=True)["mlp"] is not predictor
    assert case_models({"mlp": model}, {"mlp": predictor}, tested, held_out=True)["mlp"] is predictor
    assert case_models({"mlp": model}, {"mlp": predictor}, trained, held_out=False)["mlp"] is predictor


def test_draws_the_model_cannot_read_are_dropped_and_counted(study, checkpoint_path, caplog):
    """A Monte Carlo draw whose data stop short of the model's energy grid (its edge moved, or
    its data end early) is left out of the spread and logged; the readable ones are read exactly
    as model_inputs reads them."""
    from xasflow.inference.deconvolution import EdgeSpectrum
    from xasflow.inference.deconvolution_run import model_inputs, readable_draw_inputs
    from xasflow.inference.predict import load_predictor

    predictor = load_predictor(checkpoint_path)
    dataset = open_dataset(study["dataset"])
    energy = dataset["energy"].values  # eV relative to E0 (8979 eV for every spectrum here)
    mu = dataset["mu"].values[0]
    readable = EdgeSpectrum("draw 0", energy, mu, np.zeros_like(mu), 8979.0)
    short = energy <= predictor.energy.max() - 3.0  # the grid now reaches 3 eV past the data
    cut = EdgeSpectrum("draw 1", energy[short], mu[short], np.zeros(short.sum()), 8979.0)
    with caplog.at_level("WARNING"):
        inputs = readable_draw_inputs(predictor, [readable, cut, readable], "particle")
    assert inputs.shape[0] == 2
    np.testing.assert_array_equal(inputs[0], model_inputs(predictor, [readable])[0])
    assert "particle: 1 of 3 Monte Carlo draws reach beyond the model's energy grid" in caplog.text
    assert readable_draw_inputs(predictor, [cut], "particle").shape[0] == 0
