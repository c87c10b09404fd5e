"""The file formats a prediction is written in (``output_format=``): one registry, name →
:class:`OutputFormat` (the output's file name and its slab-by-slab writer).

Other packages add formats through the entry point group ``fmc.formats`` (an
:class:`OutputFormat` instance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmc.core.named_choices import Registry
from fmc.core.naming import volume_stem
from fmc.io.metadata import VolumeMeta

# The challenge template's TIFF tiles (its reader and tifffile read them; ImageJ's reader does not).
CHALLENGE_TILE = (128, 128)


@dataclass(frozen=True)
class OutputFormat:
    """How predictions are written in one format.

    Attributes
    ----------
    file_name : callable
        The input's TIFF name → the output's name (e.g. ``<stem>.ome.zarr``).
    write : callable
        ``write(target, planes, shape, dtype, meta, settings) -> Path``: write the z-slabs
        ``planes`` (in order, together ``shape``) at ``target`` so that it appears only when
        complete; ``settings`` is the run's :class:`fmc.inference.predict_settings.PredictSettings`.
    description : str
        One line for the docs and messages.
    """

    file_name: Callable[[str], str]
    write: Callable[..., Path]
    description: str


OUTPUT_FORMATS = Registry("output format", "output_format", "conf/inference/default.yaml",
                          group="fmc.formats", entry_type=OutputFormat)


def _write_tiff(target: Path, planes: Iterable[np.ndarray], shape, dtype: str,
                meta: VolumeMeta, settings: Any) -> Path:
    from fmc.io.tiff import write_volume_slabs

    return write_volume_slabs(target, planes, shape, dtype, meta,
                              tile=CHALLENGE_TILE if settings.tiff_tiles else None)


def _write_ome_zarr(target: Path, planes: Iterable[np.ndarray], shape, dtype: str,
                    meta: VolumeMeta, settings: Any) -> Path:
    from fmc.io.zarr_volume import write_zarr_slabs

    return write_zarr_slabs(target, planes, shape, dtype, meta)


OUTPUT_FORMATS.register("tiff", OutputFormat(
    lambda name: name, _write_tiff,
    "the input's TIFF name; an ImageJ hyperstack with its voxel size (tiff_tiles=true: the "
    "challenge template's 128x128 tiles)"))
OUTPUT_FORMATS.register("ome-zarr", OutputFormat(
    lambda name: f"{volume_stem(name)}.ome.zarr", _write_ome_zarr,
    "<name>.ome.zarr, OME-NGFF 0.4 written slab by slab with the voxel size (the zarr extra)"))


def output_format(name: str) -> OutputFormat:
    """The registered format ``name`` (one line with the valid names when unknown)."""
    return OUTPUT_FORMATS.get(name)
