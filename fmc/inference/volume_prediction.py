"""Predict one volume: the one sliding-window pass shared by ``fmc.predict``, ``fmc.challenge``,
training's whole-volume validation and the fallback's calibration.

:func:`predicted_slabs` streams the prediction of a volume z-slab by z-slab with the settings'
tile, overlap, weighting, test-time flips and precision, the input fallback
(:mod:`fmc.models.fallback`) applied as the checkpoint asks; :func:`predict_volume` gathers those
slabs in memory (scoring whole volumes), :func:`fmc.inference.prediction.predict_file` writes
them to a file as they come. One path, so that a validation score is the score of what
``fmc.predict`` writes.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from fmc.core.errors import FmcConfigError
from fmc.inference.network_input import NetworkInput, OpenedVolume, open_volume
from fmc.inference.plane_buffer import PlaneBuffer
from fmc.inference.precision import check_tile_fits
from fmc.inference.predict_settings import PredictSettings, resolve_tta
from fmc.inference.tiling import iter_predicted_slabs
from fmc.models.fallback import make_fallback, resolve_fallback

# Planes blended per step in the fallback's second pass.
BLEND_PLANES = 16


def network_input_for(model, opened: OpenedVolume) -> NetworkInput:
    """The network input of ``opened`` for ``model``: the channels, channel scales and study
    (for the light map) stored in its checkpoint."""
    hparams = model.hparams
    return NetworkInput(opened, hparams.channels, hparams.get("channel_scales_um"),
                        fallback_study=hparams.get("study"))


def checked_tile(model, settings: PredictSettings) -> tuple[int, int, int]:
    """The tile (ZYX) to predict with: ``settings.patch``, else the checkpoint's training patch.

    Raises
    ------
    FmcConfigError
        When it is not 3 positive sizes, not a multiple of what the network halves, does not
        fit the GPU's memory, or is too small for the roof window's crop.
    """
    try:
        patch = tuple(int(p) for p in (settings.patch or model.hparams.patch_size))
    except (TypeError, ValueError):
        patch = ()
    if len(patch) != 3 or min(patch) < 1:
        raise FmcConfigError(f"the checkpoint's patch_size {model.hparams.get('patch_size')!r} is "
                             "not 3 positive sizes: give patch=[Z, Y, X]")
    check_tile_fits(patch, len(model.hparams.channels), int(model.hparams.get("features") or 1),
                    settings.batch_size, next(model.parameters()).device)
    divisor = model.required_divisor  # a FusionModule's, or the largest of an ensemble's
    if any(p % divisor for p in patch):
        raise FmcConfigError(f"patch={list(patch)}: each side must be a multiple of {divisor} "
                             "(the network halves the tile that many times)")
    if settings.weighting == "roof" and any(2 * c >= p for c, p in
                                            zip(settings.roof_crop, patch, strict=True)):
        raise FmcConfigError(f"roof_crop={list(settings.roof_crop)}: each crop must be below half "
                             f"the tile {list(patch)}")
    return patch


def predicted_slabs(model, network_input: NetworkInput, settings: PredictSettings,
                    scratch: str | Path) -> Iterator[tuple[int, np.ndarray]]:
    """The prediction of ``network_input``, as ``(z0, planes)`` in order, fallback applied.

    Parameters
    ----------
    model : FusionModule or ModelEnsemble
        In eval mode; its hyperparameters give the channels, the training patch and the fallback.
    network_input : NetworkInput
        The volume to predict (:func:`network_input_for`).
    settings : PredictSettings
        Tile, overlap, batch, weighting, flips, precision, compile and fallback.
    scratch : path
        Where the fallback's first pass may keep a prediction larger than
        ``settings.buffer_threshold_gb`` (a temporary file, removed after the pass).
    """
    patch = checked_tile(model, settings)
    if settings.compile and not model.compiled:
        model.compile_network()
    slabs = iter_predicted_slabs(
        network_input, model, patch, overlap=settings.overlap, batch_size=settings.batch_size,
        weighting=settings.weighting, progress=settings.progress,
        device=next(model.parameters()).device, tta_axes=resolve_tta(settings.tta, model.hparams),
        roof_crop=settings.roof_crop, amp=settings.amp)
    kind = resolve_fallback(settings.fallback, model.hparams)
    if kind == "none":
        return slabs
    weighting = make_fallback(kind, network_input.shape, model.hparams)
    return _blended(slabs, network_input, weighting, Path(scratch),
                    settings.buffer_threshold_gb)


def _blended(slabs: Iterator[tuple[int, np.ndarray]], network_input: NetworkInput | _InMemoryView,
             weighting,
             scratch: Path, threshold_gb: float) -> Iterator[tuple[int, np.ndarray]]:
    """Two passes: record the change while predicting, then blend toward the input."""
    shape = network_input.shape
    scratch.mkdir(parents=True, exist_ok=True)
    with PlaneBuffer(shape, threshold_gb * 1e9, scratch) as buffer:
        for z0, planes in slabs:
            buffer.write(z0, planes)
            weighting.add(z0, network_input.raw(z0, z0 + planes.shape[0]), planes)
        weighting.finish()
        for z0 in range(0, shape[0], BLEND_PLANES):
            z1 = min(z0 + BLEND_PLANES, shape[0])
            yield z0, weighting.blend(z0, network_input.raw(z0, z1), buffer.read(z0, z1))


class _InMemoryView:
    """The normalised view of a prediction held in memory, read like a :class:`NetworkInput`."""

    def __init__(self, view: np.ndarray):
        self.view = view
        self.shape = tuple(int(n) for n in view.shape)

    def raw(self, z0: int, z1: int) -> np.ndarray:
        return np.asarray(self.view[z0:z1], np.float32)


def fallback_in_memory(view: np.ndarray, prediction: np.ndarray, hparams,
                       choice: str = "auto") -> np.ndarray:
    """The input fallback over a prediction already in memory (e.g. one network output kept
    to score several ways): the same two passes as :func:`predicted_slabs`.

    ``view`` is the network's normalised view (an H5 file's ``data/raw_image``), ``hparams`` a
    checkpoint's hyperparameters, ``choice`` as fmc.predict's ``fallback``.
    """
    kind = resolve_fallback(choice, hparams)
    if kind == "none":
        return prediction
    source = _InMemoryView(view)
    weighting = make_fallback(kind, source.shape, hparams)
    slabs = iter([(0, np.asarray(prediction, np.float32))])
    return np.concatenate([planes for _, planes in _blended(
        slabs, source, weighting, Path(tempfile.gettempdir()), math.inf)], axis=0)


def predict_volume(model, source: str | Path, settings: PredictSettings) -> np.ndarray:
    """Predict one volume (TIFF, OME-Zarr or prepared H5) in memory, as ``fmc.predict`` would.

    ``model`` is put in eval mode for the pass and restored afterwards (training validates with
    it). The result is float32 ZYX, on the network's normalised scale.
    """
    # The whole prediction is in memory anyway: the fallback's first pass keeps it there too.
    settings = replace(settings, buffer_threshold_gb=math.inf)
    opened = open_volume(source)
    was_training = model.training
    model.eval()
    try:
        network_input = network_input_for(model, opened)
        slabs = predicted_slabs(model, network_input, settings, tempfile.gettempdir())
        return np.concatenate([planes for _, planes in slabs], axis=0)
    finally:
        opened.close()
        model.train(was_training)
