"""The command line of ``python -m fmc.<verb>`` before Hydra sees it: split, extended, checked.

Hydra answers a mistyped key with its own multi-line message and exit code 1 (and a ``+key``
with a traceback later, when Lightning or the module refuses the argument), after it has made
the run folder. :func:`check_command_line` composes the config first, as Hydra will, and turns
each such mistake into fmc's one line naming the key and the nearest valid keys, exit code 2,
before any folder exists. A key spelled as it was before the commands shared one vocabulary
(``out=``, ``raw=``, ``pred=``, ...: :data:`RENAMED_KEYS`, the one table of them) gets one line
naming the key that replaced it.

``FMC_OVERRIDES`` (:func:`with_extra_overrides`) appends overrides to every command, and
``FMC_OVERRIDES_<VERB>`` (``FMC_OVERRIDES_TRAIN``, ...) to one command: the one way to run a
command exactly as the README writes it with other sizes (the test suite runs the README's
commands at tiny sizes this way; a cluster can pin ``trainer.max_time`` the same way).
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmc.core.errors import FmcConfigError

EXTRA_OVERRIDES_ENV = "FMC_OVERRIDES"

# Hydra's command-line options that take a value (``--info`` takes one only from its choices).
_VALUE_OPTIONS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                  "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
# Options after which Hydra only prints: nothing to check.
_HELP_OPTIONS = {"--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc"}

# Keys renamed so that every command says the same thing with the same word (docs/design.md,
# "Words"): per command (its config name), each old spelling and the key that replaced it. An
# old spelling is refused with one line naming its new key, before Hydra composes.
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "evaluate": {"raw": "input", "pred": "prediction", "out": "output"},
    "report": {"raw": "input", "out": "output"},
    "synth": {"out": "output"},
    "export": {"out": "output", "tile": "patch"},
    "train": {"ckpt_path": "ckpt", "logger.kind": "logger.name"},
    "registry": {"out": "output", "source": "input"},
}
# Commands that once took words that are not key=value: what they are now.
_FORMER_USAGES = {"registry": "python -m fmc.registry input=SWEEP_OR_MODELS output=models.zip "
                              "(action=export is the default)"}
_WORDS = 'see docs/design.md "Words"'


def split_command_line(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(options, overrides)`` of a Hydra command line (without the program): options keep their
    values. Hydra's parser takes the overrides as one run of positional arguments, so fmc adds
    its own after the user's, not after an option."""
    options, overrides = [], []
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item.startswith("-"):
            options.append(item)
            takes_value = item in _VALUE_OPTIONS or (
                item in ("--info", "-i") and i + 1 < len(items) and items[i + 1] in _INFO_CHOICES)
            if takes_value and i + 1 < len(items):
                options.append(items[i + 1])
                i += 1
        else:
            overrides.append(item)
        i += 1
    return options, overrides


_applied = False


def with_extra_overrides(argv: Sequence[str], verb: str) -> list[str]:
    """``argv`` with the overrides of ``$FMC_OVERRIDES`` and then ``$FMC_OVERRIDES_<VERB>``
    (shell words; ``verb`` is the command's config name, e.g. ``train``) after the user's own.

    Applied once per process (a second call returns ``argv`` unchanged), so an entry point may
    call it early (before choosing the machine profile) and :func:`fmc.core.cli.hydra_entry`
    again.
    """
    global _applied
    extra = shlex.split(os.environ.get(EXTRA_OVERRIDES_ENV, "")) + shlex.split(
        os.environ.get(f"{EXTRA_OVERRIDES_ENV}_{verb.upper()}", ""))
    if not extra or _applied:
        return list(argv)
    _applied = True
    options, overrides = split_command_line(argv[1:])
    return [argv[0], *options, *overrides, *extra]


def check_command_line(config_dir: str, config_name: str, command: str,
                       argv: Sequence[str]) -> None:
    """Compose ``config_name`` with the overrides of ``argv`` as Hydra will; a key or option
    that does not exist raises :class:`FmcConfigError` naming it and the nearest valid ones.

    A key renamed for the common vocabulary (:data:`RENAMED_KEYS`) raises naming its new
    spelling. A sweep (``a=1,2``) is checked with its first value. ``+key`` that adds a key fmc
    does not read (anything but a group, ``hydra.*`` or a ``*kwargs`` mapping) is refused as
    well: it would reach Lightning's Trainer or fmc's module as an unknown argument.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    options, overrides = split_command_line(argv[1:])
    if any(option in _HELP_OPTIONS for option in options) or "--experimental-rerun" in options:
        return
    words = [item for item in overrides if "=" not in item and not item.startswith("~")]
    if words and config_name in _FORMER_USAGES:
        raise FmcConfigError(f"{' '.join(words)}: {command} takes key=value settings only: "
                             f"{_FORMER_USAGES[config_name]}; {_WORDS}")
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise FmcConfigError(f"cannot read the command line: {_first_line(error)}") from None
    _check_spellings_and_sweeps(parsed, options, config_name, command)
    single = [_first_value(override, config_dir) for override in parsed]
    groups = _groups(config_dir)
    added = [o.key_or_group for o in parsed if o.is_add()
             and o.key_or_group.split(".")[0] != "hydra" and o.key_or_group not in groups]
    global_hydra = GlobalHydra.instance()
    saved = global_hydra.hydra if global_hydra.is_initialized() else None
    global_hydra.clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            try:
                compose(config_name=config_name, overrides=single)
            except Exception as error:  # noqa: BLE001 - Hydra's and OmegaConf's errors name the key
                raise FmcConfigError(_composition_message(
                    error, compose(config_name=config_name), config_dir, config_name,
                    command)) from None
            # The config without the user's overrides, only when a +key must be looked up in it
            # (a second composition costs a third of a second at every start).
            base = compose(config_name=config_name) if added else None
    finally:
        global_hydra.clear()
        if saved is not None:
            global_hydra.initialize(saved)
    for key in added:
        _check_added_key(key, base, config_name)


def _check_spellings_and_sweeps(parsed: list, options: list[str], config_name: str,
                                command: str) -> None:
    """Refuse a key's former spelling (:data:`RENAMED_KEYS`) and a sweep without --multirun."""
    renamed = RENAMED_KEYS.get(config_name, {})
    for override in parsed:
        if override.key_or_group in renamed:
            raise FmcConfigError(f"{override.input_line}: this key is now "
                                 f"{renamed[override.key_or_group]}= ({command}); {_WORDS}")
    sweeps = [override.input_line for override in parsed if override.is_sweep_override()]
    if sweeps and not ({"--multirun", "-m"} & set(options)):
        raise FmcConfigError(f"{sweeps[0]} is a sweep over several values: add --multirun (or -m) "
                             "to run one job per value, or give one value")


