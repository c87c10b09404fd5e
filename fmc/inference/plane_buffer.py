"""A prediction kept between the input fallback's two passes: in memory, or in a temporary file
when it is large (:func:`fmc.inference.volume_prediction.predicted_slabs`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class PlaneBuffer:
    """A float32 volume written once by z-slabs and read back by z-slabs.

    Held in memory below ``threshold_bytes``; above it, kept in a temporary file in ``folder``
    (removed on :meth:`close`) and accessed with plain reads and writes, so the volume does not
    count towards the process's resident memory the way a memory map's touched pages would.
    """

    def __init__(self, shape: Sequence[int], threshold_bytes: float, folder: str | Path):
        self.shape = tuple(int(n) for n in shape)
        self.plane_bytes = int(np.prod(self.shape[1:])) * 4
        nbytes = self.plane_bytes * self.shape[0]
        self.on_disk = nbytes > threshold_bytes
        self.path: Path | None = None
        if self.on_disk:
            # Named like fmc's other temporary files, so a killed run's buffer is cleaned up
            # by the next run (fmc.core.files.remove_stale_parts).
            descriptor, name = tempfile.mkstemp(prefix=f".fmc-buffer.{os.getpid()}-",
                                                suffix=".part", dir=folder)
            os.close(descriptor)
            self.path = Path(name)
            self._file = open(self.path, "r+b")  # noqa: SIM115 - closed in close()
            self._array = None
        else:
            self._array = np.empty(self.shape, np.float32)

    def write(self, z0: int, planes: np.ndarray) -> None:
        """Store planes ``z0:z0 + n``."""
        planes = np.ascontiguousarray(planes, dtype=np.float32)
        if self._array is not None:
            self._array[z0:z0 + planes.shape[0]] = planes
            return
        self._file.seek(z0 * self.plane_bytes)
        self._file.write(planes.tobytes())

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Planes ``z0:z1``."""
        if self._array is not None:
            return self._array[z0:z1]
        self._file.seek(z0 * self.plane_bytes)
        data = self._file.read((z1 - z0) * self.plane_bytes)
        return np.frombuffer(data, np.float32).reshape(z1 - z0, *self.shape[1:])

    def close(self) -> None:
        """Free the memory or remove the temporary file."""
        self._array = None
        if self.path is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)
            self.path = None

    def __enter__(self) -> PlaneBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
