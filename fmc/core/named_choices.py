"""Named choices of a config key (networks, losses, ...): one registry per kind, name → builder.

A :class:`Registry` is the one place that knows the valid names of a key such as
``model.network``: the builders fmc registers itself, and those other packages declare as Python
entry points of the registry's group (``fmc.networks``, ``fmc.losses``), so that users extend
fmc without forking it::

    # the outside package's pyproject.toml
    [project.entry-points."fmc.networks"]
    tiny_net = "my_package.nets:build_tiny_net"

A builder's parameters are read from its signature (:meth:`Registry.parameters`), so the config
checks, their messages and the lists shown to users come from the registry, not from hand-kept
lists. A builder may carry a ``check`` (given to :meth:`Registry.register`, or a ``check``
attribute of an entry point's object): a rule between its settings that its signature cannot say
(e.g. a network's fixed depth), run by :meth:`Registry.check`.

Entry points are found on first use and loaded only when their name is asked for; one that fails
to load is one line naming it (:class:`fmc.core.errors.FmcConfigError`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

from fmc.core.errors import FmcConfigError


def choice_error(key: str, value: Any, choices, where: str) -> FmcConfigError:
    """The one-line error of a value that is not one of ``choices``: key, choices, file."""
    return FmcConfigError(f"{key}={value}: choose one of {', '.join(choices)} ({where})")


class Registry:
    """The named builders of one kind of choice (see the module text).

    Parameters
    ----------
    kind : str
        What a name stands for, in messages (``"network"``).
    config_key : str
        The config key whose value is a name (``"model.network"``).
    where : str
        Where the user chooses it, in messages (a config file or group).
    group : str, optional
        Entry point group of builders from other packages (``"fmc.networks"``).
    arguments_key : str, optional
        The config key of a builder's keyword arguments (``"loss.kwargs"``), in messages.
    arguments_where : str, optional
        Where those are set, ``{name}`` replaced by the name (``"conf/loss/{name}.yaml"``).
    entry_type : type, optional
        What a name stands for when it is not a builder but a description (the input channels'
        :class:`fmc.preprocessing.channel_specs.ChannelSpec`): an entry point must load an
        instance of it. None: a callable builder.
    """

    def __init__(self, kind: str, config_key: str, where: str, group: str | None = None,
                 arguments_key: str | None = None, arguments_where: str | None = None,
                 entry_type: type | None = None) -> None:
        self.kind, self.config_key, self.where, self.group = kind, config_key, where, group
        self.entry_type = entry_type
        self.arguments_key = arguments_key or f"{config_key}_kwargs"
        self.arguments_where = arguments_where or where
        self._builders: dict[str, Callable] = {}
        self._checks: dict[str, Callable] = {}
        self._origins: dict[str, str] = {}
        self._entry_points: dict[str, metadata.EntryPoint] | None = None

    # -- registering ----------------------------------------------------------------------------
    def register(self, name: str, builder: Callable | None = None, *,
                 check: Callable | None = None):
        """Register ``builder`` as ``name`` (with ``builder`` left out: a decorator).

        ``check`` runs the rule between settings that the signature cannot say; it takes the
        settings it names and raises ``ValueError`` with a message that starts ``key=value:``.
        """
        def add(target: Callable) -> Callable:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = target
            self._origins[name] = "fmc"
            if check is not None:
                self._checks[name] = check
            return target

        return add if builder is None else add(builder)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (registered here or loaded from an entry point): a test's own entry."""
        for table in (self._builders, self._checks, self._origins):
            table.pop(name, None)

    def _found_entry_points(self, again: bool = False) -> dict[str, metadata.EntryPoint]:
        """The group's entry points not shadowing a registered name (found once, or ``again``)."""
        if self._entry_points is None or again:
            found = metadata.entry_points(group=self.group) if self.group else ()
            self._entry_points = {point.name: point for point in found
                                  if point.name not in self._builders}
        return self._entry_points

    def _load(self, name: str) -> bool:
        """Load the entry point ``name`` into the registry; False when there is none."""
        point = self._found_entry_points().get(name) or self._found_entry_points(again=True).get(
            name)
        if point is None:
            return False
        try:
            builder = point.load()
        except Exception as error:  # noqa: BLE001 - any failure: the package is broken
            detail = str(error).splitlines()[0][:200] if str(error) else ""
            raise FmcConfigError(
                f"{self.config_key}={name}: the entry point {name} = {point.value} (group "
                f"{self.group}) failed to load ({type(error).__name__}: {detail}); reinstall or "
                "fix the package that declares it") from None
        wanted = self.entry_type
        if not (isinstance(builder, wanted) if wanted is not None else callable(builder)):
            what = f"a {wanted.__name__}" if wanted is not None else "callable"
            raise FmcConfigError(f"{self.config_key}={name}: the entry point {name} = "
                                 f"{point.value} (group {self.group}) is not {what}")
        self._builders[name] = builder
        self._origins[name] = f"entry point {point.value}"
        check = getattr(builder, "check", None)
        if callable(check):
            self._checks[name] = check
        return True

    # -- asking ---------------------------------------------------------------------------------
    def names(self) -> tuple[str, ...]:
        """Every valid name: fmc's own in registration order, then the group's entry points."""
        return (*self._builders, *(n for n in self._found_entry_points() if n not in self._builders))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def _place(self) -> str:
        return self.where + (f"; or an entry point of group {self.group}" if self.group else "")

    def get(self, name: str) -> Callable:
        """The builder called ``name``.

        Raises
        ------
        FmcConfigError
            ``<config_key>=<name>: choose one of ... (<where>)``, or when its entry point fails
            to load.
        """
        name = str(name)
        if name not in self._builders and not self._load(name):
            raise choice_error(self.config_key, name, self.names(), self._place())
        return self._builders[name]

    def origin(self, name: str) -> str:
        """``"fmc"`` for fmc's own builders, else ``"entry point <module:object>"``."""
        self.get(name)
        return self._origins[name]

    def parameters(self, name: str) -> dict[str, inspect.Parameter]:
        """The keyword parameters of the builder called ``name``, from its signature
        (``**kwargs`` left out; :meth:`takes_any` says whether it has one)."""
        signature = inspect.signature(self.get(name))
        return {key: p for key, p in signature.parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def takes_any(self, name: str) -> bool:
        """Whether the builder called ``name`` takes any keyword (``**kwargs``)."""
        return any(p.kind is p.VAR_KEYWORD
                   for p in inspect.signature(self.get(name)).parameters.values())

    def check_arguments(self, name: str, kwargs: dict, reserved: tuple[str, ...] = ()) -> None:
        """Refuse a keyword the builder called ``name`` does not take (or one of ``reserved``,
        set elsewhere), in one line naming it and the ones it takes."""
        accepted = [key for key in self.parameters(name) if key not in reserved]
        if self.takes_any(name):
            unknown = sorted(set(kwargs) & set(reserved))
        else:
            unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            where = self.arguments_where.replace("{name}", str(name))
            raise FmcConfigError(f"{self.arguments_key}.{unknown[0]}: {self.kind} {name} does not "
                                 f"take it here; it takes {', '.join(accepted) or 'no arguments'}"
                                 f" ({where})")

    def check(self, name: str, settings: dict) -> None:
        """Run the rule registered with ``name`` on the settings it names, if it has one.

        Raises
        ------
        FmcConfigError
            The rule's ``ValueError``, with where to change it.
        """
        self.get(name)
        rule = self._checks.get(name)
        if rule is None:
            return
        wanted = inspect.signature(rule).parameters
        try:
            rule(**{key: value for key, value in settings.items() if key in wanted})
        except ValueError as error:
            where = self.arguments_where.replace("{name}", str(name))
            raise FmcConfigError(f"{error} ({where})") from None
