"""Registry[T]: named specs from plugins, with "did you mean" lookups and wildcard matching.

A name that two plugins register is a clash: neither spec is used, and looking the name up raises
an error that names both plugins. Every other name keeps working, so one clash never stops
unrelated commands (``b2s-bench ls plugins`` shows it).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from .errors import UnknownNameError, UserError

__all__ = ["Registry", "DuplicateNameError", "Named", "matches"]


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class DuplicateNameError(UserError):
    """Two plugins registered the same name."""


def matches(name: str, pattern: str | None) -> bool:
    """Whether ``name`` matches a shell-style glob, or contains ``pattern`` (no wildcard), ignoring case.

    The one matching rule of every listing and selection (``ls``, ``-k``, registries).
    """
    if not pattern:
        return True
    pat = pattern.lower()
    if not any(ch in pat for ch in "*?["):
        pat = f"*{pat}*"
    return fnmatch.fnmatchcase(name.lower(), pat)


class Registry(Generic[T]):
    """Specs of one kind (compressors, models, ...) keyed by name, remembering which plugin gave each."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._clashes: dict[str, list[str]] = {}  # name -> the plugins that all registered it
        self._frozen = False
        self.unavailable_hint = ""  # appended to unknown-name errors, e.g. plugins that failed to load

    def register(self, spec: T, plugin: str = "<direct>") -> None:
        if self._frozen:
            raise RuntimeError(f"the {self.kind} registry is frozen; register from a plugin hook")
        name = spec.name
        if not isinstance(name, str) or not name:
            raise UserError(f"plugin {plugin!r} registered a {self.kind} without a name")
        if name in self._clashes:
            self._clashes[name].append(plugin)
        elif name in self._items:
            self._clashes[name] = [self._origin.pop(name), plugin]
            del self._items[name]
        else:
            self._items[name] = spec
            self._origin[name] = plugin

    def clash_message(self, name: str) -> str:
        first, *others = self._clashes[name]
        return (
            f"{self.kind} {name!r} is registered twice: by plugin {first!r} and by plugin "
            f"{' and '.join(repr(o) for o in others)}; neither is used. Disable one of them "
            "(--disable NAME or B2S_BENCH_DISABLE) or rename it"
        )

    def clashes(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._clashes.items()}

    def block(self, name: str, plugins: list[str]) -> None:
        """Take a registered name out of use as a clash (e.g. its codes clash with another's)."""
        if name in self._items:
            del self._items[name]
            self._origin.pop(name, None)
        self._clashes.setdefault(name, []).extend(p for p in plugins if p not in self._clashes.get(name, []))

    def freeze(self) -> None:
        self._frozen = True

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            if name in self._clashes:
                raise DuplicateNameError(self.clash_message(name)) from None
            raise UnknownNameError(self.kind, name, self._items, self.unavailable_hint) from None

    def origin(self, name: str) -> str:
        return self._origin[name]

    def match(self, pattern: str | None = None) -> list[T]:
        """Specs whose name matches a shell-style pattern (all when None), sorted by name."""
        return [self._items[n] for n in sorted(self._items) if matches(n, pattern)]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self.match())

    def __len__(self) -> int:
        return len(self._items)
