"""How much each voxel of a tile counts when overlapping tiles are blended (``weighting=``).

One registry, :data:`WEIGHTINGS`, name → window builder. A builder takes the tile ``patch``
(ZYX) and the roof window's ``crop`` and returns either three 1D arrays (a separable window: the
sliding window then sums the weights per axis and never holds a weight volume) or one ZYX array
(e.g. RWTH-GE's roof). Other packages add windows through the entry point group
``fmc.weightings``. Every window is floored at :data:`WEIGHT_FLOOR` of its peak: the faces of a
volume are covered by one tile only and must keep a prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from fmc.core.named_choices import Registry

# RWTH-GE's Docker inference zeroed this many voxels (ZYX) at each face of its roof window.
RWTH_GE_ROOF_CROP = (5, 15, 15)
# Every voxel of a tile keeps at least this share of the peak weight (per axis for separable
# windows).
WEIGHT_FLOOR = 1e-3
# nnU-Net's rule: a Gaussian of sigma = tile / 8 per axis.
GAUSSIAN_SIGMA_SCALE = 1 / 8

WEIGHTINGS = Registry("tile weighting", "weighting", "conf/inference/default.yaml",
                      group="fmc.weightings")

Window = np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]


@WEIGHTINGS.register("gaussian")
def gaussian_window(patch: Sequence[int], crop: Sequence[int] = RWTH_GE_ROOF_CROP
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per axis a Gaussian of σ = size/8 (peak 1, floored): nnU-Net's importance map. ``crop``
    is not used."""
    return tuple(_gaussian_axis(int(size)) for size in patch)


@WEIGHTINGS.register("constant")
def constant_window(patch: Sequence[int], crop: Sequence[int] = RWTH_GE_ROOF_CROP
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ones: plain averaging of the overlapping tiles. ``crop`` is not used."""
    return tuple(np.ones(int(size), np.float32) for size in patch)


@WEIGHTINGS.register("roof")
def roof_window(patch: Sequence[int], crop: Sequence[int] = RWTH_GE_ROOF_CROP) -> np.ndarray:
    """RWTH-GE's "fading map": 0 on ``crop`` voxels at each face, rising linearly to 1 inside.

    Built as RWTH-GE built it (ones with the faces zeroed, zero-padded by one voxel, Euclidean
    distance to the nearest zero, unpadded, divided by the maximum), then floored at
    ``WEIGHT_FLOOR`` so that the volume's outer faces keep a prediction (RWTH-GE started its tiles
    outside the volume instead).
    """
    patch = tuple(int(p) for p in patch)
    crop = tuple(int(c) for c in crop)
    if len(crop) != 3 or any(c < 0 or 2 * c >= p for c, p in zip(crop, patch, strict=True)):
        raise ValueError(f"roof crop={list(crop)}: give 3 non-negative voxel counts, each below half "
                         f"the tile {list(patch)}")
    core = np.zeros(patch, np.float32)
    core[tuple(slice(c, p - c) for c, p in zip(crop, patch, strict=True))] = 1
    distance = ndimage.distance_transform_edt(np.pad(core, 1))[1:-1, 1:-1, 1:-1]
    return np.maximum(distance / distance.max(), WEIGHT_FLOOR).astype(np.float32)


def _gaussian_axis(size: int) -> np.ndarray:
    position = np.arange(size) - (size - 1) / 2
    sigma = max(size * GAUSSIAN_SIGMA_SCALE, 1e-6)
    weights = np.exp(-0.5 * (position / sigma) ** 2)
    return np.maximum(weights / weights.max(), WEIGHT_FLOOR).astype(np.float32)


def tile_window(weighting: str, patch: Sequence[int],
                crop: Sequence[int] = RWTH_GE_ROOF_CROP) -> Window:
    """The window ``weighting`` builds for a tile of ``patch``: three 1D float32 arrays
    (separable) or one ZYX float32 array.

    Raises
    ------
    FmcConfigError
        For a name that is not in :data:`WEIGHTINGS` (one line with the valid names).
    ValueError
        When the builder returns anything else, or refuses ``crop``.
    """
    patch = tuple(int(p) for p in patch)
    window = WEIGHTINGS.get(weighting)(patch, crop)
    if isinstance(window, (tuple, list)):
        window = tuple(np.asarray(w, np.float32) for w in window)
        if [w.shape for w in window] != [(size,) for size in patch]:
            raise ValueError(f"weighting={weighting}: a separable window needs one 1D array per "
                             f"axis of the tile {list(patch)}")
        return window
    window = np.asarray(window, np.float32)
    if window.shape != patch:
        raise ValueError(f"weighting={weighting}: its window has shape {window.shape}, not the "
                         f"tile's {patch}")
    return window


def outer_product(window: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The ZYX weights of a separable window."""
    return np.multiply.outer(np.multiply.outer(window[0], window[1]), window[2]).astype(np.float32)


def importance_map(patch: Sequence[int], weighting: str = "gaussian",
                   crop: Sequence[int] = RWTH_GE_ROOF_CROP) -> np.ndarray:
    """Per-voxel weight of a tile's prediction (peak 1), ZYX."""
    window = tile_window(weighting, patch, crop)
    return outer_product(window) if isinstance(window, tuple) else window
