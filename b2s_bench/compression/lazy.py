"""Registering without importing: references that resolve on first use.

A plugin's registration runs whenever the plugins load, for ``b2s-bench validate`` and a resumed run
too, which compute nothing. A compressor's ``compress`` and its codes live in modules that import torch
(1.3 s); its config does not. :func:`lazy` lets a registration name them instead of importing them:

    SPEC = b2s.CompressorSpec(
        ..., config=MyConfig,  # a torch-free module: suites are checked against it
        compress=b2s.lazy(".compressor:compress", __name__),
        codes=(b2s.lazy(".codes:MyCode", __name__, kind="mine.code"),),
    )

A :class:`Lazy` is callable like what it names and answers its public attributes; its module is
imported on the first such use (or :meth:`Lazy.resolve`). A code's ``kind`` is given beside its
reference, so that the registry can check kinds are unique without importing the class; the class
must then declare the same kind.
:func:`lazy_exports` keeps a package's re-exported names working without importing them up front.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Lazy", "lazy", "lazy_exports", "resolved"]


class Lazy:
    """A reference ``"module:attribute"`` to a callable or a class, imported on first use.

    Attributes:
        ref: ``"package.module:name"`` (absolute; :func:`lazy` makes relative ones absolute).
        kind: for a Code class, its ``Code.kind``, known before the class is imported.
    """

    __slots__ = ("ref", "kind", "_target")

    def __init__(self, ref: str, kind: str | None = None) -> None:
        module, sep, attr = ref.partition(":")
        if not sep or not module or not attr or module.startswith("."):
            raise ValueError(f"a lazy reference must be 'package.module:name', got {ref!r}")
        self.ref = ref
        self.kind = kind
        self._target: Any = None

    def resolve(self) -> Any:
        """Import the module and return what the reference names (once; later calls reuse it)."""
        if self._target is None:
            module, _, attr = self.ref.partition(":")
            try:
                target: Any = importlib.import_module(module)
                for part in attr.split("."):
                    target = getattr(target, part)
            except (ImportError, AttributeError) as e:
                raise ImportError(f"lazy reference {self.ref!r} does not resolve: {e}") from e
            if self.kind is not None and getattr(target, "kind", None) != self.kind:
                raise TypeError(
                    f"lazy reference {self.ref!r} was registered with kind {self.kind!r} but the class says "
                    f"{getattr(target, 'kind', None)!r}; make the two agree"
                )
            self._target = target
        return self._target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        """Other attributes are those of what the reference names (a Code class's ``restore``, ...), so a
        reference stands in for it (``{c.kind: c for c in spec.codes}`` loads artifacts)."""
        if name.startswith("_"):  # never for private or special names (copying, pickling)
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    @property
    def loaded(self) -> bool:
        """Whether the reference was resolved already (its module imported)."""
        return self._target is not None

    def __repr__(self) -> str:
        return f"lazy({self.ref!r}{'' if self.kind is None else f', kind={self.kind!r}'})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lazy) and (self.ref, self.kind) == (other.ref, other.kind)

    def __hash__(self) -> int:
        return hash((self.ref, self.kind))


def lazy(ref: str, package: str | None = None, *, kind: str | None = None) -> Lazy:
    """A :class:`Lazy` reference to ``"module:name"``, imported on first use.

    Args:
        ref: ``"package.module:name"``, or relative to ``package`` (``".compressor:compress"``, as
            in ``from .compressor import compress``); ``name`` may be dotted (``"Class.method"``).
        package: the package a relative ``ref`` starts from (pass ``__name__`` in a package's
            ``__init__``).
        kind: for a Code class listed in ``CompressorSpec.codes``: its ``Code.kind``, required there.
    """
    module, sep, attr = ref.partition(":")
    if module.startswith("."):
        if not package:
            raise ValueError(f"lazy({ref!r}): a relative reference needs package= (pass __name__)")
        module = importlib.util.resolve_name(module, package)
    return Lazy(f"{module}{sep}{attr}", kind)


def resolved(value: Any) -> Any:
    """``value`` itself, or what it names if it is a :class:`Lazy`."""
    return value.resolve() if isinstance(value, Lazy) else value


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a module that re-exports names of other modules lazily (PEP 562).

    ``exports`` maps each name to the module that defines it, relative to ``package`` as in a ``from
    .module import name`` written there (``{"compress": ".compressor"}``): ``from mypkg import compress``
    imports ``mypkg.compressor`` only then. Use it as ``__getattr__, __dir__ = b2s.lazy_exports(__name__,
    globals(), {...})`` in a package's ``__init__`` or in a module (relative to its package then).
    """
    anchor = package if "__path__" in namespace else str(namespace.get("__package__") or package.rpartition(".")[0])
    where = {
        name: importlib.util.resolve_name(module, anchor) if module.startswith(".") else module
        for name, module in exports.items()
    }

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
