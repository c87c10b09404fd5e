"""Sliding-window prediction over whole volumes, without seams (pure numpy/torch, no Lightning).

DESIGN.md decision 2: tiles overlap by half (by default), their starts are spread evenly with the
last tile flush to the volume's edge, each tile's prediction is weighted by a Gaussian importance
map (σ = patch/8 per axis, nnU-Net's rule), accumulated in float32 and divided by the summed
weights. Where every tile sees the same values (a constant volume, an identity network) the
weights cancel exactly, so no chessboard can appear.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

WEIGHTINGS = ("gaussian", "constant")


def tile_starts(length: int, patch: int, overlap: float = 0.5) -> list[int]:
    """Evenly spread tile starts along one axis; the last tile ends at the edge.

    ``overlap`` is the fraction of the patch shared by neighbours at most (0.5: step ≤ patch/2).
    An axis shorter than the patch gets one tile (the volume is padded to the patch).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap={overlap}: give a fraction in [0, 1)")
    if length <= patch:
        return [0]
    step = max(1.0, patch * (1 - overlap))
    count = math.ceil((length - patch) / step) + 1
    return sorted({int(round(s)) for s in np.linspace(0, length - patch, count)})


def importance_map(patch: Sequence[int], weighting: str = "gaussian",
                   sigma_scale: float = 1 / 8) -> np.ndarray:
    """Per-voxel weight of a tile's prediction: a Gaussian centred on the tile (or ones).

    Normalised to a maximum of 1; the smallest weight is raised to 1e-3 of it so that every voxel
    of every tile counts a little (no division by zero at volume corners covered by one tile).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r}: choose one of {', '.join(WEIGHTINGS)}")
    if weighting == "constant":
        return np.ones(tuple(patch), np.float32)
    weights = np.ones((), np.float64)
    for size in patch:
        position = np.arange(size) - (size - 1) / 2
        sigma = max(size * sigma_scale, 1e-6)
        weights = np.multiply.outer(weights, np.exp(-0.5 * (position / sigma) ** 2))
    weights = weights / weights.max()
    return np.maximum(weights, 1e-3).astype(np.float32)


def _tiles(shape: Sequence[int], patch: Sequence[int], overlap: float) -> Iterator[tuple]:
    starts = [tile_starts(n, p, overlap) for n, p in zip(shape, patch, strict=True)]
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                yield (z, y, x)


def sliding_window_predict(channels: np.ndarray, predict: Callable[[torch.Tensor], torch.Tensor],
                           patch: Sequence[int], overlap: float = 0.5, batch_size: int = 1,
                           weighting: str = "gaussian", progress: bool = False,
                           device: str | torch.device = "cpu") -> np.ndarray:
    """Predict a whole volume tile by tile and blend the tiles.

    Parameters
    ----------
    channels : numpy.ndarray
        Network input, ``(C, Z, Y, X)`` float32. Axes shorter than the patch are reflect-padded
        (edge-padded when too short to reflect) and cropped back.
    predict : callable
        Maps a ``(N, C, *patch)`` tensor to ``(N, 1, *patch)``; called under ``inference_mode``.
    patch : sequence of 3 ints
        Tile size (ZYX), e.g. the training patch stored in the checkpoint.
    overlap, weighting :
        See :func:`tile_starts` and :func:`importance_map`.
    batch_size : int
        Tiles per call of ``predict``.
    progress : bool
        Show a progress bar over tiles (stderr).

    Returns
    -------
    numpy.ndarray
        ``(Z, Y, X)`` float32 prediction.
    """
    if channels.ndim != 4:
        raise ValueError(f"channels must be (C, Z, Y, X), got shape {channels.shape}")
    patch = tuple(int(p) for p in patch)
    shape = channels.shape[1:]
    padding = [(0, max(0, p - n)) for n, p in zip(shape, patch, strict=True)]
    if any(after for _, after in padding):
        mode = "reflect" if all(n > after for n, (_, after) in zip(shape, padding, strict=True)) \
            else "edge"
        channels = np.pad(channels, [(0, 0), *padding], mode=mode)
    padded_shape = channels.shape[1:]
    weights = importance_map(patch, weighting)
    output = np.zeros(padded_shape, np.float32)
    total = np.zeros(padded_shape, np.float32)
    tiles = list(_tiles(padded_shape, patch, overlap))
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=len(tiles), desc="tiles", unit="tile", file=sys.stderr, leave=False)
    weight_tensor = torch.from_numpy(weights)
    with torch.inference_mode():
        for first in range(0, len(tiles), batch_size):
            batch = tiles[first:first + batch_size]
            windows = [tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
                       for start in batch]
            inputs = torch.from_numpy(np.stack([channels[(slice(None), *w)] for w in windows]))
            predictions = predict(inputs.to(device)).float().cpu()[:, 0]
            for window, prediction in zip(windows, predictions, strict=True):
                output[window] += (prediction * weight_tensor).numpy()
                total[window] += weights
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    output /= total
    return output[tuple(slice(0, n) for n in shape)]
