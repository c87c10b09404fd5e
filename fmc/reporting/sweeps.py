"""The run folders a report covers: one sweep, several sweeps side by side, and loose runs.

``python -m fmc.report sweep=A`` reports on A's runs; ``sweep=[A,B] output=DIR`` puts the runs of
every sweep into one table with a ``sweep`` column (each sweep's folder name, made distinct with
its parents' names where two share it); each element may be ``last`` (the newest
``fmc.train`` folder, :func:`fmc.core.locations.resolve_latest`). ``runs=[...]`` adds single
run folders either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fmc.core.errors import FmcInputError
from fmc.core.locations import resolve_latest
from fmc.reporting.runs import find_runs

log = logging.getLogger("fmc.report")


@dataclass(frozen=True)
class RunFolder:
    """One run folder to report on: its label in its sweep and the sweep's name ('' with one
    sweep)."""

    folder: Path
    label: str
    sweep: str = ""


def sweep_list(sweep: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """``sweep=`` as a list of folders (``last`` resolved; the same folder named twice once)."""
    if sweep is None:
        return []
    values = [sweep] if isinstance(sweep, (str, Path)) else list(sweep)
    folders: dict[Path, Path] = {}
    for value in values:
        folder = resolve_latest(value, "sweep")
        folders.setdefault(folder.resolve(), folder)
    return list(folders.values())


def sweep_names(sweeps: Sequence[Path]) -> list[str]:
    """Short distinct names of ``sweeps``: each folder's name, with as many of its parents'
    names as it takes to tell it from the others (``a/multirun``, ``b/multirun``)."""
    paths = [Path(s).resolve() for s in sweeps]

    def suffix(path: Path, depth: int) -> str:
        return "/".join(path.parts[-depth:]).lstrip("/") or str(path)

    names = []
    for index, path in enumerate(paths):
        others = [p for i, p in enumerate(paths) if i != index]
        depth = 1
        while depth < len(path.parts) and suffix(path, depth) in {suffix(p, depth) for p in others}:
            depth += 1
        names.append(suffix(path, depth))
    return names


def run_labels(folders: Sequence[Path], sweep: Path | None) -> list[str]:
    """Short, distinct run names: the folder's name (``0``), its parent's too when ambiguous."""
    names = [p.name if sweep is None or p == sweep else str(p.relative_to(sweep))
             if p.is_relative_to(sweep) else p.name for p in folders]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" for p in folders]


def gather_runs(sweeps: Sequence[Path], runs: Sequence[str | Path] = ()) -> list[RunFolder]:
    """The run folders of ``sweeps`` (natural order, sweep by sweep) and then ``runs``.

    With several sweeps every run carries its sweep's name (:func:`sweep_names`); the runs
    given one by one carry none.

    Raises
    ------
    FmcInputError
        If a folder does not exist, or a sweep holds no run.
    """
    for run in runs:
        if not Path(run).is_dir():
            raise FmcInputError(f"runs: {run} is not a folder")
    loose = [Path(run) for run in runs]
    if len(sweeps) <= 1:
        sweep = sweeps[0] if sweeps else None
        folders = list(dict.fromkeys((find_runs(sweep) if sweep is not None else []) + loose))
        return [RunFolder(f, label) for f, label in zip(folders, run_labels(folders, sweep),
                                                        strict=True)]
    gathered: list[RunFolder] = []
    seen: set[Path] = set()
    for sweep, name in zip(sweeps, sweep_names(sweeps), strict=True):
        log.info("report on %s (sweep %s)", sweep, name)
        folders = [f for f in find_runs(sweep) if f.resolve() not in seen]
        seen.update(f.resolve() for f in folders)
        gathered += [RunFolder(f, label, name) for f, label in zip(
            folders, run_labels(folders, sweep), strict=True)]
    loose = [f for f in dict.fromkeys(loose) if f.resolve() not in seen]
    gathered += [RunFolder(f, label) for f, label in zip(loose, run_labels(loose, None),
                                                         strict=True)]
    return gathered
