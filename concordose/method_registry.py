"""A registry of named methods, shared by kinetics and dose (one instance each)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from concordose.errors import ConfigurationError


class NamedMethod(Protocol):
    """Anything registered: a name and a version (read-only: frozen dataclasses qualify)."""

    @property
    def name(self) -> str:
        """Registry name."""
        ...

    @property
    def version(self) -> str:
        """Version of the method's numbers."""
        ...


MethodT = TypeVar("MethodT", bound=NamedMethod)

ALL_METHODS = "all"
"""The word that selects every registered method (site protocol keys, ``--kinetics-methods``)."""


class MethodRegistry(Generic[MethodT]):
    """Name → method, with a clear error for unknown names.

    Args:
        kind: what the methods compute, for messages (e.g. "kinetics").
        methods: the registered instances.
    """

    def __init__(self, kind: str, methods: list[MethodT]) -> None:
        self.kind = kind
        self._methods = {method.name: method for method in methods}
        if len(self._methods) != len(methods):
            raise ValueError(f"duplicate {kind} method names in {[m.name for m in methods]}")

    def get(self, name: str) -> MethodT:
        """The method registered as ``name``.

        Raises:
            ConfigurationError: unknown name (the message lists the known ones).
        """
        try:
            return self._methods[name]
        except KeyError:
            raise ConfigurationError(
                f"unknown {self.kind} method {name!r}; known: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Names of all registered methods, sorted."""
        return sorted(self._methods)

    def select(self, names: str | Sequence[str], *, where: str) -> tuple[str, ...]:
        """Names of the methods a run asks for, checked, in the order given, without repeats.

        Args:
            names: ``"all"`` (every registered method, sorted), a comma-separated list
                (``"mono_exponential,trapezoid"``, as on the command line) or a sequence of
                names (as in a site protocol); surrounding spaces are ignored.
            where: where the names came from, for the message (e.g. ``"--kinetics-methods"``).

        Raises:
            ConfigurationError: an unknown name (the message names it, where it came from and
                every valid name) or no name at all.
        """
        if isinstance(names, str):
            if names.strip() == ALL_METHODS:
                return tuple(self.names())
            names = names.split(",")
        wanted = [name.strip() for name in names if name.strip()]
        if not wanted:
            raise ConfigurationError(
                f"{where}: expected at least one {self.kind} method name or {ALL_METHODS!r}, "
                f"found none; known: {', '.join(self.names())}"
            )
        unknown = [name for name in wanted if name not in self._methods]
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown {self.kind} method(s) {', '.join(map(repr, unknown))}; "
                f"expected {ALL_METHODS!r} or names among: {', '.join(self.names())}"
            )
        return tuple(dict.fromkeys(wanted))
