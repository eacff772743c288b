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

Integrity
---------
The writer records a SHA-256 checksum of every variable's values (coords included) and of the
dataset attributes in the attribute ``checksums`` (a JSON object), and writes every chunk file
(empty ones too). ``open_dataset`` refuses a store with a missing chunk file or a value that no
longer matches its checksum, naming the store and the variable: a flipped bit on disk is an
error, never a silently different dataset. Beside the store ``write_dataset`` publishes a small
manifest ``<store>.json`` (see :func:`manifest_path`) holding the same checksums: the workflow
declares it, not the store, as the dataset rule's output, so that Snakemake never deletes the
last good store when a rebuild fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from xasflow.errors import UserError
from xasflow.fileio import atomic_write_text, staged_directory

logger = logging.getLogger(__name__)

# 3: checksums of every variable and of the attributes; every chunk file written
SCHEMA_VERSION = 3

CHECKSUMS_ATTR = "checksums"
MANIFEST_SUFFIX = ".json"


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


def manifest_path(store: str | Path) -> Path:
    """The manifest published beside the zarr store ``store``: ``<store>.json``."""
    store = Path(store)
    return store.with_name(store.name + MANIFEST_SUFFIX)


def _canonical_bytes(values: np.ndarray) -> bytes:
    """Values as bytes that do not depend on how zarr hands them back (string dtype, byte order)."""
    values = np.asarray(values)
    shape = ",".join(str(size) for size in values.shape)
    if values.dtype.kind in ("U", "O", "T", "S"):
        text = json.dumps([str(value) for value in values.ravel().tolist()], ensure_ascii=False)
        return f"str[{shape}]".encode() + text.encode("utf-8")
    little_endian = values.dtype.newbyteorder("<")
    header = f"{little_endian.str}[{shape}]".encode()
    return header + np.ascontiguousarray(values, dtype=little_endian).tobytes()


