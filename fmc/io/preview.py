"""PNG previews of a pair: orthogonal max projections (XY, XZ, YZ) of the view and the fused.

No plotting library: panels are composed with numpy, scaled and written by :mod:`fmc.io.png`.
XZ and YZ panels are stretched by the Z/XY spacing ratio so that the specimen keeps its true
proportions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from fmc.io.png import max_projections, percentile_window, to_uint8, write_png
from fmc.io.tiff import read_volume

# Each panel's intensity window (percentiles of its own values).
PREVIEW_PERCENTILES = (1, 99.8)


def projections(volume: np.ndarray, spacing_zyx, mode: str = "max") -> np.ndarray:
    """One float panel: XY view with XZ below it and YZ on its right.

    ``mode`` 'max' gives maximum projections, 'slice' the three central planes (clearer for
    membranes, whose projections overlap). Z is stretched by ``spacing_z / spacing_xy``
    (linear interpolation) for correct aspect.
    """
    stretch = spacing_zyx[0] / spacing_zyx[2]
    if mode == "max":
        projected = max_projections(volume)
        xy, xz, yz = (p.astype(np.float32) for p in (projected.xy, projected.xz, projected.yz))
    else:
        z, y, x = (n // 2 for n in volume.shape)
        xy, xz, yz = (volume[z].astype(np.float32), volume[:, y].astype(np.float32),
                      volume[:, :, x].astype(np.float32))
    yz = yz.T  # (Y, Z): Z runs to the right of the XY panel
    xz = ndimage.zoom(xz, (stretch, 1), order=1)
    yz = ndimage.zoom(yz, (1, stretch), order=1)
    gap = 4
    panel = np.full((xy.shape[0] + gap + xz.shape[0], xy.shape[1] + gap + yz.shape[1]), np.nan,
                    dtype=np.float32)
    panel[:xy.shape[0], :xy.shape[1]] = xy
    panel[xy.shape[0] + gap:, :xz.shape[1]] = xz
    panel[:yz.shape[0], xy.shape[1] + gap:] = yz
    return panel


def _to_uint8(panel: np.ndarray) -> np.ndarray:
    """Scale to uint8 on the panel's own percentiles; gaps (NaN) become white."""
    return to_uint8(panel, *percentile_window(panel, PREVIEW_PERCENTILES))


def save_pair_png(angle_path, fused_path, png_path, titles: bool = True) -> Path:
    """Write a PNG: the view on the left, the fused volume on the right; max projections on
    the top row, central planes below (each block: XY, XZ under it, YZ to its right).

    Each side is scaled on its own percentiles (as the challenge metric normalises each volume).
    """
    view, meta = read_volume(angle_path)
    fused, _ = read_volume(fused_path)
    spacing = meta.spacing_zyx or (1.0, 1.0, 1.0)
    rows = []
    for mode in ("max", "slice"):
        left = _to_uint8(projections(view, spacing, mode))
        right = _to_uint8(projections(fused, spacing, mode))
        separator = np.full((left.shape[0], 8), 255, dtype=np.uint8)
        rows.append(np.concatenate([left, separator, right], axis=1))
        rows.append(np.full((8, rows[-1].shape[1]), 255, dtype=np.uint8))
    image = np.concatenate(rows[:-1], axis=0)
    # Upscale small demo volumes so the figure is readable.
    factor = max(1, int(np.ceil(480 / image.shape[1])))
    image = np.kron(image, np.ones((factor, factor), dtype=np.uint8))
    return write_png(png_path, image)
