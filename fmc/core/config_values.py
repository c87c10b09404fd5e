"""Reading config values a command needs as numbers: one line naming the key when one is not.

Hydra accepts any value for any key (``slab=0``, ``seed=abc``, ``patch=abc``); a command reads
its numbers through these functions, so that a value it cannot use is a
:class:`~fmc.core.errors.FmcConfigError` naming the key, what to give and the config file,
instead of a ``ValueError`` deep inside the work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmc.core.errors import FmcConfigError


def whole_number(value: Any, key: str, minimum: int, where: str) -> int:
    """``value`` as an int >= ``minimum`` (``"3"`` and ``3`` alike; not ``1.5``, not a bool)."""
    number = None
    if not isinstance(value, bool):
        try:
            number = int(str(value).strip())
        except ValueError:
            number = None
    if number is None or number < minimum:
        raise FmcConfigError(f"{key}={value}: give a whole number >= {minimum} ({where})")
    return number


def real_number(value: Any, key: str, where: str, minimum: float = -math.inf,
                strictly_above: bool = False) -> float:
    """``value`` as a finite float >= ``minimum`` (or > it, with ``strictly_above``)."""
    number = math.nan
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
    too_low = number <= minimum if strictly_above else number < minimum
    if not math.isfinite(number) or too_low:
        bound = "" if minimum == -math.inf else f" {'>' if strictly_above else '>='} {minimum:g}"
        raise FmcConfigError(f"{key}={value}: give a finite number{bound} ({where})")
    return number


def whole_numbers(value: Any, key: str, count: int, minimum: int, where: str) -> tuple[int, ...]:
    """``value`` as ``count`` whole numbers >= ``minimum`` (e.g. a ``[Z, Y, X]`` size)."""
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if items is None and hasattr(value, "__iter__") and not isinstance(value, str):
        items = list(value)  # an OmegaConf ListConfig
    try:
        numbers = tuple(whole_number(v, key, minimum, where) for v in items or ())
    except FmcConfigError:
        numbers = ()
    if len(numbers) != count:
        raise FmcConfigError(f"{key}={value}: give {count} whole numbers >= {minimum}, e.g. "
                             f"[{', '.join(['16', '32', '32'][:count])}] ({where})")
    return numbers


def flag(value: Any, key: str, where: str) -> bool:
    """``value`` as true or false: YAML's booleans only (Python's ``bool("maybe")`` is True,
    which would take a typo for a yes)."""
    if isinstance(value, bool):
        return value
    raise FmcConfigError(f"{key}={value}: give true or false ({where})")


def optional_path(value: Any) -> Path | None:
    """A config value as a path; None (the YAML ``null``) stays None."""
    return None if value is None else Path(str(value))
