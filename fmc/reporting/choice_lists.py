"""The named choices of fmc's commands, listed from their registries: the section
``python -m fmc.<command> --help`` ends with, and docs/choices.md (tests/test_choice_lists.py
keeps that file equal to :func:`choices_markdown`).

Nothing here is typed by hand: a network, loss, channel or format registered in fmc or by another
package's entry point appears in both the moment it exists.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from fmc.core.named_choices import Registry


def registries() -> dict[str, Registry]:
    """Every registry of named choices, by the config key that names one."""
    from fmc.inference.output_formats import OUTPUT_FORMATS
    from fmc.inference.tile_weights import WEIGHTINGS
    from fmc.models.fallback import FALLBACKS
    from fmc.models.losses import LOSSES
    from fmc.models.networks import NETWORKS
    from fmc.models.optimizers import OPTIMIZERS, SCHEDULERS
    from fmc.models.weight_averaging import AVERAGINGS
    from fmc.preprocessing.channel_specs import CHANNELS
    from fmc.training.loggers import LOGGERS

    return {registry.config_key: registry
            for registry in (NETWORKS, LOSSES, OPTIMIZERS, SCHEDULERS, FALLBACKS, AVERAGINGS,
                             CHANNELS, LOGGERS, WEIGHTINGS, OUTPUT_FORMATS)}


# The keys each command takes a name for (fmc.train: every training choice; the predicting
# commands: the sliding window's).
COMMAND_KEYS = {
    "train": ("model.network", "loss.name", "model.optimizer", "model.scheduler",
              "model.fallback", "model.averaging", "channels.list", "logger.name"),
    "predict": ("weighting", "fallback", "output_format"),
    "challenge": ("weighting", "fallback", "output_format"),
}
# fmc.predict's `fallback` takes the training fallbacks plus `auto`.
_PREDICT_KEYS = {"fallback": "model.fallback"}


def describe(registry: Registry, name: str) -> str:
    """One line on ``name``: its spec's ``description``, else its builder's first docstring
    line, else where it comes from."""
    entry = registry.get(name)
    text = getattr(entry, "description", None) if not callable(entry) or \
        hasattr(entry, "description") else None
    if not text:
        doc = inspect.getdoc(entry) or ""
        text = doc.strip().splitlines()[0] if doc.strip() else ""
    origin = registry.origin(name)
    if origin != "fmc":
        text = f"{text} ({origin})" if text else origin
    return text.rstrip(".")


def choices_text(command: str) -> str:
    """The ``--help`` section of ``command``: for each key it takes a name for, the names."""
    keys = COMMAND_KEYS.get(command)
    if not keys:
        return ""
    found = registries()
    lines = ["== Named choices (from fmc's registries; other packages add to them) ==", ""]
    for key in keys:
        registry = found[_PREDICT_KEYS.get(key, key)]
        names = ("auto", *registry.names()) if key in _PREDICT_KEYS else registry.names()
        lines.append(f"{key}: {', '.join(names)}")
    return "\n".join(lines) + "\n"


def choices_markdown(keys: Sequence[str] | None = None) -> str:
    """docs/choices.md: a table per registry (name, what it is), with how to add one."""
    lines = ["# Named choices", "",
             "Generated from fmc's registries by `make choices` (tests/test_choice_lists.py keeps",
             "this file equal to them). Each kind is one registry",
             "(`fmc.core.named_choices.Registry`); another package adds to it through the entry",
             "point group shown, without changing fmc; `python -m fmc.train --help` (and",
             "fmc.predict's, fmc.challenge's) lists the names installed here, entry points",
             "included.", ""]
    for key, registry in registries().items():
        if keys is not None and key not in keys:
            continue
        lines += [f"## {registry.kind}: `{key}`", "",
                  f"Chosen in {registry.where}; entry point group `{registry.group}`.", "",
                  "| name | what it is |", "|---|---|",
                  *(f"| `{name}` | {describe(registry, name)} |" for name in registry.names()), ""]
    return "\n".join(lines)
