"""One Snakemake job = one batch of sites of one system.

Outputs in the batch directory: ``results.csv`` (one row per requested site, ``status`` ok or
failed with its ``reason``, the engine's time and the site's directory, see
:data:`RESULT_COLUMNS`) and ``spectra.npz`` (the successful spectra: ``energy_{row}`` in eV on
the axis the row's ``energy_reference`` names, and ``mu_{row}``). Both are written atomically
and only when every site has run: a batch stopped by the machine (disk full, no permission,
missing program: :class:`~xasflow.errors.EnvironmentFailure`) leaves neither, so the job fails
and a rerun computes it again.

Progress goes to stderr (the Snakemake job log) as a tqdm bar, one line every
:data:`LOG_PROGRESS_SECONDS` when stderr is a file, and as one INFO log line per site.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from xasflow.fileio import atomic_path, atomic_write_text
from xasflow.spectra.cache import SpectrumCache
from xasflow.spectra.engines import Engine, SiteOutcome, run_site_cached, with_shared_potential
from xasflow.spectra.fdmnes import FDMNES_ENERGY_REFERENCE
from xasflow.spectra.feff import (
    ABSOLUTE_ENERGY,
    Cluster,
    PotentialError,
    SpectraInputError,
    SpectrumResult,
    cut_cluster,
)
from xasflow.spectra.runner import environment_guard
from xasflow.structures.io import read_snapshots
from xasflow.structures.sampling import SiteChoice, read_manifest

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.csv"
SPECTRA_FILE = "spectra.npz"
RESULT_COLUMNS = (
    "system",
    "frame",
    "site",
    "element",
    "status",
    "reason",
    "engine",
    "energy_reference",
    "cache_hit",
    "cache_key",
    "engine_seconds",
    "wall_seconds",
    "directory",
)
#: How often the progress bar is redrawn when stderr is a log file, not a terminal (s).
LOG_PROGRESS_SECONDS = 30.0


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
    Raises :class:`SpectraInputError` when the batch lists no sites or a site is not in the
    snapshots, and :class:`~xasflow.errors.EnvironmentFailure` (writing no results) when the
    machine fails a site.
    """
    out_dir = Path(out_dir)
    manifest, snapshots = _read_inputs(manifest_path, snapshots_path)
    sites = _batch_sites(manifest, snapshots, batch, manifest_path, snapshots_path)
    with environment_guard(out_dir, f"running batch {batch}"):
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (RESULTS_FILE, SPECTRA_FILE):  # they exist only for a batch that ran to the end
            (out_dir / name).unlink(missing_ok=True)
        engine, potential_failure = _shared_potential(
            engine, cache, manifest, snapshots, out_dir, cluster_radius
        )
        rows, arrays = [], {}
        for number, (choice, outcome) in enumerate(
            _run_sites(sites, snapshots, engine, cache, out_dir, cluster_radius, potential_failure)
        ):
            directory = site_directory(out_dir, choice.frame, choice.site, choice.element)
            rows.append(_result_row(choice, outcome, engine, directory.relative_to(out_dir)))
            if outcome.result.status == "ok":
                arrays[f"energy_{number}"] = outcome.result.energy
                arrays[f"mu_{number}"] = outcome.result.mu
        _write_outputs(out_dir, rows, arrays)
    failed = sum(row["status"] == "failed" for row in rows)
    cached = sum(row["cache_hit"] for row in rows)
    return {
        "requested": len(rows),
        "succeeded": len(rows) - failed,
        "failed": failed,
        "computed": len(rows) - cached,
        "cached": cached,
    }


def _read_inputs(manifest_path, snapshots_path) -> tuple[list[SiteChoice], list]:
    """The site manifest and the snapshots; SpectraInputError naming a missing or foreign file."""
    try:
        return read_manifest(manifest_path), read_snapshots(snapshots_path)
    except FileNotFoundError as error:
        message = f"{error.filename}: no such file" if error.filename else str(error)
        raise SpectraInputError(f"{message}; give the site manifest and snapshots of this system") from error
    except ValueError as error:  # read_manifest names the file and the columns it expected
        raise SpectraInputError(str(error)) from error


