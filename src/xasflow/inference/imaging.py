"""2D XANES imaging: from an energy stack to maps of chemical state, tile by tile.

For every spatial tile (all energies of a block of pixels) the pixels are normalized to unit
edge step (:mod:`.imaging_normalize`), pixels with too small an edge step are masked (empty
areas), the spectra are optionally denoised, fitted with non-negative fractions of the reference
spectra and their uncertainties (:mod:`.imaging_fit`), and the half-step edge energy is found.
Without a denoiser the normalized spectra are never formed: the normalization is folded into
the fit's linear operators (:mod:`.imaging_rawfit`; the same maps to float32 rounding, for about
a third of the arithmetic). The maps are written into a zarr store as each tile finishes, so memory is bounded
by a few tiles whatever the image size.

Denoising: ``"none"``, ``"pca"`` (spectral PCA fitted on a pixel sample of the whole stack), or
``"network"``: the self-supervised denoiser ``denoise_stack(spectra, energy, references,
config)`` of ``xasflow.inference.denoise``, looked up only when asked for. Any callable with
the signature of :data:`Denoiser` can also be passed to :func:`map_stack` directly.

Map store (``maps.zarr``), variables (see :data:`MAP_VARIABLES`):
``fraction`` (component, y, x), ``fraction_std`` (component, y, x), ``weight_sum``,
``residual_rms``, ``edge_step``, ``edge_energy`` (y, x) as float32 with NaN outside the mask,
and ``mask`` (y, x) uint8, 1 where the pixel was mapped. With trained models (``models`` of
:func:`map_stack`) also the maps of their predictions, interval widths and out-of-distribution
flags (:data:`~xasflow.inference.imaging_model.MODEL_MAP_VARIABLES`), from the raw and, when a
denoiser runs, the denoised spectra of the mapped pixels.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from xasflow import __version__
from xasflow.errors import UserError
from xasflow.fileio import atomic_write_text, staged_directory
from xasflow.inference.imaging_fit import (
    PcaDenoiser,
    PcaRule,
    ReferenceFit,
    RegionAccumulator,
    RegionComposition,
    half_step_energy,
)
from xasflow.inference.imaging_io import EnergyStack, StackError, Tile, tiles
from xasflow.inference.imaging_model import MODEL_MAP_VARIABLES, ModelMaps, model_figure_panels
from xasflow.inference.imaging_normalize import EdgeNormalization, TileNormalizer, resolve_normalization
from xasflow.inference.imaging_rawfit import RawTileFit
from xasflow.spectrum import Spectrum

logger = logging.getLogger(__name__)

#: A denoiser maps the spectra of all pixels of a tile, shape (n_pixels, n_energy) in row-major
#: image order, given the energies (eV, (n_energy,)), the normalized references (k, n_energy) and
#: the tile's (ny, nx), to spectra of the same shape. The spectra are raw absorbance or normalized,
#: as ``ImagingParams.denoise_input`` says; only the mapped pixels of the result are fitted.
Denoiser = Callable[[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]], np.ndarray]

DENOISE_METHODS = ("none", "pca", "network")
MAPS_NAME = "maps.zarr"

#: name -> (dims, units, description) of every map in the store.
MAP_VARIABLES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "fraction": (("component", "y", "x"), "1", "share of the edge step in each reference state"),
    "fraction_std": (("component", "y", "x"), "1", "1-sigma uncertainty of fraction"),
    "weight_sum": (("y", "x"), "1", "sum of NNLS weights (about 1 if the references explain the pixel)"),
    "residual_rms": (("y", "x"), "normalized mu", "RMS residual of the fit per energy point"),
    "edge_step": (("y", "x"), "raw mu", "edge step of the pre/post-edge normalization"),
    "edge_energy": (("y", "x"), "eV", "energy where the normalized spectrum reaches 0.5"),
    "mask": (
        ("y", "x"),
        "1",
        "1 where the pixel was mapped (edge step >= min_edge_step and >= min_step_snr x noise)",
    ),
}


@dataclass(frozen=True)
class ImagingParams:
    """Settings of :func:`map_stack`.

    Attributes:
        tile_size: tile edge in pixels; a tile holds tile_size^2 x n_energy values in memory
            (256 x 256 x 100: 6.5 M values, 26 MB in float32 per array; peak RSS 0.8 GB measured
            with 2 workers).
        min_edge_step: pixels whose edge step (raw mu units, absorbance for transmission) is
            below this are masked as empty.
        min_step_snr: pixels whose edge step is below this many times its noise are masked too
            (at 3, a pure-noise pixel passes with probability 1.3e-3).
        denoise: ``"none"``, ``"pca"`` or ``"network"``.
        denoise_input: ``"raw"``: the denoiser sees raw absorbance, and the denoised spectra are
            normalized (measured on the synthetic Fe stacks: most of the fraction error at low
            dose comes from the noisy pre-edge line and step, which this removes); or
            ``"normalized"``: it sees normalized spectra. The mask always comes from the raw data.
        pca: component rule of the PCA denoiser.
        pca_sample_pixels: most pixels sampled (on a regular grid) to fit the PCA.
        workers: tiles processed at once (threads).
        enrichment_threshold: fraction above which a region counts as enriched.
        denoise_config: settings passed to the network denoiser.
        network_train_size: the network denoiser trains on at most this many pixels square, in
            the middle of the tile with the most mapped pixels (its cost is pixels x epochs;
            96 x 96 at 30 epochs is about a minute on one core), then is applied to every tile.
    """

    tile_size: int = 256
    min_edge_step: float = 0.05
    min_step_snr: float = 3.0
    denoise: str = "none"
    denoise_input: str = "raw"
    pca: PcaRule = PcaRule()
    pca_sample_pixels: int = 50_000
    workers: int = 1
    enrichment_threshold: float = 0.5
    denoise_config: Mapping = field(default_factory=dict)
    network_train_size: int = 96

    def __post_init__(self):
        if self.denoise not in DENOISE_METHODS:
            raise UserError(f"denoise '{self.denoise}' is not one of {', '.join(DENOISE_METHODS)}")
        if self.denoise_input not in ("raw", "normalized"):
            raise UserError(f"denoise_input '{self.denoise_input}' is not 'raw' or 'normalized'")
        if self.tile_size < 1 or self.workers < 1:
            raise UserError(f"tile_size ({self.tile_size}) and workers ({self.workers}) must be >= 1")


def references_on_grid(spectra: Sequence[Spectrum], energy: np.ndarray) -> np.ndarray:
    """Raw reference mu interpolated (linearly) onto the stack energies, shape (k, n_energy).

    Raises:
        StackError: a reference does not cover the stack's energy range.
    """
    rows = []
    for spectrum in spectra:
        if spectrum.energy[0] > energy[0] or spectrum.energy[-1] < energy[-1]:
            raise StackError(
                spectrum.source,
                f"reference covers {spectrum.energy[0]:.1f}-{spectrum.energy[-1]:.1f} eV, the stack "
                f"{energy[0]:.1f}-{energy[-1]:.1f} eV; references must cover the stack's energies",
            )
        rows.append(np.interp(energy, spectrum.energy, spectrum.mu))
    return np.array(rows)


def prepare_references(
    spectra: Sequence[Spectrum], energy: np.ndarray, e0: float | None = None, **normalization_options
) -> tuple[np.ndarray, EdgeNormalization]:
    """Put references on the stack grid and normalize them exactly as the pixels will be.

    E0 and the fit ranges of the stack are resolved on the mean of the references (same energy
    calibration as the stack assumed); normalizing the references with the stack's own
    operators makes a pure pixel equal to its reference whatever the references' original
    normalization was.

    Args:
        spectra: raw reference spectra (absolute energies, eV).
        energy: stack energies, eV, shape (n_energy,).
        e0: stack edge energy, eV; None finds it on the mean reference.
        normalization_options: ``pre_edge_range``, ``norm_range``, ``post_edge_degree``,
            ``flatten`` of :func:`resolve_normalization`.

    Returns:
        (references, normalization): normalized references, shape (k, n_energy), and the
        stack's normalization.
    """
    raw = references_on_grid(spectra, energy)
    source = "mean of references " + ", ".join(Path(s.source).name for s in spectra)
    normalization = resolve_normalization(energy, raw.mean(axis=0), source, e0, **normalization_options)
    normalized, steps, _ = TileNormalizer(energy, normalization)(raw)
    for spectrum, step in zip(spectra, steps, strict=True):
        if not step > 0:
            raise StackError(spectrum.source, f"edge step {step:.3g} on the stack grid is not positive")
    return normalized, normalization


class NetworkDenoiser:
    """The self-supervised denoiser of ``xasflow.inference.denoise`` (imported only when used),
    trained once on the middle of the stack's fullest tile (the most mapped pixels; at most
    ``network_train_size`` pixels square) and then applied, as
    trained, to every tile: one training per stack, not per tile. The trained network is saved to
    ``checkpoint`` (a later stack can start from it: ``checkpoint`` in the settings)."""

    __name__ = "network"

    def __init__(self, config: Mapping, checkpoint: Path):
        try:
            self.module = importlib.import_module("xasflow.inference.denoise")
        except ModuleNotFoundError as error:
            raise UserError(
                "denoise 'network' needs xasflow.inference.denoise, which this installation lacks; "
                "use 'pca' or 'none'"
            ) from error
        settings = dict(config)
        self.start = settings.pop("checkpoint", None)
        self.settings = self.module.DenoiseSettings.from_mapping(settings)
        self.checkpoint = checkpoint
        self.loss_history: list[float] = []

    def train(self, spectra: np.ndarray, energy: np.ndarray, references: np.ndarray, shape) -> None:
        result = self.module.denoise_stack(spectra, energy, references, self.settings, self.start, shape)
        result.save_checkpoint(self.checkpoint)
        self.loss_history = [float(value) for value in result.loss_history]

    def __call__(self, spectra: np.ndarray, energy: np.ndarray, references: np.ndarray, shape) -> np.ndarray:
        applied = replace(self.settings, epochs=0)
        return self.module.denoise_stack(
            spectra, energy, references, applied, self.checkpoint, shape
        ).denoised


def fit_network_denoiser(mapper: _TileMapper, params: ImagingParams, out_dir: Path) -> NetworkDenoiser:
    """Train the network denoiser on the tile with the most mapped pixels (reads every tile's
    mask once)."""
    denoiser = NetworkDenoiser(params.denoise_config, Path(out_dir) / "denoiser.pt")
    best, best_count = None, -1
    for tile in tiles(mapper.stack.image_shape, params.tile_size):
        count = int(mapper.read(tile)[2].sum())
        if count > best_count:
            best, best_count = tile, count
    block, normalized, _ = mapper.read(best)
    spectra = block.reshape(block.shape[0], -1).T if params.denoise_input == "raw" else normalized.norm
    # training costs its pixel count times the epochs: at most a window of network_train_size^2
    # pixels in the middle of that tile is trained on
    ny, nx = best.shape
    height, width = min(ny, params.network_train_size), min(nx, params.network_train_size)
    top, left = (ny - height) // 2, (nx - width) // 2
    window = spectra.reshape(ny, nx, -1)[top : top + height, left : left + width].reshape(height * width, -1)
    denoiser.train(
        np.asarray(window, dtype=float), mapper.stack.energy, mapper.fit.references, (height, width)
    )
    logger.info("network denoiser trained on a tile of %d mapped pixels: %s", best_count, denoiser.checkpoint)
    return denoiser


class _TileMapper:
    """Everything needed to turn one tile into maps; shared by the worker threads (read only).

    Without a denoiser the tile goes the short way, :class:`RawTileFit` on the raw block (the
    same maps, the normalization folded into the fit's operators); with one, every pixel is
    normalized, denoised and fitted (:meth:`ReferenceFit.fit`)."""

    def __init__(
        self,
        stack: EnergyStack,
        normalizer: TileNormalizer,
        fit: ReferenceFit,
        params: ImagingParams,
        models: ModelMaps | None = None,
    ):
        self.stack = stack
        self.normalizer = normalizer
        self.fit = fit
        self.params = params
        self.models = models
        self.raw_fit = RawTileFit(normalizer, fit) if fit.enumerated else None

    def read(self, tile: Tile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(block (n_energy, ty, tx), its pixels normalized (row-major), mask (n_pixels,))."""
        block = self.stack.read_tile(tile)
        mu = block.reshape(block.shape[0], -1).T
        normalized = self.normalizer(mu)
        return block, normalized, self.mapped(normalized.edge_step, normalized.step_noise)

    def mapped(self, edge_step: np.ndarray, step_noise: np.ndarray) -> np.ndarray:
        """True for pixels with a clear edge: step above the floor and above min_step_snr x noise."""
        return (edge_step >= self.params.min_edge_step) & (edge_step >= self.params.min_step_snr * step_noise)

    def denoised(
        self, block: np.ndarray, normalized, mask: np.ndarray, shape: tuple[int, int], denoiser: Denoiser
    ) -> tuple[np.ndarray, np.ndarray]:
        """(normalized spectra to fit, spectra for the models) of the mapped pixels, denoised;
        the models get the denoised raw absorbance, or the denoised normalized spectra (their
        alignment normalizes again, which an affine normalization does not change)."""
        energy, references = self.stack.energy, self.fit.references
        if self.params.denoise_input == "raw":
            raw = block.reshape(block.shape[0], -1).T
            denoised = np.asarray(denoiser(raw, energy, references, shape), dtype=float)[mask]
            return self.normalizer(denoised).norm, denoised
        denoised = np.asarray(denoiser(normalized.norm, energy, references, shape), dtype=float)[mask]
        return denoised, denoised

    def fitted(self, tile: Tile, denoiser: Denoiser | None):
        """(fit of the mapped pixels, their edge energies, edge steps of all pixels, mask, model
        inputs: the mapped pixels' raw spectra and, with a denoiser, their denoised ones)."""
        block = self.stack.read_tile(tile)
        mu = block.reshape(block.shape[0], -1)  # (n_energy, n_pixels)
        if denoiser is None and self.raw_fit is not None:
            edge = self.raw_fit.edge(mu)
            mask = self.mapped(edge.edge_step, edge.step_noise)
            result, edge_energy = self.raw_fit.fit(mu, edge, mask)
            return result, edge_energy, edge.edge_step, mask, self.raw_inputs(mu, mask)
        normalized = self.normalizer(mu.T)
        mask = self.mapped(normalized.edge_step, normalized.step_noise)
        spectra, model_inputs = normalized.norm[mask], self.raw_inputs(mu, mask)
        if denoiser is not None and mask.any():
            spectra, denoised = self.denoised(block, normalized, mask, tile.shape, denoiser)
            model_inputs.append(denoised)
        edge_energy = half_step_energy(
            self.stack.energy, spectra, self.normalizer.pre_points.stop, self.normalizer.post_points.start + 1
        )
        return self.fit.fit(spectra), edge_energy, normalized.edge_step, mask, model_inputs

    def raw_inputs(self, mu: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        """[the mapped pixels' raw spectra (n, n_energy)] for the models; [] without models."""
        return [] if self.models is None else [mu.T[mask]]

    def maps(self, tile: Tile, denoiser: Denoiser | None) -> dict[str, np.ndarray]:
        """All maps of one tile, each shaped (..., ty, tx)."""
        result, edge_energy, edge_step, mask, model_inputs = self.fitted(tile, denoiser)
        k = len(self.fit.references)
        values = {
            "fraction": _scatter(result.fractions, mask, k),
            "fraction_std": _scatter(result.fraction_std, mask, k),
            "weight_sum": _scatter(result.weight_sum, mask),
            "residual_rms": _scatter(result.residual_rms, mask),
            "edge_energy": _scatter(edge_energy, mask),
            "edge_step": edge_step.astype(np.float32),
            "mask": mask.astype(np.uint8),
        }
        if self.models is not None:
            values.update(self.model_maps(model_inputs, mask, denoiser is not None))
        return {name: value.reshape(*value.shape[:-1], *tile.shape) for name, value in values.items()}

    def model_maps(self, inputs: list[np.ndarray], mask: np.ndarray, denoised: bool) -> dict[str, np.ndarray]:
        """The model maps of the mapped pixels' raw (and denoised) spectra, (spectra, ..., n_pixels)."""
        if len(inputs) == 1 and denoised:  # no mapped pixel: nothing was denoised
            inputs = inputs * 2
        predicted = [self.models.predict(spectra) for spectra in inputs]
        return {
            name: _scatter_pixels(np.stack([maps[name] for maps in predicted]), mask)
            for name in MODEL_MAP_VARIABLES
        }


def _scatter_pixels(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Values of the mapped pixels on the last axis back into all pixels (NaN elsewhere)."""
    full = np.full((*values.shape[:-1], mask.size), np.nan, dtype=np.float32)
    full[..., mask] = values
    return full


def _scatter(values: np.ndarray, mask: np.ndarray, k: int | None = None) -> np.ndarray:
    """Masked-pixel values back into all pixels (NaN elsewhere); components first for k."""
    if k is None:
        full = np.full(mask.size, np.nan, dtype=np.float32)
        full[mask] = values
        return full
    full = np.full((k, mask.size), np.nan, dtype=np.float32)
    full[:, mask] = values.T
    return full


def fit_pca_denoiser(mapper: _TileMapper, params: ImagingParams) -> PcaDenoiser:
    """Fit the PCA on unmasked pixels of a regular grid over the whole image (every s-th row and
    column, s chosen so at most ``pca_sample_pixels`` are taken), so the fit does not depend on
    the tiling. Reads the whole stack once."""
    ny, nx = mapper.stack.image_shape
    stride = max(1, math.ceil(math.sqrt(ny * nx / params.pca_sample_pixels)))
    orders, samples = [], []
    for tile in tiles((ny, nx), params.tile_size):
        block, normalized, mask = mapper.read(tile)
        rows = np.arange(tile.y.start, tile.y.stop)[:, None]
        columns = np.arange(tile.x.start, tile.x.stop)[None, :]
        keep = ((rows % stride == 0) & (columns % stride == 0)).ravel() & mask
        spectra = block.reshape(block.shape[0], -1).T if params.denoise_input == "raw" else normalized.norm
        orders.append((rows * nx + columns).ravel()[keep])
        samples.append(spectra[keep])
    sample = np.concatenate(samples)[np.argsort(np.concatenate(orders))].astype(float)
    return PcaDenoiser(sample, len(mapper.fit.references), params.pca)


def _library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("numpy", "scipy", "scikit-learn", "zarr", "xraylarch")}


def _describe(denoiser: Denoiser | None, params: ImagingParams) -> str:
    if isinstance(denoiser, PcaDenoiser):
        return f"pca ({denoiser.n_components} components, {params.denoise_input} spectra)"
    return (
        "none"
        if denoiser is None
        else f"{getattr(denoiser, '__name__', params.denoise)} ({params.denoise_input} spectra)"
    )


def _create_store(path: Path, variables: Mapping, sizes: Mapping[str, int], tile_size: int, attributes: dict):
    """An empty map store: one array per entry of ``variables`` (name -> (dims, units,
    description)), shaped by ``sizes`` (dim -> length), chunked by tile over y and x and whole
    over every other axis.

    Chunks are stored uncompressed: zarr's default zstd halves the maps (float32, noisy; 101 MB
    against 197 MB for 2048 x 2048 pixels, about an eighth of the stack's size) but took a third
    of the map time (27 ms of compression per 256 x 256 tile, measured)."""
    import zarr

    group = zarr.open_group(path, mode="w", attributes=attributes)
    chunk_sizes = {**sizes, "y": min(tile_size, sizes["y"]), "x": min(tile_size, sizes["x"])}
    arrays = {}
    for name, (dims, units, description) in variables.items():
        arrays[name] = group.create_array(
            name,
            shape=tuple(sizes[dim] for dim in dims),
            chunks=tuple(max(chunk_sizes[dim], 1) for dim in dims),
            dtype="uint8" if name == "mask" else "float32",
            fill_value=0 if name == "mask" else np.nan,
            compressors=None,
            dimension_names=dims,
            attributes={"units": units, "description": description},
        )
    return arrays


def map_stack(
    stack: EnergyStack,
    references: np.ndarray,
    names: list[str],
    normalization: EdgeNormalization,
    out_dir: str | Path,
    params: ImagingParams = ImagingParams(),
    denoiser: Denoiser | None = None,
    models: ModelMaps | None = None,
) -> Path:
    """Map a stack tile by tile into ``out_dir/maps.zarr`` (published when complete).

    Args:
        stack: the open stack.
        references: normalized references on the stack grid, shape (k, n_energy)
            (:func:`prepare_references`).
        names: one name per reference (the ``component`` labels).
        normalization: the stack's normalization.
        out_dir: output folder.
        params: tiling, mask and denoising settings.
        denoiser: overrides ``params.denoise`` when given.
        models: trained models whose predictions are mapped too, from the raw and, when a
            denoiser runs, the denoised spectra (:mod:`xasflow.inference.imaging_model`).

    Returns:
        The path of the map store.
    """
    if references.shape[1] != stack.shape[0]:
        raise UserError(f"{references.shape[1]} reference energies for a stack of {stack.shape[0]} energies")
    mapper = _TileMapper(
        stack, TileNormalizer(stack.energy, normalization), ReferenceFit(references, names), params, models
    )
    if denoiser is None and params.denoise == "pca":
        denoiser = fit_pca_denoiser(mapper, params)
    elif denoiser is None and params.denoise == "network":
        denoiser = fit_network_denoiser(mapper, params, Path(out_dir))
    attributes = {
        "xasflow_version": __version__,
        "versions": _library_versions(),
        "source": str(stack.path),
        "components": list(names),
        "energy_eV": [float(value) for value in stack.energy],
        "normalization": asdict(normalization),
        "params": json.loads(json.dumps(asdict(params), default=str)),
        "denoiser": _describe(denoiser, params),
    }
    variables, sizes = (
        dict(MAP_VARIABLES),
        {"component": len(names), "y": stack.shape[1], "x": stack.shape[2]},
    )
    if models is not None:
        spectra = ["raw", "denoised"] if denoiser is not None else ["raw"]
        attributes.update(
            models={
                name: str(p.checkpoint_path) for name, p in zip(models.names, models.predictors, strict=True)
            },
            model_quantities=models.describe(),
            model_spectra=spectra,
        )
        variables.update(MODEL_MAP_VARIABLES)
        sizes.update(spectra=len(spectra), quantity=len(models.labels), model=len(models.names))
    target = Path(out_dir) / MAPS_NAME
    with staged_directory(target) as staging:
        arrays = _create_store(staging, variables, sizes, params.tile_size, attributes)

        def work(tile: Tile) -> None:
            for name, values in mapper.maps(tile, denoiser).items():
                arrays[name][..., tile.y, tile.x] = values

        tile_list = tiles(stack.image_shape, params.tile_size)
        if params.workers == 1:
            for tile in tile_list:
                work(tile)
        else:
            with ThreadPoolExecutor(params.workers) as pool:
                list(pool.map(work, tile_list))
    logger.info("wrote %s (%d tiles of %d px)", target, len(tile_list), params.tile_size)
    return target


def open_maps(path: str | Path):
    """The map store as an ``xarray.Dataset``, checked against :data:`MAP_VARIABLES` (and
    :data:`~xasflow.inference.imaging_model.MODEL_MAP_VARIABLES` when it holds model maps)."""
    import xarray as xr

    path = Path(path)
    try:
        maps = xr.open_zarr(path, consolidated=False)
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise StackError(path, f"not a map store ({error})") from error
    expected = {**MAP_VARIABLES, **(MODEL_MAP_VARIABLES if maps.attrs.get("models") else {})}
    for name, (dims, _, _) in expected.items():
        if name not in maps or maps[name].dims != dims:
            raise StackError(path, f"map '{name}' with dims {dims} missing; not written by map_stack")
    return maps


def resolve_region_labels(
    maps_path: str | Path, labels: np.ndarray | None, min_region_pixels: int = 10
) -> np.ndarray:
    """Region labels, int (ny, nx), 0 outside any region: ``labels`` checked against the maps'
    shape, or when None the connected components (8-neighbour) of the mapped pixels
    (``scipy.ndimage.label``) of at least ``min_region_pixels`` pixels (smaller ones are noise
    that passed the mask)."""
    from scipy import ndimage

    maps = open_maps(maps_path)
    if labels is None:
        labels, _ = ndimage.label(maps["mask"].values.astype(bool), structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())
        labels = np.where(sizes[labels] >= min_region_pixels, labels, 0)
    labels = np.asarray(labels)
    if labels.shape != maps["mask"].shape:
        raise StackError(maps_path, f"region labels have shape {labels.shape}, the maps {maps['mask'].shape}")
    return labels


def region_compositions(
    maps_path: str | Path, labels: np.ndarray | None, threshold: float, min_region_pixels: int = 10
) -> list[RegionComposition]:
    """Mean composition per region and the probability that it exceeds ``threshold``.

    Args:
        maps_path: a store written by :func:`map_stack`.
        labels: region labels, int, shape (ny, nx), 0 outside any region; None: the connected
            mapped areas (:func:`resolve_region_labels`).
        threshold: fraction threshold of the enrichment probability.
    """
    labels = resolve_region_labels(maps_path, labels, min_region_pixels)
    maps = open_maps(maps_path)
    accumulator = RegionAccumulator(maps.sizes["component"])
    rows = 256
    for y0 in range(0, labels.shape[0], rows):  # a strip at a time: bounded memory
        strip = slice(y0, y0 + rows)
        fractions = maps["fraction"][:, strip].values.reshape(maps.sizes["component"], -1).T
        deviations = maps["fraction_std"][:, strip].values.reshape(maps.sizes["component"], -1).T
        accumulator.add(labels[strip].ravel(), fractions, deviations)
    return accumulator.compositions(threshold)


def write_regions_csv(
    path: str | Path, compositions: list[RegionComposition], names: list[str], threshold: float
):
    """One row per region and component: mean fraction, its standard error, P(mean > threshold)."""
    lines = ["region,n_pixels,component,mean_fraction,standard_error,threshold,enrichment_probability"]
    for region in compositions:
        for index, name in enumerate(names):
            lines.append(
                f"{region.label},{region.n_pixels},{name},{region.mean_fraction[index]:.5f},"
                f"{region.standard_error[index]:.5f},{threshold:g},{region.enrichment_probability[index]:.5f}"
            )
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_map_figures(maps_path: str | Path, figure_dir: str | Path, max_side: int = 1024) -> list[Path]:
    """PNG figures of the fraction, uncertainty, edge-energy and edge-step maps, and of each
    model's maps when the store holds them (``model_<name>.png``); images larger than
    ``max_side`` are shown every s-th pixel."""
    maps = open_maps(maps_path)
    names = maps.attrs["components"]
    stride = max(1, math.ceil(max(maps.sizes["y"], maps.sizes["x"]) / max_side))
    view = maps.isel(y=slice(None, None, stride), x=slice(None, None, stride))
    figure_dir = Path(figure_dir)
    panels = {
        "fractions.png": [
            [(f"fraction {name}", view["fraction"][i], (0, 1)) for i, name in enumerate(names)]
        ],
        "fraction_std.png": [
            [(f"std {name}", view["fraction_std"][i], None) for i, name in enumerate(names)]
        ],
        "edge.png": [
            [
                ("edge energy (eV)", view["edge_energy"], None),
                ("edge step (raw mu)", view["edge_step"], None),
                ("residual RMS", view["residual_rms"], None),
            ]
        ],
    }
    if maps.attrs.get("models"):
        panels.update(model_figure_panels(view))
    return [_save_panels(figure_dir / filename, rows) for filename, rows in panels.items()]


def _save_panels(path: Path, rows: list[list[tuple | None]]) -> Path:
    """One PNG of image panels ``(title, values, limits or None)`` in rows (None: left empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xasflow.fileio import atomic_path

    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(3.2 * columns, 3.0 * len(rows)), squeeze=False)
    for row_axes, row in zip(axes, rows, strict=True):
        for axis, entry in zip(row_axes, [*row, *[None] * (columns - len(row))], strict=True):
            axis.set_axis_off()
            if entry is None:
                continue
            title, values, limits = entry
            shown = np.asarray(values.values, dtype=float)
            if limits is None and np.isfinite(shown).any():  # isolated outliers would hide the map
                limits = tuple(np.nanpercentile(shown, [1, 99]))
            image = axis.imshow(shown, cmap="viridis", vmin=limits and limits[0], vmax=limits and limits[1])
            axis.set_title(title, fontsize=9)
            figure.colorbar(image, ax=axis, shrink=0.8)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
    return path
