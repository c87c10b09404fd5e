"""napari reader for fmc's volumes (npe2 manifest ``fmc/napari.yaml``): TIFF and OME-Zarr views,
fusions and predictions, and ``fmc.prepare``'s H5 files, with their physical voxel size, read
lazily (only the planes napari shows).

``napari image_3_nucleus_angle.tif`` (or File > Open) then shows the volume in µm; an H5 file
opens as one layer per stored volume (the view, then each input channel: the surface distance,
the light map, and any channel added since, found in the file rather than listed here). Without
napari, :func:`read_layers` returns the layer data napari would get. To see a view, its
prediction and its fusion together::

    python -m fmc.view view=image_3_angle.tif prediction=predictions/image_3_angle.tif

(the fusion beside the view is found by its name; each becomes a layer on the same physical
grid).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmc.core.naming import file_kind, is_h5, is_tiff, is_zarr
from fmc.io.lazy_array import LazyVolume

LayerData = tuple[LazyVolume, dict[str, Any], str]


def _layer_name(path: Path) -> str:
    return path.name.rsplit(".", 1)[0]


def _volume_layers(path: Path) -> list[LayerData]:
    """A TIFF or (OME-)Zarr volume as one lazily read layer in µm."""
    from fmc.io.zarr_volume import open_lazy

    volume = open_lazy(path)
    meta = volume.meta
    attributes: dict[str, Any] = {"name": _layer_name(path), "metadata": {
        "study": meta.study, "content": meta.content, "kind": file_kind(path.name)}}
    if meta.spacing_zyx is not None:
        attributes["scale"] = tuple(float(s) for s in meta.spacing_zyx)
        attributes["units"] = ("µm",) * 3  # napari ≥ 0.5 reads it; older ones ignore the key
    # The volume stays open while napari shows the layer (it reads planes on demand).
    data = LazyVolume(lambda z0, z1: volume[z0:z1], volume.shape, volume.dtype)
    return [(data, attributes, "image")]


def _h5_planes(path: Path, key: str):
    import h5py

    def read(z0: int, z1: int) -> np.ndarray:
        with h5py.File(path, "r") as handle:  # opened per read: no handle outlives the layer
            return handle[key][z0:z1]

    return read


def _h5_layers(path: Path) -> list[LayerData]:
    import h5py

    from fmc.io.h5 import RAW_IMAGE, read_attrs

    attrs = read_attrs(path)
    scale = attrs.get("spacing_zyx")
    layers = []
    with h5py.File(path, "r") as handle:
        # The view first, then every other volume the file holds in data/ (its input channels).
        volumes = [f"data/{name}" for name, item in handle.get("data", {}).items()
                   if isinstance(item, h5py.Dataset) and item.ndim == 3]
        keys = sorted(volumes, key=lambda key: key != RAW_IMAGE)
        stored = {key: (handle[key].shape, handle[key].dtype) for key in keys}
        # A signed channel (the surface distance: + inside, - outside) gets a diverging map; one
        # plane tells, without reading the volume.
        signed = {key for key in keys[1:]
                  if np.min(handle[key][handle[key].shape[0] // 2]) < 0}
    for key in keys:
        colormap = "gray" if key == RAW_IMAGE else "twilight_shifted" if key in signed else "magma"
        attributes: dict[str, Any] = {"name": f"{_layer_name(path)} {key.split('/')[-1]}",
                                      "colormap": colormap, "visible": key == RAW_IMAGE}
        if key == RAW_IMAGE:  # stored percentile-normalised: p2 → 0, p99.8 → 1
            attributes["contrast_limits"] = (0.0, 1.0)
        if scale is not None:
            attributes["scale"] = tuple(float(s) for s in scale)
        shape, dtype = stored[key]
        layers.append((LazyVolume(_h5_planes(path, key), shape, dtype), attributes, "image"))
    return layers


def read_layers(path: str | Path) -> list[LayerData]:
    """napari layer data ``[(array, attributes, 'image'), ...]`` for one fmc file; each array a
    :class:`fmc.io.lazy_array.LazyVolume` that reads the planes napari asks for."""
    path = Path(path)
    return _h5_layers(path) if is_h5(path) else _volume_layers(path)


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """The npe2 reader contribution: a reader for fmc's TIFF/H5 files, else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(is_tiff(p) or is_h5(p) or is_zarr(p) for p in paths):
        return None

    def reader(requested: str | list[str]) -> list[LayerData]:
        names = [requested] if isinstance(requested, str) else list(requested)
        return [layer for name in names for layer in read_layers(name)]

    return reader
