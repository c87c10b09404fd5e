"""An N_IoU-like segmentation score: isotropic resampling, segmentation backends, object IoU.

The Fuse My Cells challenge's second metric compares segmentations. The organisers made verified
segmentations of the ground truth (GT) and of the input, and segment the prediction with Cellpose
(``nuclei`` for nucleus, ``cyto3`` for membrane) on volumes made isotropic by linear
interpolation, with the diameter estimated on the GT::

    n_iou = (prediction_iou - reference_iou) / (best_iou - reference_iou)

Their verified segmentations are not public, so this module **cannot reproduce the official
number**. What it computes instead, with one backend for all three volumes:

* ``iou_input`` (reference) = IoU(seg(input), seg(GT)),
* ``iou_pred`` = IoU(seg(prediction), seg(GT)),
* ``n_iou = (iou_pred - iou_input) / (1 - iou_input)``: best_iou is taken as 1, since the GT's
  segmentation is compared with itself.

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

IoU (:func:`matched_iou`): objects of the two label volumes are matched one to one when their
IoU exceeds 0.5; the score is the sum of the matched IoUs over the number of objects in either
volume (matched pairs counted once). See that function for why.

Memory: the isotropic volumes are held whole (float32, plus labels and a distance map during
segmentation), so their size is capped by ``max_voxels`` (:func:`isotropic_grid`): above it the
common isotropic spacing is coarsened, a deviation from the organisers' full-resolution
resampling that is logged. Reading the anisotropic source is done in z-chunks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from scipy import ndimage

from fmc.core.errors import FmcConfigError, FmcInputError

if TYPE_CHECKING:
    from scipy import sparse

log = logging.getLogger(__name__)

IOU_CHOICES = ("none", "proxy", "cellpose")
# 16 M isotropic voxels: a float32 volume of 64 MB, segmentation temporaries (distance maps,
# labels, watershed queues) below 1 GB, and about half a minute per proxy segmentation on 2
# cores. A 1920×1920 recording then has ~0.6 µm voxels: nuclei still span ~10 voxels.
DEFAULT_MAX_VOXELS = 16_000_000
# Output planes resampled at a time: bounds the anisotropic planes held while resampling.
CHUNK_PLANES = 16
MATCH_THRESHOLD = 0.5
IOU_SETTINGS = ("volumes resampled to isotropic voxels (linear interpolation, block mean where the "
                "max_voxels guard coarsens an axis); object IoU: one-to-one matches at IoU > 0.5, "
                "sum of matched IoUs / objects in either volume; n_iou = (iou_pred - iou_input) / "
                "(1 - iou_input), best_iou taken as 1 (no verified segmentations)")


# ----------------------------------------------------------------------------------------------
# Isotropic resampling
# ----------------------------------------------------------------------------------------------
def isotropic_grid(shape: Sequence[int], spacing_zyx: Sequence[float],
                   max_voxels: int | None = DEFAULT_MAX_VOXELS) -> tuple[tuple[int, int, int], float]:
    """Shape and spacing of the isotropic grid covering the same field of view as ``shape``.

    The spacing is the finest of ``spacing_zyx`` unless the grid would exceed ``max_voxels``,
    in which case it is coarsened until it fits.

    Parameters
    ----------
    shape : sequence of 3 ints
        ZYX shape of the source volume.
    spacing_zyx : sequence of 3 floats
        Voxel size of the source (any unit; only ratios matter).
    max_voxels : int or None
        Largest isotropic grid allowed; None for no limit.

    Returns
    -------
    shape : tuple of 3 ints
    spacing : float
        Nominal isotropic voxel size, in the unit of ``spacing_zyx``.

    Raises
    ------
    FmcInputError
        If a spacing is not a positive finite number.
    """
    spacing = [float(s) for s in spacing_zyx]
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise FmcInputError(f"voxel spacing {tuple(spacing_zyx)}: need three positive numbers")
    step = min(spacing)

    def grid(step_: float) -> tuple[int, int, int]:
        z, y, x = (max(1, round(n * s / step_)) for n, s in zip(shape, spacing, strict=True))
        return (z, y, x)

    out = grid(step)
    if max_voxels is not None and math.prod(out) > max_voxels:
        step *= (math.prod(out) / max_voxels) ** (1 / 3)
        # Rounding can leave the grid slightly above the cap: coarsen by 1 % until it fits.
        while math.prod(out := grid(step)) > max_voxels and max(out) > 1:
            step *= 1.01
    return out, step


def _axis_weights(n_in: int, n_out: int) -> sparse.csr_matrix:
    """``(n_out, n_in)`` resampling matrix of one axis, with centre-aligned voxels.

    Upsampling (and equal sizes) interpolates linearly with clamped edges, as the organisers'
    linear interpolation; downsampling averages the input voxels of each output cell instead,
    because sampling a much finer grid at points would alias noise into the segmentation.
    """
    from scipy import sparse  # here: importing fmc.evaluation.scoring must not pay for it when iou=none

    if n_out >= n_in:
        position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(position).astype(np.intp)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = position - lo
        rows = np.concatenate([np.arange(n_out), np.arange(n_out)])
        matrix = sparse.coo_matrix((np.concatenate([1 - frac, frac]), (rows, np.concatenate([lo, hi]))),
                                   shape=(n_out, n_in))
    else:
        edges = np.linspace(0, n_in, n_out + 1).round().astype(np.intp)
        cell = np.repeat(np.arange(n_out), np.diff(edges))
        matrix = sparse.coo_matrix((1.0 / np.diff(edges)[cell], (cell, np.arange(n_in))),
                                   shape=(n_out, n_in))
    return matrix.astype(np.float32).tocsr()  # duplicates (clamped edges) are summed


def resample(volume: Any, shape: Sequence[int]) -> np.ndarray:
    """Resample a ZYX volume onto ``shape`` (see :func:`_axis_weights`), in float32.

    ``volume`` may be a numpy array or anything read in z-slabs (``volume[z0:z1]``, e.g.
    :class:`fmc.io.tiff.TiffVolume`): only the source planes needed by :data:`CHUNK_PLANES` output
    planes are read at a time. The output is held whole.
    """
    n_in = tuple(int(n) for n in volume.shape)
    if len(n_in) != 3:
        raise FmcInputError(f"expected a 3D ZYX volume, got shape {n_in}")
    wz, wy, wx = (_axis_weights(a, b) for a, b in zip(n_in, shape, strict=True))
    wx_t = wx.T.tocsr()
    out = np.empty(tuple(shape), np.float32)
    for z0 in range(0, shape[0], CHUNK_PLANES):
        rows = wz[z0:z0 + CHUNK_PLANES]
        used = rows.indices
        lo, hi = int(used.min()), int(used.max()) + 1
        planes = np.asarray(volume[lo:hi], dtype=np.float32)
        # Y and X on the source planes first: fewer planes than output planes when z is
        # upsampled (the usual case), so the lateral work is done once per source plane.
        lateral = planes if planes.shape[1:] == tuple(shape[1:]) else \
            np.stack([(wy @ plane) @ wx_t for plane in planes])
        flat = rows[:, lo:hi] @ lateral.reshape(hi - lo, -1)
        out[z0:z0 + rows.shape[0]] = np.asarray(flat, dtype=np.float32).reshape(rows.shape[0], *shape[1:])
    return out


def isotropic(volume: Any, spacing_zyx: Sequence[float],
              max_voxels: int | None = DEFAULT_MAX_VOXELS) -> np.ndarray:
    """A ZYX volume resampled to isotropic voxels of its finest spacing (float32).

    Linear interpolation, read in z-chunks; the result is held whole, so a grid above
    ``max_voxels`` is coarsened (logged): see :func:`isotropic_grid`.

    Parameters
    ----------
    volume : numpy.ndarray or volume-like
        Indexable along Z with a ``shape``.
    spacing_zyx : sequence of 3 floats
        Source voxel size.
    max_voxels : int or None
        Cap on the output's voxel count; None for none (real volumes then take tens of GB).
    """
    shape, step = isotropic_grid(volume.shape, spacing_zyx, max_voxels)
    if step > min(spacing_zyx) * 1.0001:
        log.info("isotropic: %s voxels at %.3g instead of %.3g to stay under max_voxels=%d",
                 "×".join(map(str, shape)), step, min(spacing_zyx), max_voxels)
    return resample(volume, shape)


# ----------------------------------------------------------------------------------------------
# IoU between label volumes
# ----------------------------------------------------------------------------------------------
def matched_iou(labels_a: np.ndarray, labels_b: np.ndarray,
                threshold: float = MATCH_THRESHOLD) -> float:
    """Object IoU of two label volumes: one-to-one matches above ``threshold``, misses count 0.

    Objects ``i`` of ``a`` and ``j`` of ``b`` match when ``IoU(i, j) > threshold``; with the
    default 0.5 a match is unique (an object cannot overlap two disjoint objects by more than
    half its union each), so no assignment problem is solved. The score is::

        sum of the matched IoUs / (n_a + n_b - n_matched)

    i.e. the mean IoU over all objects of either volume, an unmatched (missed, spurious, split
    or merged) object counting 0. It is 1 only when both volumes hold the same objects (up to
    label values) and is symmetric. Unlike a foreground IoU, which would barely see two touching
    nuclei merged or a membrane missing between cells, it measures the instance segmentation.

    Parameters
    ----------
    labels_a, labels_b : numpy.ndarray
        Integer label volumes of one shape; 0 is background.
    threshold : float
        Match threshold, at least 0.5 for the uniqueness argument above.

    Returns
    -------
    float
        In [0, 1]; 1.0 when neither volume holds an object.
    """
    if labels_a.shape != labels_b.shape:
        raise ValueError(f"label volumes differ in shape: {labels_a.shape} vs {labels_b.shape}")
    if threshold < 0.5:
        raise ValueError("threshold below 0.5 would allow one object to match several")
    a = labels_a.ravel()
    b = labels_b.ravel()
    ids_a, area_a = np.unique(a[a > 0], return_counts=True)
    ids_b, area_b = np.unique(b[b > 0], return_counts=True)
    n_objects = len(ids_a) + len(ids_b)
    if n_objects == 0:
        return 1.0
    both = (a > 0) & (b > 0)
    # One key per (label_a, label_b) pair: its count is the pair's intersection.
    base = int(b.max()) + 1
    keys = a[both].astype(np.int64) * base + b[both].astype(np.int64)
    pairs, intersection = np.unique(keys, return_counts=True)
    ia = np.searchsorted(ids_a, pairs // base)
    ib = np.searchsorted(ids_b, pairs % base)
    iou = intersection / (area_a[ia] + area_b[ib] - intersection)
    matched = iou[iou > threshold]
    return float(matched.sum() / (n_objects - len(matched)))


def n_iou_from(iou_pred: float, iou_input: float) -> float:
    """``(iou_pred - iou_input) / (1 - iou_input)``; NaN when the input already scores 1.

    1 for a prediction segmented like the GT, 0 for one segmented as well as the input, and
    unbounded below: with an input that already scores high, or few objects (each one a large
    step of the IoU), a worse prediction gives large negative values.
    """
    if not iou_input < 1.0:
        return math.nan
    return (iou_pred - iou_input) / (1.0 - iou_input)


# ----------------------------------------------------------------------------------------------
# Segmentation backends
# ----------------------------------------------------------------------------------------------
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
        if _check_content(content) == "nucleus":
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
        if _check_content(content) == "nucleus":
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
        model_type = self.MODELS[_check_content(content)]
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


def _check_content(content: str | None) -> str:
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


# ----------------------------------------------------------------------------------------------
# N_IoU
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IouScore:
    """Segmentation scores of one prediction (see the module doc: not the official N_IoU).

    Attributes
    ----------
    iou_input : float
        IoU(seg(input), seg(GT)), the reference.
    iou_pred : float
        IoU(seg(prediction), seg(GT)).
    n_iou : float
        ``(iou_pred - iou_input) / (1 - iou_input)``; NaN if ``iou_input`` is 1.
    backend : str
        Segmentation backend, e.g. ``proxy``.
    """

    iou_input: float
    iou_pred: float
    n_iou: float
    backend: str


class IouReference:
    """Segmentations of a GT and its input, against which several predictions are scored.

    The GT is resampled and segmented once, its object diameter estimated on it, and the input
    scored; :meth:`score` then costs one resampling and one segmentation per prediction.

    Parameters
    ----------
    target, input_view : numpy.ndarray or volume-like
        Ground truth and input view, same ZYX shape.
    spacing_zyx : sequence of 3 floats
        Their voxel size.
    content : {'nucleus', 'membrane'}
    backend : str or Segmenter
        ``proxy``, ``cellpose`` or a backend object.
    max_voxels : int or None
        Cap on the isotropic grid (see :func:`isotropic_grid`).
    """

    def __init__(self, target: Any, input_view: Any, spacing_zyx: Sequence[float], content: str,
                 backend: str | Segmenter = "proxy", max_voxels: int | None = DEFAULT_MAX_VOXELS):
        if tuple(target.shape) != tuple(input_view.shape):
            raise FmcInputError(f"input shape {tuple(input_view.shape)} differs from the ground "
                                f"truth's {tuple(target.shape)}")
        self.content = _check_content(content)
        self.segmenter = make_segmenter(backend)
        self.shape_in = tuple(target.shape)
        self.grid, step = isotropic_grid(self.shape_in, spacing_zyx, max_voxels)
        if step > min(spacing_zyx) * 1.0001:
            log.info("N_IoU (%s): segmenting on %s voxels of %.3g instead of %.3g "
                     "(max_voxels=%d)", self.segmenter.name, "×".join(map(str, self.grid)), step,
                     min(spacing_zyx), max_voxels)
        target_iso = resample(target, self.grid)
        self.diameter = self.segmenter.estimate_diameter(target_iso, self.content)
        self.target_labels = self.segmenter.segment(target_iso, self.content, self.diameter)
        del target_iso
        self.iou_input = matched_iou(self.labels(input_view), self.target_labels)

    def labels(self, volume: Any) -> np.ndarray:
        """Label volume of ``volume`` on this reference's isotropic grid."""
        if tuple(volume.shape) != self.shape_in:
            raise FmcInputError(f"shape {tuple(volume.shape)} differs from the ground truth's "
                                f"{self.shape_in}")
        return self.segmenter.segment(resample(volume, self.grid), self.content, self.diameter)

    def score(self, prediction: Any) -> IouScore:
        """IoU of ``prediction``'s segmentation with the GT's, and its N_IoU."""
        iou_pred = matched_iou(self.labels(prediction), self.target_labels)
        return IouScore(self.iou_input, iou_pred, n_iou_from(iou_pred, self.iou_input),
                        self.segmenter.name)


def n_iou(prediction: Any, target: Any, input_view: Any, spacing: Sequence[float], content: str,
          backend: str | Segmenter = "proxy", max_voxels: int | None = DEFAULT_MAX_VOXELS) -> IouScore:
    """N_IoU-like score of one prediction (best_iou = 1; not the challenge's number).

    Parameters
    ----------
    prediction, target, input_view : numpy.ndarray or volume-like
        Same ZYX shape.
    spacing : sequence of 3 floats
        Voxel size, ZYX.
    content : {'nucleus', 'membrane'}
    backend : str or Segmenter
        ``proxy`` (classical, see :class:`ProxySegmenter`) or ``cellpose``.
    max_voxels : int or None
        Cap on the isotropic grid.

    Returns
    -------
    IouScore
    """
    return IouReference(target, input_view, spacing, content, backend, max_voxels).score(prediction)
