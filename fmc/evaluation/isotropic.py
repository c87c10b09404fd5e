"""Isotropic resampling of anisotropic ZYX volumes, the first step of the segmentation score.

The organisers segment volumes made isotropic by linear interpolation (see :mod:`fmc.evaluation.iou`).

Memory: the isotropic volumes are held whole (float32, plus labels and a distance map during
segmentation), so their size is capped by ``max_voxels`` (:func:`isotropic_grid`): above it the
common isotropic spacing is coarsened, a deviation from the organisers' full-resolution
resampling that is logged. Reading the anisotropic source is done in z-chunks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fmc.core.errors import FmcInputError

if TYPE_CHECKING:
    from scipy import sparse

log = logging.getLogger(__name__)

# 16 M isotropic voxels: a float32 volume of 64 MB, segmentation temporaries (distance maps,
# labels, watershed queues) below 1 GB, and about half a minute per proxy segmentation on 2
# cores. A 1920×1920 recording then has ~0.6 µm voxels: nuclei still span ~10 voxels.
DEFAULT_MAX_VOXELS = 16_000_000
# Output planes resampled at a time: bounds the anisotropic planes held while resampling.
CHUNK_PLANES = 16


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
