"""The training-ready HDF5 layout: one file per TIFF, written atomically, marked complete last.

Layout (``/data`` group; attributes on the file root)::

    data/raw_image          float32 ZYX  percentile-normalised intensity (2, 99.8), not clipped
    data/<channel>          float32 ZYX  angle files: each input channel computed from the view
                                          (data/surface_distance, data/light_map: µm), at the
                                          dataset its spec names (fmc.preprocessing.channel_specs)
    data/foreground         uint16 (N,3) fused files: ZYX coordinates of a random subset of the
                                          voxels at or above the volume's mean (patch centres)
    attrs: kind ('angle'|'fused'), spacing_zyx, study, content, source, percentile_low/high,
           normalization, fmc_version, ... and ``fmc_complete`` = True, written last.

A file without ``fmc_complete`` is unfinished and gets rebuilt. Files are written under a
temporary name (``.<name>.<pid>.part``) and renamed when complete, so a killed run never leaves a
file that looks finished.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fmc.core.errors import FmcInputError
from fmc.core.files import remove_stale_parts  # noqa: F401 - fmc.io.h5's name for it, kept

RAW_IMAGE = "data/raw_image"
FOREGROUND = "data/foreground"
COMPLETE_ATTR = "fmc_complete"
# Chosen by measurement (docs/benchmarks.md): 32×64×64 float32 chunks (512 KB), uncompressed by
# default. LZF files are 44-58 % smaller, but decompressing a random 64×256×256 training patch
# (75 chunks per dataset) caps one loader worker at ~3.4 patches/s against ~12/s uncompressed
# (scripts/bench_data.py); prepare with compression=lzf when disk matters more than speed.
CHUNKS = (32, 64, 64)
COMPRESSION: str | None = None
COMPRESSIONS = ("lzf", "gzip", "none")


def chunk_shape(shape: tuple[int, ...], chunks: tuple[int, ...] = CHUNKS) -> tuple[int, ...]:
    """``chunks`` clipped to ``shape`` (HDF5 chunks may not exceed a fixed-size dataset)."""
    return tuple(max(1, min(c, s)) for c, s in zip(chunks, shape, strict=True))


def is_complete(path: str | os.PathLike) -> bool:
    """True if ``path`` is an H5 file that fmc finished writing."""
    try:
        with h5py.File(path, "r") as handle:
            return bool(handle.attrs.get(COMPLETE_ATTR, False))
    except (OSError, KeyError):
        return False


def written_by_fmc(path: str | os.PathLike) -> bool:
    """True if ``path`` is an H5 file of fmc.prepare's layout (finished or not): a file fmc may
    replace, unlike another program's HDF5 file of the same name."""
    try:
        with h5py.File(path, "r") as handle:
            return "data" in handle and {"kind", "source"} <= set(handle.attrs)
    except (OSError, KeyError):
        return False


def temporary_path(path: Path) -> Path:
    """The name a file is written under before the final rename (unique per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.part")


def _attribute(value: Any) -> Any:
    if value is None:
        return "none"
    if isinstance(value, (dict, list, tuple)) and not (
            isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value)):
        return json.dumps(value)
    return value


def write_h5(path: str | os.PathLike, datasets: dict[str, np.ndarray], attrs: dict[str, Any],
             compression: str | None = COMPRESSION) -> Path:
    """Write datasets and attributes to ``path`` atomically, marking the file complete last."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        with h5py.File(temporary, "w") as handle:
            compression = None if compression in (None, "none") else compression
            for name, array in datasets.items():
                array = np.asarray(array)
                volume = array.ndim == 3
                handle.create_dataset(name, data=array,
                                      chunks=chunk_shape(array.shape) if volume else None,
                                      compression=compression if volume else None)
            for key, value in attrs.items():
                handle.attrs[key] = _attribute(value)
            handle.flush()
            handle.attrs[COMPLETE_ATTR] = True
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The root attributes of an fmc H5 file (JSON-encoded values decoded)."""
    try:
        with h5py.File(path, "r") as handle:
            attrs = dict(handle.attrs)
    except OSError as error:
        raise FmcInputError(f"{path}: not a readable HDF5 file ({error})") from None
    decoded = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, np.generic):
            value = value.item()
        decoded[key] = None if value == "none" else value
    return decoded
