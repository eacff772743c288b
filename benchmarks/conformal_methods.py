"""Four ways of calibrating intervals across systems, compared without a shortcut.

Usage (after `xasflow crossval --nested ... --out-dir NESTED`):
    .venv/bin/python benchmarks/conformal_methods.py CONFIG MODEL DATASET NESTED [--targets T ...]

A nested cross-validation run holds, for every system A, the fold that never saw A
(``NESTED/folds/A/model.ckpt``) and, inside it, one fold per other system B trained without A
and B (``NESTED/folds/A/crossval/folds/B``) with its out-of-system residuals on B
(``NESTED/folds/A/crossval/crossval.csv``). From those, the intervals for A are formed four ways,
none of which looks at A's labels:

- ``split_normalized``: what ``conformal: cross_system`` does. Multipliers of |error| / spread
  from the inner residuals, applied to the outer model's prediction and spread for A.
- ``split_plain``: the same with the plain |error| (one width for every spectrum).
- ``cv_plus_plain`` and ``cv_plus_normalized``: CV+ (Barber, Candes, Ramdas and Tibshirani 2021,
  Ann. Stat. 49, 486, with systems as folds). A is predicted by every inner model B, and each
  calibration residual is added to the prediction of the model that made it; the interval is
  the pair of order statistics of those. The models that predict A trained on as many systems as
  those that made the residuals, which the split methods do not give. Its guarantee is
  1 - 2 alpha; in practice it over-covers.

For each target and method it prints the coverage at 68/90/95 % over every spectrum, the mean
width, and how far the per-system coverage at 68 % spreads. The inner models' predictions for A
are cached in ``NESTED/cv_plus_predictions.json`` (one inference per pair, no training).

CV+ is written out here (a few lines of order statistics): scikit-learn has no conformal
methods, and MAPIE, which has CV+, fits scikit-learn estimators, not checkpoints on disk.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from xasflow.cli import _train_inputs
from xasflow.models.conformal import LEVELS, fit_conformal
from xasflow.models.crossval import _resolved, fold_params
from xasflow.models.train import split_predictions

METHODS = ("split_normalized", "split_plain", "cv_plus_plain", "cv_plus_normalized")


def _rows(path: Path, target: str) -> dict[str, np.ndarray]:
    """Columns of a crossval.csv for one target."""
    with path.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["target"] == target]
    columns = {
        key: np.array([row[key] for row in rows]) for key in ("system", "truth", "predicted", "spread")
    }
    for key in ("truth", "predicted", "spread"):
        columns[key] = columns[key].astype(float)
    return columns


def _inner_predictions(args, nested: Path, targets: list[str]) -> dict:
    """Every inner model's prediction (mean, spread, truth) of its outer held-out system."""
    cache = nested / "cv_plus_predictions.json"
    store = json.loads(cache.read_text()) if cache.exists() else {}
    namespace = argparse.Namespace(
        config=args.config, config_json=None, model=args.model, calibration=args.calibration
    )
    params, _augmentation, calibration = _train_inputs(namespace)
    params, split = _resolved(args.dataset, params)
    for outer in sorted(path.name for path in (nested / "folds").iterdir()):
        fold = fold_params(params, outer, split.test + split.train, "cross_system")
        for inner in sorted(
            path.name for path in (nested / "folds" / outer / "crossval" / "folds").iterdir()
        ):
            key = f"{outer}|{inner}"
            if key in store and all(target in store[key] for target in targets):
                continue
            checkpoint = nested / "folds" / outer / "crossval" / "folds" / inner / "model.ckpt"
            arrays, predicted = split_predictions(args.dataset, fold, checkpoint, calibration, "test")
            store[key] = {
                target: {
                    "mean": np.asarray(predicted[target], dtype=float).tolist(),
                    "spread": np.asarray(predicted[f"{target}_spread"], dtype=float).tolist(),
                    "truth": np.asarray(arrays.targets[target], dtype=float).tolist(),
                }
                for target in targets
            }
    cache.write_text(json.dumps(store))
    return store


