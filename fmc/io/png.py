"""Volumes as PNG images: intensity windows to uint8, maximum projections, atomic PNG files.

The one home of what the pair previews (:mod:`fmc.io.preview`), the training panels
(:mod:`fmc.models.panels`) and the report montage (:mod:`fmc.evaluation.montage`) share; each
still picks its own window (its percentiles, or [0, 1] for normalised volumes). No plotting
library: images are numpy arrays, written with Pillow (installed with scikit-image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmc.core.files import atomic_path

# z-planes read at a time by max_projections: memory grows with a slab, not the volume.
PROJECTION_SLAB = 16


def percentile_window(values: np.ndarray, percentiles: Sequence[float]) -> tuple[float, float]:
    """The (low, high) ``percentiles`` of the finite ``values`` ((0, 0) when none is finite).

    The bounds stay numpy float64 scalars, so :func:`to_uint8` computes in float64 as the
    previews always did.
    """
    finite = np.asarray(values)[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(finite, percentiles)
    return low, high


def to_uint8(values: np.ndarray, low: float, high: float, non_finite: int = 255) -> np.ndarray:
    """``values`` mapped linearly from [``low``, ``high``] onto 0-255, clipped, as uint8.

    Parameters
    ----------
    values : ndarray
    low, high : float
        The window: ``low`` and below become 0, ``high`` and above 255. A flat window
        (``high <= low``) shows what exceeds it as 255 and the rest as 0.
    non_finite : int
        The value of NaN and infinite voxels (255: gaps between panels are drawn white).

    Returns
    -------
    ndarray of uint8, the shape of ``values``
    """
    values = np.asarray(values)
    if high > low:
        scaled = (values - low) / (high - low)
    else:  # sparse images can have equal percentiles: keep their bright voxels visible
        scaled = (values > low).astype(np.float32)
    scaled = np.clip(scaled, 0, 1) * 255
    scaled[~np.isfinite(values)] = non_finite  # before the cast: NaN has no uint8 value
    return scaled.astype(np.uint8)


@dataclass(frozen=True)
class Projections:
    """Maximum projections of a ZYX volume.

    Attributes
    ----------
    xy : ndarray, shape (Y, X)
    xz : ndarray, shape (Z, X)
    yz : ndarray, shape (Z, Y)
    """

    xy: np.ndarray
    xz: np.ndarray
    yz: np.ndarray


class ProjectionAccumulator:
    """Maximum projections of a volume given as consecutive z-slabs (see :meth:`add`)."""

    def __init__(self) -> None:
        self._xy: np.ndarray | None = None
        self._xz: list[np.ndarray] = []
        self._yz: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        """Take the next z-slab (ZYX) of the volume."""
        plane = block.max(axis=0)
        self._xy = plane if self._xy is None else np.maximum(self._xy, plane)
        self._xz.append(block.max(axis=1))
        self._yz.append(block.max(axis=2))

    def result(self) -> Projections:
        """The projections of every slab added so far (at least one)."""
        if self._xy is None:
            raise ValueError("no slab added")
        return Projections(self._xy, np.concatenate(self._xz, axis=0),
                           np.concatenate(self._yz, axis=0))


def max_projections(volume, slab: int = PROJECTION_SLAB) -> Projections:
    """XY, XZ and YZ maximum projections of a ZYX ``volume`` (an array, or anything sliced along
    z into arrays, such as :class:`fmc.io.tiff.TiffVolume`), read ``slab`` planes at a time."""
    accumulator = ProjectionAccumulator()
    depth = volume.shape[0]
    for z0 in range(0, depth, slab):
        accumulator.add(np.asarray(volume[z0:min(z0 + slab, depth)]))
    return accumulator.result()


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 image (grey ``(H, W)`` or RGB ``(H, W, 3)``) as a PNG, atomically.

    Parent folders are created; the file appears under its name only once complete.
    """
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(temporary, format="PNG")
    return Path(path)
