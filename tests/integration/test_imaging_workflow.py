"""The imaging section of a study runs through the workflow: a measured-style energy stack is
mapped (rule image_stack) and the maps are validated on synthetic stacks (rule image_validation).

Only the imaging targets are asked for, so no MD or FEFF runs: the stack is built in the test from
the measured Fe references of the shared data, with known fraction maps, and written as HDF5.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from xasflow.inference.imaging import open_maps
from xasflow.inference.imaging_io import write_stack
from xasflow.inference.imaging_synthetic import FE_REFERENCE_FILES, fe_references, synthetic_stack

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_a_stack_is_mapped_and_the_maps_validated_through_the_workflow(tmp_path, run_snakemake, shared_data):
    references, names, normalization = fe_references(shared_data)
    stack, truth = synthetic_stack(references, names, normalization, image_shape=(24, 24), dose=1e5, seed=3)
    write_stack(tmp_path / "stack.h5", truth.energy, stack)
    experimental = shared_data / "experimental"
    overlay = {
        "results_dir": "results",
        "imaging": {
            "references": {name: str(experimental / file) for name, file in FE_REFERENCE_FILES.items()},
            "stacks": {"cathode": {"path": str(tmp_path / "stack.h5")}},
            "denoise": "network",
            "tile": 16,
            "network": {"epochs": 5},
            "validation": {
                "energy": [7050, 7248, 2],
                "size": 16,
                "doses": [100, 100000],
                "methods": ["none", "pca", "network"],
            },
        },
    }
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    targets = ["results/imaging/stacks/cathode/imaging.json", "results/imaging/validation/validation.json"]
    result = run_snakemake(
        tmp_path, [ROOT / "tests" / "configs" / "tiny.yaml", tmp_path / "overlay.yaml"], *targets, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = tmp_path / "results" / "imaging"

    # the stack's maps: tiles of 16 px over a 24 px image, network-denoised, fractions near the truth
    maps = open_maps(results / "stacks" / "cathode" / "maps.zarr")
    assert maps.attrs["components"] == names
    mapped = maps["mask"].values.astype(bool)
    assert mapped[truth.sample].mean() > 0.95 and not mapped[~truth.sample].any()
    error = maps["fraction"].values[:, mapped] - truth.fractions[:, mapped]
    assert np.sqrt(np.mean(error**2)) < 0.03
    summary = json.loads((results / "stacks" / "cathode" / "imaging.json").read_text())
    assert summary["params"]["denoise"] == "network" and summary["regions"]
    assert summary["params"]["denoise_config"]["epochs"] == 5  # imaging.network reached the job
    assert (results / "stacks" / "cathode" / "denoiser.pt").is_file()

    # the validation: raw fits get worse as the dose falls, and PCA helps at the low dose
    validation = json.loads((results / "validation" / "validation.json").read_text())
    rmse = validation["rmse"]
    assert rmse["none"]["100"] > 3 * rmse["none"]["100000"]
    assert rmse["pca"]["100"] < rmse["none"]["100"]
    assert np.isfinite(list(rmse["network"].values())).all()  # 5 epochs on 16 x 16 px: it runs; no bar
    assert (results / "validation" / "validation.png").stat().st_size > 1000
    assert "| 1e+02 |" in (results / "validation" / "validation.md").read_text()
