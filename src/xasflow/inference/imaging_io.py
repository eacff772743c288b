"""Energy stacks of 2D XANES imaging: read them tile by tile, write them for tests and benchmarks.

A stack is a 3-D array with axes (energy, y, x): one transmission (or fluorescence) image per
incident energy, raw absorbance mu in arbitrary units. Three containers are read:

* HDF5 (h5py): a dataset path for the images and one for the energies (eV), e.g.
  ``/exchange/data`` and ``/exchange/energy``;
* TIFF (tifffile): a multi-page TIFF whose pages are the energies in order, with the energies
  in a text file (one per line, or the first column) or given as a list;
* zarr (zarr v3): a group holding an image array and an energy array (names configurable).

Nothing is read whole: :meth:`EnergyStack.read_tile` returns all energies of one spatial tile,
so memory stays bounded by the tile size. Chunked containers read fastest when their chunks
hold all energies of a spatial block, shape (n_energy, ty, tx).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xasflow.errors import FileProblem, UserError

logger = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5")
TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)
#: Default names of the image and energy arrays in the files this module writes.
DEFAULT_STACK_NAME = "stack"
DEFAULT_ENERGY_NAME = "energy"


class StackError(FileProblem):
    """An energy stack that cannot be used; the message is one line, ``"<path>: <problem>"``."""


@dataclass(frozen=True)
class Tile:
    """A spatial block of the image: rows ``y``, columns ``x`` (slices with explicit bounds)."""

    y: slice
    x: slice

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y.stop - self.y.start, self.x.stop - self.x.start)


def tiles(image_shape: tuple[int, int], tile_size: int) -> list[Tile]:
    """Cover an image of shape (ny, nx) with tiles of at most tile_size x tile_size pixels,
    row by row; edge tiles are smaller."""
    if tile_size < 1:
        raise UserError(f"tile size must be a positive number of pixels, got {tile_size}")
    ny, nx = image_shape
    return [
        Tile(slice(y0, min(y0 + tile_size, ny)), slice(x0, min(x0 + tile_size, nx)))
        for y0 in range(0, ny, tile_size)
        for x0 in range(0, nx, tile_size)
    ]


class EnergyStack:
    """An open energy stack: energies (eV, strictly increasing) and tile access to the images.

    Do not build one directly; use :func:`open_stack`. ``shape`` is (n_energy, ny, nx) in the
    order of ``energy`` (a stack recorded from high to low energy is reversed on reading).
    """

    def __init__(self, path: Path, energy: np.ndarray, images, reverse: bool, close: Callable[[], None]):
        self.path = path
        self.energy = energy
        self._images = images  # any array supporting images[:, y0:y1, x0:x1]
        self._reverse = reverse
        self._close = close
        self.shape = (int(images.shape[0]), int(images.shape[1]), int(images.shape[2]))

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.shape[1], self.shape[2]

    def read_tile(self, tile: Tile) -> np.ndarray:
        """All energies of one tile as float32, shape (n_energy, ty, tx).

        Raises:
            StackError: the tile holds NaN or infinite values (names the tile's pixel range).
        """
        block = np.asarray(self._images[:, tile.y, tile.x], dtype=np.float32)
        if self._reverse:
            block = block[::-1]
        if not np.isfinite(block).all():
            bad_energy, bad_y, bad_x = np.argwhere(~np.isfinite(block))[0]
            raise StackError(
                self.path,
                f"non-finite value (NaN or inf) at energy {self.energy[bad_energy]:.2f} eV, pixel "
                f"y={tile.y.start + bad_y}, x={tile.x.start + bad_x}; mask or repair it before mapping",
            )
        return block

    def close(self) -> None:
        self._close()


def _checked_energy(path: Path, energy, n_images: int) -> tuple[np.ndarray, bool]:
    """The energies as a strictly increasing float array, and whether the stack must be reversed."""
    values = np.asarray(energy, dtype=float)
    if values.ndim != 1:
        raise StackError(path, f"energies must be a 1-D list, got shape {values.shape}")
    if values.size != n_images:
        raise StackError(
            path, f"{values.size} energies given for {n_images} images; give one energy (eV) per image"
        )
    if values.size < 2 or not np.isfinite(values).all():
        raise StackError(path, "energies must be at least 2 finite values in eV")
    steps = np.diff(values)
    if np.all(steps < 0):
        return values[::-1].copy(), True
    if not np.all(steps > 0):
        where = int(np.flatnonzero(np.sign(steps) != np.sign(steps[0]))[0]) if steps[0] != 0 else 0
        raise StackError(
            path,
            f"energies are not monotonic (image {where} at {values[where]:.2f} eV is followed by "
            f"{values[where + 1]:.2f} eV); they must increase (or decrease) strictly",
        )
    return values, False


def _checked_images(path: Path, images) -> None:
    if len(images.shape) != 3:
        raise StackError(path, f"the image stack must have 3 axes (energy, y, x), got shape {images.shape}")
    if min(images.shape) < 1:
        raise StackError(path, f"the image stack is empty (shape {images.shape})")


def _read_energy_text(path: Path) -> np.ndarray:
    try:
        table = np.loadtxt(path, ndmin=2, comments="#")
    except (OSError, ValueError) as error:
        raise StackError(path, f"cannot read energies (one number in eV per line): {error}") from error
    return table[:, 0]


def _open_hdf5(path: Path, dataset: str, energy: str | Path | Sequence[float]) -> EnergyStack:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise StackError(path, f"not a readable HDF5 file ({error})") from error
    try:
        if dataset not in handle:
            raise StackError(path, f"no dataset '{dataset}' in the file; it holds {_hdf5_names(handle)}")
        images = handle[dataset]
        if not isinstance(images, h5py.Dataset):
            raise StackError(path, f"'{dataset}' is a group, not a dataset of images")
        _checked_images(path, images)
        if isinstance(energy, str):
            if energy not in handle:
                raise StackError(
                    path, f"no energy dataset '{energy}' in the file; it holds {_hdf5_names(handle)}"
                )
            energy = handle[energy][()]
        values, reverse = _checked_energy(path, _energy_values(energy), images.shape[0])
    except BaseException:
        handle.close()
        raise
    return EnergyStack(path, values, images, reverse, handle.close)


def _hdf5_names(handle) -> str:
    names: list[str] = []
    handle.visit(lambda name: names.append("/" + name) if len(names) < 20 else None)
    return ", ".join(names) or "nothing"


def _open_tiff(path: Path, energy: str | Path | Sequence[float] | None) -> EnergyStack:
    import tifffile
    import zarr

    if energy is None:
        raise StackError(
            path, "a TIFF stack needs its energies: a text file (one eV value per line) or a list"
        )
    try:
        handle = tifffile.TiffFile(path)
    except (OSError, tifffile.TiffFileError) as error:
        raise StackError(path, f"not a readable TIFF file ({error})") from error
    try:
        series = handle.series[0]
        images = zarr.open(series.aszarr(), mode="r")
        if len(images.shape) == 2:  # a single page: one energy
            raise StackError(
                path, f"holds one image of shape {images.shape}; an energy stack needs one page per energy"
            )
        _checked_images(path, images)
        if isinstance(energy, str):
            energy = Path(energy)
        energy = _energy_values(energy)
        values, reverse = _checked_energy(path, energy, images.shape[0])
    except BaseException:
        handle.close()
        raise
    return EnergyStack(path, values, images, reverse, handle.close)


def _open_zarr(path: Path, dataset: str, energy: str | Path | Sequence[float]) -> EnergyStack:
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except (FileNotFoundError, ValueError, zarr.errors.NodeTypeValidationError) as error:
        raise StackError(path, f"not a zarr group or array ({error})") from error
    if isinstance(node, zarr.Array):  # a bare array: the energies come as a list or a text file
        if isinstance(energy, str):
            raise StackError(
                path, "is a zarr array, which holds no energies; give them as a list or a text file"
            )
        images = node
    else:
        names = sorted(node.array_keys())
        if dataset not in names:
            raise StackError(
                path, f"no array '{dataset}' in the zarr group; it holds {', '.join(names) or 'nothing'}"
            )
        images = node[dataset]
        if isinstance(energy, str):
            if energy not in names:
                raise StackError(
                    path, f"no energy array '{energy}' in the zarr group; it holds {', '.join(names)}"
                )
            energy = node[energy][...]
    _checked_images(path, images)
    values, reverse = _checked_energy(path, _energy_values(energy), images.shape[0])
    return EnergyStack(path, values, images, reverse, lambda: None)


def _energy_values(energy: Path | Sequence[float]) -> np.ndarray | Sequence[float]:
    """Energies given as a text file (a ``Path``) or as values."""
    return _read_energy_text(energy) if isinstance(energy, Path) else energy


def stack_format(path: str | Path) -> str:
    """``"hdf5"``, ``"tiff"`` or ``"zarr"`` from the file name."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in ZARR_SUFFIXES or (path.is_dir() and (path / "zarr.json").exists()):
        return "zarr"
    raise StackError(
        path,
        f"unknown stack format '{suffix}'; use HDF5 ({', '.join(HDF5_SUFFIXES)}), TIFF "
        f"({', '.join(TIFF_SUFFIXES)}) or a zarr group (.zarr)",
    )


@contextlib.contextmanager
def open_stack(
    path: str | Path,
    dataset: str = DEFAULT_STACK_NAME,
    energy: str | Path | Sequence[float] | None = DEFAULT_ENERGY_NAME,
) -> Iterator[EnergyStack]:
    """Open an energy stack for tile reading; the file is closed on leaving the block.

    Args:
        path: an HDF5 file, a multi-page TIFF or a zarr group (format from the suffix).
        dataset: HDF5 dataset path or zarr array name of the images, axes (energy, y, x).
        energy: HDF5 dataset path or zarr array name (a ``str``) of the energies (eV); or a
            text file (a ``Path``; for TIFF also a ``str``) of one energy per line; or the
            energies themselves (one per image). ``path`` may also be a bare zarr array (energies
            then as a file or a list).

    Raises:
        StackError: missing file or dataset, images that are not 3-D, an energy count that
            differs from the image count, energies that are not finite or not monotonic.
    """
    path = Path(path)
    if not path.exists():
        raise StackError(path, "no such file or folder")
    kind = stack_format(path)
    if kind == "hdf5":
        stack = _open_hdf5(path, dataset, energy)
    elif kind == "tiff":
        stack = _open_tiff(path, None if energy == DEFAULT_ENERGY_NAME else energy)
    else:
        stack = _open_zarr(path, dataset, energy)
    logger.info("opened %s stack %s: %d energies %.1f-%.1f eV, %d x %d pixels", kind, path, *_summary(stack))
    try:
        yield stack
    finally:
        stack.close()


def _summary(stack: EnergyStack) -> tuple:
    return stack.shape[0], stack.energy[0], stack.energy[-1], stack.shape[1], stack.shape[2]


def write_stack(
    path: str | Path,
    energy: np.ndarray,
    images: np.ndarray | Callable[[Tile], np.ndarray],
    image_shape: tuple[int, int] | None = None,
    chunk: int = 256,
) -> Path:
    """Write an energy stack as HDF5, zarr (arrays ``stack`` and ``energy``) or TIFF (pages,
    energies in ``<path>.energy.txt``), chunked (n_energy, chunk, chunk) where the format allows.

    Args:
        path: target file; the format follows the suffix.
        energy: energies, eV, shape (n_energy,).
        images: the stack, float, shape (n_energy, ny, nx); or a function giving the block of one
            :class:`Tile` (shape (n_energy, ty, tx)), so that a stack larger than memory can be
            written tile by tile (HDF5 and zarr only).
        image_shape: (ny, nx), needed when ``images`` is a function.
        chunk: spatial chunk size in pixels.
    """
    path = Path(path)
    energy = np.asarray(energy, dtype=float)
    kind = stack_format(path)
    if callable(images):
        if image_shape is None or kind == "tiff":
            raise UserError("writing tile by tile needs image_shape and an HDF5 or zarr target")
        block_of = images
    else:
        image_shape = images.shape[1:]
        block_of = lambda tile: images[:, tile.y, tile.x]  # noqa: E731
    shape = (energy.size, *image_shape)
    chunks = (energy.size, min(chunk, shape[1]), min(chunk, shape[2]))
    if kind == "tiff":
        import tifffile

        tifffile.imwrite(path, np.asarray(images, dtype=np.float32), photometric="minisblack")
        np.savetxt(tiff_energy_path(path), energy, fmt="%.4f", header="energy (eV), one per TIFF page")
        return path
    if kind == "hdf5":
        import h5py

        with h5py.File(path, "w") as handle:
            handle.create_dataset(DEFAULT_ENERGY_NAME, data=energy)
            target = handle.create_dataset(DEFAULT_STACK_NAME, shape=shape, dtype="float32", chunks=chunks)
            for tile in tiles(shape[1:], chunk):
                target[:, tile.y, tile.x] = block_of(tile)
        return path
    import zarr

    group = zarr.open_group(path, mode="w")
    group.create_array(DEFAULT_ENERGY_NAME, data=energy, attributes={"units": "eV"})
    target = group.create_array(
        DEFAULT_STACK_NAME, shape=shape, chunks=chunks, dtype="float32", dimension_names=("energy", "y", "x")
    )
    for tile in tiles(shape[1:], chunk):
        target[:, tile.y, tile.x] = block_of(tile)
    return path


def tiff_energy_path(path: str | Path) -> Path:
    """The energy text file :func:`write_stack` writes beside a TIFF stack."""
    return Path(f"{path}.energy.txt")
