"""Registry[T]: named specs from plugins, with "did you mean" lookups and wildcard matching."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from .errors import UnknownNameError, UserError

__all__ = ["Registry", "DuplicateNameError", "Named"]


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class DuplicateNameError(UserError):
    """Two plugins registered the same name."""


class Registry(Generic[T]):
    """Specs of one kind (compressors, models, ...) keyed by name, remembering which plugin gave each."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._frozen = False
        self.unavailable_hint = ""  # appended to unknown-name errors, e.g. plugins that failed to load

    def register(self, spec: T, plugin: str = "<direct>") -> None:
        if self._frozen:
            raise RuntimeError(f"the {self.kind} registry is frozen; register from a plugin hook")
        name = spec.name
        if not isinstance(name, str) or not name:
            raise UserError(f"plugin {plugin!r} registered a {self.kind} without a name")
        if name in self._items:
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by plugin {self._origin[name]!r} "
                f"and by plugin {plugin!r}; disable one of them (--disable NAME or B2S_BENCH_DISABLE)"
            )
        self._items[name] = spec
        self._origin[name] = plugin

    def freeze(self) -> None:
        self._frozen = True

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items, self.unavailable_hint) from None

    def origin(self, name: str) -> str:
        return self._origin[name]

    def match(self, pattern: str | None = None) -> list[T]:
        """Specs whose name matches a shell-style pattern (all when None), sorted by name."""
        names = sorted(self._items)
        if pattern:
            if not any(ch in pattern for ch in "*?["):
                pattern = f"*{pattern}*"
            names = [n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower())]
        return [self._items[n] for n in names]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self.match())

    def __len__(self) -> int:
        return len(self._items)