def _cv_plus(center: np.ndarray, half: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """CV+ interval from (n_calibration, n_test) predictions and half-widths."""
    n = center.shape[0]
    rank = math.ceil(level * (n + 1) * (1.0 - 1e-10))
    if rank > n:
        infinite = np.full(center.shape[1], np.inf)
        return -infinite, infinite
    high = np.sort(center + half, axis=0)[rank - 1]
    low = -np.sort(-(center - half), axis=0)[rank - 1]
    return low, high


def _intervals(method: str, inner: dict, outer: dict, members: dict, level: float):
    """Interval for the outer system's spectra from the inner residuals, by ``method``."""
    residual = np.abs(inner["truth"] - inner["predicted"])
    if method.startswith("split"):
        normalized = method == "split_normalized"
        calibration = fit_conformal(inner["truth"], inner["predicted"], inner["spread"], (level,), normalized)
        return calibration.interval(outer["predicted"], outer["spread"], level)
    floor = 0.1 * np.median(inner["spread"])
    center = np.stack([members[system]["mean"] for system in inner["system"]])
    if method == "cv_plus_plain":
        half = np.repeat(residual[:, None], center.shape[1], axis=1)
    else:
        multiplier = residual / np.maximum(inner["spread"], floor)
        spread = np.stack([np.maximum(members[system]["spread"], floor) for system in inner["system"]])
        half = multiplier[:, None] * spread
    return _cv_plus(center, half, level)


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("model")
    parser.add_argument("dataset")
    parser.add_argument("nested", type=Path)
    parser.add_argument("--targets", nargs="+", required=True, help="regression targets to compare")
    parser.add_argument("--calibration", help="calibration.json the crossval run was given")
    args = parser.parse_args()
    store = _inner_predictions(args, args.nested, args.targets)
    for target in args.targets:
        outer_rows = _rows(args.nested / "crossval.csv", target)
        hits: dict = defaultdict(list)
        widths: dict = defaultdict(list)
        per_system: dict = defaultdict(list)
        for system in sorted(set(outer_rows["system"])):
            inner = _rows(args.nested / "folds" / system / "crossval" / "crossval.csv", target)
            inside = outer_rows["system"] == system
            outer = {key: values[inside] for key, values in outer_rows.items()}
            members = {
                name: {
                    key: np.asarray(value, dtype=float)
                    for key, value in store[f"{system}|{name}"][target].items()
                }
                for name in set(inner["system"])
            }
            truth = next(iter(members.values()))["truth"]
            keep = np.isfinite(truth)
            if not np.allclose(truth[keep], outer["truth"]):
                raise SystemExit(f"{system}: the inner models' spectra are not the outer fold's")
            for method in METHODS:
                for level in LEVELS:
                    low, high = _intervals(method, inner, outer, members, level)
                    low, high = (low[keep], high[keep]) if method.startswith("cv") else (low, high)
                    hit = (outer["truth"] >= low) & (outer["truth"] <= high)
                    hits[method, level].append(hit)
                    widths[method, level].append(high - low)
                    if level == LEVELS[0]:
                        per_system[method].append(hit.mean())
        if not hits[METHODS[0], LEVELS[0]]:
            print(f"\n{target}: no per-spectrum residuals in the nested folds (a curve target?): skipped")
            continue
        print(
            f"\n{target}: coverage % at {'/'.join(f'{100 * level:.0f}' for level in LEVELS)}, mean width, "
            "per-system 68 % coverage min-max"
        )
        for method in METHODS:
            coverage = "/".join(
                f"{100 * np.concatenate(hits[method, level]).mean():5.1f}" for level in LEVELS
            )
            width = "/".join(f"{np.mean(np.concatenate(widths[method, level])):.3g}" for level in LEVELS)
            spread = per_system[method]
            print(
                f"  {method:20s} {coverage}   width {width}   {100 * min(spread):.0f}-{100 * max(spread):.0f}"
            )


if __name__ == "__main__":
    main()
