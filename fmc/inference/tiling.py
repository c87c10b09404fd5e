"""Sliding-window prediction over whole volumes, without seams (pure numpy/torch, no Lightning).

docs/design.md decision 2: tiles overlap by half (by default), their starts are spread evenly with the
last tile flush to the volume's edge, each tile's prediction is weighted by a Gaussian importance
map (σ = patch/8 per axis, nnU-Net's rule), accumulated in float32 and divided by the summed
weights. Where every tile sees the same values (a constant volume, an identity network) the
weights cancel exactly, so no chessboard can appear.

Memory grows with the tile, not with the volume: tiles are visited row of z-starts by row, the
input is asked for one slab of ``patch_z`` planes at a time (:class:`SlabSource`), and the
accumulator holds ``patch_z`` planes; planes that no later tile touches are divided by their
weights and handed out (:func:`iter_predicted_slabs`) to be written, so a 309×1920×1920 volume
never has a full-size array in memory. Separable windows (Gaussian, constant) need no weight
accumulator: the summed weights are the outer product of three 1D sums.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from fmc.inference.precision import OutOfMemoryHalving
from fmc.inference.tile_weights import RWTH_GE_ROOF_CROP, outer_product, tile_window


class SlabSource(Protocol):
    """Network input readable in z-slabs: ``slab(z0, z1)`` → ``(C, z1 - z0, Y, X)`` float32."""

    shape: tuple[int, int, int]

    def slab(self, z0: int, z1: int) -> np.ndarray: ...


class ArraySource:
    """A :class:`SlabSource` over a ``(C, Z, Y, X)`` array in memory."""

    def __init__(self, channels: np.ndarray):
        if channels.ndim != 4:
            raise ValueError(f"channels must be (C, Z, Y, X), got shape {channels.shape}")
        self.channels = channels
        self.shape = tuple(int(n) for n in channels.shape[1:])

    def slab(self, z0: int, z1: int) -> np.ndarray:
        return self.channels[:, z0:z1]


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


def tile_count(shape: Sequence[int], patch: Sequence[int], overlap: float = 0.5) -> int:
    """Number of tiles :func:`iter_predicted_slabs` runs over a volume of ``shape``."""
    return math.prod(len(tile_starts(max(n, p), p, overlap)) for n, p in zip(shape, patch, strict=True))


# ----------------------------------------------------------------------------------------------
# Test-time augmentation
# ----------------------------------------------------------------------------------------------
AXIS_INDEX = {"z": 0, "y": 1, "x": 2}


def flip_combinations(axes: Sequence[str | int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial ``axes`` ('z', 'y', 'x' or 0-2), the empty one first."""
    indices = []
    for axis in axes:
        index = AXIS_INDEX.get(str(axis).lower(), axis)
        if index not in (0, 1, 2):
            raise ValueError(f"tta axis {axis!r}: use z, y or x")
        if index not in indices:
            indices.append(int(index))
    return [combo for r in range(len(indices) + 1) for combo in itertools.combinations(indices, r)]


