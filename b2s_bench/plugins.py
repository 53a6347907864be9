"""The plugin manager: entry points (built-ins and third parties alike), local files, disabling.

Built-in plugins are declared under the ``b2s_bench`` entry-point group in our own pyproject, the
same way a third party's are, so this is the only path by which the core meets any plugin.
A plugin that fails to import is recorded and reported, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import importlib.util
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .compression import CompressorSpec
from .errors import UserError
from .registry import DuplicateNameError, Registry
from .sources import DatasetSpec, ModelSource

__all__ = ["GROUP", "PluginInfo", "PluginFailure", "Plugins", "load_plugins", "hookimpl"]

GROUP = "b2s_bench"
PLUGINS_ENV = "B2S_BENCH_PLUGINS"  # os.pathsep-separated plugin files
DISABLE_ENV = "B2S_BENCH_DISABLE"  # comma-separated plugin names
hookimpl = pluggy.HookimplMarker(GROUP)


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str  # the installed distribution, or "local file"
    version: str
    origin: str  # "entry point MODULE" or a file path


@dataclasses.dataclass(frozen=True)
class PluginFailure:
    name: str
    distribution: str
    version: str
    error: str  # one line
    traceback: str


@dataclasses.dataclass
class Plugins:
    """The loaded plugins and their registries."""

    manager: pluggy.PluginManager
    compressors: Registry[CompressorSpec]
    models: Registry[ModelSource]
    datasets: Registry[DatasetSpec]
    metrics: Registry[Any]
    reporters: Registry[Any]
    infos: list[PluginInfo]
    failures: list[PluginFailure]
    disabled: list[str]

    def code_types(self) -> dict[str, type]:
        """Every Code class the registered compressors declare, by kind (to load artifacts)."""
        types: dict[str, type] = {}
        for spec in self.compressors:
            for code in spec.codes:
                types[code.kind] = code
        return types

    def warnings(self) -> list[str]:
        return [f"plugin {f.name!r} ({f.distribution} {f.version}) failed to load: {f.error}" for f in self.failures]


def _load_file(path: str) -> ModuleType:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"plugin file {path!r} does not exist (from --plugin or {PLUGINS_ENV})")
    name = f"b2s_bench_local_{p.stem}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import plugin file {path!r}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def load_plugins(
    files: Sequence[str] = (),
    disable: Sequence[str] = (),
    entry_points: bool = True,
    extra: Sequence[tuple[str, object]] = (),
) -> Plugins:
    """Load every plugin and fill the registries.

    Args:
        files: local plugin files (``--plugin``), added to those in ``$B2S_BENCH_PLUGINS``.
        disable: plugin names not to load, added to those in ``$B2S_BENCH_DISABLE``.
        entry_points: load the ``b2s_bench`` entry-point group (tests may turn it off).
        extra: (name, plugin object) pairs registered directly (for tests and the Python API).

    Raises:
        DuplicateNameError: when two plugins register the same name.
        UserError: for a local plugin file that cannot be imported.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    disabled = {d.strip() for d in os.environ.get(DISABLE_ENV, "").split(",") if d.strip()} | set(disable)
    infos: list[PluginInfo] = []
    failures: list[PluginFailure] = []

    if entry_points:
        for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else "unknown"
            version = ep.dist.version if ep.dist else "?"
            if ep.name in disabled:
                continue
            if pm.get_plugin(ep.name) is not None:
                taken = next(i for i in infos if i.name == ep.name)
                if (taken.distribution, taken.origin) == (dist, f"entry point {ep.value}"):
                    continue  # the same distribution seen twice on sys.path
                failures.append(PluginFailure(
                    ep.name, dist, version,
                    f"entry-point name {ep.name!r} ({ep.value}) is already taken by {taken.distribution} "
                    f"{taken.version} ({taken.origin}); one of the two must rename its entry point", ""))
                continue
            try:
                plugin = ep.load()
            except Exception as e:  # a broken plugin is reported, not fatal to the others
                failures.append(PluginFailure(ep.name, dist, version, _one_line(e), traceback.format_exc()))
                continue
            pm.register(plugin, name=ep.name)
            infos.append(PluginInfo(ep.name, dist, version, f"entry point {ep.value}"))

    env_files = [f for f in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if f]
    for path in [*env_files, *files]:
        name = Path(path).stem
        if name in disabled:
            continue
        try:
            module = _load_file(path)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"plugin file {path!r} failed to import: {_one_line(e)}") from e
        if pm.get_plugin(name) is not None:
            raise UserError(f"plugin name {name!r} from {path!r} is already taken; rename the file")
        pm.register(module, name=name)
        infos.append(PluginInfo(name, "local file", "-", str(path)))

    for name, obj in extra:
        pm.register(obj, name=name)
        infos.append(PluginInfo(name, "in process", "-", repr(obj)))

    plugins = Plugins(
        pm, Registry("compressor"), Registry("model source"), Registry("dataset"), Registry("metric"),
        Registry("reporter"), infos, failures, sorted(disabled),
    )
    hint = ""
    if failures:
        hint = "Plugins that failed to load: " + "; ".join(plugins.warnings())
    for hook_name, registry in [
        ("b2s_register_compressors", plugins.compressors),
        ("b2s_register_models", plugins.models),
        ("b2s_register_datasets", plugins.datasets),
        ("b2s_register_metrics", plugins.metrics),
        ("b2s_register_reporters", plugins.reporters),
    ]:
        registry.unavailable_hint = hint
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # one call per plugin, so each spec knows its plugin
            def register(spec: Any, _plugin: str = impl.plugin_name, _registry: Registry = registry) -> None:
                _registry.register(spec, _plugin)

            try:
                impl.function(register=register)
            except DuplicateNameError:
                raise
            except Exception as e:  # a plugin whose registration breaks is reported like an import failure
                info = next((i for i in infos if i.name == impl.plugin_name), None)
                failures.append(PluginFailure(
                    impl.plugin_name, info.distribution if info else "?", info.version if info else "?",
                    f"{hook_name} raised {_one_line(e)}", traceback.format_exc(),
                ))
        registry.freeze()
    return plugins
