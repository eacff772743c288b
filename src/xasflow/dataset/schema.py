"""The one definition of the xasflow spectrum dataset: dims, coords, variables and units.

A dataset holds ``n_spectrum`` simulated site spectra on one common energy grid.

Dimensions
----------
``spectrum``  one absorbing site in one MD snapshot
``energy``    energy relative to the half-step edge energy E0 of each spectrum, eV
``r``         radial grid of the partial RDF, Angstrom
``element``   neighbour element of the partial labels (the union over all systems)
``shell``     coordination shell of ``labels.shell_edges``

Coordinates on ``spectrum``: ``system`` (str), ``frame`` (int), ``site`` (int, atom index in
the snapshot), ``absorber`` (str, element symbol).

Data variables
--------------
``mu``                   (spectrum, energy) normalized absorption, dimensionless
``e0``                   (spectrum,) absolute energy where mu first reaches 0.5 (half the edge
                         step; see ``xasflow.experiment.alignment``), eV
``coordination_number``  (spectrum,) first-shell coordination number of the absorber
``rdf``                  (spectrum, r) partial RDF g(r) around the absorber
``surface``              (spectrum,) 1 where the absorber is a surface atom, else 0
``multiplicity``         (spectrum,) number of equivalent atoms the site stands for (1 for MD)

Optional variables (checked when present; written by ``assemble``):
``partial_cn``           (spectrum, element) first-shell neighbours of each element
``local_composition``    (spectrum, element) fraction of each element among those neighbours
``partial_rdf``          (spectrum, element, r) partial g(r) towards each element
``shell_cn``             (spectrum, shell) neighbours in each coordination shell
``valence``              (spectrum,) ligand neighbours (e.g. O around Si), -1 if not defined
``grain_boundary``       (spectrum,) 1 where the absorber is a grain-boundary atom
``structure_type``       (spectrum,) CNA type: 1 fcc, 2 hcp, 3 bcc, 4 ico, 5 other, -1 none

``validate`` is called by the writer before writing and by every reader after opening, so a
store produced by another version or edited by hand fails early with a clear message.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from xasflow.errors import UserError

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class VariableSpec:
    dims: tuple[str, ...]
    units: str
    description: str
    kind: str  # numpy dtype kind accepted: "f" float, "i" int, "U"/"O" string


COORDS: dict[str, VariableSpec] = {
    "energy": VariableSpec(("energy",), "eV", "energy relative to the edge energy E0", "f"),
    "r": VariableSpec(("r",), "Angstrom", "radial distance of the RDF grid", "f"),
    "system": VariableSpec(("spectrum",), "", "structure model name from config", "U"),
    "frame": VariableSpec(("spectrum",), "", "MD snapshot index", "i"),
    "site": VariableSpec(("spectrum",), "", "absorbing atom index in the snapshot", "i"),
    "absorber": VariableSpec(("spectrum",), "", "element symbol of the absorber", "U"),
}

DATA_VARS: dict[str, VariableSpec] = {
    "mu": VariableSpec(("spectrum", "energy"), "", "normalized absorption mu(E)", "f"),
    "e0": VariableSpec(("spectrum",), "eV", "absolute energy where mu reaches half the edge step", "f"),
    "coordination_number": VariableSpec(
        ("spectrum",), "", "first-shell coordination number of the absorber", "f"
    ),
    "rdf": VariableSpec(("spectrum", "r"), "", "partial radial distribution g(r) around absorber", "f"),
    "surface": VariableSpec(("spectrum",), "", "1 if the absorber is a surface atom", "i"),
    "multiplicity": VariableSpec(
        ("spectrum",), "", "atoms this spectrum stands for (symmetry-equivalent sites of a crystal)", "i"
    ),
}

OPTIONAL_COORDS: dict[str, VariableSpec] = {
    "element": VariableSpec(("element",), "", "neighbour element of the partial labels", "U"),
}

OPTIONAL_VARS: dict[str, VariableSpec] = {
    "partial_cn": VariableSpec(("spectrum", "element"), "", "first-shell neighbours of each element", "f"),
    "local_composition": VariableSpec(
        ("spectrum", "element"), "", "fraction of each element among first-shell neighbours", "f"
    ),
    "partial_rdf": VariableSpec(("spectrum", "element", "r"), "", "partial g(r) towards each element", "f"),
    "shell_cn": VariableSpec(("spectrum", "shell"), "", "neighbours in each coordination shell", "f"),
    "valence": VariableSpec(("spectrum",), "", "ligand neighbours of the absorber (-1: undefined)", "i"),
    "grain_boundary": VariableSpec(("spectrum",), "", "1 if the absorber is a grain-boundary atom", "i"),
    "structure_type": VariableSpec(
        ("spectrum",), "", "CNA type: 1 fcc, 2 hcp, 3 bcc, 4 ico, 5 other, -1 not computed", "i"
    ),
}

REQUIRED_ATTRS = ("schema_version", "xasflow_version", "config_hash", "provenance")


class DatasetSchemaError(UserError):
    """A dataset does not follow the xasflow schema."""


def _kind_ok(values: np.ndarray, kind: str) -> bool:
    if kind == "U":
        return values.dtype.kind in ("U", "O", "T")
    if kind == "i":
        return values.dtype.kind in ("i", "u")
    return values.dtype.kind == kind


def validate(dataset: xr.Dataset, source: str | Path = "<memory>") -> xr.Dataset:
    """Check ``dataset`` against the schema; return it unchanged or raise ``DatasetSchemaError``.

    ``source`` names the file in error messages.
    """
    for table, required in (
        (COORDS, True),
        (DATA_VARS, True),
        (OPTIONAL_COORDS, False),
        (OPTIONAL_VARS, False),
    ):
        for name, spec in table.items():
            if name not in dataset.variables:
                if not required:
                    continue
                raise DatasetSchemaError(f"{source}: variable '{name}' is missing")
            variable = dataset[name]
            if tuple(variable.dims) != spec.dims:
                raise DatasetSchemaError(
                    f"{source}: variable '{name}' has dims {tuple(variable.dims)}, expected {spec.dims}"
                )
            if not _kind_ok(variable.values, spec.kind):
                raise DatasetSchemaError(
                    f"{source}: variable '{name}' has dtype {variable.dtype}, expected kind '{spec.kind}'"
                )
    if dataset.sizes.get("spectrum", 0) == 0:
        raise DatasetSchemaError(f"{source}: dataset holds no spectra")
    energy = dataset["energy"].values
    if energy.size < 2 or np.any(np.diff(energy) <= 0):
        raise DatasetSchemaError(f"{source}: energy grid must be strictly increasing")
    if not np.all(np.isfinite(dataset["mu"].values)):
        raise DatasetSchemaError(f"{source}: 'mu' holds NaN or inf")
    for attr in REQUIRED_ATTRS:
        if attr not in dataset.attrs:
            raise DatasetSchemaError(f"{source}: attribute '{attr}' is missing")
    if int(dataset.attrs["schema_version"]) != SCHEMA_VERSION:
        raise DatasetSchemaError(
            f"{source}: schema_version {dataset.attrs['schema_version']}, expected {SCHEMA_VERSION}"
        )
    return dataset


def build_dataset(
    *,
    energy: np.ndarray,
    r: np.ndarray,
    mu: np.ndarray,
    e0: np.ndarray,
    coordination_number: np.ndarray,
    rdf: np.ndarray,
    surface: np.ndarray,
    system: list[str],
    frame: np.ndarray,
    site: np.ndarray,
    absorber: list[str],
    attrs: dict,
    multiplicity: np.ndarray | None = None,
    element: list[str] | None = None,
    optional: dict[str, np.ndarray] | None = None,
) -> xr.Dataset:
    """Assemble a schema-conforming dataset from plain arrays (shapes as in the module doc).

    ``optional`` holds any of ``OPTIONAL_VARS`` by name; ``element`` names their element axis.
    """
    coords = {
        "energy": ("energy", np.asarray(energy, dtype=np.float64)),
        "r": ("r", np.asarray(r, dtype=np.float64)),
        "system": ("spectrum", np.asarray(system, dtype=str).astype(object)),
        "frame": ("spectrum", np.asarray(frame, dtype=np.int64)),
        "site": ("spectrum", np.asarray(site, dtype=np.int64)),
        "absorber": ("spectrum", np.asarray(absorber, dtype=str).astype(object)),
    }
    data_vars = {
        "mu": (("spectrum", "energy"), np.asarray(mu, dtype=np.float32)),
        "e0": ("spectrum", np.asarray(e0, dtype=np.float64)),
        "coordination_number": ("spectrum", np.asarray(coordination_number, dtype=np.float32)),
        "rdf": (("spectrum", "r"), np.asarray(rdf, dtype=np.float32)),
        "surface": ("spectrum", np.asarray(surface, dtype=np.int8)),
        "multiplicity": (
            "spectrum",
            np.ones(len(system), dtype=np.int32)
            if multiplicity is None
            else np.asarray(multiplicity, np.int32),
        ),
    }
    if element is not None:
        coords["element"] = ("element", np.asarray(element, dtype=str).astype(object))
    for name, values in (optional or {}).items():
        if name not in OPTIONAL_VARS:
            raise DatasetSchemaError(f"variable '{name}' is not part of the dataset schema")
        spec = OPTIONAL_VARS[name]
        dtype = np.float32 if spec.kind == "f" else np.int32
        data_vars[name] = (spec.dims, np.asarray(values, dtype=dtype))
    dataset = xr.Dataset(data_vars=data_vars, coords=coords)
    for name, spec in {**COORDS, **DATA_VARS, **OPTIONAL_COORDS, **OPTIONAL_VARS}.items():
        if name in dataset.variables:
            dataset[name].attrs.update(units=spec.units, description=spec.description)
    dataset.attrs.update({"schema_version": SCHEMA_VERSION, **attrs})
    if not isinstance(dataset.attrs.get("provenance"), str):
        dataset.attrs["provenance"] = json.dumps(dataset.attrs.get("provenance", {}), sort_keys=True)
    return validate(dataset)


def write_dataset(dataset: xr.Dataset, path: str | Path) -> Path:
    """Validate and write ``dataset`` to a zarr store at ``path``.

    The store is written beside ``path`` and moved in place only when complete, so a failed
    write never leaves a half-written dataset under the final name (an older store at ``path``
    is removed just before the move).
    """
    path = Path(path)
    validate(dataset, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    store = staging / path.name
    # zarr v3 has no fixed-width string type: store strings as variable-length
    encoded = dataset.copy()
    for name in ("system", "absorber", "element"):
        if name not in encoded.variables:
            continue
        encoded[name] = encoded[name].astype(str).astype(object)
    encoded.to_zarr(store, mode="w", consolidated=False, zarr_format=3)
    if path.exists():
        shutil.rmtree(path)
    store.rename(path)
    staging.rmdir()
    return path


def open_dataset(path: str | Path) -> xr.Dataset:
    """Open a zarr store written by ``write_dataset``, load it into memory and validate it."""
    path = Path(path)
    if not path.exists():
        raise DatasetSchemaError(f"{path}: dataset does not exist")
    try:
        with warnings.catch_warnings():
            # Snakemake marks directory() outputs with a .snakemake_timestamp file inside the store
            warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
            dataset = xr.open_zarr(path, consolidated=False).load()
    except Exception as error:  # zarr raises many types for a damaged store
        raise DatasetSchemaError(f"{path}: cannot be read as zarr ({error})") from error
    return validate(dataset, path)
