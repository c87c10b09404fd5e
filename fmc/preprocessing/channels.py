"""Auxiliary input channels computed from one view: surface distance and light map.

Pure functions on numpy arrays (no HDF5, no Hydra); spacing is ZYX in µm everywhere.

*Surface distance* (the seed's idea, done right): the signed Euclidean distance in µm to the
specimen's convex hull -- positive inside, 0 on the hull surface, negative outside. The specimen is
found on a coarse grid of about 1 µm voxels (anti-aliased by block averaging, :mod:`fmc.core.grids`):
Gaussian smoothing, threshold at the mean, opening, largest component, convex hull of its surface
points. The hull is
filled row by row from its facet planes (each row of voxels crosses a convex body in one interval),
the signed distance is computed on the coarse grid with the true voxel spacing, and interpolated
back to full resolution linearly.

*Light map*: the distance in µm from the border the light comes from, along the study's
illuminated axes. The side is estimated as in the seed: the centroid of the brightest voxels (above
the 90th percentile) lies nearer the lit side than the centroid of the voxels above the median.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from fmc.core.grids import (
    block_mean,
    block_mean_streamed,
    coarse_coordinates_um,
    coarse_shape,
    resize_linear_planes,
)

log = logging.getLogger(__name__)

# The coarse grid's target voxel size: fine enough for a hull within a fraction of a µm of the
# full-resolution one, coarse enough that a study-1 volume (222×731×860) becomes 5 M nodes.
WORKING_SPACING_UM = 1.0
# Larger recordings (studies 2, 3, 5: 22-168 M nodes at 1 µm) get a coarser grid of at most this
# many nodes (study 5: ~2.8 µm): at 168 M nodes the distance transform alone took several GB
# (study-5 prediction peaked at 10.8 GB, 6.4 GB with the cap; docs/benchmarks.md).
MAX_WORKING_NODES = 8_000_000
# A component holding this share of the thresholded voxels is "the specimen"; otherwise every
# component of at least COMPARABLE_SHARE of the largest one's size is kept (see specimen_mask).
FRAGMENTED_SHARE = 0.5
COMPARABLE_SHARE = 0.05


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
# Specimen mask and convex hull
# ----------------------------------------------------------------------------------------------
def specimen_mask(volume: np.ndarray, sigma: float = 0.5) -> np.ndarray:
    """The specimen as the largest connected bright region (the seed's recipe).

    Gaussian smoothing (``sigma`` voxels), threshold at the mean, binary opening, largest
    26-connected component -- or, when no component holds half of the mask (separate nuclei),
    every component at least 5 % the size of the largest. Returns an empty mask for a constant
    or empty volume.

    The seed smoothed with σ = 1 voxel of a strided (not averaged) grid. Here the grid is
    already block-averaged, which suppresses the noise; a wider blur would only push the mean
    threshold outwards (σ = 1 moved a sphere's hull ~2 µm out at 2 µm voxels, σ = 0.5 ~0.9 µm).
    """
    smoothed = ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), sigma,
                                       mode="nearest")
    threshold = float(smoothed.mean())
    mask = smoothed > threshold
    if not mask.any():
        return mask
    mask = ndimage.binary_opening(mask)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    if sizes[largest] >= FRAGMENTED_SHARE * sizes.sum():
        return labels == largest
    # No dominant component: a specimen of separate bright objects (nuclei without a
    # cytoplasmic signal). The largest alone would give the hull of one cluster; keep every
    # object of comparable size instead (small specks were removed by the opening).
    return np.isin(labels, np.flatnonzero(sizes >= COMPARABLE_SHARE * sizes[largest]))


def specimen_hull(mask: np.ndarray, coordinates_um: Sequence[np.ndarray]) -> ConvexHull | None:
    """Convex hull (in µm) of a mask's surface voxels; None if the mask is empty or flat.

    Only surface voxels are passed to Qhull: the hull of a set is that of its boundary.
    ``hull.equations`` rows ``(nz, ny, nx, offset)`` hold unit outward normals: a point ``p`` is
    inside when ``n · p + offset <= 0`` for every row.
    """
    if not mask.any():
        return None
    surface = mask & ~ndimage.binary_erosion(mask)
    index = np.nonzero(surface)
    points = np.stack([coordinates_um[axis][index[axis]] for axis in range(3)], axis=1)
    if len(points) < 4:
        return None
    try:
        return ConvexHull(points)
    except (QhullError, ValueError):
        return None


def fill_hull(hull: ConvexHull, coordinates_um: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean mask of a convex hull on the grid with these axis coordinates (µm).

    Exact and fast: each z-plane cuts the hull in a convex polygon (the 2D hull of where the
    hull's edges cross the plane), and each row of that plane crosses the polygon in one
    interval whose ends follow from the polygon's sides. The cost is planes × rows × sides, not
    voxels × facets (the seed tested every voxel against a Delaunay triangulation).
    """
    z, y, x = (np.asarray(c, dtype=np.float64) for c in coordinates_um)
    inside = np.zeros((len(z), len(y), len(x)), dtype=bool)
    points = hull.points
    pairs = np.concatenate([hull.simplices[:, [0, 1]], hull.simplices[:, [1, 2]],
                            hull.simplices[:, [0, 2]]])
    edges = np.unique(np.sort(pairs, axis=1), axis=0)
    start, end = points[edges[:, 0]], points[edges[:, 1]]
    z_low = np.minimum(start[:, 0], end[:, 0])
    z_high = np.maximum(start[:, 0], end[:, 0])
    for plane, z0 in enumerate(z):
        crossing = (z_low <= z0) & (z_high >= z0)
        if not crossing.any():
            continue
        a, b = start[crossing], end[crossing]
        height = b[:, 0] - a[:, 0]
        flat = height == 0  # an edge lying in the plane: both its ends are on the section
        t = np.where(flat, 0.0, (z0 - a[:, 0]) / np.where(flat, 1.0, height))
        section = np.concatenate([a[:, 1:] + t[:, None] * (b[:, 1:] - a[:, 1:]),
                                  b[flat, 1:]])
        inside[plane] = _fill_polygon_rows(section, y, x)
    return inside


def _fill_polygon_rows(section: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Rows × columns mask of the convex polygon spanned by ``section`` (YX points, µm)."""
    try:
        polygon = ConvexHull(section)
    except (QhullError, ValueError):
        return np.zeros((len(y), len(x)), bool)  # a point or a segment: no area in this plane
    normal_y, normal_x, offset = polygon.equations.T
    rest = y[:, None] * normal_y + offset  # (rows, sides)
    tolerance = 1e-9
    steep = np.abs(normal_x) > 1e-12
    bound = -rest[:, steep] / normal_x[steep]
    positive = normal_x[steep] > 0
    upper = np.min(np.where(positive, bound, np.inf), axis=1, initial=np.inf)
    lower = np.max(np.where(~positive, bound, -np.inf), axis=1, initial=-np.inf)
    excluded = np.any(rest[:, ~steep] > tolerance, axis=1)  # sides parallel to X
    rows = (x[None, :] >= lower[:, None] - tolerance) & (x[None, :] <= upper[:, None] + tolerance)
    rows &= ~excluded[:, None]
    return rows


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


# ----------------------------------------------------------------------------------------------
# Light map
# ----------------------------------------------------------------------------------------------
def light_direction(volume: np.ndarray, low_percentile: float = 50.0,
                    high_percentile: float = 90.0) -> np.ndarray:
    """Unit vector (ZYX, voxel units) from the median-bright centroid to the brightest centroid.

    The brightest voxels crowd the side the light enters from, so the vector points towards it.
    Returns zeros for a volume without a contrast.
    """
    volume = np.asarray(volume, dtype=np.float32)
    low, high = np.percentile(volume, (low_percentile, high_percentile))
    centroids = []
    for threshold in (low, high):
        index = np.nonzero(volume > threshold)
        if len(index[0]) == 0:
            return np.zeros(3)
        centroids.append(np.array([i.mean() for i in index]))
    direction = centroids[1] - centroids[0]
    norm = float(np.linalg.norm(direction))
    return direction / norm if norm > 0 else np.zeros(3)


def light_map(volume: np.ndarray, spacing_zyx: Sequence[float], axes: Sequence[int] | None,
              working_spacing_um: float = WORKING_SPACING_UM) -> tuple[np.ndarray, dict]:
    """Distance (µm) from the lit border along the illuminated ``axes`` (nearest lit face).

    Parameters
    ----------
    volume : numpy.ndarray
        One view, ZYX.
    spacing_zyx : sequence of 3 floats
        Voxel size in µm.
    axes : sequence of int or None
        Illuminated axes (0 = Z, 1 = Y, 2 = X), e.g. the study's degradation axes. None or empty
        (unknown study): the axis along which the brightness shifts most is used.
    working_spacing_um : float
        The direction is estimated on a block-averaged copy of about this voxel size.

    Returns
    -------
    light : numpy.ndarray
        float32 ZYX map: 0 on the first plane of the lit side(s), growing inwards in µm.
    info : dict
        ``direction`` (unit ZYX vector) and ``lit_sides``: for each axis used, 'start' or 'end'.
    """
    volume = np.asarray(volume)
    field = LightField.from_volume(volume, spacing_zyx, axes, working_spacing_um)
    return field.planes(0, volume.shape[0]), field.info


class LightField:
    """The light map of one volume: its lit sides, and the depth map built plane range by range.

    ``light_map(volume, ...)[0]`` equals ``planes(0, depth)``; prediction asks for z-slabs only.
    """

    def __init__(self, shape: Sequence[int], spacing_zyx: Sequence[float],
                 lit_at_start: dict[int, bool], direction: Sequence[float]):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(s) for s in spacing_zyx)
        self.lit_at_start = dict(lit_at_start)
        self.info = {"direction": [float(d) for d in direction],
                     "lit_sides": {"ZYX"[a]: "start" if first else "end"
                                   for a, first in self.lit_at_start.items()}}

    @classmethod
    def from_volume(cls, volume, spacing_zyx: Sequence[float], axes: Sequence[int] | None,
                    working_spacing_um: float = WORKING_SPACING_UM) -> LightField:
        """Estimate the lit sides from a volume in memory or read in z-slabs."""
        spacing = tuple(float(s) for s in spacing_zyx)
        grid = working_grid(volume.shape, spacing, working_spacing_um)
        coarse = block_mean(volume, grid) if isinstance(volume, np.ndarray) \
            else block_mean_streamed(volume, grid)
        direction = light_direction(coarse)
        if not axes:
            # Compare shifts in µm: a voxel step differs between axes.
            physical = direction * np.asarray(spacing) * np.asarray(volume.shape) / np.asarray(grid)
            axes = [int(np.argmax(np.abs(physical)))]
        # Brightest voxels at low indices: the light comes from there.
        return cls(volume.shape, spacing, {int(a): bool(direction[a] <= 0) for a in axes},
                   direction)

    def planes(self, z0: int, z1: int) -> np.ndarray:
        """Depth from the lit side(s), planes ``z0:z1`` (float32, µm)."""
        result = None
        for axis, lit_at_start in self.lit_at_start.items():
            length, step = self.shape[axis], self.spacing[axis]
            index = np.arange(length, dtype=np.float32)
            depth = (index if lit_at_start else (length - 1 - index)) * np.float32(step)
            if axis == 0:
                depth = depth[z0:z1]
            view_shape = [1, 1, 1]
            view_shape[axis] = len(depth)
            depth = depth.reshape(view_shape)
            result = depth if result is None else np.minimum(result, depth)
        return np.broadcast_to(result, (z1 - z0, *self.shape[1:])).astype(np.float32)
