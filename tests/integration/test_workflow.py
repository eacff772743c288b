"""The real Snakefile on the tiny config: real LAMMPS MD, real FEFF10, zarr on disk, Lightning.

One workflow run (about a minute on 2 cores) is shared by the tests of this module.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from xasflow.config import load_config
from xasflow.dataset.schema import open_dataset
from xasflow.structures.plan import batches_for, sites_for

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _shared_folder() -> Path | None:
    from conftest import _candidate_folders  # tests/conftest.py, on sys.path under pytest

    override = os.environ.get("XASFLOW_SHARED_DATA")
    candidates = [Path(override)] if override else _candidate_folders()
    return next((folder for folder in candidates if folder.is_dir()), None)


def tiny_config(workdir: Path) -> Path:
    """The tiny study, with the measured Cu foil as its reference and calibration (and two Cu
    measurements to predict) when the shared data folder is there. An Fe foil is not listed: the
    models' card refuses it (tested below with ``xasflow predict``)."""
    config = yaml.safe_load(TINY.read_text())
    shared = _shared_folder()
    if shared is not None:
        experimental = shared / "experimental"
        config["references"] = {
            "cu_foil": {
                "path": str(experimental / "cu_metal_rt.xdi"),
                "element": "Cu",
                "lattice": "fcc",
                "lattice_constant": 3.615,
            }
        }
        config["calibration"] = {"reference": "cu_foil", "window": [-12.0, 20.0]}
        config["inference"]["spectra"] = [
            {"name": "cu_foil", "path": str(experimental / "cu_metal_rt.xdi")},
            {"name": "cu_10k", "path": str(experimental / "cu_10k.xmu")},
        ]
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, run_snakemake):
    workdir = tmp_path_factory.mktemp("tiny")
    result = run_snakemake(workdir, tiny_config(workdir))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_dataset_holds_every_requested_spectrum_with_labels(tiny_run):
    config = load_config(TINY)
    summary = json.loads((tiny_run / "results/dataset/summary.json").read_text())
    requested = sum(sites_for(config, system) for system in config["systems"])
    assert summary["requested"] == requested
    assert summary["requested"] == summary["succeeded"] + summary["failed"]
    with open(tiny_run / "results/dataset/failures.csv") as handle:
        assert len(list(csv.DictReader(handle))) == summary["failed"]
    dataset = open_dataset(tiny_run / "results/dataset/spectra.zarr")
    assert dataset.sizes["spectrum"] == summary["succeeded"]
    assert set(dataset["system"].values.tolist()) <= set(config["systems"])
    assert dataset.sizes["energy"] == 39 and dataset.sizes["r"] == config["labels"]["n_r"]
    assert sites_for(config, "crystal_Cu") == 1
    mu = dataset["mu"].values
    energy = dataset["energy"].values
    assert np.all(mu[:, energy < -8].mean(axis=1) < 0.3)  # below the edge
    assert np.all(np.abs(mu[:, energy > 25].mean(axis=1) - 1) < 0.35)  # normalized above it
    cn = dataset["coordination_number"].values
    assert np.all((cn >= 3) & (cn <= 12))
    bulk = dataset["system"].values == "bulk_300K"
    assert np.all(cn[bulk] == 12) and not dataset["surface"].values[bulk].any()
    # the static crystal is computed once, standing for its 108 equivalent atoms
    crystal = dataset["system"].values == "crystal_Cu"
    assert crystal.sum() == 1 and dataset["multiplicity"].values[crystal][0] == 108
    assert np.all(dataset["multiplicity"].values[~crystal] == 1)
    provenance = json.loads(dataset.attrs["provenance"])
    assert provenance["packages"]["feff10-rs"] == "0.2.4"
    assert provenance["spectra"]["fms_radius"] == config["spectra"]["fms_radius"]
    assert provenance["systems"]["np_cubo_55"]["potential_sha256"]
    assert dataset.attrs["config_hash"]


def test_each_feff_site_keeps_input_log_and_spectrum(tiny_run):
    site_dirs = sorted((tiny_run / "results/spectra").glob("*/batch_*/*_Cu"))
    assert len(site_dirs) == json.loads((tiny_run / "results/dataset/summary.json").read_text())["requested"]
    for site in site_dirs:
        assert {"feff.inp", "log.dat", "xmu.dat", "params.json"} <= {p.name for p in site.iterdir()}


def test_snapshots_record_their_provenance(tiny_run):
    import ase.io

    frames = ase.io.read(tiny_run / "results/structures/np_cubo_55/snapshots.extxyz", index=":")
    assert len(frames) == 2
    assert frames[0].info["potential_file"] == "Cu_u3.eam"
    assert str(frames[0].info["lammps_version"]).startswith("20")  # e.g. 20250722
    assert (tiny_run / "results/structures/np_cubo_55/lammps.log").stat().st_size > 0


