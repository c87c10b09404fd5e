"""napari reader for fmc's volumes (npe2 manifest ``fmc/napari.yaml``): TIFF views, fusions and
predictions, and ``fmc.prepare``'s H5 files, with their physical voxel size.

``napari image_3_nucleus_angle.tif`` (or File > Open) then shows the volume in µm; an H5 file
opens as one layer per stored dataset (the view, the surface distance, the light map). Without
napari, :func:`read_layers` returns the layer data napari would get. To see a view, its
prediction and its fusion together::

    napari image_3_angle.tif predictions/image_3_angle.tif image_3_fused.tif

(each becomes a layer, on the same physical grid).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmc.core.naming import file_kind, is_h5, is_tiff

LayerData = tuple[np.ndarray, dict[str, Any], str]


def _layer_name(path: Path) -> str:
    return path.name.rsplit(".", 1)[0]


def _tiff_layers(path: Path) -> list[LayerData]:
    from fmc.io.tiff import read_volume

    volume, meta = read_volume(path)
    attributes: dict[str, Any] = {"name": _layer_name(path), "metadata": {
        "study": meta.study, "content": meta.content, "kind": file_kind(path.name)}}
    if meta.spacing_zyx is not None:
        attributes["scale"] = tuple(float(s) for s in meta.spacing_zyx)
        attributes["units"] = ("µm",) * 3  # napari ≥ 0.5 reads it; older ones ignore the key
    return [(volume, attributes, "image")]


def _h5_layers(path: Path) -> list[LayerData]:
    import h5py

    from fmc.io.h5 import LIGHT_MAP, RAW_IMAGE, SURFACE_DISTANCE, read_attrs

    attrs = read_attrs(path)
    scale = attrs.get("spacing_zyx")
    layers = []
    with h5py.File(path, "r") as handle:
        for key, colormap in ((RAW_IMAGE, "gray"), (SURFACE_DISTANCE, "twilight_shifted"),
                              (LIGHT_MAP, "magma")):
            if key not in handle:
                continue
            attributes: dict[str, Any] = {"name": f"{_layer_name(path)} {key.split('/')[-1]}",
                                          "colormap": colormap, "visible": key == RAW_IMAGE}
            if scale is not None:
                attributes["scale"] = tuple(float(s) for s in scale)
            layers.append((handle[key][()], attributes, "image"))
    return layers


def read_layers(path: str | Path) -> list[LayerData]:
    """napari layer data ``[(array, attributes, 'image'), ...]`` for one fmc file."""
    path = Path(path)
    return _h5_layers(path) if is_h5(path) else _tiff_layers(path)


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """The npe2 reader contribution: a reader for fmc's TIFF/H5 files, else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(is_tiff(p) or is_h5(p) for p in paths):
        return None

    def reader(requested: str | list[str]) -> list[LayerData]:
        names = [requested] if isinstance(requested, str) else list(requested)
        return [layer for name in names for layer in read_layers(name)]

    return reader
