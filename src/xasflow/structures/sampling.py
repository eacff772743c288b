"""Choose absorbing sites so that their labels are well spread, reproducibly from a seed."""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from xasflow.fileio import atomic_open

MANIFEST_COLUMNS = (
    "system",
    "frame",
    "site",
    "element",
    "coordination_number",
    "surface",
    "batch",
    "multiplicity",
)


@dataclass(frozen=True)
class SiteChoice:
    system: str
    frame: int
    site: int
    element: str
    coordination_number: int
    surface: int
    batch: int
    multiplicity: int = 1  # atoms this site stands for (symmetry-equivalent copies included)


def _system_seed(seed: int, system: str) -> int:
    # crc32 is stable across runs and machines (Python's hash() is salted per process)
    return seed * 1_000_003 + zlib.crc32(system.encode())


def sample_sites(
    labels: dict[str, np.ndarray],
    system: str,
    absorber: str,
    n_sites: int,
    strategy: str,
    seed: int,
    batch_size: int,
    stratify_by: str = "coordination_number",
) -> list[SiteChoice]:
    """Pick ``n_sites`` (frame, site) pairs of element ``absorber`` from one system's labels.

    ``stratified``: candidates are grouped by the integer label ``stratify_by``
    (coordination_number, valence, surface or grain_boundary) and drawn round-robin over the
    groups (smallest groups exhausted first), so rare sites (surface, low valence, boundary)
    are as well represented as common ones. ``uniform``: a plain random draw without
    replacement, so averages over the chosen sites estimate averages over the whole particle.
    The same inputs always give the same choice; the result is sorted by (frame, site) and
    numbered into batches.
    """
    candidates = np.flatnonzero(labels["element"] == absorber)
    if candidates.size == 0:
        raise ValueError(f"system '{system}' has no {absorber} atoms to use as absorbers")
    n_sites = min(n_sites, candidates.size)
    rng = np.random.default_rng(_system_seed(seed, system))
    if strategy == "uniform":
        chosen = rng.choice(candidates, size=n_sites, replace=False)
    elif strategy == "stratified":
        if stratify_by not in labels:
            raise ValueError(f"system '{system}' has no label '{stratify_by}' to stratify sites by")
        key = labels[stratify_by][candidates]
        strata = [rng.permutation(candidates[key == value]) for value in np.unique(key)]
        chosen_list: list[int] = []
        depth = 0
        while len(chosen_list) < n_sites:
            for stratum in strata:
                if depth < stratum.size and len(chosen_list) < n_sites:
                    chosen_list.append(int(stratum[depth]))
            depth += 1
        chosen = np.asarray(chosen_list)
    else:
        raise ValueError(f"sampling strategy '{strategy}' is not known; use 'stratified' or 'uniform'")
    chosen = np.asarray(sorted(chosen, key=lambda row: (labels["frame"][row], labels["site"][row])))
    return [
        SiteChoice(
            system=system,
            frame=int(labels["frame"][row]),
            site=int(labels["site"][row]),
            element=str(labels["element"][row]),
            coordination_number=int(labels["coordination_number"][row]),
            surface=int(labels["surface"][row]),
            batch=position // batch_size,
        )
        for position, row in enumerate(chosen)
    ]


def sample_inequivalent_sites(
    atoms: Atoms, labels: dict[str, np.ndarray], system: str, absorber: str, batch_size: int
) -> list[SiteChoice]:
    """Every symmetry-inequivalent ``absorber`` of a static crystal (frame 0), once, with its
    multiplicity; averages over the crystal weight each spectrum by that multiplicity."""
    # pymatgen (behind the symmetry module) takes seconds to import; only crystals need it
    from xasflow.structures.symmetry import inequivalent_sites

    classes = inequivalent_sites(atoms, element=absorber)
    if not classes:
        raise ValueError(f"system '{system}' has no {absorber} atoms to use as absorbers")
    frame0 = labels["frame"] == 0
    return [
        SiteChoice(
            system=system,
            frame=0,
            site=site.index,
            element=site.element,
            coordination_number=int(labels["coordination_number"][frame0][site.index]),
            surface=int(labels["surface"][frame0][site.index]),
            batch=position // batch_size,
            multiplicity=site.multiplicity,
        )
        for position, site in enumerate(classes)
    ]


def write_manifest(choices: list[SiteChoice], path: str | Path) -> Path:
    path = Path(path)
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for choice in choices:
            writer.writerow([getattr(choice, column) for column in MANIFEST_COLUMNS])
    return path


def read_manifest(path: str | Path) -> list[SiteChoice]:
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or tuple(reader.fieldnames) != MANIFEST_COLUMNS:
            raise ValueError(
                f"{path}: not a site manifest (columns {reader.fieldnames}, expected {MANIFEST_COLUMNS})"
            )
        return [
            SiteChoice(
                system=row["system"],
                frame=int(row["frame"]),
                site=int(row["site"]),
                element=row["element"],
                coordination_number=int(row["coordination_number"]),
                surface=int(row["surface"]),
                batch=int(row["batch"]),
                multiplicity=int(row["multiplicity"]),
            )
            for row in reader
        ]