def with_flips(predict: Callable[[torch.Tensor], torch.Tensor], flips: Sequence[tuple[int, ...]]
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``predict`` averaged over flipped copies of its input, each flipped back (flip TTA)."""
    flips = list(flips) or [()]
    if flips == [()]:
        return predict

    def averaged(inputs: torch.Tensor) -> torch.Tensor:
        total = None
        for combo in flips:
            dims = [axis + 2 for axis in combo]  # (N, C, Z, Y, X)
            flipped = torch.flip(inputs, dims) if dims else inputs
            output = predict(flipped).float()
            output = torch.flip(output, dims) if dims else output
            total = output if total is None else total + output
        return total / len(flips)

    return averaged


# ----------------------------------------------------------------------------------------------
# The sliding window
# ----------------------------------------------------------------------------------------------
def _pad_to(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Pad the trailing three axes of ``array`` up to ``shape`` (reflect, or edge when too short)."""
    spatial = array.shape[-3:]
    padding = [(0, max(0, int(p) - n)) for n, p in zip(spatial, shape, strict=True)]
    if not any(after for _, after in padding):
        return array
    mode = "reflect" if all(n > after for n, (_, after) in zip(spatial, padding, strict=True)) \
        else "edge"
    return np.pad(array, [(0, 0)] * (array.ndim - 3) + padding, mode=mode)


class _Weights:
    """Summed tile weights: three 1D sums for separable windows, else a rolling accumulator."""

    def __init__(self, weighting: str, patch: tuple[int, int, int], starts: list[list[int]],
                 padded: tuple[int, int, int], crop: Sequence[int]):
        window = tile_window(weighting, patch, crop)
        self.separable = isinstance(window, tuple)
        self.tile = outer_product(window) if self.separable else window
        self.tile_tensor = torch.from_numpy(self.tile)
        self.sums = []
        if self.separable:
            for axis, size in enumerate(patch):
                total = np.zeros(padded[axis], np.float64)
                for start in starts[axis]:
                    total[start:start + size] += window[axis]
                self.sums.append(total.astype(np.float32))
            self.rolling = None
        else:
            self.rolling = np.zeros((patch[0], padded[1], padded[2]), np.float32)

    def add(self, window: tuple[slice, slice, slice]) -> None:
        if self.rolling is not None:
            self.rolling[window] += self.tile

    def divide(self, planes: np.ndarray, z0: int, offset: int) -> np.ndarray:
        """Divide accumulated planes (absolute ``z0`` on) by their summed weights, in place.

        Separable sums need one Y×X plane of weights at a time, never a weight volume.
        """
        z1 = z0 + planes.shape[0]
        if self.separable:
            lateral = np.multiply.outer(self.sums[1], self.sums[2])
            for index, z_sum in enumerate(self.sums[0][z0:z1]):
                planes[index] /= lateral * z_sum
        else:
            planes /= self.rolling[z0 - offset:z1 - offset]
        return planes

    def shift(self, planes: int) -> None:
        if self.rolling is not None:
            _shift(self.rolling, planes)


def _shift(buffer: np.ndarray, planes: int) -> None:
    """Move a rolling buffer ``planes`` forward: drop the first planes, zero the new last ones."""
    if planes >= buffer.shape[0]:
        buffer[...] = 0
        return
    buffer[:-planes] = buffer[planes:]
    buffer[-planes:] = 0


def iter_predicted_slabs(source: SlabSource, predict: Callable[[torch.Tensor], torch.Tensor],
                         patch: Sequence[int], overlap: float = 0.5, batch_size: int = 1,
                         weighting: str = "gaussian", progress: bool = False,
                         device: str | torch.device = "cpu", tta_axes: Sequence[str | int] = (),
                         roof_crop: Sequence[int] = RWTH_GE_ROOF_CROP, amp: str = "none"
                         ) -> Iterator[tuple[int, np.ndarray]]:
    """Predict a volume tile by tile, yielding finished z-slabs in order.

    Parameters
    ----------
    source : SlabSource
        The network input, read one slab of ``patch_z`` planes at a time. Axes shorter than the
        patch are reflect-padded (edge-padded when too short to reflect) and cropped back.
    predict : callable
        Maps a ``(N, C, *patch)`` tensor to ``(N, 1, *patch)``; called under ``inference_mode``.
    patch : sequence of 3 ints
        Tile size (ZYX), e.g. the training patch stored in the checkpoint.
    overlap : float
        See :func:`tile_starts`.
    batch_size : int
        Tiles per call of ``predict`` (tiles of one z-row are batched together).
    weighting : str
        a name of :data:`fmc.inference.tile_weights.WEIGHTINGS` (``gaussian``, ``constant``, ``roof``).
    progress : bool
        Show a progress bar over tiles (stderr).
    tta_axes : sequence of 'z', 'y', 'x'
        Flip test-time augmentation: the prediction is averaged over every combination of flips
        along these axes (2^k forward passes per tile).
    roof_crop : sequence of 3 ints
        Face crop of the roof window.

    Yields
    ------
    (int, numpy.ndarray)
        First plane index and the ``(n, Y, X)`` float32 prediction of planes ``z0:z0 + n``; the
        slabs are contiguous and cover the volume.
    """
    patch = tuple(int(p) for p in patch)
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"patch={list(patch)}: give 3 positive sizes (ZYX)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: give at least 1")
    shape = tuple(int(n) for n in source.shape)
    padded = tuple(max(n, p) for n, p in zip(shape, patch, strict=True))
    starts = [tile_starts(n, p, overlap) for n, p in zip(padded, patch, strict=True)]
    weights = _Weights(weighting, patch, starts, padded, roof_crop)
    forward = with_flips(predict, flip_combinations(tta_axes))
    lateral = [(y, x) for y in starts[1] for x in starts[2]]
    accumulator = np.zeros((patch[0], padded[1], padded[2]), np.float32)
    base = 0  # absolute index of the accumulator's first plane

    def finished(z_end: int) -> tuple[int, np.ndarray]:
        planes = np.array(accumulator[:z_end - base, :shape[1], :shape[2]])
        if planes.shape[1:] == accumulator.shape[1:]:
            return base, weights.divide(planes, base, base)
        full = weights.divide(np.array(accumulator[:z_end - base]), base, base)  # padded volume
        return base, np.ascontiguousarray(full[:, :shape[1], :shape[2]])

    bar = _progress_bar(len(starts[0]) * len(lateral), progress)
    memory = OutOfMemoryHalving()
    try:
        with torch.inference_mode():
            for z in starts[0]:
                if z > base:
                    z_end = min(z, shape[0])
                    if z_end > base:
                        yield finished(z_end)
                    _shift(accumulator, z - base)
                    weights.shift(z - base)
                    base = z
                slab = source.slab(min(z, shape[0]), min(z + patch[0], shape[0]))
                slab = _pad_to(np.asarray(slab, dtype=np.float32), (patch[0], padded[1], padded[2]))
                for first in range(0, len(lateral), batch_size):
                    batch = lateral[first:first + batch_size]
                    _accumulate(slab, batch, patch, lambda part: memory.run(
                        lambda piece: forward(piece.to(device)), part, device, amp),
                        accumulator, weights)
                    if bar is not None:
                        bar.update(len(batch))
            if shape[0] > base:
                yield finished(shape[0])
    finally:
        if bar is not None:
            bar.close()


