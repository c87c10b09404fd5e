"""OME-Zarr (and plain zarr) volumes: read lazily slab by slab, written slab by slab.

Reading takes the first (full-resolution) dataset of an OME-NGFF image (0.4 on zarr format 2,
or 0.5 on format 3), its voxel size from the ``scale`` transformation of its spatial axes
(converted to µm), singleton time/channel axes dropped; a plain zarr array is read as ZYX with
no voxel size. Writing makes an OME-NGFF 0.4 image (zarr format 2: the most widely read today),
one resolution level, chunks of 16×256×256 voxels, the voxel size in µm, fmc's metadata (study,
content and the original keys) under ``fmc``; it is written under a temporary name and renamed
when complete, so no half-written image is ever left. Needs the ``zarr`` extra.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fmc.core.errors import FmcConfigError, FmcInputError
from fmc.core.naming import is_zarr, volume_stem
from fmc.core.studies import parse_content, parse_study
from fmc.io.metadata import VolumeMeta

CHUNKS = (16, 256, 256)
NGFF_VERSION = "0.4"
_TO_UM = {"micrometer": 1.0, "micron": 1.0, "um": 1.0, "µm": 1.0, "nanometer": 1e-3,
          "millimeter": 1e3, None: 1.0}


def _zarr():
    try:
        import zarr
    except ImportError:
        raise FmcConfigError("OME-Zarr needs the zarr extra: pip install -e '.[zarr]'") from None
    return zarr


class ZarrVolume:
    """A 3D zarr image read lazily: ``volume[z0:z1]`` reads only those planes' chunks.

    Attributes
    ----------
    shape : tuple of 3 ints
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
        spacing, axes = None, None
        if isinstance(node, zarr.Group):
            attrs = dict(node.attrs)
            multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
            if not multiscales:
                raise FmcInputError(f"{self.path}: a zarr group without OME-NGFF multiscales")
            image = multiscales[0]
            dataset = image["datasets"][0]
            array = node[dataset["path"]]
            axes = [a["name"] if isinstance(a, dict) else str(a) for a in image.get("axes", [])]
            units = [a.get("unit") if isinstance(a, dict) else None for a in image.get("axes", [])]
            scale = next((t["scale"] for t in dataset.get("coordinateTransformations", [])
                          if t.get("type") == "scale"), None)
            if scale is not None and axes:
                spatial = [i for i, name in enumerate(axes) if name in ("z", "y", "x")]
                if len(spatial) == 3:
                    spacing = tuple(float(scale[i]) * _TO_UM.get(units[i], 1.0) for i in spatial)
            fmc_keys = attrs.get("fmc") or {}
        else:
            array, fmc_keys = node, dict(node.attrs).get("fmc") or {}
        self._array = array
        self._lead = tuple(0 for n in array.shape[:-3]) if array.ndim > 3 else ()
        if array.ndim < 3 or any(n != 1 for n in array.shape[:-3]):
            raise FmcInputError(f"{self.path}: expected a 3D image (or with singleton t/c axes), "
                                f"got shape {tuple(array.shape)}")
        self.shape = tuple(int(n) for n in array.shape[-3:])
        self.dtype = np.dtype(array.dtype)
        original = dict(fmc_keys.get("original") or {})
        if fmc_keys.get("spacing_known") is False:  # fmc wrote a placeholder scale of 1
            spacing = None
        self.meta = VolumeMeta(study=parse_study(fmc_keys.get("study")),
                               content=parse_content(fmc_keys.get("content")),
                               spacing_zyx=spacing, dtype=str(self.dtype), shape=self.shape,
                               original=original)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self._array[(*self._lead, *key)])

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
    temporary = path.with_name(f".{path.name}.partial")
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
        if path.exists():
            shutil.rmtree(path)
        os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return path


def open_lazy(path: str | os.PathLike):
    """A TIFF or zarr volume, read lazily by planes (``shape``, ``dtype``, ``meta``, slicing)."""
    if is_zarr(path):
        return ZarrVolume(path)
    from fmc.io.tiff import TiffVolume

    return TiffVolume(path)
