"""One SCF potential per system against one per site: error and cost.

Usage (after the structure stage of a study has run, e.g. `make run`):
    .venv/bin/python benchmarks/scf_sharing.py [SNAPSHOTS] [--sites N] [--config config.yaml]

For N sites of the first MD snapshot of SNAPSHOTS (default: the 147-atom cuboctahedron of the
default study, surface and core sites alike), each spectrum is computed twice with the study's
FEFF10 settings: with its own SCF potential (scf_sharing: site) and with the potential of the
most highly coordinated site (scf_sharing: system, what the workflow does). Both go through the
dataset's normalization; the script prints per site the RMSE of normalized mu on the model grid
and the E0 difference, then the mean FEFF seconds per spectrum of each way and their ratio.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from ase.neighborlist import neighbor_list

from xasflow.config import load_config
from xasflow.experiment import to_relative_grid
from xasflow.experiment.alignment import normalize_xanes
from xasflow.spectra.engines import Feff10Engine, build_engine, with_shared_potential
from xasflow.spectra.feff import cut_cluster
from xasflow.spectrum import Spectrum
from xasflow.structures.io import read_snapshots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshots", nargs="?", default="results/structures/np_cubo_147/snapshots.extxyz")
    parser.add_argument("--sites", type=int, default=8)
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = load_config(args.config)
    engine = build_engine(config["spectra"])
    if not isinstance(engine, Feff10Engine) or not engine.params.scf:
        raise SystemExit("the study's engine must be feff10 with scf: true")
    dataset = config["dataset"]
    grid = np.arange(dataset["energy_min"], dataset["energy_max"] + 1e-9, dataset["energy_step"])
    atoms = read_snapshots(args.snapshots)[0]
    cn = np.bincount(neighbor_list("i", atoms, config["labels"]["cn_cutoff"]), minlength=len(atoms))
    # an even spread over the coordination numbers present, lowest (surface) to highest (core)
    order = np.argsort(cn, kind="stable")
    chosen = order[np.linspace(0, len(order) - 1, args.sites).round().astype(int)]
    radius = config["spectra"]["cluster_radius"]
    representative = int(order[-1])

    def normalized(result):
        spectrum = normalize_xanes(Spectrum(result.energy, result.mu, source="site", kind="computed"))
        return to_relative_grid(spectrum, grid), spectrum.e0

    own_engine = replace(engine, params=replace(engine.params, scf_sharing="site"))
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        potential_cluster = cut_cluster(atoms, representative, radius)
        started = time.perf_counter()
        shared_engine = with_shared_potential(
            engine, None, potential_cluster, scratch / "potential", "potential"
        )
        potential_seconds = time.perf_counter() - started
        print(
            f"shared potential from site {representative} (CN {cn[representative]}): "
            f"{potential_seconds:.1f} s"
        )
        print(
            "{:>5s} {:>3s} {:>8s} {:>7s} {:>6s} {:>8s}".format(
                "site", "CN", "RMSE mu", "dE0 eV", "own s", "shared s"
            )
        )
        errors, own_seconds, shared_seconds = [], [], []
        for index in chosen:
            cluster = cut_cluster(atoms, int(index), radius)
            own = own_engine.run_site(cluster, scratch / f"own_{index}", "own")
            shared = shared_engine.run_site(cluster, scratch / f"shared_{index}", "shared")
            if own.status != "ok" or shared.status != "ok":
                print(f"{index:5d} {cn[index]:3d} failed: {own.reason or shared.reason}")
                continue
            (mu_own, e0_own), (mu_shared, e0_shared) = normalized(own), normalized(shared)
            rmse = float(np.sqrt(np.mean((mu_own - mu_shared) ** 2)))
            errors.append(rmse)
            own_seconds.append(own.engine_seconds)
            shared_seconds.append(shared.engine_seconds)
            print(
                f"{index:5d} {cn[index]:3d} {rmse:8.4f} {e0_shared - e0_own:+7.2f} "
                f"{own.engine_seconds:6.1f} {shared.engine_seconds:8.1f}"
            )
    print(f"mean RMSE of normalized mu, shared vs own SCF: {np.mean(errors):.4f} (max {np.max(errors):.4f})")
    ratio = np.mean(own_seconds) / np.mean(shared_seconds)
    print(
        f"FEFF seconds per spectrum: own SCF {np.mean(own_seconds):.1f}, "
        f"shared {np.mean(shared_seconds):.1f} "
        f"(+{potential_seconds:.1f} s once per system); ratio own/shared {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
