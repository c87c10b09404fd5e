"""Coarse grids for smooth fields: block averaging down, linear interpolation back up.

Big volumes (a study-1 recording has 140 M voxels) make per-voxel work expensive; fields that vary
over micrometres (distances, haze, envelopes) are computed on a grid of a few million nodes and
interpolated back. The node/voxel alignment is shared by all three functions: coarse node j sits at
the centre of the fine voxels it averages.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

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


# Planes processed at a time by the lateral passes: big arrays are handled in z-chunks whose
# temporaries stay in cache (5× faster than whole-volume passes on a study-1 volume), on all
# cores. Every element goes through the same operations in the same order, so results depend
# neither on the chunking nor on the threads.
CHUNK_PLANES = 8


def resize_linear(array: np.ndarray, shape) -> np.ndarray:
    """Separable linear interpolation of a coarse float32 field onto ``shape`` (edges clamped).

    Cheaper than ``scipy.ndimage.zoom`` on big volumes because each axis is one gather and one
    lerp; the node/voxel alignment matches :func:`coarse_coordinates_um` and :func:`block_mean`.
    Axis 0 is resized first (on the small array), then Y and X in z-chunks.
    """
    out = _resize_axis(array.astype(np.float32, copy=False), 0, shape[0])
    if out.shape[1:] == tuple(shape[1:]):
        return out
    result = np.empty(tuple(shape), np.float32)

    def resize_chunk(z0: int) -> None:
        block = _resize_axis(out[z0:z0 + CHUNK_PLANES], 1, shape[1])
        _resize_axis(block, 2, shape[2], into=result[z0:z0 + CHUNK_PLANES])

    _over_chunks(resize_chunk, shape[0])
    return result


def _over_chunks(work, depth: int) -> None:
    """Run ``work(z0)`` for every chunk of planes, on all cores (numpy releases the GIL)."""
    starts = range(0, depth, CHUNK_PLANES)
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        list(pool.map(work, starts))  # list(): re-raise the first error


def usable_cores() -> int:
    """Cores this process may use (at most 8): the thread count of fmc's numpy/scipy work."""
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(8, os.cpu_count() or 1))


def _resize_axis(array: np.ndarray, axis: int, n_out: int, into: np.ndarray | None = None
                 ) -> np.ndarray:
    n_in = array.shape[axis]
    if n_in == n_out:
        if into is not None:
            into[...] = array
        return array
    position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(position).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (position - lo).astype(np.float32)
    view = [1, 1, 1]
    view[axis] = n_out
    frac = frac.reshape(view)
    a = np.take(array, lo, axis=axis)
    b = np.take(array, hi, axis=axis)
    b -= a
    b *= frac
    return np.add(a, b, out=a if into is None else into)


def block_mean(array: np.ndarray, coarse) -> np.ndarray:
    """Average ``array`` onto a coarser grid (nearest fine voxels per coarse cell).

    Y and X are reduced first, in z-chunks (see ``CHUNK_PLANES``), then Z.
    """
    lateral = np.empty((array.shape[0], *coarse[1:]), np.float32)

    def reduce_chunk(z0: int) -> None:
        block = array[z0:z0 + CHUNK_PLANES]
        for axis in (1, 2):
            block = _reduce_axis(block, axis, coarse[axis])
        lateral[z0:z0 + CHUNK_PLANES] = block

    _over_chunks(reduce_chunk, array.shape[0])
    return _reduce_axis(lateral, 0, coarse[0]).astype(np.float32, copy=False)


def _reduce_axis(array: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    n_in = array.shape[axis]
    if n_in == n_out:
        return array
    edges = np.linspace(0, n_in, n_out + 1).round().astype(np.intp)
    out = np.add.reduceat(array, edges[:-1], axis=axis, dtype=np.float32)
    view = [1, 1, 1]
    view[axis] = n_out
    return out / np.diff(edges).reshape(view).astype(np.float32)
