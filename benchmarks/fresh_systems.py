"""Interval coverage on systems that no choice of method has seen: train once, test on new systems.

Usage:
    .venv/bin/python benchmarks/fresh_systems.py CONFIG MODEL DATASET OUT_DIR \
        --test-systems A B ... [--targets T ...] [--calibration calibration.json]

The model of ``CONFIG`` named ``MODEL`` is trained exactly as configured, except that its test
systems are ``--test-systems`` (systems that must not have been used to choose anything: see
``benchmarks/preregistered/``). Every other system of the dataset that the config does not put in
validation or exclude is used for training, and the intervals are calibrated the configured way.
For each target it prints the coverage of the 68/90/95 % intervals pooled over the test spectra,
with the binomial standard error sqrt(p (1 - p) / n) of that count, and per test system; it writes
the same as ``OUT_DIR/fresh_coverage.json``. The checkpoint and metrics are those of
``xasflow train`` in ``OUT_DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from xasflow.cli import _train_inputs
from xasflow.models.conformal import LEVELS, coverage
from xasflow.models.train import split_predictions, train_model

BANDS = {0.68: (0.65, 0.71), 0.90: (0.87, 0.93)}


def coverage_table(arrays, predicted: dict[str, np.ndarray], target: str) -> dict:
    """Pooled and per-system coverage of every level of ``target`` on the test spectra."""
    truth = arrays.targets[target]
    keep = np.isfinite(truth)
    record: dict = {"n": int(keep.sum()), "levels": {}}
    for level in LEVELS:
        percent = round(100 * level)
        low, high = predicted[f"{target}_low_{percent}"], predicted[f"{target}_high_{percent}"]
        pooled = coverage(truth[keep], low[keep], high[keep])
        width = float(np.mean(high[keep] - low[keep]))
        per_system = {}
        for system in sorted(set(arrays.system[keep])):
            rows = keep & (arrays.system == system)
            per_system[str(system)] = coverage(truth[rows], low[rows], high[rows])
        band = BANDS.get(round(level, 2))
        record["levels"][str(percent)] = {
            "coverage": pooled,
            "standard_error": math.sqrt(pooled * (1 - pooled) / keep.sum()),
            "mean_width": width,
            "band": list(band) if band else None,
            "inside_band": (band[0] <= pooled <= band[1]) if band else None,
            "per_system": per_system,
        }
    record["mae"] = float(np.mean(np.abs(predicted[target][keep] - truth[keep])))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--test-systems", nargs="+", required=True)
    parser.add_argument("--targets", nargs="+", default=None)
    parser.add_argument("--calibration", default=None)
    args = parser.parse_args()
    namespace = argparse.Namespace(
        config=args.config, config_json=None, model=args.model, calibration=args.calibration
    )
    params, augmentation, calibration = _train_inputs(namespace)
    params = dataclasses.replace(params, test_systems=tuple(args.test_systems))
    checkpoint = args.out_dir / "model.ckpt"
    if not checkpoint.exists():
        train_model(args.dataset, params, args.out_dir, augmentation, calibration)
    arrays, predicted = split_predictions(args.dataset, params, checkpoint, calibration, "test")
    targets = args.targets or [spec.name for spec in params.targets if spec.kind == "regression"]
    result = {
        "config": args.config,
        "model": args.model,
        "test_systems": list(args.test_systems),
        "targets": {target: coverage_table(arrays, predicted, target) for target in targets},
    }
    (args.out_dir / "fresh_coverage.json").write_text(json.dumps(result, indent=2) + "\n")
    for target, record in result["targets"].items():
        print(f"{target}: n {record['n']}, MAE {record['mae']:.3f}")
        for percent, values in record["levels"].items():
            verdict = "" if values["band"] is None else (" inside" if values["inside_band"] else " OUTSIDE")
            band = "" if values["band"] is None else f" band {values['band'][0]:.0%}-{values['band'][1]:.0%}"
            systems = ", ".join(f"{name} {value:.0%}" for name, value in values["per_system"].items())
            print(
                f"  {percent} %: coverage {values['coverage']:.1%} +- {values['standard_error']:.1%}"
                f", mean width {values['mean_width']:.2f}{band}{verdict}"
            )
            print(f"      per system: {systems}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
