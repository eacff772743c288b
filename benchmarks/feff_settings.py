"""FEFF10 settings against measured foils: cost per spectrum and fidelity, per reference.

Usage:
    .venv/bin/python benchmarks/feff_settings.py [--config config/examples/foils.yaml]
        [--reference cu_foil ...] [--setting default ...] [--out-dir results/benchmarks/feff_settings]

One setting at a time is changed from the default (FMS 4.6 A, SCF 3.5 A, RPA core hole,
Hedin-Lundqvist exchange, 1 eV grid): SCF off or 4.5 A, FSR or no core hole, Dirac-Hara or
partially nonlocal exchange, FMS 6 A, a 0.5 eV grid. Each reference's static lattice is computed
with `xasflow fidelity`'s own code (no cache, so the time is real), and the script prints FEFF
seconds per spectrum (SCF potential included), Pearson r before and after the fitted calibration
(shift, stretch, broadening) and the calibrated RMSE, over the calibration window.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path

from xasflow.config import load_config
from xasflow.inference.fidelity import run_fidelity

SETTINGS = {
    "default": {},
    "scf_off": {"scf": False},
    "scf_4.5": {"scf_radius": 4.5},
    "hole_FSR": {"core_hole": "FSR"},
    "hole_none": {"core_hole": "none"},
    "exchange_DH": {"exchange": "DH"},
    "exchange_PNL": {"exchange": "PNL"},
    "fms_6.0": {"fms_radius": 6.0},
    "grid_0.5": {"energy_step": 0.5},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/examples/foils.yaml")
    parser.add_argument("--reference", action="append", help="only these references")
    parser.add_argument("--setting", action="append", choices=sorted(SETTINGS), help="only these settings")
    parser.add_argument("--out-dir", default="results/benchmarks/feff_settings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = load_config(args.config)
    base["spectra"].update({"scf": True, "scf_radius": 3.5, "core_hole": "RPA", "fms_radius": 4.6})
    names = args.reference or sorted(base["references"])
    print(
        f"{'setting':13s} {'reference':10s} {'s/spectrum':>10s} {'r raw':>7s} {'r cal':>7s} {'RMSE cal':>8s}"
    )
    for setting in args.setting or list(SETTINGS):
        config = copy.deepcopy(base)
        config["spectra"].update(SETTINGS[setting])
        out_dir = Path(args.out_dir) / setting
        try:
            results = run_fidelity(config, out_dir, cache=None, names=names)
        except Exception as error:  # a failing setting is a result too
            print(f"{setting:13s} failed: {type(error).__name__}: {str(error).splitlines()[0]}")
            continue
        record = {
            entry["name"]: entry
            for entry in json.loads((out_dir / "fidelity.json").read_text())["references"]
        }
        for result in results:
            seconds = record[result.name]["engine_seconds"] / max(record[result.name]["n_sites"], 1)
            print(
                f"{setting:13s} {result.name:10s} {seconds:10.1f} {result.raw.pearson_r:7.4f} "
                f"{result.calibrated.pearson_r:7.4f} {result.calibrated.rmse:8.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
