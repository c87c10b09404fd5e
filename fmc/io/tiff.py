"""TIFF volumes in and out: with :mod:`fmc.io.metadata`, the only modules of fmc that know TIFF tags.

:func:`read_volume` and :class:`TiffVolume` read a 3D ZYX volume with its metadata (where fmc looks
for them: :mod:`fmc.io.metadata`).

:func:`write_volume` writes an ImageJ hyperstack whose description also carries every challenge key
(``channel``, ``study``, ``physical_size_x/y/z``, ...): Fiji/ImageJ reads the calibration from it,
tifffile and the organisers' reader (shaped metadata, else ``imagej_metadata``) read the keys.

A file whose page chain is cut, that holds fewer planes than its ImageJ, OME or shaped metadata
declare, that holds no intensities (bool, complex, ...) or that changes while it is read (its
stamp is compared after every read and on closing) is refused with one line naming it: a file
another program is still writing is never read as a shorter volume.
"""

from __future__ import annotations

import os
import struct
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from fmc.core.errors import FmcInputError
from fmc.core.files import atomic_path
from fmc.io.lazy_array import check_intensity_dtype, check_spacing, check_unchanged, file_stamp
from fmc.io.metadata import VolumeMeta, description_keys, meta_from

# Above this many bytes a classic TIFF's 32-bit offsets overflow: write BigTIFF.
BIGTIFF_THRESHOLD = 2**32 - 2**25


def _series_pages(series: tifffile.TiffPageSeries) -> list:
    """The pages of a series present in the file: tifffile lists missing ones as None (OME),
    or raises IndexError past the last page it could index (shaped, ImageJ)."""
    pages = []
    for index in range(len(series.pages)):
        try:
            page = series.pages[index]
        except IndexError:
            break
        if page is not None:
            pages.append(page)
    return pages


def _check_planes(tif: tifffile.TiffFile, path: Path) -> None:
    """Raise if the file holds fewer planes than its series (OME, shaped) or ImageJ declare."""
    series = tif.series[0]
    in_series = int(np.prod(series.shape)) // max(int(np.prod(tif.pages.first.shape)), 1)
    present = len(_series_pages(series))
    if (len(tif.pages) == 1 and series.dataoffset is not None  # ImageJ above 4 GB: one page
            and series.dataoffset + series.nbytes <= os.path.getsize(path)):
        present = in_series
    count, source = in_series, {"imagej": "ImageJ", "ome": "OME"}.get(series.kind, series.kind)
    images = (tif.imagej_metadata or {}).get("images") if tif.is_imagej else None
    if isinstance(images, int) and images > count:  # tifffile fell back to the pages it found
        count, source = images, "ImageJ"
    if present < count:
        raise FmcInputError(f"{path}: incomplete: holds {present} of {count} planes (its "
                            f"{source} metadata declares {count}; is another program still "
                            "writing it, or was it cut short?); copy it again when it is complete")


def _check_complete(tif: tifffile.TiffFile, path: Path) -> None:
    """Raise if the chain of pages is cut short or image data lie beyond the end of the file."""
    size = os.path.getsize(path)
    following = _offset_after_last_page(tif)
    if following != 0:
        # tifffile stops at a page pointer it cannot follow (and only logs it): a file cut in
        # the middle would otherwise read as a shorter stack, often a single 2D page.
        raise FmcInputError(f"{path}: file is truncated or corrupt (its chain of image pages "
                            f"breaks after page {len(tif.pages)}; the file holds {size} bytes); "
                            "copy or download it again")
    for page in _series_pages(tif.series[0]):
        offsets, counts = page.dataoffsets, page.databytecounts
        if offsets and max(o + c for o, c in zip(offsets, counts, strict=False)) > size:
            raise FmcInputError(f"{path}: file is truncated (image data end beyond its "
                                f"{size} bytes); copy or download it again")


