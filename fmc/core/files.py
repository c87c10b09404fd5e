"""Writing files so that an interrupted run never leaves a half-written file under the final name.

Every temporary file fmc writes is named ``.<final name>.<pid>[-<random>].part`` in the final
file's folder: a run killed before its rename leaves only such a hidden file, and the next run
removes those whose process is gone (:func:`remove_stale_parts`).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fmc.core.errors import FmcInputError

# ``.<name>.<pid>.part`` (fmc.io.h5) or ``.<name>.<pid>-<random>.part`` (atomic_path).
_PART = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:-[A-Za-z0-9_]+)?\.part$")


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
        # The pid lets a later run tell a dead writer's leftover from a live writer's file.
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-",
                                             suffix=".part", dir=path.parent)
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


def remove_stale_parts(folder: str | os.PathLike) -> list[Path]:
    """Delete leftovers of killed runs in ``folder``: ``.*.part`` files whose writer is gone.

    Files of a live process (another run writing into the same folder) are left alone.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(".*.part"):
        match = _PART.match(path.name)
        if match and not _process_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writable_folder(folder: str | os.PathLike, key: str = "output") -> Path:
    """Create ``folder`` and prove it writable before any work is done.

    Raises
    ------
    FmcInputError
        Naming ``key=folder`` when the folder cannot be created (a file in the way) or written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".fmc-write-test.{os.getpid()}.part"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise FmcInputError(f"{key}={folder}: cannot write there ({error.strerror or error})") \
            from None
    return folder


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
