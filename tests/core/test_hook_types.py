"""The built-in plugins' hook implementations carry the hookspecs' exact types.

pluggy checks only parameter names, and mypy sees a hookimpl as a plain function: nothing else ties
``register: Callable[[CompressorSpec], None]`` in a plugin to the spec's ``register`` type.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import typing
from collections.abc import Callable
from types import ModuleType

import b2s_bench
from b2s_bench import hookspecs

# The names hookspecs.py imports only under TYPE_CHECKING, resolved through the public API.
SPEC_NAMES = {
    n: getattr(b2s_bench, n)
    for n in (
        "CompressorSpec",
        "ModelSource",
        "DatasetSpec",
        "TaskSpec",
        "MetricSpec",
        "ReporterSpec",
        "ExecutorSpec",
        "CliOption",
    )
}
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("b2s_"))


def _builtin_modules() -> list[ModuleType]:
    eps = [ep for ep in md.entry_points(group="b2s_bench") if ep.value.startswith("b2s_bench_plugins.")]
    return [importlib.import_module(ep.value) for ep in sorted(eps, key=lambda e: e.value)]


def test_every_builtin_hookimpl_has_the_spec_types() -> None:
    modules = _builtin_modules()
    assert len(modules) >= 15  # the entry points of pyproject.toml: a broken lookup would check nothing
    checked = 0
    for module in modules:
        for hook in HOOKS:
            impl = getattr(module, hook, None)
            if impl is None:
                continue
            spec_hints = typing.get_type_hints(getattr(hookspecs, hook), localns=SPEC_NAMES)
            impl_hints = typing.get_type_hints(impl)
            assert impl_hints == spec_hints, f"{module.__name__}.{hook}: {impl_hints} != the hookspec's {spec_hints}"
            checked += 1
    assert checked >= 15  # every built-in plugin registers at least one thing


def test_the_comparison_tells_any_from_the_spec_type() -> None:
    """The comparison above resolves the spec to the real Callable, which ``Any`` (what the plugins had) is not."""

    def b2s_register_compressors(register: typing.Any) -> None:
        del register

    spec = typing.get_type_hints(hookspecs.b2s_register_compressors, localns=SPEC_NAMES)["register"]
    assert spec == Callable[[b2s_bench.CompressorSpec], None]
    assert typing.get_type_hints(b2s_register_compressors)["register"] != spec
