"""Test metrics of every model and baseline on every target of the example studies.

Reads ``results/<study>/models/<model>/metrics.json`` of the studies trained with

    snakemake --cores 2 --configfile config/examples/<study>.yaml

and prints, per study and target, one row per model (the networks and the five baselines, all
on the same split) with MAE, R2, accuracy or Brier score, the coverage of the 68 / 90 / 95 %
intervals of each network, the best network against the best baseline on the main target.

    .venv/bin/python benchmarks/example_studies.py [--results results] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# the seed's main target of each study: the quantity its paper reads from the spectra
MAIN_TARGETS = {
    "fe_bcc_fcc": "shell_cn_1",
    "ptcu_nanoparticles": "partial_cn_Pt",
    "siox_amorphous": "valence_regression",
    "alcu_polycrystal": "local_composition_Cu",
}
METRICS = ("mae", "r2", "accuracy", "brier")
BASELINES = ("mean", "ridge", "pls", "knn", "trees")


def _format(value) -> str:
    return "" if value is None else f"{value:.3f}"


def _study_rows(study: str, models: dict[str, dict]) -> list[list[str]]:
    """Table rows of one study: per target, the networks then the baselines (taken from the
    first network's record: every network fits the same baselines on the same split)."""
    rows = []
    first = next(iter(models.values()))
    for target, entry in first["targets"].items():
        for name, metrics in models.items():
            record = metrics["targets"][target]
            coverage = record.get("coverage", {})
            rows.append(
                [study, target, name, str(record["test"].get("n_test", metrics["n_test"]))]
                + [_format(record["test"].get(key)) for key in METRICS]
                + [_format(coverage.get(f"coverage_{level}")) for level in (68, 90, 95)]
            )
        for name in BASELINES:
            record = entry["baselines"].get(name, {})
            rows.append(
                [study, target, name, str(record.get("n_test", ""))]
                + [_format(record.get(key)) for key in METRICS]
                + ["", "", ""]
            )
    return rows


def _main_target_line(study: str, models: dict[str, dict]) -> str:
    target = MAIN_TARGETS.get(study)
    first = next(iter(models.values()))
    if target not in first["targets"]:
        return f"{study}: main target {target} not trained"
    kind = first["targets"][target]["kind"]
    key, better = ("accuracy", max) if kind == "classification" else ("mae", min)
    networks = {name: metrics["targets"][target]["test"][key] for name, metrics in models.items()}
    baselines = {
        name: record[key] for name, record in first["targets"][target]["baselines"].items() if name != "mean"
    }
    best_network = better(networks, key=lambda name: networks[name])
    best_baseline = better(baselines, key=lambda name: baselines[name])
    wins = better(networks[best_network], baselines[best_baseline]) == networks[best_network]
    coverage = models[best_network]["targets"][target].get("coverage", {})
    return (
        f"{study}: main target {target}: best network {best_network} {key} {networks[best_network]:.3f}, "
        f"best baseline {best_baseline} {baselines[best_baseline]:.3f} -> "
        f"{'network wins' if wins else 'baseline wins'}; coverage 68/90/95 % of {best_network}: "
        + "/".join(_format(coverage.get(f"coverage_{level}")) for level in (68, 90, 95))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--markdown", help="also write the table as Markdown to this file")
    args = parser.parse_args()
    header = ["study", "target", "model", "n_test", *METRICS, "cov68", "cov90", "cov95"]
    rows, lines = [], []
    for study in MAIN_TARGETS:
        folder = Path(args.results) / study / "models"
        models = {
            path.parent.name: json.loads(path.read_text()) for path in sorted(folder.glob("*/metrics.json"))
        }
        if not models:
            lines.append(f"{study}: no trained models under {folder}")
            continue
        counts = next(iter(models.values()))
        lines.append(
            f"{study}: {counts['n_train']} train / {counts['n_val']} val / {counts['n_test']} test spectra"
        )
        rows += _study_rows(study, models)
        lines.append(_main_target_line(study, models))
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    print("\n".join(table))
    print()
    print("\n".join(lines))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(table + [""] + lines) + "\n")


if __name__ == "__main__":
    main()