def test_models_write_metrics_and_plots(tiny_run):
    for model in ("cnn", "mlp"):
        folder = tiny_run / "results/models" / model
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["architecture"] == model
        assert metrics["test_systems"] == ["bulk_300K"]
        assert "np_deca_55" in metrics["excluded_systems"]
        assert np.isfinite(metrics["test_coordination_number_mae"])
        assert set(metrics["targets"]) == {"coordination_number", "rdf"}
        assert set(metrics["targets"]["coordination_number"]["baselines"]) == {
            "mean",
            "ridge",
            "pls",
            "knn",
            "trees",
        }
        for name in (
            "model.ckpt",
            "parity.png",
            "loss.png",
            "reliability.png",
            "comparison.csv",
            "comparison.md",
        ):
            assert (folder / name).stat().st_size > 0


def test_pseudo_experiment_is_predicted_by_both_models(tiny_run):
    with open(tiny_run / "results/inference/predictions.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if "pseudo" in row["spectrum"]]
    assert sorted(row["model"] for row in rows) == ["cnn", "mlp"]
    truth = json.loads((tiny_run / "results/inference/pseudo/np_deca_55.truth.json").read_text())
    for row in rows:
        assert float(row["true_coordination_number"]) == pytest.approx(truth["coordination_number"], abs=1e-3)
        assert 0 < float(row["predicted_coordination_number"]) < 14
    assert (tiny_run / "results/inference/predictions_rdf.csv").stat().st_size > 0


def test_rerun_has_nothing_to_do(tiny_run, run_snakemake):
    result = run_snakemake(tiny_run, tiny_run / "study.yaml", "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_crossval_target_holds_out_every_system_once(tiny_run, run_snakemake):
    checkpoint = tiny_run / "results/models/mlp/model.ckpt"
    stamp = checkpoint.stat().st_mtime_ns
    result = run_snakemake(tiny_run, tiny_run / "study.yaml", "results/crossval/mlp/crossval.json")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tiny_run / "results/crossval/mlp"
    summary = json.loads((folder / "crossval.json").read_text())
    # the pseudo-experiment's system stays excluded; the four others are held out in turn
    assert summary["systems"] == ["bulk_300K", "crystal_Cu", "np_cubo_55", "np_ico_55"]
    assert summary["folds"]["np_ico_55"]["val_systems"] == ["bulk_300K"]
    dataset = open_dataset(tiny_run / "results/dataset/spectra.zarr")
    kept = int(np.sum(dataset["system"].values != "np_deca_55"))
    with open(folder / "crossval.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["target"] == "coordination_number"]
    assert len(rows) == kept == summary["targets"]["coordination_number"]["models"]["network"]["n"]
    assert set(summary["targets"]["coordination_number"]["models"]) >= {"network", "mean", "ridge"}
    assert (folder / "reliability.png").stat().st_size > 0
    assert checkpoint.stat().st_mtime_ns == stamp  # the study's own model is not touched


def _job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1]
    return {match[0]: int(match[1]) for match in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def test_changing_one_structure_model_reruns_only_its_jobs(tiny_run, tmp_path, run_snakemake):
    config = yaml.safe_load((tiny_run / "study.yaml").read_text())
    config["systems"]["np_cubo_55"]["temperature"] = 350
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    result = run_snakemake(tiny_run, changed, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = _job_counts(result.stdout)
    validated = load_config(changed)
    assert counts["md"] == 1 and counts["labels"] == 1 and counts["sites"] == 1
    assert counts["feff_batch"] == batches_for(validated, "np_cubo_55")
    assert "wildcards: system=np_cubo_55" in result.stdout
    assert "system=np_ico_55" not in result.stdout and "system=bulk_300K" not in result.stdout
    assert "fidelity" not in counts  # the references do not depend on the structure models


def test_fidelity_compares_the_measured_foil_with_its_simulation_and_calibrates_training(
    tiny_run, shared_data
):
    with open(tiny_run / "results/fidelity/fidelity.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["reference"] for row in rows] == ["cu_foil"]
    # even the tiny settings (FMS 4 A, 2 eV grid) resemble the foil; calibration brings them closer
    assert float(rows[0]["pearson_raw"]) > 0.9
    assert float(rows[0]["pearson_calibrated"]) >= float(rows[0]["pearson_raw"])
    assert float(rows[0]["rmse_calibrated"]) <= float(rows[0]["rmse_raw"])
    assert (tiny_run / "results/fidelity/cu_foil/overlay.png").stat().st_size > 0
    calibration = json.loads((tiny_run / "results/fidelity/calibration.json").read_text())
    metrics = json.loads((tiny_run / "results/models/cnn/metrics.json").read_text())
    assert metrics["calibration"]["transform"] == calibration["transform"]
    assert metrics["augmentation"] is not None  # the schema's defaults
    truth = json.loads((tiny_run / "results/inference/pseudo/np_deca_55.truth.json").read_text())
    assert truth["calibration"] == calibration["transform"]


def test_every_prediction_carries_its_distance_to_the_training_spectra(tiny_run, shared_data):
    with open(tiny_run / "results/inference/predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3  # two models x (two Cu foils, pseudo-experiment)
    for row in rows:
        assert float(row["input_distance"]) >= 0 and float(row["distance_threshold"]) > 0
        assert row["out_of_distribution"] in ("true", "false")
        assert (row["out_of_distribution"] == "true") == (
            float(row["input_distance"]) > float(row["distance_threshold"])
        )
    # the calibration foil lies within 1.5x its own distance by construction; whether the flag
    # tells Fe from Cu is tested on realistic spectra in tests/unit/test_ood.py (a tiny study of
    # eight spectra has a training spread too narrow to mean anything)
    calibration_foil = [row for row in rows if row["spectrum"].endswith("cu_metal_rt.xdi")]
    assert calibration_foil and all(row["out_of_distribution"] == "false" for row in calibration_foil)


def test_predict_cli_on_the_measured_cu_foil(tiny_run, shared_data, tmp_path, workflow_environment):
    out = tmp_path / "foil.csv"
    command = [
        str(BIN / "xasflow"),
        "predict",
        str(shared_data / "experimental" / "cu_metal_rt.xdi"),
        "--checkpoint",
        str(tiny_run / "results/models/cnn/model.ckpt"),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=workflow_environment)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    # e0 (0.3 of the edge step) lies on the rise into the 1s->4p shoulder, near the tabulated 8979 eV
    assert len(rows) == 1 and 8976 < float(rows[0]["e0_eV"]) < 8984
    # one epoch on three training spectra (CN 12, 8 and 6) leaves a model at the mean of its
    # training labels: the prediction checks the standardization round trip, not learning
    # (the default study's models on the real foils are measured in the README)
    metrics = json.loads((tiny_run / "results/models/cnn/metrics.json").read_text())
    dataset = open_dataset(tiny_run / "results/dataset/spectra.zarr")
    train = np.isin(dataset["system"].values, metrics["train_systems"])
    label_mean = float(dataset["coordination_number"].values[train].mean())
    assert 6 < label_mean < 12
    assert float(rows[0]["predicted_coordination_number"]) == pytest.approx(label_mean, abs=0.5)


def test_predict_cli_rejects_an_unreadable_file_with_one_line_and_exit_2(
    tiny_run, shared_data, tmp_path, workflow_environment
):
    bad = shared_data / "xdi-baddata" / "bad_15.xdi"
    out = tmp_path / "none.csv"
    command = [
        str(BIN / "xasflow"),
        "predict",
        str(bad),
        "--checkpoint",
        str(tiny_run / "results/models/cnn/model.ckpt"),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=workflow_environment)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(bad) in lines[0]
    assert not out.exists()


def test_predict_cli_refuses_the_fe_foil_by_the_model_card(
    tiny_run, shared_data, tmp_path, workflow_environment
):
    iron = shared_data / "experimental" / "fe_metal_rt.xdi"
    out = tmp_path / "iron.csv"
    command = [
        str(BIN / "xasflow"),
        "predict",
        str(iron),
        "--checkpoint",
        str(tiny_run / "results/models/cnn/model.ckpt"),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=workflow_environment)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("xasflow: error")]
    assert len(errors) == 1 and str(iron) in errors[0]
    assert "Fe K-edge" in errors[0] and "model cnn reads Cu K-edge spectra" in errors[0]
    assert not out.exists()


def test_an_athena_project_and_one_of_its_groups_reach_predict(tmp_path, run_snakemake, shared_data):
    """The rule's input is the project file; `xasflow predict` gets PATH:LABEL for a group."""
    project = shared_data / "experimental" / "PtData.prj"
    config = yaml.safe_load(TINY.read_text())
    config["inference"]["spectra"] = [
        {"name": "pt_all", "path": str(project)},
        {"name": "pt_10wt_20k", "path": str(project), "group": "10wt% 20K"},
    ]
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, study, "-n", "-p", "predict")
    assert result.returncode == 0, result.stderr[-3000:]
    command = next(line for line in result.stdout.splitlines() if "xasflow predict" in line)
    assert f"xasflow predict {project} '{project}:10wt% 20K' results/inference/pseudo/" in command
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)


def test_bad_config_key_fails_before_any_job(tmp_path, run_snakemake):
    config = yaml.safe_load(TINY.read_text())
    config["spectra"]["fms_radios"] = 5.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run_snakemake(workdir, bad)
    assert result.returncode != 0
    assert "spectra.fms_radios" in result.stderr
    assert not (workdir / "results").exists()


def test_wrong_type_fails_naming_the_key(tmp_path, run_snakemake):
    config = yaml.safe_load(TINY.read_text())
    config["spectra"]["batch_size"] = "two"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, bad, "-n")
    assert result.returncode != 0
    assert "spectra.batch_size" in result.stderr and "integer" in result.stderr
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)


# The report: `snakemake --report` on the finished tiny run, one self-contained HTML page.

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None
)
# Opens Models > cnn > parity in the report's own menu, then writes the decoded size of the PNG
# shown (the logo is an SVG) into the title: 0x0 if the browser could not decode it, "missing ..."
# if a step found nothing to click.
OPEN_PARITY = """<script>
function clickText(text) {
  const link = [...document.querySelectorAll('a')].find(a => a.textContent.trim() === text);
  if (link) { link.click(); } else { document.title = 'missing ' + text; }
}
function clickRow(text) {
  const row = [...document.querySelectorAll('tr')].find(r => r.textContent.includes(text));
  const link = row && row.querySelector('a');
  if (link) { link.click(); } else { document.title = 'missing row ' + text; }
}
setTimeout(() => clickText('Models'), 500);
setTimeout(() => clickText('cnn'), 1000);
setTimeout(() => clickRow('parity'), 1500);
setTimeout(() => {
  const image = [...document.querySelectorAll('img')].find(i => i.src.startsWith('data:image/png'));
  if (!document.title.startsWith('missing')) {
    document.title = image ? 'shown ' + image.naturalWidth + 'x' + image.naturalHeight : 'missing image';
  }
}, 3000);
</script>
"""


