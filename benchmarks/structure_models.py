"""MD cost and label statistics of a study's structure models, at the study's own sizes.

Runs the structure stage (MD, then labels) of every system of a config, or of the systems
named, exactly as the workflow's md and labels jobs do, and prints per system: atoms, MD steps,
seconds per snapshot, mean CN per element, the valence histogram, surface segregation against
the random reference, and grain-boundary versus interior composition.

    .venv/bin/python benchmarks/structure_models.py config/examples/siox_amorphous.yaml [SYSTEM ...]

Outputs go to a temporary folder (or --out DIR to keep them).
"""

import argparse
import json
import tempfile
from pathlib import Path

from xasflow.config import load_config
from xasflow.structures.labels import LabelParams
from xasflow.structures.pipeline import label_system, simulate_system, system_potential
from xasflow.study import system_spec


def _rounded(mapping: dict | None, digits: int = 3):
    return None if mapping is None else {key: round(value, digits) for key, value in mapping.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("systems", nargs="*")
    parser.add_argument("--out")
    args = parser.parse_args()
    config = load_config(args.config)
    names = args.systems or list(config["systems"])
    params = LabelParams.from_config(config["labels"])
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        for name in names:
            spec = system_spec(name, config["systems"][name])
            out = root / name
            snapshots = simulate_system(spec, out)
            potential = system_potential(spec, out) if spec.potential else None
            label_system(snapshots, spec, params, out / "labels.npz", out / "initial.extxyz", potential)
            record = json.loads((out / "md.json").read_text())
            summary = json.loads((out / "labels.json").read_text())
            line = {
                "system": name,
                "atoms": record["n_atoms"],
                "md_steps": record.get("md_steps"),
                "seconds_per_snapshot": record.get("seconds_per_snapshot"),
                "mc_accepted/attempted": f"{record.get('mc_swap_accepted')}/{record.get('mc_swap_attempts')}",
                "cn_mean": {
                    el: round(v["coordination_number_mean"], 2) for el, v in summary["elements"].items()
                },
                "shell_cn_mean": {el: v.get("shell_cn_mean") for el, v in summary["elements"].items()},
                "partial_cn_mean": {
                    el: _rounded(v["partial_cn_mean"], 2) for el, v in summary["elements"].items()
                },
                "valence_histogram": {
                    el: v.get("valence_histogram") for el, v in summary["elements"].items()
                },
                "surface_segregation": _rounded(summary.get("surface_segregation")),
                "grain_boundary_fraction": summary.get("grain_boundary_fraction"),
                "grain_boundary_composition": _rounded(summary.get("grain_boundary_composition"), 4),
                "grain_interior_composition": _rounded(summary.get("grain_interior_composition"), 4),
                "structure_type_fractions": _rounded(summary.get("structure_type_fractions")),
            }
            print(json.dumps({key: value for key, value in line.items() if value not in (None, "None/None")}))


if __name__ == "__main__":
    main()
