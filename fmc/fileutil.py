"""Writing files so that an interrupted run never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fmc.errors import FmcInputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    Parent folders are created. On any exception the temporary file is removed and the
    exception propagates; ``path`` is untouched.

    Raises
    ------
    FmcInputError
        If the output folder cannot be created or written to.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part",
                                             dir=path.parent)
    except OSError as error:
        raise FmcInputError(f"{path.parent}: cannot write there ({error.strerror or error})") from None
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp creates the file for its owner only; give it the permissions of a file the
        # user would have created (0666 less the umask).
        os.chmod(temporary_path, 0o666 & ~_umask())
        os.replace(temporary_path, path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def natural_key(name: str) -> list:
    """Sort key that orders ``image_2`` before ``image_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
