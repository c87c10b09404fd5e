"""OME-Zarr (and plain zarr) volumes: read lazily slab by slab, written slab by slab.

Reading takes the first (full-resolution) dataset of an OME-NGFF image (0.4 on zarr format 2,
or 0.5 on format 3) with its axes in the order the image declares them (``x, y, z`` as well as
``z, y, x``: a slab is read from the store's own axes and transposed to ZYX), its voxel size
from the ``scale`` transformations of its spatial axes (converted to µm), singleton time/channel
axes dropped; a plain zarr array is read as ZYX with no voxel size. Metadata fmc cannot read as
meant (unknown axes or units, a scale that is not positive and finite, a malformed
``multiscales``) and data types that are no intensities are refused with one line naming the
store and the problem (:class:`fmc.core.errors.FmcInputError`), never read as something else.

Writing makes an OME-NGFF 0.4 image (zarr format 2: the most widely read today), one
resolution level, chunks of 16×256×256 voxels, the voxel size in µm, fmc's metadata (study,
content and the original keys) under ``fmc``; it is written under a temporary name and renamed
when complete, so no half-written image is ever left. Needs the ``zarr`` extra.

A foreign store that another program is still writing is not detected: zarr reads a missing
chunk as the fill value, and a complete store may omit chunks that hold only the fill value, so
a missing chunk file proves nothing (fmc's own writer never shows a partial store).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.naming import is_zarr, volume_stem
from fmc.core.studies import parse_content, parse_study
from fmc.io.lazy_array import check_intensity_dtype, check_spacing
from fmc.io.metadata import VolumeMeta

CHUNKS = (16, 256, 256)
NGFF_VERSION = "0.4"
SPATIAL = ("z", "y", "x")
# Axis names fmc reads: NGFF's time and channel (they must be singletons) and the three space axes.
KNOWN_AXES = ("t", "c", *SPATIAL)
# Voxel-size units fmc reads, in µm: the OME-NGFF (UDUNITS-2) length units a microscope image
# can have, from angstrom to meter, and the usual spellings of micrometer. The NGFF list goes on
# (foot, mile, parsec, yottameter, ...): a voxel of that size is a mistake, so such a unit is
# refused rather than read as some other length.
LENGTH_UNITS_UM = {"angstrom": 1e-4, "picometer": 1e-6, "nanometer": 1e-3, "micrometer": 1.0,
                   "millimeter": 1e3, "centimeter": 1e4, "decimeter": 1e5, "meter": 1e6}
UNIT_ALIASES = {"um": "micrometer", "µm": "micrometer", "μm": "micrometer",
                "micron": "micrometer"}


def _zarr():
    try:
        import zarr
    except ImportError:
        raise FmcConfigError("OME-Zarr needs the zarr extra: pip install -e '.[zarr]'") from None
    return zarr


def _unit_um(unit: Any, axis: str, path: Path) -> float:
    """µm per unit of a spatial axis, or refuse an unit fmc does not read as a length."""
    if unit is None:
        # NGFF makes the unit optional. A missing unit is read as micrometer, deliberately: it
        # is what light-sheet stores use (and what fmc writes), so a scale without a unit is
        # almost always in µm; any unit that is given must be one fmc knows.
        return 1.0
    name = unit.strip().lower() if isinstance(unit, str) else None
    name = UNIT_ALIASES.get(name, name)
    if name not in LENGTH_UNITS_UM:
        known = ", ".join([*LENGTH_UNITS_UM, *UNIT_ALIASES])
        raise FmcInputError(f"{path}: axis '{axis}' has unit {unit!r}, not a length unit fmc "
                            f"reads voxel sizes in (known: {known})")
    return LENGTH_UNITS_UM[name]


def _malformed(path: Path, problem: str) -> FmcInputError:
    return FmcInputError(f"{path}: malformed OME-NGFF multiscales: {problem}")


def _axes(image: dict, ndim: int, path: Path) -> tuple[list[str], list[Any]] | None:
    """Names and units of the declared axes (None when undeclared), checked against the array."""
    declared = image.get("axes")
    if declared is None:
        return None  # NGFF 0.1-0.3 without axes: read as ZYX (after singletons), like a plain array
    if not isinstance(declared, list):
        raise _malformed(path, f"'axes' is a {type(declared).__name__}, not a list")
    names, units = [], []
    for axis in declared:
        name = axis.get("name") if isinstance(axis, dict) else axis
        if not isinstance(name, str):
            raise _malformed(path, f"axis {axis!r} has no name")
        kind = axis.get("type") if isinstance(axis, dict) else None
        if name in SPATIAL and kind not in (None, "space"):
            raise FmcInputError(f"{path}: axis '{name}' is declared of type {kind!r}, not space")
        names.append(name)
        units.append(axis.get("unit") if isinstance(axis, dict) else None)
    unknown = [n for n in names if n not in KNOWN_AXES]
    if unknown:
        raise FmcInputError(f"{path}: axes {names} include {unknown}, which fmc does not know "
                            f"(it reads {', '.join(KNOWN_AXES)})")
    if len(set(names)) != len(names) or not set(SPATIAL) <= set(names):
        raise FmcInputError(f"{path}: axes {names}: fmc needs each of z, y, x exactly once")
    if len(names) != ndim:
        raise FmcInputError(f"{path}: declares {len(names)} axes {names} for an array of "
                            f"{ndim} dimensions")
    return names, units


def _scale(transforms: Any, where: str, length: int, path: Path) -> list[float] | None:
    """The ``scale`` of a list of coordinate transformations (None without one), checked."""
    if transforms is None:
        return None
    if not isinstance(transforms, list) or not all(isinstance(t, dict) for t in transforms):
        raise _malformed(path, f"{where} coordinateTransformations is not a list of objects")
    scales = [t for t in transforms if t.get("type") == "scale"]
    if not scales:
        return None
    if len(scales) > 1:
        raise _malformed(path, f"{where} has {len(scales)} scale transformations, not one")
    scale = scales[0].get("scale")
    if not isinstance(scale, list):
        raise _malformed(path, f"{where} scale is {scale!r}, not a list of numbers (a scale "
                         "stored in a separate file is not read)")
    if not all(isinstance(s, Real) and not isinstance(s, bool) for s in scale):
        raise _malformed(path, f"{where} scale {scale} holds a value that is not a number")
    if len(scale) != length:
        raise _malformed(path, f"{where} scale {scale} has {len(scale)} entries for {length} axes")
    return [float(s) for s in scale]


def _image(node, attrs: dict, path: Path):
    """The full-resolution array of an OME-NGFF group and its multiscale entry, or refuse."""
    ome = attrs.get("ome")
    multiscales = attrs.get("multiscales")
    if multiscales is None and isinstance(ome, dict):
        multiscales = ome.get("multiscales")
    if not multiscales:
        raise FmcInputError(f"{path}: a zarr group without OME-NGFF multiscales")
    if not isinstance(multiscales, list) or not isinstance(multiscales[0], dict):
        raise _malformed(path, "it is not a list of objects")
    image = multiscales[0]
    datasets = image.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise _malformed(path, "'datasets' is missing or empty")
    dataset = datasets[0]
    name = dataset.get("path") if isinstance(dataset, dict) else None
    if not isinstance(name, str) or not name:
        raise _malformed(path, f"the first dataset {dataset!r} has no path")
    zarr = _zarr()
    try:
        array = node[name]
    except Exception:  # noqa: BLE001 - KeyError, or a store error on the way: the same answer
        raise _malformed(path, f"dataset path '{name}' is not in the store") from None
    if not isinstance(array, zarr.Array):
        raise _malformed(path, f"dataset path '{name}' is a group, not an array")
    return array, image, dataset


def _spacing(image: dict, dataset: dict, names: list[str], units: list[Any],
             path: Path) -> tuple[float, float, float] | None:
    """ZYX voxel size in µm from the dataset's (times the image's) scale; None without one."""
    scale = _scale(dataset.get("coordinateTransformations"), "the first dataset's",
                   len(names), path)
    outer = _scale(image.get("coordinateTransformations"), "the image's", len(names), path)
    if scale is None and outer is None:
        return None  # no voxel size: fmc warns and assumes one where it needs it
    scale = [a * b for a, b in zip(scale or [1.0] * len(names), outer or [1.0] * len(names),
                                   strict=True)]
    spacing = []
    for axis in SPATIAL:
        i = names.index(axis)
        factor = _unit_um(units[i], axis, path)
        if not (math.isfinite(scale[i]) and scale[i] > 0):
            raise FmcInputError(f"{path}: scale of axis '{axis}' is {scale[i]:g}; a voxel size "
                                "must be positive and finite")
        spacing.append(scale[i] * factor)
    return tuple(spacing)


class ZarrVolume:
    """A 3D zarr image read lazily: ``volume[z0:z1]`` reads only those planes' chunks.

    Attributes
    ----------
    shape : tuple of 3 ints
        ZYX, whatever the order of the stored axes.
    dtype : numpy.dtype
    meta : VolumeMeta
    """

    def __init__(self, path: str | os.PathLike):
        zarr = _zarr()
        self.path = Path(path)
        try:
            node = zarr.open(str(self.path), mode="r")
        except Exception as error:  # noqa: BLE001 - any failure: not a readable zarr store
            raise FmcInputError(f"{self.path}: not a readable zarr store ({error})") from None
        spacing, declared = None, None
        attrs = dict(node.attrs)
        if isinstance(node, zarr.Group):
            array, image, dataset = _image(node, attrs, self.path)
            declared = _axes(image, array.ndim, self.path)
            if declared is not None:
                names, units = declared
                for i, axis in enumerate(names):
                    if axis in SPATIAL:
                        _unit_um(units[i], axis, self.path)  # refused even without a scale
                spacing = _spacing(image, dataset, names, units, self.path)
        else:
            array = node
        fmc_keys = attrs.get("fmc") if isinstance(attrs.get("fmc"), dict) else {}
        names = declared[0] if declared else [""] * max(array.ndim - 3, 0) + list(SPATIAL)
        if array.ndim < 3 or any(n != 1 for a, n in zip(names, array.shape, strict=False)
                                 if a not in SPATIAL):
            raise FmcInputError(f"{self.path}: expected a 3D image (or with singleton t/c axes), "
                                f"got shape {tuple(array.shape)}"
                                + (f" for axes {names}" if declared else ""))
        try:
            dtype = np.dtype(array.dtype)
        except TypeError:
            dtype = None
        self.dtype = check_intensity_dtype(dtype if dtype is not None else array.dtype,
                                           self.path)
        self._array = array
        self._ndim = array.ndim
        self._store_axis = tuple(names.index(a) for a in SPATIAL)  # store axis of z, y, x
        self.shape = tuple(int(array.shape[i]) for i in self._store_axis)
        original = fmc_keys.get("original")
        original = dict(original) if isinstance(original, dict) else {}
        if fmc_keys.get("spacing_known") is False:  # fmc wrote a placeholder scale of 1
            spacing = None
        self.meta = VolumeMeta(study=parse_study(fmc_keys.get("study")),
                               content=parse_content(fmc_keys.get("content")),
                               spacing_zyx=spacing, dtype=str(self.dtype), shape=self.shape,
                               original=original)

    def __getitem__(self, key: Any) -> np.ndarray:
        """numpy's indexing on the ZYX volume; int and slice keys read only what they select."""
        key = key if isinstance(key, tuple) else (key,)
        if sum(k is Ellipsis for k in key) == 1:
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (3 - len(key) + 1) + key[at + 1:]
        if len(key) > 3 or not all(isinstance(k, (int, np.integer, slice)) for k in key):
            return self[:][key]  # new axes, index arrays, masks: rare, read the whole volume
        key = key + (slice(None),) * (3 - len(key))
        store_key: list[Any] = [0] * self._ndim  # the singleton t/c axes
        kept, after = [], []  # ZYX axes left in the result, and what to apply to them after
        for axis, (k, n) in enumerate(zip(key, self.shape, strict=True)):
            i = self._store_axis[axis]
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                planes = range(start, stop, step)
                if step < 0 and len(planes):  # zarr reads forwards: read the span, then reverse
                    store_key[i] = slice(planes[-1], planes[0] + 1)
                    after.append(slice(None, None, step))
                else:
                    store_key[i] = slice(start, stop, step) if len(planes) else slice(0, 0)
                    after.append(slice(None))
                kept.append(axis)
                continue
            index = int(k) + n if int(k) < 0 else int(k)
            if not 0 <= index < n:
                raise IndexError(f"index {int(k)} is out of bounds for axis {axis} with size {n}")
            store_key[i] = index
        result = np.asarray(self._array[tuple(store_key)])
        in_store_order = sorted(kept, key=lambda axis: self._store_axis[axis])
        if in_store_order != kept:
            result = result.transpose([in_store_order.index(axis) for axis in kept])
        result = result[tuple(after)]
        return result if result.flags.c_contiguous else np.ascontiguousarray(result)

    def read(self) -> np.ndarray:
        """The whole volume as an array."""
        return self[:]

    def close(self) -> None:
        """Nothing to close (zarr reads per call); for the same interface as a TIFF volume."""

    def __enter__(self) -> ZarrVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_zarr_slabs(path: str | os.PathLike, slabs: Iterable[np.ndarray], shape: Sequence[int],
                     dtype: str | np.dtype, meta: VolumeMeta | None = None,
                     chunks: Sequence[int] = CHUNKS) -> Path:
    """Write z-slabs (in order, together ``shape``) as an OME-NGFF 0.4 image at ``path``.

    The image appears under its name only when every slab is written.
    """
    zarr = _zarr()
    path = Path(path)
    meta = meta or VolumeMeta()
    check_spacing(meta.spacing_zyx, path)  # never a zero, negative or NaN scale in a store
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")  # one per process
    previous = path.with_name(f".{path.name}.{os.getpid()}.previous")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        root = zarr.open_group(str(temporary), mode="w", zarr_format=2)
        chunk = tuple(min(int(c), int(n)) for c, n in zip(chunks, shape, strict=True))
        array = root.create_array("0", shape=tuple(int(n) for n in shape), dtype=np.dtype(dtype),
                                  chunks=chunk)
        z = 0
        for slab in slabs:
            array[z:z + slab.shape[0]] = slab
            z += slab.shape[0]
        if z != shape[0]:
            raise FmcInputError(f"{path}: {z} planes written of {shape[0]}")
        spacing = list(meta.spacing_zyx) if meta.spacing_zyx is not None else [1.0, 1.0, 1.0]
        root.attrs["multiscales"] = [{
            "version": NGFF_VERSION, "name": volume_stem(path),
            "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
            "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": spacing}]}]}]
        root.attrs["fmc"] = json.loads(json.dumps({
            "study": meta.study, "content": meta.content, "spacing_known":
            meta.spacing_zyx is not None, "original": meta.original}, default=str))
        # An earlier image is moved aside, not removed, until the new one is in place.
        if path.exists():
            os.replace(path, previous)
        os.replace(temporary, path)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        if previous.exists() and not path.exists():
            os.replace(previous, path)
        raise
    return path


def open_lazy(path: str | os.PathLike):
    """A TIFF or zarr volume, read lazily by planes (``shape``, ``dtype``, ``meta``, slicing)."""
    if is_zarr(path):
        return ZarrVolume(path)
    from fmc.io.tiff import TiffVolume

    return TiffVolume(path)
