"""The Pt-Ru nanoparticle study, measured: segregation, cost, deconvolution and real Pt data.

Usage (after `snakemake --configfile config/examples/ptru_nanoparticles.yaml --cores 2`):
    .venv/bin/python benchmarks/ptru_study.py [RESULTS_DIR]

Prints, from the files the workflow wrote (nothing is recomputed):
1. per particle, the surface Pt fraction of the MC particle after MD, of its chemically random
   twin, and of the random decoration it started from; the enrichment is MC minus twin;
2. per system, the cost: MD (and MC) seconds, swap trials and acceptances, FEFF seconds per
   site and in all; and that no atom was lost (the MD would have stopped);
3. the deconvolution verification per particle (RMSE of the surface spectrum, predicted and
   true surface and bulk Pt-Pt and Pt-Ru CNs, the sign of surface - bulk) and the MAE;
4. the predictions of every model for the measured Pt foil (Pt-Pt 12, Pt-Ru 0) and the
   supported Pt samples of PtData.prj, with 90 % intervals and the out-of-distribution flag.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

FOIL_PT_PT = 12.0


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def segregation(results: Path) -> None:
    print("1. Surface Pt fraction (labels, all snapshots): MC particle, random twin, start")
    for record in sorted((results / "structures").glob("*_mc/labels.json")):
        system = record.parent.name
        twin = results / "structures" / system.replace("_mc", "_random") / "labels.json"
        mc = json.loads(record.read_text())
        mc_pt = mc["surface_composition_mean"]["Pt"]
        start = mc.get("reference_surface_composition", {}).get("Pt", float("nan"))
        twin_pt = json.loads(twin.read_text())["surface_composition_mean"]["Pt"] if twin.is_file() else np.nan
        print(
            f"   {system:22s} MC {mc_pt:.3f}  twin {twin_pt:.3f}  start {start:.3f}  "
            f"enrichment (MC - twin) {mc_pt - twin_pt:+.3f}"
        )


def costs(results: Path) -> None:
    print("2. Cost per system: MD+MC seconds, swap trials (accepted), FEFF seconds per site / total")
    feff = defaultdict(list)
    for table in (results / "spectra").glob("*/batch_*/results.csv"):
        for row in _read_csv(table):
            if row["status"] == "ok" and row["cache_hit"] == "0":
                feff[row["system"]].append(float(row["engine_seconds"]))
    for record in sorted((results / "structures").glob("*/md.json")):
        md = json.loads(record.read_text())
        system = record.parent.name
        seconds = feff.get(system, [])
        per_site = np.mean(seconds) if seconds else float("nan")
        print(
            f"   {system:22s} {md['n_atoms']:4d} atoms  MD {md['md_seconds']:7.1f} s  "
            f"swaps {md.get('mc_swap_attempts', 0):5d} ({md.get('mc_swap_accepted', 0):4d})  "
            f"FEFF {per_site:5.1f} s/site x {len(seconds):3d} = {sum(seconds):6.0f} s"
        )


def deconvolution(results: Path) -> None:
    print("3. Deconvolution (surface = (particle - (1 - w) bulk) / w), per particle and model")
    for summary_path in sorted((results / "deconvolution").glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        for row in summary["rows"]:
            if not row["target"].startswith("partial_cn"):
                continue
            print(
                f"   {row['particle']:22s} {row['model']:10s} {row['split']:6s} w {row['weight']:.3f} "
                f"RMSE S {row['rmse_mu']:.4f} {row['target']:14s} surface {row['surface_predicted']:5.2f} "
                f"(true {row['surface_true']:5.2f})  bulk {row['bulk_predicted']:5.2f} "
                f"(true {row['bulk_true']:5.2f})  sign right: {row['sign_agrees']}"
            )
        for entry in summary["mean_absolute_errors"]:
            print(
                f"   {entry['model']} {entry['target']}: surface MAE {entry['surface_mae']:.2f} "
                f"(particle read as surface {entry['particle_as_surface_mae']:.2f}, model on the true "
                f"surface {entry['true_surface_mae']:.2f}), bulk MAE {entry['bulk_mae']:.2f}, "
                f"signs right {entry['signs_agree']}/{entry['n_particles']}, mean RMSE of S "
                f"{entry['rmse_mu_mean']:.4f}"
            )
        for entry in summary["skipped"]:
            print(f"   not deconvolved: {entry['reason']}")


def measured(results: Path) -> None:
    print("4. Measured Pt L3 spectra (predicted Pt-Pt and Pt-Ru CN, 90 % interval, out of distribution)")
    path = results / "inference" / "predictions.csv"
    if not path.is_file():
        print("   (no predictions.csv)")
        return
    worst = 0.0
    for row in _read_csv(path):
        name = Path(row["spectrum"]).name
        pt_pt, pt_ru = float(row["predicted_partial_cn_Pt"]), float(row["predicted_partial_cn_Ru"])
        low, high = float(row["partial_cn_Pt_low_90"]), float(row["partial_cn_Pt_high_90"])
        print(
            f"   {name:32s} {row['model']:10s} Pt-Pt {pt_pt:5.2f} [{low:5.2f}, {high:5.2f}]  "
            f"Pt-Ru {pt_ru:5.2f}  OOD {row['out_of_distribution']}"
        )
        if name == "pt_metal_rt.xdi":
            worst = max(worst, abs(pt_pt - FOIL_PT_PT))
    print(f"   largest Pt foil Pt-Pt error: {worst:.2f} (bar: 1.0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results/ptru_nanoparticles")
    results = Path(parser.parse_args().results)
    segregation(results)
    costs(results)
    deconvolution(results)
    measured(results)


if __name__ == "__main__":
    main()
