"""One Snakemake job = one batch of sites of one system.

Outputs in the batch directory: ``results.csv`` (one row per requested site, ``status`` ok or
failed with its ``reason`` and FEFF directory) and ``spectra.npz`` (the successful spectra).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from xasflow.spectra.cache import SpectrumCache
from xasflow.spectra.engines import Engine, SiteOutcome, run_site_cached, with_shared_potential
from xasflow.spectra.feff import PotentialError, SpectrumResult, cut_cluster
from xasflow.structures.io import read_snapshots
from xasflow.structures.sampling import SiteChoice, read_manifest

logger = logging.getLogger(__name__)

RESULT_COLUMNS = (
    "system",
    "frame",
    "site",
    "element",
    "status",
    "reason",
    "engine",
    "cache_hit",
    "cache_key",
    "feff_seconds",
    "wall_seconds",
    "directory",
)


def site_directory(batch_dir: Path, frame: int, site: int, element: str) -> Path:
    return batch_dir / f"{frame:03d}_{site:04d}_{element}"


def run_batch(
    manifest_path: str | Path,
    snapshots_path: str | Path,
    batch: int,
    engine: Engine,
    out_dir: str | Path,
    cache: SpectrumCache | None = None,
    cluster_radius: float = 6.0,
) -> dict[str, int]:
    """Compute every site of ``batch`` listed in the manifest; return counts.

    ``cluster_radius`` (Angstrom) is the cut around each absorber. Counts: requested,
    succeeded, failed, computed (engine runs) and cached (results reused from ``cache``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(manifest_path)
    sites = [choice for choice in manifest if choice.batch == batch]
    if not sites:
        raise ValueError(f"{manifest_path}: batch {batch} lists no sites")
    snapshots = read_snapshots(snapshots_path)
    for choice in manifest:
        if choice.frame >= len(snapshots):
            raise ValueError(
                f"{manifest_path}: frame {choice.frame} not in {snapshots_path} ({len(snapshots)} frames)"
            )
    potential_failure = ""
    if getattr(engine, "shares_potential", False):
        # one SCF potential per system, from the same site whichever batch computes it
        representative = representative_site(manifest)
        title = (
            f"{representative.system} SCF potential (frame {representative.frame} site {representative.site})"
        )
        cluster = cut_cluster(snapshots[representative.frame], representative.site, cluster_radius)
        try:
            engine = with_shared_potential(engine, cache, cluster, out_dir / "potential", title)
        except PotentialError as error:
            potential_failure = f"shared SCF potential failed: {error}"
            logger.error("%s", potential_failure)
    rows, arrays = [], {}
    for number, choice in enumerate(sites):
        cluster = cut_cluster(snapshots[choice.frame], choice.site, cluster_radius)
        title = f"{choice.system} frame {choice.frame} site {choice.site} {choice.element}"
        directory = site_directory(out_dir, choice.frame, choice.site, choice.element)
        if potential_failure:
            result = SpectrumResult("failed", potential_failure, None, None, 0.0, 0.0, str(directory))
            outcome = SiteOutcome(result, False, "")
        else:
            outcome = run_site_cached(engine, cache, cluster, directory, title)
        result = outcome.result
        suffix = " (cached)" if outcome.cache_hit else ""
        logger.info("%s: %s in %.1f s%s", title, result.status, result.wall_seconds, suffix)
        rows.append(
            {
                "system": choice.system,
                "frame": choice.frame,
                "site": choice.site,
                "element": choice.element,
                "status": result.status,
                "reason": result.reason,
                "engine": engine.name,
                "cache_hit": int(outcome.cache_hit),
                "cache_key": outcome.cache_key,
                "feff_seconds": f"{result.feff_seconds:.3f}",
                "wall_seconds": f"{result.wall_seconds:.3f}",
                "directory": str(directory.relative_to(out_dir)),
            }
        )
        if result.status == "ok":
            arrays[f"energy_{number}"] = result.energy
            arrays[f"mu_{number}"] = result.mu
    with open(out_dir / "spectra.npz.partial", "wb") as handle:
        np.savez_compressed(handle, **arrays)
    (out_dir / "spectra.npz.partial").replace(out_dir / "spectra.npz")
    with open(out_dir / "results.csv.partial", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "results.csv.partial").replace(out_dir / "results.csv")
    failed = sum(row["status"] == "failed" for row in rows)
    cached = sum(row["cache_hit"] for row in rows)
    return {
        "requested": len(rows),
        "succeeded": len(rows) - failed,
        "failed": failed,
        "computed": len(rows) - cached,
        "cached": cached,
    }


def representative_site(manifest: list[SiteChoice]) -> SiteChoice:
    """The site whose SCF potential a whole system shares: the most highly coordinated sampled
    site (the most bulk-like environment), the first frame and site among equals."""
    return min(manifest, key=lambda choice: (-choice.coordination_number, choice.frame, choice.site))


def read_batch(batch_dir: str | Path) -> list[dict]:
    """Rows of ``results.csv``; ok rows carry ``energy`` and ``mu`` arrays from ``spectra.npz``."""
    batch_dir = Path(batch_dir)
    with open(batch_dir / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with np.load(batch_dir / "spectra.npz") as data:
        for number, row in enumerate(rows):
            row["frame"], row["site"] = int(row["frame"]), int(row["site"])
            row["directory"] = str(batch_dir / row["directory"])
            if row["status"] == "ok":
                row["energy"] = data[f"energy_{number}"]
                row["mu"] = data[f"mu_{number}"]
    return rows
