"""An N_IoU-like segmentation score: object IoU of the segmented input and prediction with the GT.

The Fuse My Cells challenge's second metric compares segmentations. The organisers made verified
segmentations of the ground truth (GT) and of the input, and segment the prediction with Cellpose
(``nuclei`` for nucleus, ``cyto3`` for membrane) on volumes made isotropic by linear
interpolation, with the diameter estimated on the GT::

    n_iou = (prediction_iou - reference_iou) / (best_iou - reference_iou)

Their verified segmentations are not public, so this module **cannot reproduce the official
number**. What it computes instead, with one backend (:mod:`fmc.evaluation.segmentation`) for all
three volumes, resampled to isotropic voxels (:mod:`fmc.evaluation.isotropic`):

* ``iou_input`` (reference) = IoU(seg(input), seg(GT)),
* ``iou_pred`` = IoU(seg(prediction), seg(GT)),
* ``n_iou = (iou_pred - iou_input) / (1 - iou_input)``: best_iou is taken as 1, since the GT's
  segmentation is compared with itself.

IoU (:func:`matched_iou`): objects of the two label volumes are matched one to one when their
IoU exceeds 0.5; the score is the sum of the matched IoUs over the number of objects in either
volume (matched pairs counted once). See that function for why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmc.core.errors import FmcInputError
from fmc.evaluation.isotropic import DEFAULT_MAX_VOXELS, isotropic_grid, resample
from fmc.evaluation.segmentation import Segmenter, check_content, make_segmenter

log = logging.getLogger(__name__)

MATCH_THRESHOLD = 0.5
IOU_SETTINGS = ("volumes resampled to isotropic voxels (linear interpolation, block mean where the "
                "max_voxels guard coarsens an axis); object IoU: one-to-one matches at IoU > 0.5, "
                "sum of matched IoUs / objects in either volume; n_iou = (iou_pred - iou_input) / "
                "(1 - iou_input), best_iou taken as 1 (no verified segmentations)")


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
        Cap on the isotropic grid (see :func:`fmc.evaluation.isotropic.isotropic_grid`).
    """

    def __init__(self, target: Any, input_view: Any, spacing_zyx: Sequence[float], content: str,
                 backend: str | Segmenter = "proxy", max_voxels: int | None = DEFAULT_MAX_VOXELS):
        if tuple(target.shape) != tuple(input_view.shape):
            raise FmcInputError(f"input shape {tuple(input_view.shape)} differs from the ground "
                                f"truth's {tuple(target.shape)}")
        self.content = check_content(content)
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
        ``proxy`` (classical, see :class:`fmc.evaluation.segmentation.ProxySegmenter`) or
        ``cellpose``.
    max_voxels : int or None
        Cap on the isotropic grid.

    Returns
    -------
    IouScore
    """
    return IouReference(target, input_view, spacing, content, backend, max_voxels).score(prediction)
