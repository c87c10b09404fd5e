"""Predict one file and write it (``python -m fmc.predict`` and ``fmc.challenge``, through
:mod:`fmc.inference.runner`).

Everything comes from the checkpoint, never from defaults (RWTH-GE took its inference settings
from argparse defaults): input channels and their scaling, normalisation, tile size, and the
study whose illuminated axes the light map needs. Volumes stream through in z-slabs
(:mod:`fmc.inference.network_input` → :mod:`fmc.inference.volume_prediction` →
:func:`fmc.io.tiff.write_volume_slabs`), so memory grows with the tile, not with the volume.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fmc.core.errors import FmcInputError
from fmc.inference.network_input import NetworkInput, open_volume
from fmc.inference.output_formats import output_format
from fmc.inference.predict_settings import PredictSettings
from fmc.inference.volume_prediction import network_input_for, predicted_slabs
from fmc.io.lazy_array import check_unchanged, file_stamp

log = logging.getLogger(__name__)

def predict_file(model, source: str | Path, output: str | Path, settings: PredictSettings,
                 name: str | None = None) -> Path:
    """Predict one volume (TIFF or prepared H5) and write a TIFF with the input's name and metadata.

    Parameters
    ----------
    model : FusionModule or ModelEnsemble
        From :func:`fmc.models.checkpoint.load_fusion_module`, or several averaged
        (:func:`fmc.inference.ensemble.load_models`).
    source : path
        A TIFF view, or an fmc H5 file (its ``data/raw_image`` and stored channels are used).
    output : path
        Output folder (created).
    settings : PredictSettings
    name : str, optional
        Output file name (default: the input's TIFF name).

    Returns
    -------
    pathlib.Path
        The written file. It appears only when complete (temporary name, then rename).
    """
    source = Path(source)
    stamp = file_stamp(source)
    output = Path(output)
    opened = open_volume(source)
    try:
        network_input = network_input_for(model, opened)
        _warn_on_mismatch(model, opened.meta, source)
        slabs = predicted_slabs(model, network_input, settings, scratch=output)
        target = output / output_name(safe_name(name or opened.output_name), settings.output_format)
        converted = (_convert(planes, settings.output_dtype, network_input)
                     for planes in _verified(slabs, source, stamp))
        meta = network_input.output_meta(settings.output_dtype)
        return output_format(settings.output_format).write(target, converted, network_input.shape,
                                                           settings.output_dtype, meta, settings)
    finally:
        opened.close()


def output_name(name: str, format_name: str) -> str:
    """The prediction's file name in format ``format_name`` (the input's TIFF name, or
    ``<stem>.ome.zarr``)."""
    return output_format(format_name).file_name(name)


def safe_name(name: str) -> str:
    """A bare file name: metadata or list entries must not steer a write outside the folder."""
    base = Path(str(name).replace("\\", "/")).name
    if base in ("", ".", "..") or base.startswith("."):
        raise FmcInputError(f"output name {name!r} is not a plain file name")
    return base


def _warn_on_mismatch(model, meta, source: Path) -> None:
    trained = model.hparams.get("content")
    if meta.content and trained and meta.content != trained:
        log.warning("%s: a %s volume predicted with a model trained on %s", source, meta.content,
                    trained)


def _verified(slabs: Iterator[tuple[int, np.ndarray]], source: Path, stamp) -> Iterator[np.ndarray]:
    """The slabs' planes, refused at the first NaN or infinity (before uint16 would hide it),
    and, after the last, if the input changed while it was read: before the output's rename."""
    for z0, planes in slabs:
        if not np.isfinite(planes).all():
            raise FmcInputError(f"{source}: the prediction holds NaN or infinite values (planes "
                                f"{z0}-{z0 + planes.shape[0] - 1}); nothing written for it")
        yield planes
    check_unchanged(source, stamp)


def _convert(planes: np.ndarray, dtype: str, network_input: NetworkInput) -> np.ndarray:
    """float32 as predicted, or uint16 on the input's intensity scale (rounded, clipped)."""
    if dtype == "float32":
        return planes.astype(np.float32, copy=False)
    stats = network_input.intensity_stats
    if stats is None:
        raise FmcInputError(f"{network_input.opened.output_name}: output_dtype=uint16 needs the "
                            "input's intensity percentiles, which this file does not store")
    result = np.empty(planes.shape, np.uint16)
    for z in range(planes.shape[0]):  # plane by plane: a float64 slab would double the memory
        values = planes[z].astype(np.float64) * stats.scale + stats.offset
        result[z] = np.clip(np.rint(values), 0, 65535)
    return result
