"""The run folder: checked before Hydra creates it, found, and locked while a run writes into it.

Hydra makes ``hydra.run.dir`` before fmc's code runs; a folder it cannot make (a file in the
way, a read-only place) would end in Hydra's own traceback. Registered in
``conf/hydra/default.yaml``, this check turns it into fmc's one-line error and exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from fmc.core.cli import EXIT_USER_ERROR, new_run_folder
from fmc.core.errors import FmcInputError
from fmc.core.naming import METRICS_FILE, SKIPPED_FILE


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be created and written, or None when it can.

    Nothing is created: the nearest existing folder on the path is inspected instead, so a
    check of a time-stamped folder never leaves an empty one behind.
    """
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


class RunFolderCheck(Callback):
    """Stop with a one-line error when the run or sweep folder cannot be made."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check(config, "hydra.run.dir")
        try:
            folder = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        except Exception:  # noqa: BLE001 - reported by _check or by Hydra
            return
        if not folder.exists():  # Hydra makes it next; a user error removes it again
            top = folder
            while not top.parent.exists() and top.parent != top.parent.parent:
                top = top.parent
            new_run_folder.append((folder, top))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check(config, "hydra.sweep.dir")


class SweepSummary(Callback):
    """At the end of a multirun, say where its runs are and the command that compares them."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            folder = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
            job = OmegaConf.select(config, "hydra.job.name")
        except Exception:  # noqa: BLE001 - nothing to summarise without the folder
            return
        print(sweep_summary(folder, f"fmc.{job}"), flush=True)


def sweep_summary(folder: Path, command: str) -> str:
    """The lines printed after a sweep of ``command`` into ``folder``: runs and what next."""
    runs = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name)) if folder.is_dir() else []
    shown = _shown_path(folder)
    if command != "fmc.train":
        return f"{command}: {len(runs)} runs in {shown}"
    finished = [run for run in runs if (run / METRICS_FILE).is_file()]
    skipped = [run for run in runs if (run / SKIPPED_FILE).is_file()]
    lines = [f"fmc.train: {len(finished)} of {len(runs)} runs finished"
             + (f", {len(skipped)} skipped (nothing to train)" if skipped else "")
             + f" in {shown} (one folder per run: checkpoints/, {METRICS_FILE}, .hydra/config.yaml)",
             f"compare them: python -m fmc.report sweep={shown}"]
    if len(finished) + len(skipped) < len(runs):
        lines.append("finish the others: the same command with resume=true "
                     f"hydra.sweep.dir={shown}")
    return "\n".join(lines)


def _shown_path(folder: Path) -> str:
    """``folder`` relative to the current folder when it is inside it (what a user types)."""
    try:
        return str(folder.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def _check(config: DictConfig, key: str) -> None:
    try:
        folder = Path(str(OmegaConf.select(config, key)))
        command = f"fmc.{OmegaConf.select(config, 'hydra.job.name')}"
    except Exception:  # noqa: BLE001 - an unresolvable folder is for Hydra itself to report
        return
    problem = folder_problem(folder)
    if problem is not None:
        print(f"{command}: error: {key}={folder}: cannot create the run folder ({problem}); "
              f"give another with {key}=...", file=sys.stderr, flush=True)
        # SystemExit, not an exception: Hydra turns a callback's exceptions into warnings.
        sys.exit(EXIT_USER_ERROR)


def output_folder() -> Path:
    """This run's Hydra folder (the current folder outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return Path.cwd()


def is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ImportError, ValueError):
        return False


LOCK_FILE = ".fmc-train.lock"


# This process's lock on its run folder: (folder, open file), held until the process ends.
_run_lock: tuple[Path, Any] | None = None


def lock_run_folder(folder: Path) -> None:
    """Refuse a run folder that another live ``fmc.train`` is writing into.

    Two runs started in the same second share the default folder (its name has a one-second
    resolution), and a resume while the first run still trains would share it too: their
    checkpoints would overwrite each other. An advisory lock (``flock``) held for the life of
    the process says so instead; the system drops it when the process ends, even on SIGKILL,
    so a killed run never blocks its resume. DDP ranks other than 0 work in rank 0's folder and
    take no lock.

    Raises
    ------
    FmcInputError
        If another process holds the folder's lock.
    """
    global _run_lock
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: unchecked, as before
        return
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    folder = folder.resolve()
    if rank_zero_only.rank != 0 or (_run_lock is not None and _run_lock[0] == folder):
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise FmcInputError(f"hydra.run.dir={folder}: another fmc.train (pid {owner}) is writing "
                            "into this run folder; give this run its own folder "
                            "(hydra.run.dir=...) or wait for that one to end") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    if _run_lock is not None:
        _run_lock[1].close()
    _run_lock = (folder, handle)
