"""A 3D volume that viewers index like a numpy array while only the z-planes asked for are read.

napari shows one plane at a time (or a downsampled 3D view): a ``(300, 1920, 1920)`` float32
volume is 4 GB, one plane 15 MB. :class:`LazyVolume` wraps any reader of z-planes (a TIFF read
page by page, an H5 dataset, a zarr array) in the array protocol napari asks of layer data:
``shape``, ``dtype``, ``ndim``, ``__getitem__`` with numpy's basic and integer-array keys, and
``__array__`` (the whole volume, read on request only).

Beside it, the checks every volume reader of :mod:`fmc.io` applies to what it hands over, whatever
the format: intensities only (:func:`check_intensity_dtype`), a voxel size that is three
positive finite numbers (:func:`check_spacing`), and a file that must not change while it is
read (:func:`file_stamp`, :func:`check_unchanged`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fmc.core.errors import FmcInputError

PlaneReader = Callable[[int, int], np.ndarray]


class LazyVolume:
    """A ZYX volume read plane range by plane range.

    Parameters
    ----------
    read_planes : callable
        ``read_planes(z0, z1)`` returns the planes ``z0 <= z < z1`` as a ``(z1 - z0, Y, X)`` array.
    shape : tuple of 3 ints
    dtype : numpy dtype

    Examples
    --------
    >>> volume = LazyVolume(lambda z0, z1: np.zeros((z1 - z0, 4, 5)), (3, 4, 5), np.float32)
    >>> volume[1].shape, volume[:, 2].shape, volume[..., 0].shape
    ((4, 5), (3, 5), (3, 4))
    """

    ndim = 3

    def __init__(self, read_planes: PlaneReader, shape: tuple[int, int, int], dtype) -> None:
        if len(shape) != 3:
            raise ValueError(f"a LazyVolume is 3D, got shape {shape}")
        self._read_planes = read_planes
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyVolume(shape={self.shape}, dtype={self.dtype})"

    def _planes(self, z0: int, z1: int) -> np.ndarray:
        return np.asarray(self._read_planes(z0, z1), dtype=self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self._planes(0, self.shape[0])
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is None for k in key) or sum(k is Ellipsis for k in key) > 1:
            return np.asarray(self)[key]  # new axes: rare, read the whole volume
        if key and key[0] is Ellipsis:
            key = (slice(None),) * (self.ndim - len(key) + 1) + key[1:]
        if not key:
            return np.asarray(self)
        z_key, rest = key[0], key[1:]
        depth = self.shape[0]
        if isinstance(z_key, (int, np.integer)):
            z = int(z_key) + depth if int(z_key) < 0 else int(z_key)
            if not 0 <= z < depth:
                raise IndexError(f"index {z_key} is out of bounds for axis 0 with size {depth}")
            return self._planes(z, z + 1)[0][rest]
        indices = np.arange(depth)[z_key]  # slices, integer arrays and masks, as numpy reads them
        if indices.size == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)[(slice(None), *rest)]
        low, high = int(indices.min()), int(indices.max()) + 1
        block = self._planes(low, high)
        if not (indices.ndim == 1 and np.array_equal(indices, np.arange(low, high))):
            block = block[indices - low]
        return block[(slice(None), *rest)]


# What each numpy kind that is no intensity holds, for the refusal.
_NOT_INTENSITIES = {"b": "a mask of true/false values", "c": "complex numbers", "O": "Python objects",
                    "S": "text", "U": "text", "T": "text", "V": "raw or structured records",
                    "M": "dates", "m": "time spans"}


def check_intensity_dtype(dtype: Any, path: str | os.PathLike) -> np.dtype:
    """``dtype`` as numpy's, or raise :class:`FmcInputError` if it holds no intensities.

    fmc reads integer and float voxels; bool, complex, text, object, structured and date arrays
    are refused rather than converted into something they do not mean.
    """
    try:
        numpy_dtype = np.dtype(dtype)
    except TypeError:
        numpy_dtype = None
    if numpy_dtype is None or numpy_dtype.kind not in "iuf":
        what = _NOT_INTENSITIES.get(numpy_dtype.kind if numpy_dtype is not None else "", "")
        raise FmcInputError(f"{path}: unsupported data type {dtype}" + (f" ({what})" if what
                            else "") + "; fmc needs integer or float intensities")
    return numpy_dtype


def check_spacing(spacing_zyx: Sequence[float] | None, path: str | os.PathLike) -> None:
    """Raise unless a voxel size to write is unknown (None) or three positive finite numbers."""
    if spacing_zyx is None:
        return
    values = list(spacing_zyx)
    if len(values) != 3 or not all(isinstance(v, (int, float, np.number)) and math.isfinite(v)
                                   and v > 0 for v in values):
        raise FmcInputError(f"{path}: voxel size {values} is not three positive finite numbers; "
                            "not written")


def file_stamp(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """What changes when a file is written to or replaced: (size, mtime in ns, inode)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns, status.st_ino


def check_unchanged(path: str | os.PathLike, stamp: tuple[int, int, int] | None) -> None:
    """Raise :class:`FmcInputError` if ``path`` no longer has the :func:`file_stamp` ``stamp``."""
    if file_stamp(path) != stamp:
        raise FmcInputError(f"{path}: changed while it was read (is another program still "
                            "writing it?); try again when it is complete")
