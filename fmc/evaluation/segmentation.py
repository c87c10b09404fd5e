"""Segmentation backends for the N_IoU-like score: a classical proxy and the organisers' Cellpose.

The organisers of the Fuse My Cells challenge segment with Cellpose (``nuclei`` for nucleus,
``cyto3`` for membrane) on volumes made isotropic by linear interpolation, with the diameter
estimated on the GT. The score built on these backends is :mod:`fmc.evaluation.iou`; a backend
(:class:`Segmenter`) estimates a diameter on the isotropic GT and segments isotropic volumes.

Backends:

``proxy``
    A classical segmentation (:class:`ProxySegmenter`: percentile normalisation, Gaussian
    smoothing, Otsu threshold, watershed), no weights, deterministic; from a second (small
    volumes) to about half a minute (at the default cap of 16 M isotropic voxels, 2 cores) per
    volume, three volumes per image and method. Its numbers are a proxy for how much a
    prediction helps *a* segmentation, not the challenge's N_IoU.
``cellpose``
    The organisers' models (:class:`CellposeSegmenter`) when ``cellpose`` (< 4) is installed and
    its weights are available; still not the official number (best_iou = 1, no verified
    segmentations).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy import ndimage

from fmc.core.errors import FmcConfigError, FmcInputError

log = logging.getLogger(__name__)

IOU_CHOICES = ("none", "proxy", "cellpose")


class Segmenter(Protocol):
    """A segmentation backend for isotropic volumes."""

    name: str

    def estimate_diameter(self, volume: np.ndarray, content: str) -> float:
        """Typical object diameter in (isotropic) voxels, estimated on the ground truth."""
        ...

    def segment(self, volume: np.ndarray, content: str, diameter: float) -> np.ndarray:
        """Integer label volume (0 = background) of ``volume``."""
        ...


def _normalise(volume: np.ndarray) -> np.ndarray:
    """Percentile normalisation (2, 99.8) clipped to [0, 1], float32; zeros if constant."""
    low, high = np.percentile(volume, (2.0, 99.8))
    if high <= low:
        return np.zeros(volume.shape, np.float32)
    # Clipping keeps a few hot pixels from moving the Otsu threshold.
    return np.clip((volume - np.float32(low)) / np.float32(high - low), 0, 1).astype(np.float32)


def _otsu_mask(volume: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu

    if volume.min() == volume.max():
        return np.zeros(volume.shape, bool)
    return volume > threshold_otsu(volume)


def _typical_radius(mask: np.ndarray) -> float:
    """Volume-weighted median over connected components of their inscribed radius (voxels).

    Weighting by volume keeps the many specks of noise above a threshold from pulling the
    estimate down: it is the radius of the components that hold most of the mask. 0 if empty.
    """
    components, count = ndimage.label(mask)
    if count == 0:
        return 0.0
    distance = ndimage.distance_transform_edt(mask)
    index = np.arange(1, count + 1)
    radii = np.asarray(ndimage.maximum(distance, components, index))
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    order = np.argsort(radii)
    cumulative = np.cumsum(sizes[order])
    return float(radii[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _split_by_distance(mask: np.ndarray, radius: float) -> np.ndarray:
    """Objects of ``mask``, touching ones split by a watershed of its distance transform.

    Seeds are the peaks of the distance transform that rise at least a third of a typical radius
    (and one voxel) above the saddle to a higher peak (h-maxima): the bumps of a noisy outline
    or the ridge of an elongated object do not, the centres of two touching round objects do.
    Each connected component is processed in its own bounding box, so the work (the h-maxima's
    sort above all) grows with the mask, not with the volume.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    components, _ = ndimage.label(mask)
    labels = np.zeros(mask.shape, np.int32)
    next_label = 1
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        # One voxel of margin: the object's outline is then background on every side that is
        # not the volume's edge, as in a whole-volume distance transform.
        box = tuple(slice(max(0, b.start - 1), min(n, b.stop + 1))
                    for b, n in zip(box, mask.shape, strict=True))
        obj = components[box] == index
        distance = ndimage.distance_transform_edt(obj).astype(np.float32)
        seeds, count = ndimage.label(h_maxima(distance, max(1.0, radius / 3)) & obj)
        part = watershed(-distance, seeds, mask=obj) if count > 1 else obj.astype(np.int32)
        # An object is connected, so the watershed reaches all of it: labels 1..count.
        labels[box][obj] = part[obj] + (next_label - 1)
        next_label += max(count, 1)
    return labels