@pytest.fixture(scope="module")
def tiny_report(tiny_run, run_snakemake):
    path = tiny_run / "results" / "report.html"
    result = run_snakemake(tiny_run, tiny_run / "study.yaml", "--report", str(path), cores=1)
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def _report_results(html: str) -> dict:
    """The report's results table: path -> record with its embedded file as a data URI."""
    match = re.search(r"var results = (\{.*?\});\n", html, re.DOTALL)
    assert match, "no results table in the report"
    return json.loads(match.group(1))


def test_report_is_one_self_contained_page_with_the_study_figures(tiny_run, tiny_report):
    import base64
    from html.parser import HTMLParser

    html = tiny_report.read_text()

    class References(HTMLParser):
        def __init__(self):
            super().__init__()
            self.found = []

        def handle_starttag(self, tag, attrs):
            self.found += [(tag, value) for key, value in attrs if key in ("src", "href") and value]

    parser = References()
    parser.feed(html)
    # scripts and styles are inline; nothing is fetched from a file beside it or the network
    assert [reference for reference in parser.found if not reference[1].startswith(("#", "data:"))] == []
    results = _report_results(html)
    expected = {
        f"results/models/{model}/{name}"
        for model in ("cnn", "mlp")
        for name in ("parity.png", "loss.png", "reliability.png", "comparison.csv")
    } | {
        f"results/inference/{name}" for name in ("predictions.png", "predictions.csv", "predictions_rdf.csv")
    }
    spectrum_figures = {"np_deca_55.dat.png"}  # one per predicted spectrum (`--spectrum-figures`)
    if (tiny_run / "results/fidelity").exists():  # with the shared data: the Cu foil reference
        expected |= {"results/fidelity/fidelity.csv", "results/fidelity/cu_foil/overlay.png"}
        spectrum_figures |= {"cu_metal_rt.xdi.png", "cu_10k.xmu.png"}
    expected |= {f"results/inference/spectra/{name}" for name in spectrum_figures}
    assert set(results) == expected
    for path, record in results.items():
        embedded = base64.b64decode(record["data_uri"].split("base64,", 1)[1])
        assert embedded == (tiny_run / path).read_bytes(), path
        assert record["caption"].strip(), path
    images = [path for path, record in results.items() if record["mime_type"] == "image/png"]
    assert len(images) == 7 + len(spectrum_figures) + ("results/fidelity/cu_foil/overlay.png" in expected)
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", html, re.DOTALL).group(1))
    assert set(categories["Models"]) == {"cnn", "mlp"}
    assert "results/models/cnn/parity.png" in categories["Models"]["cnn"]
    assert results["results/models/cnn/parity.png"]["labels"] == {
        "model": "cnn",
        "figure": "parity (test systems)",
    }


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_report_shows_the_parity_plot_in_a_headless_browser(tiny_run, tiny_report, tmp_path):
    """The report's own menu opens a figure, offline (every host unresolvable): the browser
    decodes the embedded PNG at its size, and the screenshot (kept in tmp_path) is not blank."""
    import matplotlib.image

    html = tiny_report.read_text()
    end = html.rindex("</body>")
    page = tmp_path / "report_parity.html"
    page.write_text(html[:end] + OPEN_PARITY + html[end:])
    offline = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=10000",
        "--window-size=1400,1100",
    ]
    dom = subprocess.run(
        [*offline, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    height, width = matplotlib.image.imread(tiny_run / "results/models/cnn/parity.png").shape[:2]
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    assert title == f"shown {width}x{height}"
    screenshot = tmp_path / "report_parity.png"
    subprocess.run([*offline, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120)
    # the right half, where the figure is drawn, is blank on the landing page (rule graph left)
    pixels = matplotlib.image.imread(screenshot)[:, 700:, :3]
    dark = (pixels.mean(axis=2) < 0.5).mean()
    assert dark > 0.004, f"{screenshot}: the figure area is blank"


def test_imaging_models_map_the_trained_checkpoint_as_predict_reads_the_foil(
    tiny_run, tmp_path, run_snakemake, shared_data
):
    """`imaging.models` through the workflow: a stack whose sample pixels are the measured Cu
    foil maps the study's trained MLP; only the imaging job runs (the model is reused), and each
    foil pixel gets the CN, the 90 % interval and the out-of-distribution flag that `xasflow
    predict` gave the foil file itself."""
    from xasflow.experiment.readers import read_spectrum
    from xasflow.inference.imaging import open_maps
    from xasflow.inference.imaging_io import write_stack

    experimental = shared_data / "experimental"
    foil = read_spectrum(experimental / "cu_metal_rt.xdi")
    # rows 0-1 empty (masked), rows 2-5 the foil as measured, on its own energy grid from 8790 eV
    # (where the second reference, cu_10k.xmu, starts; the pre-edge line is fitted well above)
    kept = foil.energy >= 8790.0
    mu = np.zeros((int(kept.sum()), 6, 5), dtype=np.float32)
    mu[:, 2:, :] = foil.mu[kept, None, None]
    stack = write_stack(tmp_path / "foil_stack.zarr", foil.energy[kept], mu, chunk=4)
    config = yaml.safe_load((tiny_run / "study.yaml").read_text())
    config["imaging"] = {
        "references": {
            "foil_rt": str(experimental / "cu_metal_rt.xdi"),
            "foil_10k": str(experimental / "cu_10k.xmu"),
        },
        "stacks": {"foils": {"path": str(stack)}},
        "denoise": "none",
        "tile": 8,
        "models": ["mlp"],
    }
    study = tmp_path / "imaging.yaml"
    study.write_text(yaml.safe_dump(config))
    result = run_snakemake(tiny_run, study, "results/imaging/stacks/foils/imaging.json")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = _job_counts(result.stdout + result.stderr)
    assert counts.get("image_stack") == 1 and "train" not in counts

    maps = open_maps(tiny_run / "results/imaging/stacks/foils/maps.zarr")
    labels = [quantity["label"] for quantity in maps.attrs["model_quantities"]]
    cn_index = labels.index("mlp:coordination_number")
    mapped = maps["mask"].values.astype(bool)
    assert mapped[2:].all() and not mapped[:2].any()
    with open(tiny_run / "results/inference/predictions.csv") as handle:
        (row,) = [
            row
            for row in csv.DictReader(handle)
            if row["model"] == "mlp" and row["spectrum"].endswith("cu_metal_rt.xdi")
        ]
    cn = maps["model_prediction"][0, cn_index].values[2:]
    np.testing.assert_allclose(cn, float(row["predicted_coordination_number"]), atol=0.01)
    width = maps["model_interval_90"][0, cn_index].values[2:]
    expected_width = float(row["coordination_number_high_90"]) - float(row["coordination_number_low_90"])
    np.testing.assert_allclose(width, expected_width, rtol=0.01)
    flag = maps["model_out_of_distribution"][0, 0].values[2:]  # axis 1: the model
    assert np.all(flag == (1.0 if row["out_of_distribution"] == "true" else 0.0))
    assert np.isnan(maps["model_prediction"][0, cn_index].values[:2]).all()
