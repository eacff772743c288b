"""Leave-one-system-out results of the example studies: the main target of each study.

Reads ``results/<study>/crossval/<model>/crossval.json``, written by

    .venv/bin/xasflow crossval --config config/examples/<study>.yaml --model <model> \\
        --dataset results/<study>/dataset/spectra.zarr --out-dir results/<study>/crossval/<model>

(or the workflow target ``results/<study>/crossval/<model>/crossval.json``), and, where present,
the study's own model ``results/<study>/models/<model>/metrics.json``. Prints per study and
network, on the main target:

- MAE of the network and of the best baseline over every spectrum, each predicted by a fold
  that never trained on its system (pooled over folds);
- the coverage of the 68 / 90 / 95 % intervals over the same spectra, calibrated two ways:
  on each fold's validation systems (split conformal) and across systems (each system's
  intervals fitted on the out-of-system scores of all the others), with the binomial standard
  error of a coverage measured on that many spectra;
- for a nested run (``--nested``, in ``crossval/<model>-nested/``), the coverage of each fold's
  own cross-system intervals, fitted without the held-out system at all;
- the coverage on the study's own test system by its own model, with the calibration that
  model uses (``conformal`` in its config).

    .venv/bin/python benchmarks/crossval_studies.py [--results results]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

MAIN_TARGETS = {
    "fe_bcc_fcc": "shell_cn_1",
    "ptcu_nanoparticles": "partial_cn_Pt",
    "siox_amorphous": "valence_regression",
    "alcu_polycrystal": "local_composition_Cu",
}
LEVELS = ("68", "90", "95")
BARS = {"68": (0.65, 0.71), "90": (0.87, 0.93)}


def _percent(values: dict, key_format: str = "{}") -> str:
    cells = []
    for level in LEVELS:
        value = values.get(key_format.format(level))
        cells.append("n/a" if value is None else f"{100 * value:.1f}")
    return "/".join(cells)


def _within_bars(overall: dict) -> bool:
    return all(
        overall.get(level) is not None and low <= overall[level] <= high
        for level, (low, high) in BARS.items()
    )


def _study_lines(results: Path, study: str, target: str) -> list[str]:
    lines = []
    for summary_path in sorted((results / study / "crossval").glob("*/crossval.json")):
        # a nested run (xasflow crossval --nested) sits in <model>-nested/
        model = summary_path.parent.name.removesuffix("-nested")
        summary = json.loads(summary_path.read_text())
        entry = summary["targets"].get(target)
        if entry is None:
            continue
        network = entry["models"]["network"]
        best = entry.get("best_baseline")
        coverage = entry["coverage"]
        n = coverage["cross_system"]["n"]
        own_key = "nested_cross_system" if summary.get("nested") else "split_conformal"
        own_method = "nested" if summary.get("nested") else "split"
        # the bars judge the cross-system intervals: nested ones where the run is nested
        judged = coverage[own_key] if summary.get("nested") else coverage["cross_system"]["overall"]
        verdict = "met" if _within_bars(judged) else "missed"
        error = 100 * math.sqrt(0.9 * 0.1 / n) if n else float("nan")
        line = (
            f"{study:20s} {model:10s} {len(summary['systems']):2d} systems {n:4d} spectra | "
            f"MAE network {network['mae']:.3f}, {best} {entry['models'][best]['mae']:.3f} "
            f"({'network' if entry.get('network_beats_best_baseline') else 'baseline'} wins) | "
            f"coverage 68/90/95 {own_method} {_percent(coverage[own_key])}, "
            f"cross-system {_percent(coverage['cross_system']['overall'])} "
            f"(+-{error:.1f} at 90 %; bars {verdict}{' by nested' if summary.get('nested') else ''})"
        )
        metrics_path = results / study / "models" / model / "metrics.json"
        if metrics_path.exists():
            metrics = json.loads(metrics_path.read_text())
            own = metrics["targets"].get(target, {}).get("coverage", {})
            method = metrics["params"].get("conformal", "split")
            line += (
                f" | own model ({method}) on {','.join(metrics['test_systems'])}: "
                f"{_percent(own, 'coverage_{}')}, MAE {metrics['targets'][target]['test']['mae']:.3f}"
            )
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    args = parser.parse_args()
    lines = []
    for study, target in MAIN_TARGETS.items():
        lines.extend(_study_lines(args.results, study, target))
    if not lines:
        raise SystemExit(
            f"{args.results}: no crossval.json under <study>/crossval/<model>/; run xasflow crossval"
        )
    print(f"main targets: {', '.join(f'{study} {target}' for study, target in MAIN_TARGETS.items())}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
