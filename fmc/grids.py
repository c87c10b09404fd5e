"""Coarse grids for smooth fields: block averaging down, linear interpolation back up.

Big volumes (a study-1 recording has 140 M voxels) make per-voxel work expensive; fields that vary
over micrometres (distances, haze, envelopes) are computed on a grid of a few million nodes and
interpolated back. The node/voxel alignment is shared by all three functions: coarse node j sits at
the centre of the fine voxels it averages.
"""

from __future__ import annotations

import numpy as np


def coarse_shape(shape, spacing_zyx, step_um: float) -> tuple[int, ...]:
    """Shape of a grid covering the same field of view with steps of at least ``step_um``."""
    return tuple(max(2, int(np.ceil(n * s / max(step_um, s))))
                 for n, s in zip(shape, spacing_zyx, strict=True))


def coarse_coordinates_um(shape, coarse, spacing_zyx) -> list[np.ndarray]:
    """Physical position (µm) of the coarse grid's nodes, per axis, in the fine grid's frame.

    Coarse node j sits at the centre of the fine voxels it summarises, so that
    :func:`resize_linear` maps the two grids onto each other exactly.
    """
    return [((np.arange(c) + 0.5) * n / c - 0.5) * s
            for n, c, s in zip(shape, coarse, spacing_zyx, strict=True)]


def resize_linear(array: np.ndarray, shape) -> np.ndarray:
    """Separable linear interpolation of a coarse float32 field onto ``shape`` (edges clamped).

    Cheaper than ``scipy.ndimage.zoom`` on big volumes because each axis is one gather and one
    lerp; the node/voxel alignment matches :func:`coarse_coordinates_um` and :func:`block_mean`.
    """
    out = array.astype(np.float32, copy=False)
    for axis, n_out in enumerate(shape):
        n_in = out.shape[axis]
        if n_in == n_out:
            continue
        position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(position).astype(np.intp)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (position - lo).astype(np.float32)
        view = [1, 1, 1]
        view[axis] = n_out
        frac = frac.reshape(view)
        a = np.take(out, lo, axis=axis)
        b = np.take(out, hi, axis=axis)
        b -= a
        b *= frac
        a += b
        out = a
    return out


def block_mean(array: np.ndarray, coarse) -> np.ndarray:
    """Average ``array`` onto a coarser grid (nearest fine voxels per coarse cell)."""
    out = array
    for axis, n_out in enumerate(coarse):
        n_in = out.shape[axis]
        if n_in == n_out:
            continue
        edges = np.linspace(0, n_in, n_out + 1).round().astype(np.intp)
        out = np.add.reduceat(out, edges[:-1], axis=axis, dtype=np.float32)
        view = [1, 1, 1]
        view[axis] = n_out
        out = out / np.diff(edges).reshape(view).astype(np.float32)
    return out.astype(np.float32, copy=False)