def _accumulate(slab: np.ndarray, corners: list[tuple[int, int]], patch: tuple[int, int, int],
                predict: Callable[[torch.Tensor], torch.Tensor], accumulator: np.ndarray,
                weights: _Weights) -> None:
    """Predict the tiles of one z-row at the lateral ``corners`` (one batch) and add their
    weighted predictions to ``accumulator``."""
    windows = [(slice(0, patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
               for y, x in corners]
    inputs = torch.from_numpy(np.stack([slab[(slice(None), *w)] for w in windows]))
    for window, prediction in zip(windows, predict(inputs), strict=True):
        accumulator[window] += (prediction * weights.tile_tensor).numpy()
        weights.add(window)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="tiles", unit="tile", file=sys.stderr, leave=False)


def sliding_window_predict(channels: np.ndarray, predict: Callable[[torch.Tensor], torch.Tensor],
                           patch: Sequence[int], overlap: float = 0.5, batch_size: int = 1,
                           weighting: str = "gaussian", progress: bool = False,
                           device: str | torch.device = "cpu", tta_axes: Sequence[str | int] = (),
                           roof_crop: Sequence[int] = RWTH_GE_ROOF_CROP) -> np.ndarray:
    """Predict a whole ``(C, Z, Y, X)`` array in memory; see :func:`iter_predicted_slabs`.

    Returns
    -------
    numpy.ndarray
        ``(Z, Y, X)`` float32 prediction.
    """
    source = ArraySource(channels)
    slabs = [planes for _, planes in iter_predicted_slabs(
        source, predict, patch, overlap=overlap, batch_size=batch_size, weighting=weighting,
        progress=progress, device=device, tta_axes=tta_axes, roof_crop=roof_crop)]
    return np.concatenate(slabs, axis=0)
