"""The plugin manager: entry points (built-ins and third parties alike), local files, disabling.

Built-in plugins are declared under the ``b2s_bench`` entry-point group in our own pyproject, the
same way a third party's are, so this is the only path by which the core meets any plugin.
Nothing a plugin does wrong stops the others, and nothing is dropped silently: a plugin that fails
to import, a hook name that no spec declares, a registration that raises, and a name or code kind
that two plugins both claim are each recorded as a :class:`PluginFailure` (shown by
``b2s-bench ls plugins`` and as warnings). A clashing name is unusable, with an error that names
both plugins, and every other name keeps working.
"""

from __future__ import annotations

import dataclasses
import difflib
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
from .compression.lazy import Lazy, resolved
from .hookmarkers import GROUP, CliOption, hookimpl
from .registry import Registry

__all__ = ["GROUP", "PluginInfo", "PluginFailure", "Plugins", "load_plugins", "hookimpl", "PluginSelection"]

PLUGINS_ENV = "B2S_BENCH_PLUGINS"  # os.pathsep-separated plugin files
DISABLE_ENV = "B2S_BENCH_DISABLE"  # comma-separated plugin names
#: the registries of specs, as attributes of :class:`Plugins`
KINDS = ("compressors", "models", "datasets", "tasks", "metrics", "reporters", "executors")
REGISTER_HOOKS = {
    "b2s_register_compressors": "compressors",
    "b2s_register_models": "models",
    "b2s_register_datasets": "datasets",
    "b2s_register_tasks": "tasks",
    "b2s_register_metrics": "metrics",
    "b2s_register_reporters": "reporters",
    "b2s_register_executors": "executors",
    "b2s_register_cli_options": "cli_options",
}


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


@dataclasses.dataclass(frozen=True)
class PluginSelection:
    """How plugins were chosen (``--plugin``, ``--disable``), so a worker process loads the same set."""

    files: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()


class _Options:
    """CLI options registered by plugins, keyed by flag (a Registry needs ``.name``)."""

    def __init__(self) -> None:
        self.registry: Registry[Any] = Registry("command-line option")

    def register(self, option: CliOption, plugin: str) -> None:
        self.registry.register(_NamedOption(option.flag, option), plugin)

    def for_command(self, command: str) -> list[CliOption]:
        return [o.option for o in self.registry if command in o.option.commands]


@dataclasses.dataclass(frozen=True)
class _NamedOption:
    name: str
    option: CliOption


@dataclasses.dataclass
class Plugins:
    """The loaded plugins and their registries."""

    manager: pluggy.PluginManager
    compressors: Registry[Any]
    models: Registry[Any]
    datasets: Registry[Any]
    metrics: Registry[Any]
    reporters: Registry[Any]
    executors: Registry[Any]
    cli_options: _Options
    infos: list[PluginInfo]
    failures: list[PluginFailure]
    disabled: list[str]
    selection: PluginSelection = PluginSelection()
    tasks: Registry[Any] = dataclasses.field(default_factory=lambda: Registry("task"))
    _code_types: dict[str, Any] = dataclasses.field(default_factory=dict)  # a class, or a lazy reference to one

    def code_types(self) -> dict[str, type]:
        """Every Code class the registered compressors declare, by kind (to load artifacts); lazily named
        classes are imported here."""
        return {kind: resolved(code) for kind, code in self._code_types.items()}

    def warnings(self, local_only: bool = False) -> list[str]:
        """One line per plugin that failed to load (``local_only``: only local files, ``--plugin FILE.py``)."""
        return [
            f"plugin {f.name!r} ({f.distribution} {f.version}): {f.error}"
            for f in self.failures
            if not local_only or f.distribution == "local file"
        ]

    def info(self, name: str) -> PluginInfo | None:
        return next((i for i in self.infos if i.name == name), None)

    def fail(self, name: str, error: str, tb: str = "") -> None:
        info = self.info(name)
        self.failures.append(PluginFailure(name, info.distribution if info else "?", info.version if info else "?", error, tb))


