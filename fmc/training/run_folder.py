"""A Hydra callback that checks the run (or sweep) folder before Hydra creates it.

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

from fmc.core.cli import EXIT_USER_ERROR


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

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check(config, "hydra.sweep.dir")


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
