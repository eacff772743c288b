"""Overhead of xasflow around FEFF10: wall time of a batch of N spectra through xasflow
(cluster cutting, input writing, cache lookup, parsing, checks, pruning) divided by the summed
FEFF stage times that FEFF10 itself reports. Goal: at most 1.10.

    .venv/bin/python benchmarks/overhead.py [N]
"""

import sys
import tempfile
import time
from pathlib import Path

import ase.io

from xasflow.spectra.batch import read_batch, run_batch
from xasflow.spectra.cache import SpectrumCache
from xasflow.spectra.engines import Feff10Engine
from xasflow.spectra.feff import FeffParams
from xasflow.structures.builders import NanoparticleSpec, build_nanoparticle
from xasflow.structures.sampling import SiteChoice, write_manifest


def main(n_sites: int = 6) -> None:
    params = FeffParams(cluster_radius=6.0, fms_radius=4.6)
    particle = build_nanoparticle(NanoparticleSpec("Cu", "icosahedron", 4, 3.615))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        snapshots = root / "snapshots.extxyz"
        ase.io.write(snapshots, [particle], format="extxyz")
        sites = [SiteChoice("np", 0, index * 7, "Cu", 0, 0, 0) for index in range(n_sites)]
        manifest = write_manifest(sites, root / "sites.csv")
        started = time.perf_counter()
        counts = run_batch(
            manifest, snapshots, 0, Feff10Engine(params), root / "batch", SpectrumCache(root / "cache"), 6.0
        )
        wall = time.perf_counter() - started
        feff = sum(float(row["engine_seconds"]) for row in read_batch(root / "batch"))
    print(f"spectra: {counts['succeeded']} ok of {counts['requested']}")
    print(f"wall time through xasflow: {wall:.2f} s; FEFF10 stage times summed: {feff:.2f} s")
    print(f"overhead ratio (goal <= 1.10): {wall / feff:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