@dataclass(frozen=True)
class ProxySegmenter:
    """Classical segmentation standing in for Cellpose (no weights, deterministic).

    Both contents start from the volume percentile-normalised (2, 99.8, clipped to [0, 1]) and
    smoothed by a Gaussian of ``sigma`` voxels.

    Nucleus
        Nuclei are the voxels above the Otsu threshold; touching nuclei are split by a
        watershed of the distance transform seeded at its peaks (see :func:`_split_by_distance`).
    Membrane
        Cells are the watershed basins of the smoothed membrane signal, seeded at the local
        minima (at least half a radius apart) of the signal smoothed at half a cell radius. The
        specimen is the Otsu-thresholded signal smoothed by ``specimen_sigma`` (holes filled); a
        basin with less than ``inside_fraction`` of its voxels in it is background. Flooding the
        whole volume, rather than only the specimen mask, matters: that mask overshoots the outer
        membranes, and the gap would otherwise become a shell of spurious cells.

    The typical object size comes from the ground truth (:meth:`estimate_diameter`) and is used
    for every volume of a pair, as the organisers do with Cellpose's diameter.

    Attributes
    ----------
    sigma : float
        Gaussian smoothing before thresholding, in isotropic voxels.
    specimen_sigma : float
        Smoothing that turns the membrane network into a solid specimen mask.
    inside_fraction : float
        Share of a membrane basin that must lie in the specimen for it to count as a cell.
    """

    sigma: float = 1.0
    specimen_sigma: float = 4.0
    inside_fraction: float = 0.75
    name: str = "proxy"

    def _membrane_masks(self, normalised: np.ndarray,
                        smooth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        specimen = _otsu_mask(ndimage.gaussian_filter(normalised, self.specimen_sigma))
        return _otsu_mask(smooth), ndimage.binary_fill_holes(specimen)

    def estimate_diameter(self, volume: np.ndarray, content: str) -> float:
        """Twice the typical inscribed radius of the GT's nuclei, or of its cell interiors.

        Cell interiors are the specimen voxels below the membrane's Otsu threshold; where a
        membrane is too dim to be thresholded the interiors of two cells merge, but the radius,
        bounded by the other membranes, changes little.
        """
        normalised = _normalise(volume)
        smooth = ndimage.gaussian_filter(normalised, self.sigma)
        if check_content(content) == "nucleus":
            return 2 * _typical_radius(_otsu_mask(smooth))
        membrane, specimen = self._membrane_masks(normalised, smooth)
        return 2 * _typical_radius(specimen & ~membrane)

    def segment(self, volume: np.ndarray, content: str, diameter: float) -> np.ndarray:
        """Label volume of nuclei or cells (see the class doc)."""
        from skimage.feature import peak_local_max
        from skimage.segmentation import watershed

        radius = max(diameter / 2, 1.0)
        normalised = _normalise(volume)
        smooth = ndimage.gaussian_filter(normalised, self.sigma)
        if check_content(content) == "nucleus":
            # Specks much smaller than a nucleus are noise above the threshold.
            return _split_by_distance(_drop_small(_otsu_mask(smooth), radius), radius)
        _, specimen = self._membrane_masks(normalised, smooth)
        coarse = ndimage.gaussian_filter(normalised, max(1.0, radius / 2))
        seeds = peak_local_max(-coarse, min_distance=max(1, round(0.5 * radius)),
                               exclude_border=False)
        markers = np.zeros(volume.shape, np.int32)
        markers[tuple(seeds.T)] = np.arange(1, len(seeds) + 1)
        basins = watershed(smooth, markers)
        inside = np.asarray(ndimage.mean(specimen, basins, np.arange(1, len(seeds) + 1)))
        keep = np.concatenate([[False], inside >= self.inside_fraction])
        # Renumber the kept basins 1..n (label values carry no meaning, compactness helps IoU).
        new_ids = np.cumsum(keep).astype(np.int32) * keep
        return new_ids[basins]


def _drop_small(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` without components smaller than a sphere of half the typical radius."""
    components, count = ndimage.label(mask)
    if count == 0:
        return mask
    min_size = max(8, int(4 / 3 * math.pi * (radius / 2) ** 3))
    sizes = np.bincount(components.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[components]


class CellposeSegmenter:
    """The organisers' Cellpose models (``nuclei``, ``cyto3``), run in 3D on isotropic volumes.

    Needs ``cellpose`` < 4 (cellpose 4 replaced these models) and its weights, which cellpose
    downloads on first use into ``~/.cellpose/models`` (or ``$CELLPOSE_LOCAL_MODELS_PATH``).
    Models are loaded on first use, one per content.

    Raises
    ------
    FmcConfigError
        If cellpose cannot be imported or lacks ``models.Cellpose``.
    """

    name = "cellpose"
    MODELS = {"nucleus": "nuclei", "membrane": "cyto3"}

    def __init__(self, gpu: bool | None = None):
        try:
            from cellpose import models
        except ImportError as error:
            raise FmcConfigError(f"iou=cellpose: cellpose is not installed ({error}); install "
                                 "'cellpose<4' (with its model weights) or use iou=proxy") from None
        if not hasattr(models, "Cellpose"):
            raise FmcConfigError("iou=cellpose: this cellpose has no models.Cellpose with the "
                                 "'nuclei' and 'cyto3' models (cellpose 4 replaced them); install "
                                 "'cellpose<4' or use iou=proxy")
        if gpu is None:
            import torch

            gpu = torch.cuda.is_available()
        self._models_module = models
        self._gpu = gpu
        self._models: dict[str, Any] = {}

    def _model(self, content: str) -> Any:
        model_type = self.MODELS[check_content(content)]
        if model_type not in self._models:
            try:
                self._models[model_type] = self._models_module.Cellpose(gpu=self._gpu,
                                                                       model_type=model_type)
            except Exception as error:  # download or load failure: any exception type
                raise FmcConfigError(
                    f"iou=cellpose: could not load the cellpose model '{model_type}' ({error}); "
                    "cellpose downloads its weights on first use: run it once with internet or "
                    "copy them into ~/.cellpose/models, or use iou=proxy") from None
        return self._models[model_type]

    def estimate_diameter(self, volume: np.ndarray, content: str) -> float:
        """Median of cellpose's size-model estimates on the GT's three central planes.

        Cellpose estimates sizes in 2D only; the volume is isotropic, so the three orthogonal
        central planes are equally valid samples.
        """
        model = self._model(content)
        planes = [volume[volume.shape[0] // 2], volume[:, volume.shape[1] // 2],
                  volume[:, :, volume.shape[2] // 2]]
        diams, _ = model.sz.eval(planes, channels=[0, 0])
        diams = np.atleast_1d(np.asarray(diams, dtype=float))
        diams = diams[np.isfinite(diams) & (diams > 0)]
        if not diams.size:
            log.warning("cellpose found no size on the ground truth; using its default diameter "
                        "%g", model.diam_mean)
            return float(model.diam_mean)
        return float(np.median(diams))

    def segment(self, volume: np.ndarray, content: str, diameter: float) -> np.ndarray:
        """Cellpose 3D masks of ``volume`` at ``diameter`` voxels."""
        result = self._model(content).eval(volume, channels=[0, 0], diameter=diameter, do_3D=True,
                                           z_axis=0)
        return np.asarray(result[0]).astype(np.int32, copy=False)


def check_content(content: str | None) -> str:
    """``content`` if it is 'nucleus' or 'membrane'; otherwise raise FmcInputError."""
    if content not in ("nucleus", "membrane"):
        raise FmcInputError(f"content {content!r}: segmentation needs 'nucleus' or 'membrane'")
    return content


def make_segmenter(backend: str | Segmenter) -> Segmenter:
    """The backend named ``proxy`` or ``cellpose`` (a :class:`Segmenter` is returned as is).

    Raises
    ------
    FmcConfigError
        For another name, or ``cellpose`` when it is not usable.
    """
    if not isinstance(backend, str):
        return backend
    name = backend.strip().lower()
    if name == "proxy":
        return ProxySegmenter()
    if name == "cellpose":
        return CellposeSegmenter()
    raise FmcConfigError(f"segmentation backend {backend!r}: choose proxy or cellpose")
