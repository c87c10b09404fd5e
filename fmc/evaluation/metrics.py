"""The challenge's metrics, computed as the Fuse My Cells organisers compute them, in bounded memory.

Settings (write them next to every number; see ``METRIC_SETTINGS``):

* each volume is percentile-normalised on its own: ``(x - p2) / (p99.8 - p2)`` over the whole
  volume, no clipping; a volume whose two percentiles are equal is left unchanged, as in the
  organisers' ``percentile_normalization``;
* SSIM is scikit-image's ``structural_similarity`` on the 3D ZYX volumes with its defaults
  (7×7×7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance, mean over the map cropped by 3
  voxels per face) and ``data_range`` = the larger of the two normalised value ranges;
* ``N_SSIM = (SSIM(pred, gt) - SSIM(input, gt)) / (1 - SSIM(input, gt))``;
* PSNR uses the same normalisation and data range.

Volumes can be anything indexable along Z with a ``shape`` (numpy arrays, memory maps, h5py
datasets, :class:`fmc.io.tiff.TiffVolume`, :class:`GaussianFilteredVolume`). Everything is computed
in z-slabs (with the window's halo) and y-blocks, so memory grows with the slab, not the volume;
the result equals a whole-volume skimage call up to float64 rounding.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from fmc.core.errors import FmcInputError
from fmc.core.normalization import (
    STREAM_SLAB_Z,
    VolumeLike,
    VolumeStats,
    read_planes,
    slab_ranges,
    stream_slab,
    volume_stats,
)
from fmc.core.threads import usable_cores

log = logging.getLogger(__name__)

WIN_SIZE = 7
K1, K2 = 0.01, 0.03
METRIC_SETTINGS = ("percentile_normalize(2, 99.8, no clip) per volume; skimage structural_similarity "
                   "3D, uniform 7-voxel window, K1=0.01, K2=0.03, sample covariance, "
                   "data_range=max of the two normalised ranges")
# Default block: 32 z-planes (plus a 3-plane halo on each side) × 128 rows × all columns: the halo
# costs 19 % extra work, and a 1920-wide block holds ~80 MB per float64 array.
DEFAULT_SLAB_Z = 32
DEFAULT_BLOCK_Y = 128


# ----------------------------------------------------------------------------------------------
# SSIM (chunked) and PSNR
# ----------------------------------------------------------------------------------------------
def _check_shapes(target: VolumeLike, others: Sequence[VolumeLike], names: Sequence[str]) -> None:
    shape = tuple(target.shape)
    if len(shape) != 3:
        raise FmcInputError(f"{names[0]}: SSIM needs a 3D volume, got shape {shape}")
    for other, name in zip(others, names[1:], strict=True):
        if tuple(other.shape) != shape:
            raise FmcInputError(f"{name}: shape {tuple(other.shape)} differs from the ground "
                                f"truth's {shape} ({names[0]})")
    if min(shape) < WIN_SIZE:
        raise FmcInputError(f"{names[0]}: shape {shape} is smaller than SSIM's {WIN_SIZE}-voxel "
                            "window along at least one axis")


def _ssim_map_sum(x: np.ndarray, y: np.ndarray, mu_y: np.ndarray, mu_yy: np.ndarray,
                  data_range: float, crop: tuple[slice, ...]) -> tuple[float, int]:
    """Sum and count of skimage's SSIM map over ``crop`` of this block (skimage's formula)."""
    n_points = WIN_SIZE ** 3
    cov_norm = n_points / (n_points - 1)
    mu_x = ndimage.uniform_filter(x, size=WIN_SIZE)
    mu_xx = ndimage.uniform_filter(x * x, size=WIN_SIZE)
    mu_xy = ndimage.uniform_filter(x * y, size=WIN_SIZE)
    mu_x, mu_xx, mu_xy = mu_x[crop], mu_xx[crop], mu_xy[crop]
    var_x = cov_norm * (mu_xx - mu_x * mu_x)
    var_y = cov_norm * (mu_yy - mu_y * mu_y)
    cov_xy = cov_norm * (mu_xy - mu_x * mu_y)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    a1 = 2 * mu_x * mu_y + c1
    a2 = 2 * cov_xy + c2
    b1 = mu_x ** 2 + mu_y ** 2 + c1
    b2 = var_x + var_y + c2
    ssim_map = (a1 * a2) / (b1 * b2)
    return float(ssim_map.sum(dtype=np.float64)), ssim_map.size


def ssim_against(target: VolumeLike, predictions: Sequence[VolumeLike], *,
                 target_stats: VolumeStats | None = None,
                 prediction_stats: Sequence[VolumeStats] | None = None,
                 names: Sequence[str] | None = None, slab: int = DEFAULT_SLAB_Z,
                 block_y: int = DEFAULT_BLOCK_Y, workers: int | None = None) -> list[float]:
    """Challenge SSIM of several volumes against one ground truth, in one pass over it.

    Parameters
    ----------
    target : VolumeLike
        Ground truth (the fused volume), ZYX.
    predictions : sequence of VolumeLike
        Volumes of the same shape to score (e.g. the input view and a prediction).
    target_stats, prediction_stats : VolumeStats, optional
        Precomputed :func:`volume_stats` (computed here when missing).
    names : sequence of str, optional
        Names for messages, target first.
    slab, block_y : int
        Z-planes and rows computed at a time (memory ≈ 12 float64 blocks of
        ``(slab + 6) × (block_y + 6) × X`` per worker, plus the slab of each volume).
    workers : int, optional
        Threads computing y-blocks in parallel (default: :func:`fmc.core.threads.usable_cores`).

    Returns
    -------
    list of float
        One SSIM per prediction, equal to ``skimage.metrics.structural_similarity(gt_n, pred_n,
        data_range=max(range(gt_n), range(pred_n)))`` on the normalised whole volumes.
    """
    names = list(names or ["ground truth"] + [f"volume {i}" for i in range(len(predictions))])
    _check_shapes(target, predictions, names)
    target_stats = target_stats or volume_stats(target, name=names[0])
    if prediction_stats is None:
        prediction_stats = [volume_stats(p, name=n) for p, n in zip(predictions, names[1:],
                                                                           strict=True)]
    ranges = [max(target_stats.normalized_range, s.normalized_range) for s in prediction_stats]
    depth, height, _ = target.shape
    half = WIN_SIZE // 2
    sums = [0.0] * len(predictions)
    total = 0
    # scipy.ndimage and numpy release the GIL: threads over y-blocks use every core.
    with ThreadPoolExecutor(max_workers=max(1, workers or usable_cores())) as pool:
        # Output planes/rows [half, n - half) are the ones skimage averages (it crops the map).
        for z0, z1 in slab_ranges(depth - 2 * half, slab):
            z_lo, z_hi = z0, z1 + 2 * half  # input planes, halo included
            gt_planes = read_planes(target, z_lo, z_hi)
            pred_planes = [read_planes(p, z_lo, z_hi) for p in predictions]
            blocks = slab_ranges(height - 2 * half, block_y)
            starts, ends = zip(*blocks, strict=True)
            work = functools.partial(_block_sums, target_stats, prediction_stats, ranges,
                                     gt_planes, pred_planes)
            for block in pool.map(work, starts, ends):
                sums = [total_ + part for total_, part in zip(sums, block, strict=True)]
            total += (z1 - z0) * (height - 2 * half) * (target.shape[2] - 2 * half)
    return [sums[i] / total if data_range > 0 else _constant_ssim(target_stats, stats)
            for i, (data_range, stats) in enumerate(zip(ranges, prediction_stats, strict=True))]


def _block_sums(target_stats: VolumeStats, prediction_stats: Sequence[VolumeStats],
                ranges: Sequence[float], gt_planes: np.ndarray, pred_planes: list[np.ndarray],
                y0: int, y1: int) -> list[float]:
    """Summed SSIM map of each prediction over output rows ``y0:y1`` of one slab of planes."""
    half = WIN_SIZE // 2
    # Output planes/rows [half, n - half) are the ones skimage averages (it crops the map).
    crop = (slice(half, -half), slice(half, -half), slice(half, -half))
    # Normalise only this block's rows: float64 copies of whole slabs would cost GBs.
    rows = slice(y0, y1 + 2 * half)
    y = target_stats.normalize(gt_planes[:, rows])
    mu_y = ndimage.uniform_filter(y, size=WIN_SIZE)[crop]
    mu_yy = ndimage.uniform_filter(y * y, size=WIN_SIZE)[crop]
    return [_ssim_map_sum(stats.normalize(x[:, rows]), y, mu_y, mu_yy, r, crop)[0]
            if r > 0 else 0.0
            for x, stats, r in zip(pred_planes, prediction_stats, ranges, strict=True)]


def _constant_ssim(target_stats: VolumeStats, stats: VolumeStats) -> float:
    """Both normalised volumes are constant: identical or not, there is no structure."""
    same = stats.normalize(np.array(stats.minimum)) == \
        target_stats.normalize(np.array(target_stats.minimum))
    return 1.0 if same else 0.0


def ssim(prediction: VolumeLike, target: VolumeLike, **kwargs: Any) -> float:
    """Challenge SSIM of one volume against the ground truth (see :func:`ssim_against`)."""
    return ssim_against(target, [prediction], **kwargs)[0]


def n_ssim_from(ssim_prediction: float, ssim_input: float) -> float:
    """``(SSIM(pred, gt) - SSIM(input, gt)) / (1 - SSIM(input, gt))``; NaN if the input is perfect."""
    if ssim_input >= 1.0:
        return float("nan")
    return (ssim_prediction - ssim_input) / (1.0 - ssim_input)


def n_ssim(prediction: VolumeLike, target: VolumeLike, input_view: VolumeLike, **kwargs: Any) -> float:
    """Normalised SSIM of a prediction: 0 for the input itself, 1 for the ground truth."""
    ssim_input, ssim_prediction = ssim_against(target, [input_view, prediction], **kwargs)
    return n_ssim_from(ssim_prediction, ssim_input)


def psnr(prediction: VolumeLike, target: VolumeLike, *, target_stats: VolumeStats | None = None,
         prediction_stats: VolumeStats | None = None, slab: int | None = None) -> float:
    """PSNR in dB of the normalised prediction against the normalised ground truth.

    Uses the challenge normalisation and ``data_range`` = the larger of the two normalised ranges
    (as :func:`ssim`); infinite for identical volumes.
    """
    _check_shapes(target, [prediction], ["ground truth", "prediction"])
    target_stats = target_stats or volume_stats(target, name="ground truth")
    prediction_stats = prediction_stats or volume_stats(prediction, name="prediction")
    data_range = max(target_stats.normalized_range, prediction_stats.normalized_range)
    slab = slab or stream_slab(prediction)
    squared_error = 0.0
    for z0, z1 in slab_ranges(target.shape[0], slab):
        difference = prediction_stats.normalize(read_planes(prediction, z0, z1)) - \
            target_stats.normalize(read_planes(target, z0, z1))
        squared_error += float(np.square(difference).sum(dtype=np.float64))
    mse = squared_error / float(np.prod(target.shape, dtype=np.int64))
    if mse == 0:
        return float("inf")
    if data_range == 0:
        return float("-inf")
    return float(10 * np.log10(data_range ** 2 / mse))


@dataclass(frozen=True)
class PairScore:
    """Challenge scores of one prediction (see module doc for the settings)."""

    ssim_input: float
    ssim_pred: float
    n_ssim: float
    psnr_pred: float


def score_prediction(input_view: VolumeLike, target: VolumeLike, prediction: VolumeLike, *,
                     names: Sequence[str] = ("input", "ground truth", "prediction"),
                     slab: int = DEFAULT_SLAB_Z, block_y: int = DEFAULT_BLOCK_Y) -> PairScore:
    """SSIM of input and prediction against the ground truth, N_SSIM and PSNR, in bounded memory.

    ``names`` (input, ground truth, prediction) label the volumes in error messages.
    """
    input_name, target_name, prediction_name = names
    _check_shapes(target, [input_view, prediction], [target_name, input_name, prediction_name])
    target_stats = volume_stats(target, name=target_name)
    input_stats = volume_stats(input_view, name=input_name)
    prediction_stats = volume_stats(prediction, name=prediction_name)
    ssim_input, ssim_prediction = ssim_against(
        target, [input_view, prediction], target_stats=target_stats,
        prediction_stats=[input_stats, prediction_stats],
        names=[target_name, input_name, prediction_name], slab=slab, block_y=block_y)
    return PairScore(
        ssim_input=ssim_input, ssim_pred=ssim_prediction,
        n_ssim=n_ssim_from(ssim_prediction, ssim_input),
        psnr_pred=psnr(prediction, target, target_stats=target_stats,
                       prediction_stats=prediction_stats))


# ----------------------------------------------------------------------------------------------
# Lazy filtered volume (the Gaussian baseline without holding the filtered volume)
# ----------------------------------------------------------------------------------------------
class GaussianFilteredVolume:
    """``scipy.ndimage.gaussian_filter(volume, sigma)`` computed slab by slab on demand.

    Each requested z-range is filtered with a halo of the filter's radius, so the values equal
    those of filtering the whole volume at once (float32 arithmetic).

    Parameters
    ----------
    volume : VolumeLike
        Source volume.
    sigma_zyx : float or sequence of 3 floats
        Standard deviation in voxels, per axis.
    truncate : float
        Radius in standard deviations, as scipy's ``truncate``.
    """

    def __init__(self, volume: VolumeLike, sigma_zyx: float | Sequence[float],
                 truncate: float = 4.0):
        self.volume = volume
        self.shape = tuple(volume.shape)
        sigma = np.broadcast_to(np.asarray(sigma_zyx, dtype=float), (3,))
        self.sigma_zyx = tuple(float(s) for s in sigma)
        self.truncate = truncate
        self.halo = int(self.truncate * self.sigma_zyx[0] + 0.5)
        self.dtype = np.dtype(np.float32)
        # Each slab is filtered with 2 × halo extra planes: thick slabs keep that overhead small.
        self.preferred_slab = max(STREAM_SLAB_Z, 4 * self.halo)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("GaussianFilteredVolume supports volume[z0:z1] only")
        z0, z1, _ = key.indices(self.shape[0])
        lo, hi = max(0, z0 - self.halo), min(self.shape[0], z1 + self.halo)
        planes = read_planes(self.volume, lo, hi).astype(np.float32)
        if lo == 0 and hi == self.shape[0]:
            filtered = ndimage.gaussian_filter(planes, self.sigma_zyx, truncate=self.truncate)
        else:
            # Along z, extend by reflection only at the volume's true borders; the halo of real
            # planes does the rest, so the result equals the whole-volume filter.
            pad_lo = self.halo - (z0 - lo)
            pad_hi = self.halo - (hi - z1)
            planes = np.pad(planes, ((pad_lo, pad_hi), (0, 0), (0, 0)), mode="symmetric") \
                if (pad_lo or pad_hi) else planes
            filtered = ndimage.gaussian_filter(planes, self.sigma_zyx, truncate=self.truncate)
            return filtered[self.halo:self.halo + (z1 - z0)]
        return filtered[z0:z1]
