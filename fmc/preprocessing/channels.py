"""The surface-distance input channel of one view, and the coarse grid the channels are computed on.

Pure functions on numpy arrays (no HDF5, no Hydra); spacing is ZYX in µm everywhere.

*Surface distance* (RWTH-GE's idea, done right): the signed Euclidean distance in µm to the
specimen's convex hull -- positive inside, 0 on the hull surface, negative outside. The specimen is
found on a coarse grid of about 1 µm voxels (anti-aliased by block averaging, :mod:`fmc.core.grids`):
Gaussian smoothing, threshold at the mean, opening, largest component, convex hull of its surface
points (:mod:`fmc.preprocessing.hull`). The hull is
filled row by row from its facet planes (each row of voxels crosses a convex body in one interval),
the signed distance is computed on the coarse grid with the true voxel spacing, and interpolated
back to full resolution linearly.

The other auxiliary channel, the light map, is in :mod:`fmc.preprocessing.light`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from fmc.core.grids import (
    block_mean,
    block_mean_streamed,
    coarse_coordinates_um,
    coarse_shape,
    resize_linear_planes,
)
from fmc.preprocessing.hull import fill_hull, specimen_hull, specimen_mask

log = logging.getLogger(__name__)

# The coarse grid's target voxel size: fine enough for a hull within a fraction of a µm of the
# full-resolution one, coarse enough that a study-1 volume (222×731×860) becomes 5 M nodes.
WORKING_SPACING_UM = 1.0
# Larger recordings (studies 2, 3, 5: 22-168 M nodes at 1 µm) get a coarser grid of at most this
# many nodes (study 5: ~2.8 µm): at 168 M nodes the distance transform alone took several GB
# (study-5 prediction peaked at 10.8 GB, 6.4 GB with the cap; docs/benchmarks.md).
MAX_WORKING_NODES = 8_000_000


class ChannelWarning(UserWarning):
    """A channel fell back to a documented default (empty or degenerate specimen)."""


def working_grid(shape: Sequence[int], spacing_zyx: Sequence[float],
                 working_spacing_um: float = WORKING_SPACING_UM,
                 max_nodes: int = MAX_WORKING_NODES) -> tuple[int, int, int]:
    """Shape of the coarse grid the channels are computed on.

    Its voxels are about ``working_spacing_um`` wide, and at least as wide as the coarsest
    native spacing (so the coarse grid is close to isotropic); every axis keeps at least 4 nodes.
    Grids above ``max_nodes`` get proportionally wider voxels: the hull, its filling and the
    Euclidean distance transform (whose feature transform takes 12 bytes a node) must stay far
    below the memory of the volume itself.
    """
    step = max(float(working_spacing_um), max(float(s) for s in spacing_zyx))
    coarse = coarse_shape(shape, spacing_zyx, step)
    nodes = float(np.prod(coarse, dtype=np.float64))
    if nodes > max_nodes:
        step *= (nodes / max_nodes) ** (1 / 3)
        coarse = coarse_shape(shape, spacing_zyx, step)
    return tuple(min(int(n), max(c, 4)) for n, c in zip(shape, coarse, strict=True))


# ----------------------------------------------------------------------------------------------
# Surface distance
# ----------------------------------------------------------------------------------------------
def signed_distance(inside: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Signed Euclidean distance (µm) to the boundary of ``inside``: + inside, − outside.

    Voxel centres next to the boundary are half a step from it, so the zero level lies halfway
    between the last inside and the first outside voxel (where linear interpolation puts it).
    """
    spacing = tuple(float(s) for s in spacing_zyx)
    if inside.all() or not inside.any():
        raise ValueError("signed distance needs both inside and outside voxels")
    # Inside, the nearest outside voxel is never beyond the inside's bounding box grown by one
    # voxel (that shell is all outside): the transform needs only that box.
    index = np.argwhere(inside)
    box = tuple(slice(max(int(lo) - 1, 0), int(hi) + 2)
                for lo, hi in zip(index.min(axis=0), index.max(axis=0), strict=True))
    to_outside = np.zeros(inside.shape)

    def inside_transform() -> None:
        to_outside[box] = ndimage.distance_transform_edt(inside[box], sampling=spacing)

    # The two transforms are independent and scipy releases the GIL: run them side by side.
    with ThreadPoolExecutor(max_workers=2) as pool:
        inside_done = pool.submit(inside_transform)
        to_inside = pool.submit(ndimage.distance_transform_edt, ~inside, sampling=spacing).result()
        inside_done.result()
    # The nearest voxel across the boundary is one step away along some axis; the boundary is
    # half of that step away. Use the finest step: the direction the boundary is resolved best.
    half_step = min(spacing) / 2.0
    distance = np.where(inside, to_outside - half_step, -(to_inside - half_step))
    return distance.astype(np.float32)


