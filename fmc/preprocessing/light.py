"""The light-map input channel: depth in µm from the side the light comes from.

*Light map*: the distance in µm from the border the light comes from, along the study's
illuminated axes. The side is estimated as in RWTH-GE: the centroid of the brightest voxels (above
the 90th percentile) lies nearer the lit side than the centroid of the voxels above the median.
Pure functions on numpy arrays; spacing is ZYX in µm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fmc.core.grids import block_mean, block_mean_streamed
from fmc.preprocessing.channels import WORKING_SPACING_UM, working_grid


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
