"""What every ``python -m fmc.<verb>`` entry point shares: Hydra start-up and error reporting.

A user error (:class:`fmc.core.errors.FmcError`, a missing mandatory config value) becomes one line on
stderr naming the file or key and what to change, and exit code 2 -- no traceback unless
``FMC_VERBOSE=1`` is set (:func:`fmc.core.logs.verbose`). Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from fmc.core.errors import FmcError
from fmc.core.locations import config_dir
from fmc.core.logs import configured, verbose
from fmc.core.naming import lists_prefix

# The checkout's conf/ or the copy installed with the package (fmc.core.locations.config_dir).
CONFIG_DIR = str(config_dir())
EXIT_USER_ERROR = 2


# Configs write ${lists_prefix:${study},${holdout}}; the resolver must exist before Hydra composes
# them.
if not OmegaConf.has_resolver("lists_prefix"):
    OmegaConf.register_new_resolver("lists_prefix", lists_prefix)


# The run folder Hydra made for this run when it did not exist before (set by
# fmc.training.run_folder.RunFolderCheck); a run that fails with a user error removes it again
# while it holds nothing but Hydra's records.
# Entries: (run folder, the highest of its folders that did not exist either).
new_run_folder: list[tuple[Path, Path]] = []


def forget_failed_run_folder() -> None:
    """Remove this run's new folders if the run folder holds only Hydra's records (``.hydra/``,
    the log): the run folder, then each new folder above it that is left empty."""
    import shutil

    for folder, top in new_run_folder:
        if not folder.is_dir():
            continue
        if any(p.name != ".hydra" and p.suffix != ".log" for p in folder.iterdir()):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        for parent in folder.parents:
            if top not in (parent, *parent.parents) or any(parent.iterdir()):
                break
            parent.rmdir()
    new_run_folder.clear()


def report_user_errors(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a task function so user errors exit with a one-line message and code 2 (and
    leave no run folder behind that holds nothing but Hydra's records)."""

    def decorate(task: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from fmc.core.studies import check_study_files

            try:
                check_study_files()
                return task(*args, **kwargs)
            except FmcError as error:
                if verbose():
                    raise
                forget_failed_run_folder()
                _fail(command, str(error))
            except MissingMandatoryValue as error:
                if verbose():
                    raise
                forget_failed_run_folder()
                key = error.full_key or "?"
                _fail(command, f"missing value for '{key}': add {key}=... to the command line "
                               f"(see conf/{command.split('.')[-1]}.yaml)")
            return None

        return wrapper

    return decorate


def _fail(command: str, message: str) -> None:
    logging.getLogger(command).debug("error: %s", message)
    print(f"{command}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def hydra_entry(config_name: str, command: str, help_text: Callable[[], str] | None = None
                ) -> Callable[[Callable[[DictConfig], Any]], Callable]:
    """``hydra.main`` on fmc's ``conf/`` folder, with :func:`report_user_errors`.

    Called without a config (``main()``, as ``python -m`` does), the command line first gets the
    overrides of ``$FMC_OVERRIDES`` and is checked by composing it
    (:func:`fmc.core.command_line.check_command_line`): a key or option that does not exist is
    one line and exit code 2 before Hydra makes a run folder. ``main(cfg)`` runs the task on a
    composed config, as Hydra's own passthrough does.

    Parameters
    ----------
    config_name : str
        Primary config file in ``conf/`` (without ``.yaml``).
    command : str
        Module name shown in messages, e.g. ``fmc.evaluate``.
    help_text : callable, optional
        Text printed after Hydra's own ``--help`` (the command's named choices, listed from
        their registries by the entry point: core imports nothing of fmc).
    """
    import hydra

    from fmc.core.command_line import check_command_line, with_extra_overrides

    def decorate(task: Callable[[DictConfig], Any]) -> Callable:
        hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_DIR,
                                config_name=config_name)(report_user_errors(command)(configured(task)))

        @functools.wraps(task)
        def entry(cfg: DictConfig | None = None) -> Any:
            if cfg is not None:
                return hydra_main(cfg)
            sys.argv = with_extra_overrides(sys.argv, config_name)
            try:
                check_command_line(CONFIG_DIR, config_name, command, sys.argv)
            except FmcError as error:
                if verbose():
                    raise
                _fail(command, str(error))
            if help_text is not None and {"--help", "-h"} & set(sys.argv[1:]):
                try:
                    return hydra_main()
                finally:
                    print(help_text())
            return hydra_main()

        return entry

    return decorate