def _variable_checksum(variable: xr.Variable) -> str:
    """SHA-256 of a variable's dims, attributes (units, description) and values."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps([list(map(str, variable.dims)), variable.attrs], sort_keys=True, default=str).encode()
    )
    digest.update(_canonical_bytes(variable.values))
    return digest.hexdigest()


def _attributes_checksum(attrs: dict) -> str:
    recorded = {key: value for key, value in attrs.items() if key != CHECKSUMS_ATTR}
    text = json.dumps(recorded, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dataset_checksums(dataset: xr.Dataset) -> dict[str, object]:
    """SHA-256 (hex) of each variable (coords included: dims, attributes and values) and of the
    dataset attributes without ``checksums`` itself:
    ``{"algorithm": "sha256", "variables": {name: hex}, "attributes": hex}``."""
    return {
        "algorithm": "sha256",
        "variables": {
            str(name): _variable_checksum(variable) for name, variable in dataset.variables.items()
        },
        "attributes": _attributes_checksum(dict(dataset.attrs)),
    }


def write_dataset(dataset: xr.Dataset, path: str | Path) -> Path:
    """Validate ``dataset``, write it to the zarr store ``path`` and its manifest beside it.

    The store is written into a staging folder and swapped in only when complete
    (:func:`xasflow.fileio.staged_directory`): a failed write leaves the previous store at
    ``path`` as it was. The manifest (:func:`manifest_path`) is written last, so its presence
    means the store beside it is complete. Returns ``path``.
    """
    path = Path(path)
    validate(dataset, path)
    # zarr v3 has no fixed-width string type: store strings as variable-length
    encoded = dataset.copy()
    for name in ("system", "absorber", "element"):
        if name not in encoded.variables:
            continue
        encoded[name] = encoded[name].astype(str).astype(object)
    checksums = dataset_checksums(encoded)
    encoded.attrs[CHECKSUMS_ATTR] = json.dumps(checksums, sort_keys=True)
    with staged_directory(path, replace=True) as staging:
        # every chunk on disk, even an all-fill one: a chunk file that is missing means damage
        encoded.to_zarr(staging, mode="w", consolidated=False, zarr_format=3, write_empty_chunks=True)
    manifest = {
        "store": path.name,
        "schema_version": SCHEMA_VERSION,
        "config_hash": str(dataset.attrs.get("config_hash", "")),
        "n_spectrum": int(dataset.sizes["spectrum"]),
        CHECKSUMS_ATTR: checksums,
    }
    atomic_write_text(manifest_path(path), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def _missing_chunks(path: Path) -> str | None:
    """'variable (n of m chunk files missing)' for the first array whose chunks are not all on disk."""
    import zarr

    group = zarr.open_group(path, mode="r")
    for name, array in sorted(group.arrays()):
        stored = array.nchunks_initialized
        if stored < array.nchunks:
            return f"variable '{name}' has {array.nchunks - stored} of {array.nchunks} chunk files missing"
    return None


def _load_variables(lazy: xr.Dataset, path: Path) -> xr.Dataset:
    """Load every variable into memory, naming the one whose chunks cannot be decoded."""
    for name in sorted(lazy.variables):
        try:
            lazy[name].load()
        except Exception as error:  # zarr/numcodecs raise many types for a damaged chunk
            raise DatasetSchemaError(
                f"{path}: variable '{name}' cannot be decoded, a chunk is damaged "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                "rebuild the dataset"
            ) from error
    return lazy.load()


def verify_checksums(dataset: xr.Dataset, source: str | Path) -> xr.Dataset:
    """Check ``dataset`` (as read from ``source``) against the checksums recorded on write.

    Raises ``DatasetSchemaError`` naming ``source`` and the first variable that differs.
    """
    if int(dataset.attrs.get("schema_version", -1)) != SCHEMA_VERSION:
        raise DatasetSchemaError(
            f"{source}: schema_version {dataset.attrs.get('schema_version')}, expected {SCHEMA_VERSION} "
            "(rebuild the dataset with this xasflow version)"
        )
    try:
        recorded = json.loads(dataset.attrs[CHECKSUMS_ATTR])
        expected_variables = dict(recorded["variables"])
        expected_attributes = str(recorded["attributes"])
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetSchemaError(
            f"{source}: attribute '{CHECKSUMS_ATTR}' is missing or unreadable ({error!r}); the store is "
            "damaged or was not written by write_dataset"
        ) from error
    actual = dataset_checksums(dataset)
    for name in sorted(set(expected_variables) | set(actual["variables"])):
        if name not in actual["variables"]:
            raise DatasetSchemaError(f"{source}: variable '{name}' is missing (it was written)")
        if name not in expected_variables:
            raise DatasetSchemaError(f"{source}: variable '{name}' was not written by write_dataset")
        if actual["variables"][name] != expected_variables[name]:
            raise DatasetSchemaError(
                f"{source}: variable '{name}' does not match the checksum recorded when it was written "
                "(the store is damaged); rebuild the dataset"
            )
    if actual["attributes"] != expected_attributes:
        raise DatasetSchemaError(
            f"{source}: the dataset attributes do not match the checksum recorded when they were written "
            "(the store is damaged); rebuild the dataset"
        )
    return dataset


def open_dataset(path: str | Path) -> xr.Dataset:
    """Open a zarr store written by ``write_dataset``, load it into memory, verify and validate it.

    Raises ``DatasetSchemaError`` naming ``path`` (and the variable) if the store is missing,
    has a missing or undecodable chunk, differs from its recorded checksums, or breaks the schema.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetSchemaError(f"{path}: dataset does not exist")
    try:
        with warnings.catch_warnings():
            # Snakemake marks directory() outputs with a .snakemake_timestamp file inside the store
            warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
            lazy = xr.open_zarr(path, consolidated=False)
            missing = _missing_chunks(path)
    except Exception as error:  # zarr raises many types for a damaged store
        raise DatasetSchemaError(f"{path}: cannot be read as zarr ({error})") from error
    if missing:
        raise DatasetSchemaError(f"{path}: {missing} (the store is damaged); rebuild the dataset")
    dataset = _load_variables(lazy, path)
    verify_checksums(dataset, path)
    return validate(dataset, path)