def _load_file(path: str) -> ModuleType:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"plugin file {path!r} does not exist (from --plugin or {PLUGINS_ENV})")
    name = f"b2s_bench_local_{p.stem}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import plugin file {path!r}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _entry_points(pm: pluggy.PluginManager, disabled: set[str], infos: list[PluginInfo], failures: list[PluginFailure]) -> None:
    """Load the entry-point group. A name two distributions both use loads neither (whichever came
    first on sys.path would otherwise win silently)."""
    by_name: dict[str, list[md.EntryPoint]] = {}
    for ep in md.entry_points(group=GROUP):
        same = by_name.setdefault(ep.name, [])
        if not any((o.value, _dist(o)) == (ep.value, _dist(ep)) for o in same):  # one distribution seen twice
            same.append(ep)
    for name in sorted(by_name):
        if name in disabled:
            continue
        eps = by_name[name]
        if len(eps) > 1:
            who = " and ".join(f"{_dist(e)} {_version(e)} ({e.value})" for e in eps)
            for ep in eps:
                failures.append(
                    PluginFailure(
                        name,
                        _dist(ep),
                        _version(ep),
                        f"entry-point name {name!r} is claimed by {who}; neither is loaded. "
                        "One of them must rename its entry point (or --disable one)",
                        "",
                    )
                )
            continue
        ep = eps[0]
        try:
            plugin = ep.load()
        except Exception as e:  # a broken plugin is reported, not fatal to the others
            failures.append(
                PluginFailure(name, _dist(ep), _version(ep), f"failed to load: {_one_line(e)}", traceback.format_exc())
            )
            continue
        pm.register(plugin, name=name)
        infos.append(PluginInfo(name, _dist(ep), _version(ep), f"entry point {ep.value}"))


def _dist(ep: md.EntryPoint) -> str:
    return ep.dist.name if ep.dist else "unknown"


def _version(ep: md.EntryPoint) -> str:
    return ep.dist.version if ep.dist else "?"


def _files(
    pm: pluggy.PluginManager, paths: Sequence[str], disabled: set[str], infos: list[PluginInfo], failures: list[PluginFailure]
) -> None:
    for path in paths:
        name = Path(path).stem
        if name in disabled:
            continue
        if pm.get_plugin(name) is not None:
            failures.append(
                PluginFailure(
                    name,
                    "local file",
                    "-",
                    f"plugin name {name!r} from {path!r} is already taken by another plugin; rename the file",
                    "",
                )
            )
            continue
        try:
            module = _load_file(path)
        except BaseException as e:  # SystemExit in a plugin file included: report it like any failure
            if isinstance(e, KeyboardInterrupt):
                raise
            failures.append(
                PluginFailure(name, "local file", "-", f"{path} failed to load: {_one_line(e)}", traceback.format_exc())
            )
            continue
        pm.register(module, name=name)
        infos.append(PluginInfo(name, "local file", "-", str(path)))


