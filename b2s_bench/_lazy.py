"""Lazy public faces (PEP 562): a face lists its names and the module that defines each, and a name's
module is imported on first use, so ``import b2s_bench`` or ``import b2s_bench.reporting`` loads
neither torch nor pandas until a name that needs them is used."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_face"]


def lazy_face(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str], moved: Mapping[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``.

    ``exports`` maps a public name to the module that defines it, relative to ``package`` (``"stats"``,
    or ``"..store.records"`` above it); a name that is itself a module maps to that module's path with
    ``"module:"`` in front. ``moved`` maps an old
    public name to the dotted path of its new home: it still answers, with a DeprecationWarning that
    names the new home, and is left out of ``dir()``.
    """
    moved = moved or {}

    def __getattr__(name: str) -> Any:
        if name in exports:
            where = exports[name]
            if where.startswith("module:"):
                value = importlib.import_module(_relative(where[7:]), package)
            else:
                value = getattr(importlib.import_module(_relative(where), package), name)
            namespace[name] = value  # later lookups skip this function
            return value
        if name in moved:
            home = moved[name]
            module, _, attr = home.rpartition(".")
            warnings.warn(
                f"{package}.{name} has moved: use {home} (the old name goes in the next release)",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(importlib.import_module(module), attr)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(namespace.get("__all__", exports))

    return __getattr__, __dir__


def _relative(module: str) -> str:
    return module if module.startswith(".") else f".{module}"