def _offset_after_last_page(tif: tifffile.TiffFile) -> int | None:
    """The 'next page' pointer stored after the last page tifffile could index.

    A complete TIFF ends its page chain with 0; anything else (or None when the pointer itself
    is cut off) means tifffile stopped early because the rest of the file is missing or broken.
    """
    count = len(tif.pages)  # indexes every page it can reach
    last = tif.pages[count - 1]
    layout, handle = tif.tiff, tif.filehandle
    handle.seek(last.offset)
    raw = handle.read(layout.tagnosize)
    if len(raw) < layout.tagnosize:
        return None
    tag_count = int(struct.unpack(layout.tagnoformat, raw)[0])
    handle.seek(last.offset + layout.tagnosize + tag_count * layout.tagsize)
    raw = handle.read(layout.offsetsize)
    if len(raw) < layout.offsetsize:
        return None
    return int(struct.unpack(layout.offsetformat, raw)[0])


def _to_zyx(array: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Squeeze singleton axes and return a 3D ZYX array, or raise naming the problem."""
    keep = [i for i, n in enumerate(array.shape) if n != 1]
    kept_axes = "".join(axes[i] for i in keep) if len(axes) == array.ndim else ""
    squeezed = array.reshape([array.shape[i] for i in keep])
    if squeezed.ndim == 3:
        if sorted(kept_axes) == ["X", "Y", "Z"] and kept_axes != "ZYX":
            squeezed = np.transpose(squeezed, [kept_axes.index(a) for a in "ZYX"])
        return squeezed
    if squeezed.ndim < 3:
        raise FmcInputError(
            f"{path}: is a {squeezed.ndim}D image (shape {tuple(array.shape)}); fmc needs a 3D "
            "ZYX volume")
    raise FmcInputError(
        f"{path}: has {squeezed.ndim} non-singleton axes (axes '{axes}', shape "
        f"{tuple(array.shape)}); fmc needs one 3D ZYX volume: split channels or time points first")


class _ReadingErrors:
    """Turn tifffile's and the OS's exceptions into one FmcInputError naming the file."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None or isinstance(error, FmcInputError):
            return False
        if isinstance(error, tifffile.TiffFileError):
            raise FmcInputError(f"{self.path}: not a readable TIFF file ({error})") from None
        if isinstance(error, (OSError, ValueError, KeyError, IndexError, EOFError, TypeError)):
            raise FmcInputError(f"{self.path}: cannot read the TIFF, it may be truncated or "
                                f"corrupt ({type(error).__name__}: {error})") from None
        return False


def _open_tiff(path: Path) -> tuple[tifffile.TiffFile, tuple[int, int, int] | None]:
    """The open file, checked (complete, intensities), and its stamp from before opening."""
    if not path.exists():
        raise FmcInputError(f"{path}: no such file")
    if not path.is_file():
        raise FmcInputError(f"{path}: is not a file")
    stamp = file_stamp(path)
    with _ReadingErrors(path):
        tif = tifffile.TiffFile(path)
    try:
        with _ReadingErrors(path):
            if not tif.series:
                raise FmcInputError(f"{path}: TIFF holds no image")
            check_intensity_dtype(tif.series[0].dtype, path)
            _check_complete(tif, path)  # a broken page chain first: the more precise answer
            _check_planes(tif, path)
    except BaseException:
        tif.close()
        raise
    return tif, stamp


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, VolumeMeta]:
    """Read a 3D TIFF volume and its metadata.

    Parameters
    ----------
    path : str or path-like
        A ``.tif``/``.tiff`` file holding one 3D volume (singleton axes are squeezed).

    Returns
    -------
    volume : numpy.ndarray
        The voxels, ZYX, in the stored dtype.
    meta : VolumeMeta
        Study, content, ZYX spacing in µm, dtype, shape and the key/values found (less the
        bookkeeping keys tifffile derives from the array, such as ``shape`` or ``images``).

    Raises
    ------
    FmcInputError
        If the file is missing, not a TIFF, truncated or incomplete, 2D, has more than three
        non-singleton axes, holds no intensities, or changed while it was read; the message
        names the file and the problem.
    """
    path = Path(path)
    tif, stamp = _open_tiff(path)
    with tif, _ReadingErrors(path):
        series = tif.series[0]
        array = series.asarray()
        meta = meta_from(tif, path)
        volume = _to_zyx(array, series.axes, path)
        check_unchanged(path, stamp)
    return volume, meta.with_array(volume)


