"""Percentile normalisation, the convention every stage shares (one home).

The challenge normalises each volume on its own: ``(x - p2) / (p99.8 - p2)`` over the whole
volume, no clipping (the organisers' ``percentile_normalization``). ``fmc.prepare`` stores H5
volumes normalised this way, prediction normalises its input the same way, and the metric
(:mod:`fmc.evaluation.metrics`) normalises each volume before its SSIM. Percentiles are computed
exactly, slab by slab, so memory grows with the slab and not with the volume.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fmc.core.errors import FmcInputError

log = logging.getLogger(__name__)

PERCENTILE_LOW = 2.0
PERCENTILE_HIGH = 99.8
# Passes without a halo (percentiles, PSNR) stream thinner slabs: their float64 temporaries of
# whole planes would otherwise dominate the memory of a 1920×1920 volume.
STREAM_SLAB_Z = 4


class VolumeLike(Protocol):
    """A 3D ZYX volume readable in z-slabs: ``volume[z0:z1]`` returns a numpy array."""

    shape: tuple[int, ...]

    def __getitem__(self, key: Any) -> np.ndarray: ...


def slab_ranges(depth: int, slab: int) -> list[tuple[int, int]]:
    return [(z, min(z + slab, depth)) for z in range(0, depth, slab)]


def stream_slab(volume: VolumeLike) -> int:
    # A lazily filtered volume recomputes its halo for every slab: it asks for thicker ones.
    return int(getattr(volume, "preferred_slab", STREAM_SLAB_Z))


def read_planes(volume: VolumeLike, z0: int, z1: int) -> np.ndarray:
    return np.asarray(volume[z0:z1])


# ----------------------------------------------------------------------------------------------
# Percentiles and normalisation
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VolumeStats:
    """Whole-volume statistics needed to normalise a volume slab by slab.

    Attributes
    ----------
    low, high : float
        The 2nd and 99.8th percentiles (numpy's linear method).
    minimum, maximum : float
        Smallest and largest voxel values.
    """

    low: float
    high: float
    minimum: float
    maximum: float

    @property
    def scale(self) -> float:
        """Divisor of the normalisation; 1 when the percentiles coincide (volume left unchanged)."""
        return self.high - self.low if self.high != self.low else 1.0

    @property
    def offset(self) -> float:
        """Value subtracted by the normalisation; 0 when the percentiles coincide."""
        return self.low if self.high != self.low else 0.0

    def normalize(self, values: np.ndarray) -> np.ndarray:
        """Apply this volume's percentile normalisation to ``values`` (float64 result)."""
        return (np.asarray(values, dtype=np.float64) - self.offset) / self.scale

    @property
    def normalized_range(self) -> float:
        """``max - min`` of the normalised volume (used as SSIM's data_range)."""
        return float(self.normalize(np.array(self.maximum)) - self.normalize(np.array(self.minimum)))


class NormalizedPlanes:
    """A volume's percentile-normalised planes, read on demand (float32): the view as
    ``fmc.prepare`` stores it, for prediction, which never holds a whole normalised volume.

    Parameters
    ----------
    volume : VolumeLike
        The recorded volume, readable in z-slabs.
    stats : VolumeStats
        Its whole-volume percentiles.
    """

    def __init__(self, volume: VolumeLike, stats: VolumeStats) -> None:
        self.volume, self.stats = volume, stats

    def planes(self, z0: int, z1: int) -> np.ndarray:
        """Normalised planes ``z0:z1`` (float64 arithmetic, float32 result)."""
        return self.stats.normalize(read_planes(self.volume, z0, z1)).astype(np.float32)


def normalize_float32(volume: VolumeLike, low: float, high: float, slab: int = 32) -> np.ndarray:
    """``(volume - low) / (high - low)`` as float32, slab by slab; unchanged if high == low."""
    planes = NormalizedPlanes(volume, VolumeStats(low=low, high=high, minimum=np.nan,
                                                  maximum=np.nan))
    result = np.empty(volume.shape, np.float32)
    for z0, z1 in slab_ranges(int(volume.shape[0]), slab):
        result[z0:z1] = planes.planes(z0, z1)
    return result


def _order_statistic_positions(count: int, percentiles: Sequence[float]
                               ) -> list[tuple[int, int, np.ndarray]]:
    """Ranks below/above each percentile and the interpolation weight, as numpy computes them.

    numpy's 'linear' method (Hyndman & Fan 7), written as numpy writes it. Integer volumes give
    numpy's values exactly; float volumes can differ in the last bit (numpy's vectorised loops
    round differently from one array length to another), far below what SSIM can see.
    """
    q = np.true_divide(np.asarray(percentiles, dtype=np.float64), 100)
    virtual = count * q + (1 + q * (1 - 1 - 1)) - 1
    below = np.floor(virtual)
    gamma = virtual - below
    positions = []
    for index in range(len(q)):
        rank = int(min(max(below[index], 0), count - 1))
        positions.append((rank, min(rank + 1, count - 1), gamma[index:index + 1]))
    return positions


def _lerp(below: np.ndarray, above: np.ndarray, gamma: np.ndarray) -> float:
    # numpy's _lerp on 1-element arrays: the gamma >= 0.5 branch starts from the upper value.
    difference = above - below
    value = below + difference * gamma
    if gamma[0] >= 0.5:
        value = above - difference * (1 - gamma)
    return float(value[0])


def volume_stats(volume: VolumeLike, slab: int | None = None,
                 percentiles: tuple[float, float] = (PERCENTILE_LOW, PERCENTILE_HIGH),
                 name: str = "volume") -> VolumeStats:
    """Exact percentiles, minimum and maximum of a volume, read slab by slab.

    Integer volumes are counted in a histogram of their values; float volumes take two passes
    (a fine histogram locates the ranks, then the few values in the chosen bins are sorted), so
    the result equals ``np.percentile(volume, percentiles)`` without holding a sorted copy.

    Raises
    ------
    FmcInputError
        If the volume holds NaN or infinite values (``name`` is used in the message).
    """
    slab = slab or stream_slab(volume)
    depth = volume.shape[0]
    count = int(np.prod(volume.shape, dtype=np.int64))
    if count == 0:
        raise FmcInputError(f"{name}: volume is empty (shape {tuple(volume.shape)})")
    dtype = np.dtype(read_planes(volume, 0, 1).dtype)
    positions = _order_statistic_positions(count, percentiles)
    ranks = sorted({r for below, above, _ in positions for r in (below, above)})
    if dtype.kind in "ui" and dtype.itemsize <= 2:
        values = _ranked_values_integer(volume, depth, slab, dtype, ranks)
    else:
        values = _ranked_values_float(volume, depth, slab, ranks, name)
    # As numpy: the two neighbours in the volume's dtype, the weight in float64.
    lows_highs = [_lerp(np.array([values[b]], dtype=dtype), np.array([values[a]], dtype=dtype), g)
                  for b, a, g in positions]
    return VolumeStats(low=lows_highs[0], high=lows_highs[1],
                       minimum=float(values["min"]), maximum=float(values["max"]))


def _ranked_values_integer(volume, depth, slab, dtype, ranks) -> dict:
    offset = int(np.iinfo(dtype).min)
    counts = np.zeros(int(np.iinfo(dtype).max) - offset + 1, dtype=np.int64)
    for z0, z1 in slab_ranges(depth, slab):
        block = read_planes(volume, z0, z1).ravel()
        shifted = block if offset == 0 else block.astype(np.int32) - offset
        counts += np.bincount(shifted, minlength=counts.size)
    cumulative = np.cumsum(counts)
    nonzero = np.flatnonzero(counts)
    values: dict = {"min": nonzero[0] + offset, "max": nonzero[-1] + offset}
    for rank in ranks:
        values[rank] = int(np.searchsorted(cumulative, rank, side="right")) + offset
    return values


def _ranked_values_float(volume, depth, slab, ranks, name) -> dict:
    low, high = np.inf, -np.inf
    for z0, z1 in slab_ranges(depth, slab):
        block = read_planes(volume, z0, z1)
        if not np.isfinite(block).all():
            raise FmcInputError(f"{name}: volume holds NaN or infinite values (z {z0}-{z1}); "
                                "fix or mask them before scoring")
        low, high = min(low, float(block.min())), max(high, float(block.max()))
    values: dict = {"min": low, "max": high}
    if low == high:
        values.update({rank: low for rank in ranks})
        return values
    n_bins = 1 << 16
    scale = n_bins / (high - low)

    def bin_of(values: np.ndarray) -> np.ndarray:
        # Any monotone map of values to bins works, as long as both passes use the same one:
        # the exact order statistics are found among the values of the chosen bins.
        return np.clip(((values - low) * scale).astype(np.int64), 0, n_bins - 1)

    counts = np.zeros(n_bins, dtype=np.int64)
    for z0, z1 in slab_ranges(depth, slab):
        counts += np.bincount(bin_of(read_planes(volume, z0, z1).ravel()), minlength=n_bins)
    cumulative = np.cumsum(counts)
    wanted = {rank: int(np.searchsorted(cumulative, rank, side="right")) for rank in ranks}
    bins = sorted(set(wanted.values()))
    gathered: dict[int, list[np.ndarray]] = {b: [] for b in bins}
    for z0, z1 in slab_ranges(depth, slab):
        block = read_planes(volume, z0, z1).ravel()
        index = bin_of(block)
        for b in bins:
            gathered[b].append(block[index == b])
    for rank, b in wanted.items():
        in_bin = np.sort(np.concatenate(gathered[b]))
        before = int(cumulative[b - 1]) if b > 0 else 0
        values[rank] = in_bin[rank - before]
    return values


def percentile_normalize(volume: np.ndarray, pmin: float = PERCENTILE_LOW,
                         pmax: float = PERCENTILE_HIGH) -> np.ndarray:
    """Percentile-normalise a whole volume as the challenge organisers do.

    Parameters
    ----------
    volume : numpy.ndarray
        Any array; the percentiles are taken over all of it.
    pmin, pmax : float
        Percentiles mapped to 0 and 1 (defaults 2 and 99.8).

    Returns
    -------
    numpy.ndarray
        ``(volume - p_min) / (p_max - p_min)`` in float64, not clipped. A volume whose two
        percentiles are equal (e.g. a constant one) is returned unchanged (as float64), as the
        organisers' function does, instead of dividing by zero.
    """
    volume = np.asarray(volume)
    low, high = np.percentile(volume, (pmin, pmax))
    if high == low:
        log.warning("percentile_normalize: p%g == p%g == %g; volume left unchanged", pmin, pmax, low)
        return volume.astype(np.float64)
    return (volume.astype(np.float64) - low) / (high - low)
