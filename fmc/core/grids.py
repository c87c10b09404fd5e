"""Coarse grids for smooth fields: block averaging down, linear interpolation back up.

Big volumes (a study-1 recording has 140 M voxels) make per-voxel work expensive; fields that vary
over micrometres (distances, haze, envelopes) are computed on a grid of a few million nodes and
interpolated back. The node/voxel alignment is shared by all three functions: coarse node j sits at
the centre of the fine voxels it averages.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fmc.core.threads import usable_cores


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
    return resize_linear_planes(array, shape, 0, int(shape[0]))


def resize_linear_planes(array: np.ndarray, shape, z0: int, z1: int) -> np.ndarray:
    """Planes ``z0:z1`` of ``resize_linear(array, shape)``, computed without the other planes.

    Every plane is interpolated from the same two coarse planes with the same weights as in the
    whole-volume call, so slabs assembled side by side equal the whole result exactly (used to
    build network inputs slab by slab for volumes that do not fit in memory).
    """
    array = array.astype(np.float32, copy=False)
    out = _resize_axis(array, 0, shape[0], planes=(z0, z1))
    if out.shape[1:] == tuple(shape[1:]):
        return out if out is not array else out.copy()
    result = np.empty((z1 - z0, *shape[1:]), np.float32)

    def resize_chunk(c0: int) -> None:
        block = _resize_axis(out[c0:c0 + CHUNK_PLANES], 1, shape[1])
        _resize_axis(block, 2, shape[2], into=result[c0:c0 + CHUNK_PLANES])

    _over_chunks(resize_chunk, z1 - z0)
    return result


def _over_chunks(work, depth: int) -> None:
    """Run ``work(z0)`` for every chunk of planes, on all cores (numpy releases the GIL)."""
    starts = range(0, depth, CHUNK_PLANES)
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        list(pool.map(work, starts))  # list(): re-raise the first error


def _resize_axis(array: np.ndarray, axis: int, n_out: int, into: np.ndarray | None = None,
                 planes: tuple[int, int] | None = None) -> np.ndarray:
    n_in = array.shape[axis]
    first, last = planes if planes is not None else (0, n_out)
    if n_in == n_out:
        part = np.take(array, np.arange(first, last), axis=axis) if planes is not None else array
        if into is not None:
            into[...] = part
        return part
    position = np.clip((np.arange(first, last) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(position).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (position - lo).astype(np.float32)
    view = [1, 1, 1]
    view[axis] = last - first
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
            block = reduce_axis(block, axis, coarse[axis])
        lateral[z0:z0 + CHUNK_PLANES] = block

    _over_chunks(reduce_chunk, array.shape[0])
    return reduce_axis(lateral, 0, coarse[0]).astype(np.float32, copy=False)


def reduce_axis(array: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Average ``array`` along ``axis`` onto ``n_out`` cells (the nearest fine voxels each)."""
    n_in = array.shape[axis]
    if n_in == n_out:
        return array
    edges = np.linspace(0, n_in, n_out + 1).round().astype(np.intp)
    out = np.add.reduceat(array, edges[:-1], axis=axis, dtype=np.float32)
    view = [1, 1, 1]
    view[axis] = n_out
    return out / np.diff(edges).reshape(view).astype(np.float32)


def block_mean_streamed(volume, coarse, slab: int = 32) -> np.ndarray:
    """:func:`block_mean` of a volume read in z-slabs (``volume[z0:z1]``, e.g. a TiffVolume).

    Only one slab of full-resolution planes is in memory at a time; each slab is reduced
    laterally as in :func:`block_mean`, and the Z reduction runs on the small lateral result.
    """
    depth = int(volume.shape[0])
    lateral = np.empty((depth, *coarse[1:]), np.float32)
    for z0 in range(0, depth, slab):
        block = np.asarray(volume[z0:min(z0 + slab, depth)])
        reduced = np.empty((block.shape[0], *coarse[1:]), np.float32)

        def reduce_chunk(c0: int, block=block, reduced=reduced) -> None:
            part = block[c0:c0 + CHUNK_PLANES]
            for axis in (1, 2):
                part = reduce_axis(part, axis, coarse[axis])
            reduced[c0:c0 + CHUNK_PLANES] = part

        _over_chunks(reduce_chunk, block.shape[0])
        lateral[z0:z0 + block.shape[0]] = reduced
    return reduce_axis(lateral, 0, coarse[0]).astype(np.float32, copy=False)
