"""What a person reads: each line once, in fmc's format, without other packages' chatter.

Every ``python -m fmc.<verb>`` runs :func:`configure` when its task starts (after Hydra has set
up logging from ``conf/hydra/default.yaml``; :func:`fmc.core.cli.hydra_entry`). By default the
terminal and the run's ``.log`` file get fmc's own lines and every warning or error; the
informational lines of other packages (Lightning's "GPU available", alembic's plugin set-up
that optuna pulls in, ...) and a few known harmless warnings stay out. ``verbose=true`` on any
command, ``hydra.verbose=true`` or ``FMC_VERBOSE=1`` shows all of them (and tracebacks of user
errors). Loops that may take long report with :func:`paced`: a line only when a stretch without
one would otherwise pass ``every_s`` seconds.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from fmc.core.config_values import flag

T = TypeVar("T")

# Loggers whose INFO lines a person sees by default: fmc's (the commands log as fmc.<verb>).
OWN_LOGGERS = ("fmc",)
# Lightning's two packages log below the logger "lightning", which has a console handler of its
# own ("INFO: ..."): through it and through fmc's handlers every Lightning line printed twice.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
# Warnings that say nothing a user of fmc can act on (regular expressions, matched at the start
# of the message); verbose shows them.
QUIET_WARNINGS = (
    # Lightning's own use of a torch API it has not caught up with (lightning 2.6, torch 2.9).
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def verbose() -> bool:
    """True when the user asked for tracebacks and every package's log lines (``FMC_VERBOSE=1``,
    or ``verbose=true`` on the command: :func:`configure` sets it)."""
    return os.environ.get("FMC_VERBOSE", "").lower() not in ("", "0", "false", "no")


def plural(count: int, noun: str) -> str:
    """``1 volume``, ``2 volumes``: counts in log lines read as words."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class _ForAPerson(logging.Filter):
    """fmc's own records and every warning or error; other packages' lower levels stay out."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in OWN_LOGGERS


class _BetweenBars(logging.StreamHandler):
    """A console handler that writes between progress bars: while a tqdm bar is drawn (the
    training bar, on the same terminal), the bar is cleared, the line written and the bar drawn
    again below it, where a plain handler would continue the bar's line with its own."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = sys.modules.get("tqdm.std")
        if tqdm is None or not tqdm.tqdm._instances:
            super().emit(record)
            return
        try:
            tqdm.tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - as logging's own handlers: report, never raise
            self.handleError(record)


def _between_bars(handler: logging.Handler) -> logging.Handler:
    """``handler`` as a :class:`_BetweenBars` when it is a plain console handler."""
    if type(handler) is not logging.StreamHandler:
        return handler
    console = _BetweenBars(handler.stream)
    console.setLevel(handler.level)
    console.setFormatter(handler.formatter)
    return console


def configure(verbose_key: bool = False) -> bool:
    """Set up what the terminal shows for this command (or this job of a sweep).

    Parameters
    ----------
    verbose_key : bool
        The command's ``verbose`` key. When it (or ``hydra.verbose``) is true, ``FMC_VERBOSE=1``
        is set for the rest of the process and the commands it starts: one switch (:func:`verbose`)
        that the tracebacks of user errors (:mod:`fmc.core.cli`), Lightning's model summary,
        W&B's output and child commands all read.

    Returns
    -------
    bool
        Whether everything is shown.
    """
    from hydra.core.hydra_config import HydraConfig

    # Only a job Hydra runs has its logging set up by Hydra (and hydra.verbose); in-process
    # tests (Hydra's compose API) keep their own handlers untouched.
    in_hydra = HydraConfig.initialized()
    if verbose_key or (in_hydra and HydraConfig.get().verbose):
        os.environ["FMC_VERBOSE"] = "1"
    everything = verbose()
    if not everything:
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
    if not in_hydra:
        return everything
    root = logging.getLogger()
    root.handlers = [_between_bars(handler) for handler in root.handlers]
    for name in LIGHTNING_LOGGERS:
        # Straight to fmc's handlers, past the logger "lightning" and its handler: once each.
        # Set here rather than in job_logging so that any hydra/job_logging choice gets it;
        # Lightning leaves both alone when it is imported after this (the root has handlers).
        logger = logging.getLogger(name)
        logger.handlers = list(root.handlers)
        logger.propagate = False
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, _ForAPerson)]:
            handler.removeFilter(old)
        if not everything:
            handler.addFilter(_ForAPerson())
    return everything


def configured(task: Callable[..., T]) -> Callable[..., T]:
    """Decorate a Hydra task so that :func:`configure` runs first, with its ``verbose`` key
    (every ``conf/<command>.yaml`` holds it, false by default)."""

    @functools.wraps(task)
    def run(cfg: Any, *args: Any, **kwargs: Any) -> T:
        configure(flag(cfg.verbose, "verbose", "conf/<command>.yaml"))
        return task(cfg, *args, **kwargs)

    return run


def paced(items: Iterable[T], log: logging.Logger, what: str, total: int | None = None,
          every_s: float = 10.0) -> Iterator[T]:
    """Yield ``items``, logging ``<what>: <done>/<total> (<seconds> s)`` after an item when
    ``every_s`` seconds have passed since the start or the last such line.

    A loop that finishes within ``every_s`` logs nothing (its caller's lines before and after
    say enough); a long one shows a line every ``every_s`` seconds or every item, whichever is
    rarer. No line after the last item: the caller's closing line follows.
    """
    total = len(items) if total is None else total  # type: ignore[arg-type]
    start = last = time.perf_counter()
    for done, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if done < total and now - last >= every_s:
            log.info("%s: %d/%d (%.0f s)", what, done, total, now - start)
            last = now

