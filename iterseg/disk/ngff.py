"""OME-Zarr (NGFF) in and out, through the ``ome-zarr`` library (``pip install 'iterseg[zarr]'``):
a multiscale image is read like a pyramidal TIFF, and the mask is written as an NGFF labels group
(``STEM.mask.zarr/labels/mask``, a multiscale label image) that ome-zarr's reader and napari open.

Glossary
    region   (y, x, h, w) in level-0 pixels; parts outside the image are mirrored (np.pad 'reflect')
    levels   the multiscale datasets, largest first; shapes (h, w) or (h, w, C)
    axes     the image's NGFF axes (t, c, z, y, x in any subset); t and z must have one plane, c <= 4
``NgffImage`` has the interface of disk/tiff.TiledImage (shape, dtype, tile, level_shapes,
read_region, read_level_region, tiles_read), so engine/source.TiffSource streams it alike.
"""
import threading
from pathlib import Path

import numpy as np

from ..errors import InputError
from .limits import check_pixels
from .tiff import mirrored_region, tiles_overlapped

NGFF_SUFFIX = ".zarr"
ZARR_EXTRA = "pip install 'iterseg[zarr]' (ome-zarr)"
UNITS = {"nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "centimeter": 1e4, "meter": 1e6}
LABELS = "mask"  # the label image's name in the labels group


def is_ngff(path):
    """True for a folder named *.zarr (an OME-Zarr image)."""
    return Path(path).suffix.lower() == NGFF_SUFFIX and Path(path).is_dir()


def _ome_zarr():
    try:
        from ome_zarr import io, reader, writer
    except ImportError:
        raise InputError(f"OME-Zarr images need ome-zarr: {ZARR_EXTRA}.") from None
    return io, reader, writer


def _multiscale_node(path):
    """The first multiscale image node of the OME-Zarr at ``path`` (ome-zarr's Reader)."""
    io, reader, _ = _ome_zarr()
    location = io.parse_url(str(path))
    if location is None:
        raise InputError(f"{path} is not a Zarr store; pass an OME-Zarr image folder.")
    for node in reader.Reader(location)():
        if node.data and node.load(reader.Multiscales) is not None and node.load(reader.Label) is None:
            return node
    raise InputError(f"{path} holds no multiscale image (NGFF 'multiscales'); pass an OME-Zarr image.")


class NgffImage:
    """An open OME-Zarr image. ``read_region`` reads level-0 regions, ``read_level_region`` a region
    of any level; the chunks they overlap are counted in ``tiles_read`` (level 0) and
    ``level_tiles_read`` ({level: chunks})."""

    def __init__(self, path, max_pixels=None):
        self.path = Path(path)
        try:
            node = _multiscale_node(self.path)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - zarr and ome-zarr raise many types for damaged stores
            raise InputError(f"cannot read OME-Zarr {self.path} ({str(exc)[:120] or type(exc).__name__}); check that "
                             "the folder is complete.") from None
        self._axes = [axis["name"] if isinstance(axis, dict) else axis for axis in node.metadata["axes"]]
        self._levels = node.data
        self._check_axes(self._levels[0].shape)
        self.dtype = np.dtype(self._levels[0].dtype)
        self.shape = self._yxc(self._levels[0].shape)
        chunks = self._levels[0].chunksize
        self.tile = (int(chunks[self._axes.index("y")]), int(chunks[self._axes.index("x")]))
        self.pixel_size = self._pixel_size(node.metadata)
        check_pixels(self.path, self.shape[0], self.shape[1], max_pixels, streamed=True)
        self.tiles_read, self.level_tiles_read = 0, {}  # level 0; {level: chunks} of the others
        self._lock = threading.Lock()

    def _check_axes(self, shape):
        sizes = dict(zip(self._axes, shape, strict=True))
        if "y" not in sizes or "x" not in sizes or any(sizes.get(axis, 1) != 1 for axis in ("t", "z")) or \
                sizes.get("c", 1) > 4:
            raise InputError(f"OME-Zarr {self.path} has axes {sizes}; iterseg reads one 2-D plane (t and z of "
                             "size 1) with at most 4 channels: select a plane first.")

    def _yxc(self, shape):
        """(h, w) or (h, w, C) of an array with the image's axes."""
        sizes = dict(zip(self._axes, shape, strict=True))
        channels = sizes.get("c", 1)
        return (int(sizes["y"]), int(sizes["x"])) + ((int(channels),) if channels > 1 else ())

    def _pixel_size(self, metadata):
        """(y, x) micrometres per level-0 pixel from the first dataset's scale and the axes' units, or None."""
        axes = {axis["name"]: axis for axis in metadata["axes"] if isinstance(axis, dict)}
        scales = [t.get("scale") for t in (metadata.get("coordinateTransformations") or [[]])[0]
                  if t.get("type") == "scale"]
        sizes = []
        for name in ("y", "x"):
            unit = UNITS.get(axes.get(name, {}).get("unit"))
            if unit is None or not scales:
                return None
            sizes.append(float(scales[0][self._axes.index(name)]) * unit)
        return tuple(sizes) if min(sizes) > 0 else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        pass

    @property
    def level_shapes(self):
        return [self._yxc(level.shape) for level in self._levels]

    def read_level_region(self, level, y, x, h, w):
        """Pixels (h, w[, C]) of the region (y, x, h, w) of ``level`` (inside the level)."""
        index = tuple(slice(y, y + h) if axis == "y" else slice(x, x + w) if axis == "x" else
                      slice(None) if axis == "c" else 0 for axis in self._axes)
        try:
            block = np.asarray(self._levels[level][index].compute(scheduler="synchronous"))
        except Exception as exc:  # noqa: BLE001 - codecs raise many types for corrupt chunks
            raise InputError(f"OME-Zarr {self.path}: level {level} at row {y}, column {x} cannot be read "
                             f"({str(exc)[:100] or type(exc).__name__}); the store is damaged or incomplete.") from None
        chunks = self._levels[level].chunksize
        tiles = tiles_overlapped((chunks[self._axes.index("y")], chunks[self._axes.index("x")]), y, x, h, w)
        with self._lock:
            if level == 0:
                self.tiles_read += tiles
            else:
                self.level_tiles_read[level] = self.level_tiles_read.get(level, 0) + tiles
        kept = [axis for axis in self._axes if axis in ("c", "y", "x")]
        block = np.moveaxis(block, [kept.index(a) for a in ("y", "x")], [0, 1])
        return block[..., 0] if block.ndim == 3 and len(self.shape) == 2 else block

    def read_region(self, y, x, h, w):
        """Level-0 pixels of the region (y, x, h, w), mirrored where it leaves the image."""
        return mirrored_region(lambda *box: self.read_level_region(0, *box), self.shape, y, x, h, w)


def write_mask_labels(path, shape, mask_at, class_names, pixel_size=None, tile=(512, 512)):
    """The mask as an NGFF labels group: ``path``/labels/mask, a multiscale uint8 label image of
    class ids (0 background, 1 foreground for a binary model), levels halving until one fits in a
    tile, each written chunk by chunk from ``mask_at(rows, cols)`` (uint8 class ids at level-0 pixel
    rows x cols; the centre pixel of each level's pixel). shape: (H, W). pixel_size: (y, x)
    micrometres, written as the levels' scale. Returns the foreground fraction at level 0."""
    import dask
    import dask.array as da
    import zarr

    from .outputs import atomic_folder
    from .pyramid import level_positions, pyramid_shapes
    _, _, writer = _ome_zarr()
    foreground = [0]

    def block(level):
        def compute(block_info=None):
            (y0, y1), (x0, x1) = block_info[None]["array-location"]
            labels = mask_at(level_positions(y0, y1 - y0, level), level_positions(x0, x1 - x0, level))
            if level == 0:
                foreground[0] += int(np.count_nonzero(labels))
            return labels.astype(np.uint8)
        return compute

    levels = pyramid_shapes(shape[0], shape[1], tile)
    pyramid = [da.map_blocks(block(k), chunks=da.core.normalize_chunks(tile, (h, w)), dtype=np.uint8, meta=np.empty(
        (0, 0), np.uint8)) for k, (h, w) in enumerate(levels)]
    step = pixel_size or (1.0, 1.0)
    units = {"y": "micrometer", "x": "micrometer"} if pixel_size else None
    properties = [{"label-value": i, "class": name} for i, name in enumerate(class_names)]
    with atomic_folder(path) as tmp, dask.config.set(scheduler="synchronous"):
        group = zarr.open_group(str(tmp), mode="w")
        writer.write_multiscale_labels(pyramid, group, LABELS, axes=["y", "x"], scale={"y": step[0], "x": step[1]},
                                       axes_units=units, label_metadata={"properties": properties})
    return foreground[0] / (shape[0] * shape[1])


def read_labels(path):
    """(level-0 labels (H, W) uint8, ome-zarr's node metadata) of a labels group written by
    ``write_mask_labels``, through ome-zarr's reader (as napari's plugin opens it)."""
    io, reader, _ = _ome_zarr()
    for node in reader.Reader(io.parse_url(str(Path(path) / "labels")))():
        if node.load(reader.Label) is not None:
            return np.asarray(node.data[0]), node.metadata
    raise InputError(f"{path} holds no NGFF label image.")
