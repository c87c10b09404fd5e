"""TIFF volumes in and out, with their metadata: the only module of fmc that knows TIFF tags.

Fuse My Cells files are 3D ZYX TIFFs whose metadata say which study and which content (``channel``:
nucleus or membrane) they hold and their voxel size (``physical_size_x/y/z``). Tools write these
facts in different places; :func:`read_volume` looks in all of them, in this order (first found wins
per key):

1. tifffile's *shaped* JSON description (how the challenge files carry their keys),
2. ImageJ hyperstack metadata (``spacing``, ``unit`` and any extra ``key=value`` lines),
3. OME-XML ``Pixels`` attributes (``PhysicalSizeX/Y/Z`` with their units),
4. plain ``key=value`` lines in the ImageDescription (the seed's parser),
5. the XResolution / YResolution tags for the lateral voxel size.

:func:`write_volume` writes an ImageJ hyperstack whose description also carries every challenge key
(``channel``, ``study``, ``physical_size_x/y/z``, ...): Fiji/ImageJ reads the calibration from it,
tifffile and the organisers' reader (shaped metadata, else ``imagej_metadata``) read the keys.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from fmc.core.errors import FmcInputError
from fmc.core.files import atomic_path
from fmc.core.studies import parse_content, parse_study

log = logging.getLogger(__name__)

# Length units to micrometres.
_UNIT_TO_UM = {"um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
               "micrometre": 1.0, "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3,
               "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6}
# TIFF ResolutionUnit tag values to micrometres per unit (1 = none: the file's 'unit' key decides).
_RESUNIT_TO_UM = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}
# Keys whose value tifffile or fmc derives from the array; never copied from a source file.
_DERIVED_KEYS = {"shape", "imagej", "images", "slices", "frames", "channels", "hyperstack", "mode",
                 "loop", "min", "max"}
# Above this many bytes a classic TIFF's 32-bit offsets overflow: write BigTIFF.
BIGTIFF_THRESHOLD = 2**32 - 2**25


@dataclass(frozen=True)
class VolumeMeta:
    """What fmc knows about a volume besides its voxels.

    Attributes
    ----------
    study : int or None
        Fuse My Cells study number (1-5 in the challenge data), None if absent or not an integer.
    content : {'nucleus', 'membrane'} or None
        What the volume shows, read from the ``channel`` key (case-insensitive).
    spacing_zyx : tuple of 3 floats or None
        Voxel size in micrometres, Z then Y then X; None unless all three are known.
    dtype : str or None
        NumPy dtype name of the stored voxels.
    shape : tuple of 3 ints or None
        ZYX shape after singleton axes were squeezed.
    original : dict
        Every key/value found in the file, as read (JSON-serialisable scalars).
    """

    study: int | None = None
    content: str | None = None
    spacing_zyx: tuple[float, float, float] | None = None
    dtype: str | None = None
    shape: tuple[int, int, int] | None = None
    original: dict[str, Any] = field(default_factory=dict)

    def with_array(self, array: np.ndarray) -> VolumeMeta:
        """Return a copy whose dtype and shape describe ``array``."""
        return replace(self, dtype=str(array.dtype), shape=tuple(int(s) for s in array.shape))


def _unit_factor(unit: Any) -> float | None:
    if unit is None:
        return None
    return _UNIT_TO_UM.get(str(unit).strip().lower().replace("\\u00b5", "µ"))


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _parse_key_value_lines(text: str) -> dict[str, Any]:
    """Parse ``key=value`` (or ``key: value``) lines, converting numbers."""
    found: dict[str, Any] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*([A-Za-z_][\w .-]*?)\s*[=:]\s*(.*?)\s*", line)
        if not match:
            continue
        key, raw = match.group(1), match.group(2)
        for convert in (int, float):
            try:
                found[key] = convert(raw)
                break
            except ValueError:
                continue
        else:
            found[key] = raw
    return found


def _ome_keys(ome_xml: str) -> dict[str, Any]:
    """Physical sizes (in µm) from the first OME ``Pixels`` element."""
    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return {}
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return {}
    found: dict[str, Any] = {}
    for axis in "XYZ":
        size = _as_float(pixels.get(f"PhysicalSize{axis}"))
        factor = _unit_factor(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if size is not None and factor is not None:
            found[f"physical_size_{axis.lower()}"] = size * factor
    return found


def _lookup(keys: dict[str, Any], *names: str) -> Any:
    """Value of the first of ``names`` in ``keys``, ignoring case and '_'/' ' separators."""
    folded = {re.sub(r"[_\s]", "", str(k)).lower(): v for k, v in keys.items()}
    for name in names:
        value = folded.get(re.sub(r"[_\s]", "", name).lower())
        if value is not None:
            return value
    return None


def _spacing_from_keys(keys: dict[str, Any], page: tifffile.TiffPage) -> tuple | None:
    """ZYX spacing in µm from the gathered keys, then from the resolution tags."""
    factor = _unit_factor(_lookup(keys, "unit")) or 1.0
    z = _as_float(_lookup(keys, "physical_size_z", "PhysicalSizeZ"))
    y = _as_float(_lookup(keys, "physical_size_y", "PhysicalSizeY"))
    x = _as_float(_lookup(keys, "physical_size_x", "PhysicalSizeX"))
    if z is None:
        # ImageJ's 'spacing' is the Z step, in the description's unit.
        spacing = _as_float(_lookup(keys, "spacing"))
        z = spacing * factor if spacing is not None else None
    if x is None or y is None:
        x_res, y_res = _resolution_um(page, factor)
        x = x if x is not None else x_res
        y = y if y is not None else y_res
    if None in (z, y, x):
        return None
    return (float(z), float(y), float(x))


def _resolution_um(page: tifffile.TiffPage, unit_factor: float) -> tuple[float | None, float | None]:
    """Voxel width/height in µm from XResolution/YResolution (pixels per resolution unit)."""
    sizes = []
    unit_tag = page.tags.get("ResolutionUnit")
    per_unit_um = _RESUNIT_TO_UM.get(int(unit_tag.value) if unit_tag else 2)
    if unit_tag is not None and int(unit_tag.value) == 1:
        per_unit_um = unit_factor  # no unit in the tag: the description's unit (µm by default)
    for name in ("XResolution", "YResolution"):
        tag = page.tags.get(name)
        if tag is None or per_unit_um is None:
            sizes.append(None)
            continue
        numerator, denominator = tag.value
        pixels_per_unit = numerator / denominator if denominator else 0.0
        size_um = per_unit_um / pixels_per_unit if pixels_per_unit > 0 else None
        # tifffile writes (1, 1) when no resolution is given, and an inch unit usually holds a
        # printing DPI: a "voxel" above 100 µm is no microscope's, so it is no information.
        if size_um is None or numerator == denominator or size_um > 100.0:
            sizes.append(None)
        else:
            sizes.append(size_um)
    return sizes[0], sizes[1]


def _gather_keys(tif: tifffile.TiffFile) -> dict[str, Any]:
    """All key/values the file carries, the most specific source first (see module doc)."""
    keys: dict[str, Any] = {}

    def add(source: dict[str, Any] | None) -> None:
        for key, value in (source or {}).items():
            if isinstance(value, (str, int, float, bool)) or value is None:
                keys.setdefault(str(key), value)
            elif isinstance(value, (list, tuple)) and all(
                    isinstance(v, (str, int, float, bool)) for v in value):
                keys.setdefault(str(key), list(value))

    shaped = tif.shaped_metadata
    if shaped:
        add(shaped[0])
    add(tif.imagej_metadata)
    if tif.ome_metadata:
        add(_ome_keys(tif.ome_metadata))
    page = tif.pages.first
    for description in (page.description, page.description1):
        if description and not description.lstrip().startswith(("{", "<")):
            add(_parse_key_value_lines(description))
    return keys


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
    for page in tif.series[0].pages:
        if page is None:
            continue
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


def _open_tiff(path: Path) -> tifffile.TiffFile:
    if not path.exists():
        raise FmcInputError(f"{path}: no such file")
    if not path.is_file():
        raise FmcInputError(f"{path}: is not a file")
    with _ReadingErrors(path):
        tif = tifffile.TiffFile(path)
    try:
        with _ReadingErrors(path):
            if not tif.series:
                raise FmcInputError(f"{path}: TIFF holds no image")
            _check_complete(tif, path)
    except BaseException:
        tif.close()
        raise
    return tif


def _meta_from(tif: tifffile.TiffFile, path: Path) -> VolumeMeta:
    """Study, content, spacing and original keys of an open TIFF (dtype/shape not set)."""
    keys = _gather_keys(tif)
    spacing = _spacing_from_keys(keys, tif.pages.first)
    study_value = _lookup(keys, "study")
    study = parse_study(study_value)
    if study_value is not None and study is None:
        log.warning("%s: study %r is not an integer; treated as unknown", path, study_value)
    content_value = _lookup(keys, "channel", "content")
    content = parse_content(content_value)
    if content_value is not None and content is None:
        log.warning("%s: channel %r is neither nucleus nor membrane; treated as unknown",
                    path, content_value)
    original = {k: v for k, v in keys.items() if k.lower() not in _DERIVED_KEYS | {"imagej"}}
    return VolumeMeta(study=study, content=content, spacing_zyx=spacing, original=original)


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
        If the file is missing, not a TIFF, truncated, 2D, or has more than three
        non-singleton axes; the message names the file and the problem.
    """
    path = Path(path)
    with _open_tiff(path) as tif, _ReadingErrors(path):
        series = tif.series[0]
        array = series.asarray()
        meta = _meta_from(tif, path)
        volume = _to_zyx(array, series.axes, path)
    return volume, meta.with_array(volume)