class TiffVolume:
    """A TIFF volume read lazily in z-slabs: ``volume[z0:z1]`` reads only those planes.

    Files with one page per z-plane (what fmc, ImageJ and the challenge write) are read page by
    page, so memory grows with the slab, not the volume; other layouts are read whole on first
    access. Use as a context manager, or call :meth:`close`. Every read, and :meth:`close`,
    raises :class:`FmcInputError` if the file changed since it was opened.

    Attributes
    ----------
    path : pathlib.Path
    shape : tuple of 3 ints
        ZYX shape (singleton axes squeezed).
    dtype : numpy.dtype
    meta : VolumeMeta
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._tif, self._stamp = _open_tiff(self.path)
        self._closed = False
        try:
            with _ReadingErrors(self.path):
                series = self._tif.series[0]
                full_shape = tuple(series.shape)
                shape = tuple(n for n in full_shape if n != 1)
                if len(shape) != 3:
                    _to_zyx(np.empty(full_shape, dtype=np.uint8), series.axes, self.path)
                self._pages = _series_pages(series)
                page_shape = tuple(n for n in self._pages[0].shape if n != 1) if self._pages else ()
                squeezed_axes = "".join(a for a, n in zip(series.axes, full_shape, strict=True)
                                        if n != 1)
                self._by_page = (len(self._pages) == shape[0] and page_shape == shape[1:]
                                 and squeezed_axes[0] not in "YX")
                self._whole: np.ndarray | None = None
                self.dtype = np.dtype(series.dtype)
                self.meta = meta_from(self._tif, self.path)
                if not self._by_page:
                    self._whole = _to_zyx(series.asarray(), series.axes, self.path)
                    shape = self._whole.shape
                self.shape = tuple(int(n) for n in shape)
                self.meta = replace(self.meta, dtype=str(self.dtype), shape=self.shape)
                check_unchanged(self.path, self._stamp)
        except BaseException:
            self._tif.close()
            raise

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._whole is not None:
            return self._whole[key]
        if isinstance(key, (int, np.integer)):
            key = slice(int(key), int(key) + 1)
            return self[key][0]
        if not isinstance(key, slice):
            z_key, rest = key[0], key[1:]
            return self[z_key][(slice(None), *rest)]
        z0, z1, step = key.indices(self.shape[0])
        planes = range(z0, z1, step)
        result = np.empty((len(planes), *self.shape[1:]), dtype=self.dtype)
        with _ReadingErrors(self.path):
            for i, z in enumerate(planes):  # filled in place: no second copy of the slab
                result[i] = self._pages[z].asarray().reshape(self.shape[1:])
        self.check_unchanged()
        return result

    def check_unchanged(self) -> None:
        """Raise :class:`FmcInputError` if the file changed (size, mtime, inode) since opened."""
        check_unchanged(self.path, self._stamp)

    def read(self) -> np.ndarray:
        """The whole volume as an array."""
        return self[:]

    def close(self) -> None:
        """Close the file, then raise if it changed since it was opened (unless an exception is
        already on its way: that one is not replaced)."""
        self._close(check=sys.exc_info()[0] is None)

    def _close(self, check: bool) -> None:
        closed, self._closed = self._closed, True
        self._tif.close()
        if check and not closed:
            self.check_unchanged()

    def __enter__(self) -> TiffVolume:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self._close(check=kind is None)


def write_volume(path: str | os.PathLike, array: np.ndarray, meta: VolumeMeta | None = None,
                 tile: tuple[int, int] | None = (128, 128), compression: str | None = None) -> Path:
    """Write a 3D ZYX volume as an ImageJ-compatible TIFF carrying the challenge's keys.

    The file is written under a temporary name in the same folder and renamed when complete, so
    an interrupted write never leaves a half-written file under ``path``.

    Parameters
    ----------
    path : str or path-like
        Output file; parent folders are created.
    array : numpy.ndarray
        3D volume (singleton axes are squeezed first).
    meta : VolumeMeta, optional
        Study, content, spacing and original keys to store. ``physical_size_x/y/z``, ``spacing``
        and ``unit`` are written from ``meta.spacing_zyx``, together with the XResolution and
        YResolution tags.
    tile : tuple of 2 ints or None
        Tile size in pixels (the challenge template writes 128×128 tiles); None writes strips.
    compression : str or None
        tifffile compression name (e.g. 'zlib'); None stores raw data, as the challenge does.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = Path(path)
    array = np.asarray(array)
    volume = _to_zyx(array, "", path) if array.ndim != 3 else array
    check_spacing((meta or VolumeMeta()).spacing_zyx, path)
    options = _tiff_options(meta or VolumeMeta(), volume.shape, volume.dtype, tile, compression)
    with atomic_path(path) as temporary, warnings.catch_warnings():
        # Above 4 GB the ImageJ description goes into a BigTIFF, which ImageJ's own opener
        # cannot read (Fiji's Bio-Formats and tifffile can): expected, so not worth a warning.
        warnings.filterwarnings("ignore", message=".*nonconformant BigTIFF ImageJ")
        tifffile.imwrite(temporary, volume, **options)
    return path


