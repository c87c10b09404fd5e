"""What a command may write over: never an input, a checkpoint, or a file fmc did not make.

Commands call :func:`refuse_overwriting` for every file they are about to write, before any
work: a target that is one of the command's inputs (by any spelling: the same folder, a
symbolic link, ``..``, a hard link), lies inside one of them (an OME-Zarr store) or holds one,
is refused with one line and exit code 2. An existing target is replaced only when
``made_by_fmc(target)`` says fmc wrote it (a prediction of an earlier run, say); anything else
-- the user's own file, a checkpoint -- is refused, naming it, so that nothing the user owns is
ever lost to a typo in ``output=``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from fmc.core.errors import FmcInputError

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")


def same_location(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """True when both paths name the same file or folder (links and ``..`` resolved; for
    existing files, the same inode, which also catches hard links)."""
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist yet: compare the resolved spellings
        return os.path.realpath(first) == os.path.realpath(second)


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies below it (both resolved)."""
    resolved, top = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return resolved == top or top in resolved.parents


def refuse_overwriting(target: str | os.PathLike, inputs: Iterable[str | os.PathLike],
                       key: str, made_by_fmc: Callable[[Path], bool] | None = None) -> None:
    """Raise unless writing ``target`` leaves every input and every file the user owns intact.

    Parameters
    ----------
    target : path
        A file (or OME-Zarr folder) the command will write.
    inputs : paths
        What the command reads: its input volumes, checkpoints, sources.
    key : str
        The config key that named the output (``output``), for the message.
    made_by_fmc : callable, optional
        Whether an existing ``target`` is an output fmc wrote (then it may be replaced). Without
        it, an existing target is refused.

    Raises
    ------
    FmcInputError
        Naming the target, the input or existing file it would replace, and what to do.
    """
    target = Path(target)
    for source in inputs:
        if same_location(target, source) or is_within(target, source) or is_within(source, target):
            raise FmcInputError(f"{key}={target}: writing there would replace the input {source}; "
                                "give another output")
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_symlink():
        # A link is replaced, never followed (files are written by rename); what it points to
        # is not touched, so only the link itself is at stake.
        return
    if target.suffix.lower() in CHECKPOINT_SUFFIXES and made_by_fmc is None:
        raise FmcInputError(f"{key}={target}: a checkpoint is there; fmc never writes over one: "
                            "give another name")
    if made_by_fmc is None or not made_by_fmc(target):
        raise FmcInputError(f"{key}={target}: a file fmc did not write is there; fmc replaces "
                            "only its own outputs: move it away or give another output")
