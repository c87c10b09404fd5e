"""What every ``python -m fmc.<verb>`` entry point shares: Hydra start-up and error reporting.

A user error (:class:`fmc.core.errors.FmcError`, a missing mandatory config value) becomes one line on
stderr naming the file or key and what to change, and exit code 2 -- no traceback unless
``FMC_VERBOSE=1`` is set. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from fmc.core.errors import FmcError
from fmc.core.naming import lists_prefix

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
EXIT_USER_ERROR = 2


# Configs write ${lists_prefix:${study},${holdout}}; the resolver must exist before Hydra composes
# them.
if not OmegaConf.has_resolver("lists_prefix"):
    OmegaConf.register_new_resolver("lists_prefix", lists_prefix)


def verbose() -> bool:
    """True when the user asked for tracebacks (``FMC_VERBOSE=1``)."""
    return os.environ.get("FMC_VERBOSE", "").lower() not in ("", "0", "false", "no")


def report_user_errors(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a task function so user errors exit with a one-line message and code 2."""

    def decorate(task: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return task(*args, **kwargs)
            except FmcError as error:
                if verbose():
                    raise
                _fail(command, str(error))
            except MissingMandatoryValue as error:
                if verbose():
                    raise
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


def hydra_entry(config_name: str, command: str) -> Callable[[Callable[[DictConfig], Any]], Callable]:
    """``hydra.main`` on fmc's ``conf/`` folder, with :func:`report_user_errors`.

    Parameters
    ----------
    config_name : str
        Primary config file in ``conf/`` (without ``.yaml``).
    command : str
        Module name shown in messages, e.g. ``fmc.evaluate``.
    """
    import hydra

    def decorate(task: Callable[[DictConfig], Any]) -> Callable:
        return hydra.main(version_base="1.3", config_path=CONFIG_DIR,
                          config_name=config_name)(report_user_errors(command)(task))

    return decorate
