"""2D XANES imaging throughput: a large synthetic Fe stack on disk, read in tiles, then mapped.

1. writes a (n_energy, size, size) float32 stack of Fe reference mixtures with Poisson noise
   (zarr or HDF5, chunks of all energies x tile x tile), tile by tile;
2. times reading every tile (nothing else), in a fresh process;
3. times the maps (normalization + NNLS fractions and uncertainties + edge energy, written to
   zarr; with ``--denoise pca`` or ``network`` the denoiser's fit and application included), in
   a fresh process;

and prints spectra/s, map-time / read-time (goal <= 1.5) and the peak RSS of each phase
(``resource.getrusage``; goal < 4 GB), and the machine's load average (the 2-core machine is
shared: ``--repeat 3`` interleaves read and map runs and reports medians). Both phases run on
``--workers`` threads with BLAS limited to one thread each, and both start the clock with the
stack already open. The stack was just written, so both read it from the page cache
when memory allows; the ratio compares like with like.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/imaging.py --size 256        # quick
    .venv/bin/python benchmarks/imaging.py --accuracy --size 64 --tile 64      # RMSE per dose
    nice -n 10 .venv/bin/python benchmarks/imaging.py --repeat 3               # 2048 x 2048 x 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"  # parallelism comes from the tile workers

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("XASFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


def write(args) -> dict:
    from xasflow.inference.imaging_io import write_stack
    from xasflow.inference.imaging_synthetic import FE_STACK_ENERGY, fe_references, synthetic_stack

    references, names, normalization = fe_references(DATA)
    energy = FE_STACK_ENERGY[: args.energies] if args.energies <= FE_STACK_ENERGY.size else None
    if energy is None:
        raise SystemExit(f"--energies at most {FE_STACK_ENERGY.size}")

    def block(tile):
        seed = tile.y.start * 100_003 + tile.x.start
        stack, _ = synthetic_stack(
            references, names, normalization, FE_STACK_ENERGY, tile.shape, dose=args.dose, seed=seed
        )
        return stack[: args.energies]

    start = time.perf_counter()
    write_stack(args.stack, energy, block, image_shape=(args.size, args.size), chunk=args.tile)
    return {"seconds": time.perf_counter() - start, "peak_rss_gb": peak_rss_gb()}


def read(args) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from xasflow.inference.imaging_io import open_stack, tiles

    with open_stack(args.stack) as stack:  # opened before the clock starts, as in the map phase
        start = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            checksum = sum(
                pool.map(
                    lambda tile: float(stack.read_tile(tile)[0, 0, 0]), tiles(stack.image_shape, args.tile)
                )
            )
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_gb": peak_rss_gb(), "checksum": checksum}


def maps(args) -> dict:
    from xasflow.inference.imaging import ImagingParams, map_stack
    from xasflow.inference.imaging_io import open_stack
    from xasflow.inference.imaging_synthetic import fe_references

    with open_stack(args.stack) as stack:
        references, names, normalization = fe_references(DATA, stack.energy)
        params = ImagingParams(
            tile_size=args.tile,
            workers=args.workers,
            denoise=args.denoise,
            denoise_config={"epochs": args.epochs},
        )
        start = time.perf_counter()
        map_stack(stack, references, names, normalization, args.out, params)
    return {"seconds": time.perf_counter() - start, "peak_rss_gb": peak_rss_gb()}


def accuracy(args) -> None:
    """Fraction-map RMSE against the truth per dose: raw per-pixel fits and PCA-denoised fits."""
    from xasflow.inference.imaging import ImagingParams, map_stack, open_maps
    from xasflow.inference.imaging_io import open_stack, write_stack
    from xasflow.inference.imaging_synthetic import fe_references, fraction_errors, synthetic_stack

    fe = fe_references(DATA)
    folder = Path(tempfile.mkdtemp(prefix="xasflow-imaging-accuracy-"))
    print(
        f"fraction RMSE over mapped sample pixels, {args.size} x {args.size} px, mean of seeds {args.seeds}"
    )
    print(f"{'dose':>8} {'raw':>8} {'pca':>8} {'pca/raw':>8} {'coverage':>9} {'pca comps':>10}")
    try:
        for dose in args.doses:
            errors = {"none": [], "pca": []}
            for seed in range(args.seeds):
                stack, truth = synthetic_stack(*fe, image_shape=(args.size, args.size), dose=dose, seed=seed)
                path = write_stack(folder / "stack.zarr", truth.energy, stack, chunk=args.tile)
                for denoise in errors:
                    params = ImagingParams(tile_size=args.tile, denoise=denoise, workers=args.workers)
                    with open_stack(path) as opened:
                        maps = open_maps(map_stack(opened, *fe, folder / denoise, params))
                    errors[denoise].append(
                        (*fraction_errors(maps["fraction"].values, truth), maps.attrs["denoiser"])
                    )
            raw, pca = (float(np.mean([row[0] for row in errors[key]])) for key in ("none", "pca"))
            coverage = float(np.mean([row[1] for row in errors["none"]]))
            components = errors["pca"][0][2].split("(")[1].split(" ")[0]
            print(f"{dose:8.0e} {raw:8.4f} {pca:8.4f} {pca / raw:8.2f} {coverage:9.3f} {components:>10}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def phase(args, name: str) -> dict:
    command = [sys.executable, __file__, "--phase", name, "--stack", str(args.stack), "--out", str(args.out)]
    command += ["--size", str(args.size), "--energies", str(args.energies), "--tile", str(args.tile)]
    command += ["--workers", str(args.workers), "--dose", str(args.dose)]
    command += ["--denoise", args.denoise, "--epochs", str(args.epochs)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _median_run(results: list[dict]) -> dict:
    """The run of median seconds (the upper middle one of an even count)."""
    return sorted(results, key=lambda result: result["seconds"])[len(results) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="image edge in pixels (2048)")
    parser.add_argument("--energies", type=int, default=100, help="energies (100)")
    parser.add_argument("--tile", type=int, default=256, help="tile and chunk edge in pixels (256)")
    parser.add_argument("--workers", type=int, default=2, help="threads (2)")
    parser.add_argument("--dose", type=float, default=1e4, help="photons per pixel per energy (1e4)")
    parser.add_argument("--format", choices=("zarr", "h5"), default="zarr")
    parser.add_argument(
        "--denoise", choices=("none", "pca", "network"), default="none", help="denoiser in the maps (none)"
    )
    parser.add_argument("--epochs", type=int, default=30, help="network denoiser epochs (30)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="read and map phases run this often, interleaved; medians (1)"
    )
    parser.add_argument("--dir", help="working folder (default: a temporary folder, removed)")
    parser.add_argument("--accuracy", action="store_true", help="print the RMSE-per-dose table instead")
    parser.add_argument("--doses", type=float, nargs="+", default=[1e6, 1e5, 1e4, 1e3, 1e2])
    parser.add_argument("--seeds", type=int, default=3, help="stacks per dose in --accuracy (3)")
    parser.add_argument("--phase", choices=("write", "read", "maps"), help=argparse.SUPPRESS)
    parser.add_argument("--stack", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps({"write": write, "read": read, "maps": maps}[args.phase](args)))
        return
    if args.accuracy:
        accuracy(args)
        return
    folder = Path(args.dir or tempfile.mkdtemp(prefix="xasflow-imaging-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    args.stack = folder / f"stack.{args.format}"
    args.out = folder / "out"
    try:
        written = phase(args, "write")
        size_gb = args.energies * args.size**2 * 4 / 1e9
        print(
            f"stack {args.energies} x {args.size} x {args.size} float32 ({size_gb:.2f} GB, {args.format}) "
            f"written in {written['seconds']:.1f} s"
        )
        load_before = os.getloadavg()[0]
        runs = [(phase(args, "read"), phase(args, "maps")) for _ in range(args.repeat)]  # interleaved
        read_result = _median_run([read for read, _ in runs])
        map_result = _median_run([maps for _, maps in runs])
        spectra = args.size**2
        print(
            f"read only: {read_result['seconds']:8.2f} s {spectra / read_result['seconds']:12,.0f} spectra/s "
            f"peak RSS {read_result['peak_rss_gb']:.2f} GB"
        )
        print(
            f"maps:      {map_result['seconds']:8.2f} s {spectra / map_result['seconds']:12,.0f} spectra/s "
            f"peak RSS {map_result['peak_rss_gb']:.2f} GB"
        )
        ratio = map_result["seconds"] / read_result["seconds"]
        print(
            f"map-time / read-time = {ratio:.2f} (goal <= 1.5); peak RSS of the map phase "
            f"{map_result['peak_rss_gb']:.2f} GB (goal < 4 GB); {args.workers} threads, tile {args.tile}, "
            f"denoise {args.denoise}"
        )
        print(
            f"median of {args.repeat} interleaved run(s) each; load average (1 min) {load_before:.2f} "
            f"before, {os.getloadavg()[0]:.2f} after; {os.cpu_count()} CPUs"
        )
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
