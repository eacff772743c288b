"""``xasflow image``: an energy stack and reference spectra in, maps, figures and region table out.

Output folder:
``maps.zarr``        the maps (:data:`~xasflow.inference.imaging.MAP_VARIABLES`)
``regions.csv``      mean composition of each region and P(mean fraction > threshold)
``figures/*.png``    fraction, uncertainty, edge-energy maps (and ``model_<name>.png``)
``model_regions.csv`` with ``models``: mean prediction, its pixel scatter, mean 90 % interval
                     width and out-of-distribution share per region, spectra and quantity
``imaging.json``     inputs, parameters, normalization and the region tables
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from xasflow import __version__
from xasflow.experiment.readers import read_spectrum
from xasflow.fileio import atomic_write_text
from xasflow.inference.imaging import (
    ImagingParams,
    map_stack,
    open_maps,
    prepare_references,
    references_on_grid,
    region_compositions,
    resolve_region_labels,
    write_map_figures,
    write_regions_csv,
)
from xasflow.inference.imaging_io import EnergyStack, StackError, open_stack
from xasflow.inference.imaging_model import (
    ModelMaps,
    load_model_maps,
    model_region_means,
    write_model_regions_csv,
)
from xasflow.spectrum import Spectrum

logger = logging.getLogger(__name__)


def read_region_labels(path: str | Path) -> np.ndarray:
    """Region labels from a ``.npy`` array or a TIFF image, shape (ny, nx), integers >= 0."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            labels = tifffile.imread(path)
        else:
            labels = np.load(path)
    except (OSError, ValueError) as error:
        raise StackError(path, f"cannot read region labels (.npy or TIFF): {error}") from error
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise StackError(
            path, f"region labels must be a 2-D array of integers >= 0, got {labels.dtype} {labels.shape}"
        )
    return labels


def _model_maps(
    models: Sequence[str | Path], stack: EnergyStack, references: Sequence[Spectrum]
) -> ModelMaps | None:
    """The models, checked against the stack (its edge: the mean of the references on its grid)."""
    if not models:
        return None
    mean = references_on_grid(references, stack.energy).mean(axis=0)
    representative = Spectrum(stack.energy, mean, source=str(stack.path), kind="measured")
    return load_model_maps(models, stack.energy, representative)


def run_imaging(
    stack_path: str | Path,
    references: Mapping[str, str | Path],
    out_dir: str | Path,
    params: ImagingParams | None = None,
    dataset: str = "stack",
    energy: str | Path | Sequence[float] | None = "energy",
    e0: float | None = None,
    normalization_options: Mapping | None = None,
    region_labels: str | Path | None = None,
    models: Sequence[str | Path] = (),
) -> dict:
    """Map one stack against named reference spectrum files; write maps, figures and regions.

    Args:
        stack_path: HDF5, TIFF or zarr stack (:func:`~xasflow.inference.imaging_io.open_stack`).
        references: name -> spectrum file (XDI, columns, Athena ``project.prj:group``).
        out_dir: output folder.
        params: mapping settings (default :class:`ImagingParams`).
        dataset, energy: where the images and energies are in the stack file.
        e0: stack edge energy, eV (default: found on the mean reference).
        normalization_options: ``pre_edge_range``, ``norm_range``, ``post_edge_degree``, ``flatten``.
        region_labels: ``.npy``/TIFF region labels; default: connected mapped areas.
        models: checkpoints of trained models whose predictions are mapped too
            (:mod:`~xasflow.inference.imaging_model`); each is checked against the stack first.

    Returns:
        The summary written to ``imaging.json``.
    """
    out_dir = Path(out_dir)
    params = params or ImagingParams()
    if not references:
        raise StackError(stack_path, "no reference spectra given; at least one is needed to map fractions")
    names = list(references)
    spectra = [read_spectrum(path) for path in references.values()]
    with open_stack(stack_path, dataset, energy) as stack:
        normalized, normalization = prepare_references(
            spectra, stack.energy, e0, **(normalization_options or {})
        )
        labels = read_region_labels(region_labels) if region_labels else None
        model_maps = _model_maps(models, stack, spectra)
        maps_path = map_stack(stack, normalized, names, normalization, out_dir, params, models=model_maps)
    labels = resolve_region_labels(maps_path, labels)
    compositions = region_compositions(maps_path, labels, params.enrichment_threshold)
    write_regions_csv(out_dir / "regions.csv", compositions, names, params.enrichment_threshold)
    model_regions = []
    if model_maps is not None:
        model_regions = model_region_means(open_maps(maps_path), labels)
        write_model_regions_csv(out_dir / "model_regions.csv", model_regions)
    figures = write_map_figures(maps_path, out_dir / "figures")
    summary = {
        "xasflow_version": __version__,
        "stack": str(stack_path),
        "references": {name: str(path) for name, path in references.items()},
        "normalization": asdict(normalization),
        "params": json.loads(json.dumps(asdict(params), default=str)),
        "maps": str(maps_path),
        "figures": [str(path) for path in figures],
        "regions": [
            {
                "label": region.label,
                "n_pixels": region.n_pixels,
                **{
                    name: {
                        "mean_fraction": float(region.mean_fraction[index]),
                        "standard_error": float(region.standard_error[index]),
                        "enrichment_probability": float(region.enrichment_probability[index]),
                    }
                    for index, name in enumerate(names)
                },
            }
            for region in compositions
        ],
        "models": {} if model_maps is None else dict(zip(model_maps.names, map(str, models), strict=True)),
        "model_regions": [asdict(region) for region in model_regions],
    }
    atomic_write_text(out_dir / "imaging.json", json.dumps(summary, indent=1) + "\n")
    logger.info("imaging: %d regions, maps in %s", len(compositions), maps_path)
    return summary
