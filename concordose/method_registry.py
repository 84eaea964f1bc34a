"""A registry of named methods, shared by kinetics and dose (one instance each)."""

from __future__ import annotations

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