def _batch_sites(
    manifest: list[SiteChoice], snapshots: list, batch: int, manifest_path, snapshots_path
) -> list[SiteChoice]:
    """The sites of ``batch``, after checking that every site of the manifest is in the snapshots."""
    sites = [choice for choice in manifest if choice.batch == batch]
    if not sites:
        batches = sorted({choice.batch for choice in manifest})
        raise SpectraInputError(f"{manifest_path}: batch {batch} lists no sites (batches: {batches})")
    for choice in manifest:
        if not 0 <= choice.frame < len(snapshots):
            raise SpectraInputError(
                f"{manifest_path}: frame {choice.frame} is not in {snapshots_path} "
                f"(frames 0..{len(snapshots) - 1})"
            )
        if not 0 <= choice.site < len(snapshots[choice.frame]):
            raise SpectraInputError(
                f"{manifest_path}: site {choice.site} is not in frame {choice.frame} of {snapshots_path} "
                f"(atoms 0..{len(snapshots[choice.frame]) - 1})"
            )
    return sites


def _shared_potential(
    engine: Engine,
    cache: SpectrumCache | None,
    manifest: list[SiteChoice],
    snapshots: list,
    out_dir: Path,
    cluster_radius: float,
) -> tuple[Engine, str]:
    """The engine set to share the system's SCF potential (when it does), and the reason every
    site fails if that potential could not be computed ('' when it could or is not shared)."""
    if not getattr(engine, "shares_potential", False):
        return engine, ""
    # one SCF potential per system, from the same site whichever batch computes it
    representative = representative_site(manifest)
    title = f"{representative.system} SCF potential (frame {representative.frame} site {representative.site})"
    cluster = cut_cluster(snapshots[representative.frame], representative.site, cluster_radius)
    try:
        return with_shared_potential(engine, cache, cluster, out_dir / "potential", title), ""
    except PotentialError as error:
        failure = f"shared SCF potential failed: {error}"
        logger.error("%s", failure)
        return engine, failure


def _run_sites(
    sites: list[SiteChoice],
    snapshots: list,
    engine: Engine,
    cache: SpectrumCache | None,
    out_dir: Path,
    cluster_radius: float,
    potential_failure: str,
):
    """Yield ``(site, outcome)`` for every site in order, reporting progress as it goes."""
    started = time.perf_counter()
    with _progress(len(sites), f"{sites[0].system} batch {sites[0].batch}") as progress:
        for done, choice in enumerate(sites, start=1):
            title = f"{choice.system} frame {choice.frame} site {choice.site} {choice.element}"
            directory = site_directory(out_dir, choice.frame, choice.site, choice.element)
            if potential_failure:
                result = SpectrumResult(
                    "failed", potential_failure, None, None, 0.0, 0.0, str(directory), engine.energy_reference
                )
                outcome = SiteOutcome(result, False, "")
            else:
                cluster: Cluster = cut_cluster(snapshots[choice.frame], choice.site, cluster_radius)
                outcome = run_site_cached(engine, cache, cluster, directory, title)
            progress.update(1)
            _log_site(title, outcome, done, len(sites), time.perf_counter() - started)
            yield choice, outcome


@contextlib.contextmanager
def _progress(total: int, description: str):
    """A tqdm bar on stderr: redrawn in place on a terminal; in a log file one line every
    :data:`LOG_PROGRESS_SECONDS`, in ASCII, so the job log stays readable."""
    interactive = sys.stderr.isatty()
    stream = sys.stderr if interactive else _LineStream(sys.stderr)
    bar = tqdm(
        total=total,
        desc=description,
        unit="site",
        file=stream,
        mininterval=1.0 if interactive else LOG_PROGRESS_SECONDS,
        ascii=not interactive,
        ncols=None if interactive else 100,
    )
    try:
        if interactive:
            with logging_redirect_tqdm():  # log lines above the bar, not through it
                yield bar
        else:
            yield bar
    finally:
        bar.close()