def _check_added_key(key: str, base: Any, config_name: str) -> None:
    """Refuse ``+key`` on a key fmc does not read (see :func:`check_command_line`)."""
    from omegaconf import OmegaConf

    if OmegaConf.select(base, key) is not None:
        return  # + on a key that exists: Hydra refuses it itself, with the fix
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    if parent.split(".")[-1].endswith("kwargs"):
        return
    if parent and OmegaConf.select(base, parent) == {}:
        return  # an empty mapping the config leaves open for keys (fmc.synth's optics: {})
    raise FmcConfigError(_unknown_key_message(key, base, config_name))


def _first_value(override: Any, config_dir: str) -> str:
    """An override as one ``key=value`` (a sweep's first value), as Hydra's compose takes it."""
    from hydra.core.override_parser.types import Glob

    text = override.input_line
    if not override.is_sweep_override():
        return text
    if isinstance(override.value(), Glob):  # a group's options by pattern: the first that matches
        group = Path(config_dir) / override.key_or_group.replace(".", "/")
        options = override.value().filter(sorted(p.stem for p in group.glob("*.yaml")))
        return f"{override.get_key_element()}={options[0]}" if options else text
    try:
        value = next(iter(override.sweep_string_iterator()))
    except Exception:  # noqa: BLE001 - intervals and ranges of an optuna search: value unknown
        return text.split("=", 1)[0] + "=null" if not override.is_add() else text
    return f"{override.get_key_element()}={value}"


def _groups(config_dir: str) -> set[str]:
    root = Path(config_dir)
    return {str(p.relative_to(root)).replace(os.sep, "/") for p in root.rglob("*")
            if p.is_dir()}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    from omegaconf import DictConfig

    keys = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}{key}"
            keys.append(path)
            try:
                child = node._get_node(key)
            except Exception:  # noqa: BLE001
                continue
            if isinstance(child, DictConfig):
                keys.extend(_flat_keys(child, f"{path}."))
    return keys


def _unknown_key_message(key: str, base: Any, config_name: str) -> str:
    keys = [k for k in _flat_keys(base) if not k.startswith("hydra.")]
    near = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = [k for k in keys if parent and k.startswith(parent + ".")
                and "." not in k[len(parent) + 1:]]
    hint = f"did you mean {_or_list(near)}?" if near else (
        f"the keys under {parent} are {', '.join(s.split('.')[-1] for s in siblings)}"
        if siblings else "check its spelling")
    return f"{key}: no such key; {hint} (python -m fmc.{config_name} --cfg job lists them all)"


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


_KEY_PATTERNS = (re.compile(r"Could not override '([^']+)'"),
                 re.compile(r"Could not append to config\. An item is already at '([^']+)'"),
                 re.compile(r"full_key: (\S+)"))
_GROUP_PATTERN = re.compile(r"Could not find '([^']+)'")


def _composition_message(error: BaseException, base: Any, config_dir: str, config_name: str,
                         command: str) -> str:
    text = f"{error}\n{error.__cause__ or ''}"
    group = _GROUP_PATTERN.search(text)
    if group:
        path = group.group(1)
        folder, _, option = path.rpartition("/")
        options = sorted(p.stem for p in (Path(config_dir) / folder).glob("*.yaml"))
        if folder and options:
            near = difflib.get_close_matches(option, options, n=1)
            return (f"{folder}={option}: no such option"
                    + (f" (did you mean {folder}={near[0]}?)" if near else "")
                    + f"; choose one of {', '.join(options)} (conf/{folder}/)")
    for pattern in _KEY_PATTERNS:
        found = pattern.search(text)
        if found:
            key = found.group(1)
            if "already at" in pattern.pattern:
                return f"+{key}: {key} exists already; set it without the +: {key}=..."
            return _unknown_key_message(key, base, config_name)
    return f"cannot compose conf/{config_name}.yaml with these overrides: {_first_line(error)}"