def surface_distance(volume: np.ndarray, spacing_zyx: Sequence[float],
                     working_spacing_um: float = WORKING_SPACING_UM,
                     return_hull: bool = False):
    """Signed distance (µm) of every voxel to the specimen's convex hull.

    Parameters
    ----------
    volume : numpy.ndarray
        One view, ZYX (any intensity scale).
    spacing_zyx : sequence of 3 floats
        Voxel size in µm.
    working_spacing_um : float
        Voxel size of the grid the hull and distance are computed on.
    return_hull : bool
        Also return the full-resolution hull mask (``distance > 0``).

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``volume``: positive inside the hull, 0 on its surface, negative
        outside. If no specimen is found (empty, constant or flat volume) a warning is issued and
        the distance to the volume's own border is returned instead (positive everywhere, 0 at
        the border): the network then sees "deep inside" at the centre, as for a specimen
        filling the field of view.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"surface_distance needs a 3D volume, got shape {volume.shape}")
    field = SurfaceDistanceField.from_volume(volume, spacing_zyx, working_spacing_um)
    distance = field.planes(0, volume.shape[0])
    if return_hull:
        return distance, distance > 0
    return distance


class SurfaceDistanceField:
    """The surface distance of one volume, held on its coarse grid and resampled on demand.

    :func:`surface_distance` is ``planes(0, depth)`` of this field; prediction asks for z-slabs
    only, so a 309×1920×1920 volume never holds its full-resolution distance map.

    Parameters
    ----------
    shape, spacing_zyx :
        The full-resolution volume's ZYX shape and voxel size (µm).
    coarse_distance : numpy.ndarray or None
        Signed distance on the coarse grid; None: no specimen was found and the distance to the
        volume border stands in (a :class:`ChannelWarning` was issued).
    """

    def __init__(self, shape: Sequence[int], spacing_zyx: Sequence[float],
                 coarse_distance: np.ndarray | None):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(s) for s in spacing_zyx)
        self.coarse_distance = coarse_distance

    @classmethod
    def from_volume(cls, volume, spacing_zyx: Sequence[float],
                    working_spacing_um: float = WORKING_SPACING_UM) -> SurfaceDistanceField:
        """Build the field from a volume in memory or one read in z-slabs (``volume[z0:z1]``)."""
        spacing = tuple(float(s) for s in spacing_zyx)
        grid = working_grid(volume.shape, spacing, working_spacing_um)
        coarse = block_mean(volume, grid) if isinstance(volume, np.ndarray) \
            else block_mean_streamed(volume, grid)
        return cls.from_coarse(coarse, volume.shape, spacing)

    @classmethod
    def from_coarse(cls, coarse: np.ndarray, shape: Sequence[int],
                    spacing_zyx: Sequence[float]) -> SurfaceDistanceField:
        """Build the field from the block-averaged volume on its working grid."""
        coordinates = coarse_coordinates_um(shape, coarse.shape, spacing_zyx)
        coarse_spacing = tuple(float(c[1] - c[0]) for c in coordinates)
        convex = specimen_hull(specimen_mask(coarse), coordinates)
        hull = fill_hull(convex, coordinates) if convex is not None else None
        if hull is None or hull.all() or not hull.any():
            import warnings

            reason = "no specimen found" if hull is None or not hull.any() else "hull fills the volume"
            warnings.warn(f"surface distance: {reason}; using the distance to the volume border "
                          "instead", ChannelWarning, stacklevel=3)
            return cls(shape, spacing_zyx, None)
        return cls(shape, spacing_zyx, signed_distance(hull, coarse_spacing))

    def planes(self, z0: int, z1: int) -> np.ndarray:
        """The full-resolution distance of planes ``z0:z1`` (float32, µm)."""
        if self.coarse_distance is None:
            return border_distance(self.shape, self.spacing, (z0, z1))
        return resize_linear_planes(self.coarse_distance, self.shape, z0, z1)


def border_distance(shape: Sequence[int], spacing_zyx: Sequence[float],
                    planes: tuple[int, int] | None = None) -> np.ndarray:
    """Distance (µm) of each voxel centre to the nearest face of the volume (float32).

    ``planes=(z0, z1)`` returns only those z-planes.
    """
    z0, z1 = planes if planes is not None else (0, int(shape[0]))
    result = None
    for axis, (length, step) in enumerate(zip(shape, spacing_zyx, strict=True)):
        index = np.arange(length, dtype=np.float32)
        if axis == 0:
            index = index[z0:z1]
        along = (np.minimum(index, length - 1 - index) + 0.5) * float(step)
        view_shape = [1, 1, 1]
        view_shape[axis] = len(index)
        along = along.reshape(view_shape)
        result = along if result is None else np.minimum(result, along)
    return np.broadcast_to(result, (z1 - z0, *tuple(shape)[1:])).astype(np.float32)