def write_volume_slabs(path: str | os.PathLike, slabs: Iterable[np.ndarray], shape: Sequence[int],
                       dtype: Any, meta: VolumeMeta | None = None,
                       tile: tuple[int, int] | None = (128, 128)) -> Path:
    """Write a volume handed over as consecutive z-slabs, without holding it in memory.

    The file is the same as :func:`write_volume` would write for the concatenated slabs
    (uncompressed), and is likewise renamed into place only when the last slab is written: an
    error or interruption while slabs are produced leaves no file under ``path``.

    Parameters
    ----------
    slabs : iterable of numpy.ndarray
        ``(n, Y, X)`` arrays whose plane counts add up to ``shape[0]``.
    shape, dtype :
        ZYX shape and data type of the whole volume.
    """
    path = Path(path)
    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    check_spacing((meta or VolumeMeta()).spacing_zyx, path)
    options = _tiff_options(meta or VolumeMeta(), shape, dtype, tile, None)
    written = [0]

    def segments() -> Iterator[np.ndarray]:
        # tifffile takes one tile (or one page when not tiled) at a time, in order.
        tile_yx = options["tile"]
        for slab in slabs:
            slab = np.asarray(slab)
            if slab.ndim != 3 or slab.shape[1:] != shape[1:]:
                raise ValueError(f"slab of shape {slab.shape} does not fit a volume of {shape}")
            for plane in slab.astype(dtype, copy=False):
                written[0] += 1
                if tile_yx is None:
                    yield plane
                    continue
                for y in range(0, shape[1], tile_yx[0]):
                    for x in range(0, shape[2], tile_yx[1]):
                        yield np.ascontiguousarray(plane[y:y + tile_yx[0], x:x + tile_yx[1]])

    with atomic_path(path) as temporary, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nonconformant BigTIFF ImageJ")
        tifffile.imwrite(temporary, segments(), shape=shape, dtype=dtype, **options)
        if written[0] != shape[0]:
            raise ValueError(f"{path}: got {written[0]} planes for a volume of {shape[0]}")
    return path


def _tiff_options(meta: VolumeMeta, shape: Sequence[int], dtype: np.dtype,
                  tile: tuple[int, int] | None, compression: str | None) -> dict[str, Any]:
    """tifffile.imwrite keywords for fmc's volumes: ImageJ keys, resolution, tiles, BigTIFF."""
    keys = description_keys(meta)
    resolution = None
    if meta.spacing_zyx is not None:
        resolution = (1.0 / meta.spacing_zyx[2], 1.0 / meta.spacing_zyx[1])
    if tile is not None:
        # TIFF tiles must be multiples of 16 and there is no point in tiles larger than the image.
        tile = tuple(max(16, min(int(t), -(-n // 16) * 16)) for t, n in zip(tile, shape[1:],
                                                                           strict=True))
    # ImageJ stores only these types; others (float64, int32, ...) go into tifffile's shaped
    # format, with the same keys in its JSON description (still read by the challenge's reader).
    dtype = np.dtype(dtype)
    imagej = dtype in (np.uint8, np.uint16, np.float32)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return dict(imagej=imagej, bigtiff=nbytes > BIGTIFF_THRESHOLD, resolution=resolution,
                resolutionunit=None if imagej else "MICROMETER", metadata=keys, tile=tile,
                compression=compression, photometric="minisblack")