class TiffVolume:
    """A TIFF volume read lazily in z-slabs: ``volume[z0:z1]`` reads only those planes.

    Files with one page per z-plane (what fmc, ImageJ and the challenge write) are read page by
    page, so memory grows with the slab, not the volume; other layouts are read whole on first
    access. Use as a context manager, or call :meth:`close`.

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
        self._tif = _open_tiff(self.path)
        try:
            with _ReadingErrors(self.path):
                series = self._tif.series[0]
                full_shape = tuple(series.shape)
                shape = tuple(n for n in full_shape if n != 1)
                if len(shape) != 3:
                    _to_zyx(np.empty(full_shape, dtype=np.uint8), series.axes, self.path)
                self._pages = [page for page in series.pages if page is not None]
                page_shape = tuple(n for n in self._pages[0].shape if n != 1) if self._pages else ()
                squeezed_axes = "".join(a for a, n in zip(series.axes, full_shape, strict=True)
                                        if n != 1)
                self._by_page = (len(self._pages) == shape[0] and page_shape == shape[1:]
                                 and squeezed_axes[0] not in "YX")
                self._whole: np.ndarray | None = None
                self.dtype = np.dtype(series.dtype)
                self.meta = _meta_from(self._tif, self.path)
                if not self._by_page:
                    self._whole = _to_zyx(series.asarray(), series.axes, self.path)
                    shape = self._whole.shape
                self.shape = tuple(int(n) for n in shape)
                self.meta = replace(self.meta, dtype=str(self.dtype), shape=self.shape)
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
        return result

    def read(self) -> np.ndarray:
        """The whole volume as an array."""
        return self[:]

    def close(self) -> None:
        """Close the file."""
        self._tif.close()

    def __enter__(self) -> TiffVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _description_keys(meta: VolumeMeta) -> dict[str, Any]:
    """The key/values to store: the original ones, updated with what ``meta`` says."""
    keys = {k: v for k, v in meta.original.items()
            if k.lower() not in _DERIVED_KEYS and k != "ImageJ"}
    keys["axes"] = "ZYX"
    if meta.content is not None:
        keys["channel"] = meta.content
    if meta.study is not None and parse_study(keys.get("study")) != meta.study:
        keys["study"] = str(meta.study)
    if meta.spacing_zyx is not None:
        z, y, x = (float(s) for s in meta.spacing_zyx)
        keys.update(physical_size_x=x, physical_size_y=y, physical_size_z=z, spacing=z, unit="um")
    # ImageJ description lines cannot hold line breaks or nested values.
    return {k: v for k, v in keys.items()
            if isinstance(v, (str, int, float, bool)) and "\n" not in str(k) + str(v)}


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
    keys = _description_keys(meta)
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


def describe(meta: VolumeMeta) -> str:
    """One line summarising ``meta`` for logs."""
    spacing = "unknown" if meta.spacing_zyx is None else "×".join(f"{s:g}" for s in meta.spacing_zyx)
    return (f"study={meta.study} content={meta.content} shape={meta.shape} dtype={meta.dtype} "
            f"spacing_zyx_um={spacing}")


def to_json(meta: VolumeMeta) -> str:
    """JSON text of ``meta`` (for H5 attributes and logs)."""
    return json.dumps({"study": meta.study, "content": meta.content,
                       "spacing_zyx": meta.spacing_zyx, "dtype": meta.dtype,
                       "shape": meta.shape, "original": meta.original})