def _undeclared_hooks(pm: pluggy.PluginManager, plugins: Plugins) -> None:
    """What pluggy's ``check_pending()`` checks, for every plugin rather than up to the first: a hook
    implementation whose name no spec declares (a typo registers nothing, so it must not look fine)."""
    declared = [n for n in dir(hookspecs) if n.startswith("b2s_")]
    for name, caller in sorted(vars(pm.hook).items()):
        if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            near = difflib.get_close_matches(name, declared, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (hooks: {', '.join(declared)})"
            plugins.fail(impl.plugin_name, f"implements {name!r}, which is not a b2s-bench hook{hint}")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        pass  # each case is recorded above, with its plugin


def _fill(plugins: Plugins) -> None:
    for hook_name, attr in REGISTER_HOOKS.items():
        registry = getattr(plugins, attr)
        for impl in getattr(plugins.manager.hook, hook_name).get_hookimpls():  # one call per plugin: specs know it

            def register(spec: Any, _plugin: str = impl.plugin_name, _registry: Any = registry) -> None:
                _registry.register(spec, _plugin)

            try:
                impl.function(register=register)
            except Exception as e:  # a plugin whose registration breaks is reported like an import failure
                plugins.fail(impl.plugin_name, f"{hook_name} raised {_one_line(e)}", traceback.format_exc())
    for attr in KINDS:
        registry = getattr(plugins, attr)
        for name in sorted(registry.clashes()):
            first = registry.clashes()[name][0]
            plugins.fail(first, registry.clash_message(name))


def _unknown_tasks(plugins: Plugins) -> None:
    """A dataset whose task no plugin registers is reported (naming its plugin); a suite that uses it
    is refused at validation with the same words (:func:`unknown_task`). So is a metric that serves
    only tasks no plugin registers."""
    for spec in plugins.datasets:
        problem = unknown_task(plugins, spec)
        if problem is not None:
            plugins.fail(plugins.datasets.origin(spec.name), problem)
    for metric in plugins.metrics:  # one that serves no registered task is unusable (a misspelt name?)
        if metric.tasks is not None and not any(t in plugins.tasks for t in metric.tasks):
            plugins.fail(
                plugins.metrics.origin(metric.name),
                f"metric {metric.name!r} serves {', '.join(sorted(metric.tasks))}, which no plugin registers "
                f"(tasks: {', '.join(plugins.tasks.names()) or 'none'}); no suite can use it until one does",
            )


def unknown_task(plugins: Plugins, dataset: Any) -> str | None:
    """Why ``dataset`` (a DatasetSpec) cannot run here: its task is registered by no plugin; else None."""
    if dataset.task in plugins.tasks:
        return None
    known = ", ".join(plugins.tasks.names()) or "none"
    return (
        f"dataset {dataset.name!r} (plugin {plugins.datasets.origin(dataset.name)!r}) declares task "
        f"{dataset.task!r}, which no plugin registers (tasks: {known}); install or enable the plugin "
        "that registers it, or fix DatasetSpec.task"
    )


def _code_kinds(plugins: Plugins) -> None:
    """Two compressors whose codes share a ``Code.kind`` could load each other's artifacts: both are
    blocked, with an error naming both. Kinds are read without importing lazily named classes."""
    owners: dict[str, list[tuple[str, Any]]] = {}
    for spec in plugins.compressors:
        for kind, code in zip(spec.code_kinds(), spec.codes, strict=True):
            owners.setdefault(kind, []).append((spec.name, code))
    for kind, found in sorted(owners.items()):
        classes = {_code_name(c) for _, c in found}  # one class, whether named lazily or not
        if len(classes) == 1:
            plugins._code_types[kind] = next((c for _, c in found if not isinstance(c, Lazy)), found[0][1])
            continue
        names = sorted({n for n, _ in found})
        who = " and ".join(f"{_code_name(c)} (compressor {n!r}, plugin {plugins.compressors.origin(n)!r})" for n, c in found)
        origins = [plugins.compressors.origin(n) for n in names]
        for name in names:
            plugins.compressors.block(name, origins)
        plugins.fail(
            origins[0],
            f"code kind {kind!r} is declared by {who}; kinds must be unique, so neither compressor is used. Rename one kind",
        )


def _code_name(code: Any) -> str:
    """``module.Class`` of a Code class or of a lazy reference to one (not imported)."""
    return code.ref.replace(":", ".") if isinstance(code, Lazy) else f"{code.__module__}.{code.__qualname__}"


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

    Nothing here raises for a plugin's fault: see :attr:`Plugins.failures`.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    disabled = {d.strip() for d in os.environ.get(DISABLE_ENV, "").split(",") if d.strip()} | set(disable)
    infos: list[PluginInfo] = []
    failures: list[PluginFailure] = []
    if entry_points:
        _entry_points(pm, disabled, infos, failures)
    env_files = [f for f in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if f]
    _files(pm, [*env_files, *files], disabled, infos, failures)
    for name, obj in extra:
        pm.register(obj, name=name)
        infos.append(PluginInfo(name, "in process", "-", repr(obj)))

    plugins = Plugins(
        pm,
        Registry("compressor"),
        Registry("model source"),
        Registry("dataset"),
        Registry("metric"),
        Registry("reporter"),
        Registry("executor"),
        _Options(),
        infos,
        failures,
        sorted(disabled),
        PluginSelection(tuple(files), tuple(disable)),
    )
    _undeclared_hooks(pm, plugins)
    _fill(plugins)
    _code_kinds(plugins)
    _unknown_tasks(plugins)
    hint = "Plugins that failed to load: " + "; ".join(plugins.warnings()) if plugins.failures else ""
    for attr in KINDS:
        registry = getattr(plugins, attr)
        registry.unavailable_hint = hint
        registry.freeze()
    plugins.cli_options.registry.freeze()
    return plugins