class _LineStream:
    """Where tqdm writes when stderr is a file: each redraw becomes one line of its own.

    tqdm redraws a bar in place with carriage returns and clears it with blanks; in a log file
    that gives one long line mixed with the log records. Here the carriage returns and the
    blank clearing are dropped and each state of the bar ends with a newline.
    """

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _log_site(title: str, outcome: SiteOutcome, done: int, total: int, elapsed: float) -> None:
    """One INFO line per site: status, times, how many are done and an estimate of the time left."""
    result = outcome.result
    left = elapsed / done * (total - done)
    how = "from the cache" if outcome.cache_hit else f"engine {result.engine_seconds:.1f} s"
    why = f": {result.reason}" if result.reason else ""
    logger.info(
        "%s: %s in %.1f s (%s)%s [%d/%d sites, about %s left]",
        title,
        result.status,
        result.wall_seconds,
        how,
        why,
        done,
        total,
        tqdm.format_interval(left),
    )


def _result_row(choice: SiteChoice, outcome: SiteOutcome, engine: Engine, directory: Path) -> dict:
    """One row of ``results.csv``; ``directory`` is the site's folder relative to the batch."""
    result = outcome.result
    return {
        "system": choice.system,
        "frame": choice.frame,
        "site": choice.site,
        "element": choice.element,
        "status": result.status,
        "reason": result.reason,
        "engine": engine.name,
        "energy_reference": result.energy_reference,
        "cache_hit": int(outcome.cache_hit),
        "cache_key": outcome.cache_key,
        "engine_seconds": f"{result.engine_seconds:.3f}",
        "wall_seconds": f"{result.wall_seconds:.3f}",
        "directory": str(directory),
    }


def _write_outputs(out_dir: Path, rows: list[dict], arrays: dict[str, np.ndarray]) -> None:
    """``spectra.npz`` then ``results.csv``, each atomically (results last: it marks the batch done)."""
    with atomic_path(out_dir / SPECTRA_FILE, suffix=".npz") as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / RESULTS_FILE, text.getvalue())


def representative_site(manifest: list[SiteChoice]) -> SiteChoice:
    """The site whose SCF potential a whole system shares: the most highly coordinated sampled
    site (the most bulk-like environment), the first frame and site among equals."""
    return min(manifest, key=lambda choice: (-choice.coordination_number, choice.frame, choice.site))


def read_batch(batch_dir: str | Path) -> list[dict]:
    """Rows of ``results.csv``; ok rows carry ``energy`` and ``mu`` arrays from ``spectra.npz``.

    Every row has ``engine_seconds`` and ``energy_reference``; files written before these
    columns existed are read too (``feff_seconds`` becomes ``engine_seconds``; the energies of
    an old ``fdmnes`` row are relative to FDMNES's edge, of any other engine absolute).
    Raises :class:`SpectraInputError` naming a missing or unreadable file.
    """
    batch_dir = Path(batch_dir)
    results = batch_dir / RESULTS_FILE
    try:
        with open(results, newline="") as handle:
            rows = list(csv.DictReader(handle))
        data = np.load(batch_dir / SPECTRA_FILE, allow_pickle=False)
    except OSError as error:
        raise SpectraInputError(
            f"{error.filename or batch_dir}: cannot read this spectrum batch ({error.strerror or error}); "
            "run its 'xasflow spectra run' job again"
        ) from error
    with data:
        for number, row in enumerate(rows):
            _upgrade_row(row)
            row["frame"], row["site"] = int(row["frame"]), int(row["site"])
            row["directory"] = str(batch_dir / row["directory"])
            if row["status"] == "ok":
                row["energy"] = data[f"energy_{number}"]
                row["mu"] = data[f"mu_{number}"]
    return rows


def _upgrade_row(row: dict) -> None:
    """Bring a row of an older ``results.csv`` to the current columns, in place."""
    if "engine_seconds" not in row and "feff_seconds" in row:
        row["engine_seconds"] = row.pop("feff_seconds")
    if not row.get("energy_reference"):
        row["energy_reference"] = (
            FDMNES_ENERGY_REFERENCE if row.get("engine") == "fdmnes" else ABSOLUTE_ENERGY
        )
