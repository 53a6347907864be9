"""``b2s-bench show NAME``: one compressor, metric, dataset, reporter or model source, in full.

A compressor or dataset is shown with every setting: its type, default, allowed values and help,
taken from the config dataclass (:func:`b2s_bench.config.setting_docs`). A metric is shown with
its unit, direction, kind, roles and what it reads; a model source with where its models' weights
come from. ``SOURCE:MODEL`` shows one model and whether it can be had here. The same helpers make
``b2s-bench ls ... -v``.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from ..config import SettingDoc, setting_docs
from ..errors import UnknownNameError
from ..plugins import Plugins

if TYPE_CHECKING:
    from ..sources import ModelSource

__all__ = ["add_parser", "main", "describe", "settings_table", "catalog_rows", "compressor_track"]

WIDTH = 100  # help text is wrapped to this width
SHOWN = 20  # models of a source shown by `show SOURCE` (`ls models` lists them all)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "show",
        help="show a compressor, metric, dataset or model source with every setting",
        description="Show one compressor, metric, dataset, reporter or model source (or SOURCE:MODEL) "
        "in full: each setting with its type, default, allowed values and help.",
    )
    p.add_argument("name", help="a name from `b2s-bench ls` (compressors, metrics, datasets, reporters, models)")
    return p


def compressor_track(spec: Any) -> str:
    """A compressor's data track; for tracks that depend on a setting, the default's, marked as such."""
    if isinstance(spec.track, str):
        return spec.track
    try:
        return f"{spec.track_for(spec.config())} (default; by setting)"
    except Exception:  # a config without defaults for every field
        return "by setting"


def settings_table(cls: type) -> str:
    """One row per setting (``ls -v``): name, type, default, allowed values, the help's first sentence."""
    rows = [[d.name, d.type, d.default, d.allowed or "-", d.summary or "-"] for d in setting_docs(cls)]
    if not rows:
        return "  (no settings)"
    return tabulate(rows, headers=["setting", "type", "default", "allowed", "help"], tablefmt="github", disable_numparse=True)


def _setting_block(d: SettingDoc) -> str:
    allowed = f"  [{d.allowed}]" if d.allowed else ""
    head = f"  {d.name}: {d.type} = {d.default}{allowed}"
    body = (
        textwrap.fill(d.help, WIDTH, initial_indent="      ", subsequent_indent="      ")
        if d.help
        else "      (no help; the plugin's config docstring does not describe it)"
    )
    return f"{head}\n{body}"


def _settings(cls: type) -> list[str]:
    docs = setting_docs(cls)
    if not docs:
        return ["settings: none"]
    return [f"settings ({cls.__name__}; set them in a suite entry, or as `grid:` axes):", *(_setting_block(d) for d in docs)]


def catalog_rows(source: ModelSource) -> list[tuple[str, str, str]]:
    """``(name, weights, availability)`` of a source's models: its ``catalog`` when it has one, else bare names."""
    catalog: Callable[[], list[tuple[str, str, str]]] | None = source.catalog
    if catalog is not None:
        return list(catalog())
    return [(name, "", "") for name in source.list_models(None)]


def _compressor(spec: Any, plugins: Plugins) -> list[str]:
    follows = (
        "yes (it has a per-tensor form)"
        if spec.compress_tensor is not None
        else "yes (it recodes the earlier stages' codes)"
        if spec.recode is not None
        else "no: put it first"
    )
    if spec.refine is not None and (spec.compress_tensor is not None or spec.recode is not None):
        follows += ", then it refines the whole model"
    identity = ", ".join(f"{k}={v}" for k, v in spec.identity.items()) if spec.identity else "none"
    return [
        f"compressor {spec.name}: {spec.description}",
        f"family: {spec.family}; data track: {compressor_track(spec)}; version: {spec.version}; "
        f"plugin: {plugins.compressors.origin(spec.name)}",
        f"can follow another stage in a pipeline: {follows}; identity settings: {identity}"
        + ("; benefits from a GPU" if spec.uses_gpu else ""),
        *([f"defaults from: {spec.defaults_source}"] if spec.defaults_source else []),
        *_settings(spec.config),
    ]


def _metric(spec: Any, plugins: Plugins) -> list[str]:
    better = "higher is better (↑)" if spec.higher_is_better else "lower is better (↓)"
    target = f"; identity settings must reach {spec.identity_target}" if spec.identity_target is not None else ""
    return [
        f"metric {spec.name}: {spec.description}",
        f"unit: {spec.unit or '-'}; {better}; kind: {spec.kind}; version: {spec.version}; "
        f"plugin: {plugins.metrics.origin(spec.name)}",
        f"roles: {', '.join(sorted(spec.roles)) or 'none'}; reads: {', '.join(sorted(spec.needs)) or 'the sizes only'}{target}",
        f"tasks: {', '.join(sorted(spec.tasks)) if spec.tasks is not None else 'any'}; aggregate: {spec.aggregate}",
    ]


def _dataset(spec: Any, plugins: Plugins) -> list[str]:
    try:
        problems = list(spec.problems(spec.config())) if spec.problems else []
    except Exception as e:  # a check that fails is shown, not raised
        problems = [f"its check failed: {type(e).__name__}: {e}"]
    here = "yes" if not problems else "no: " + "; ".join(problems)
    return [
        f"dataset {spec.name}: {spec.description}",
        f"task: {spec.task}; labeled: {'yes' if spec.labeled else 'no'}; labels: {spec.label_space or '-'}; "
        f"plugin: {plugins.datasets.origin(spec.name)}",
        f"available here with the defaults: {here}",
        *_settings(spec.config),
    ]


def _source(source: ModelSource, plugins: Plugins, model: str | None = None) -> list[str]:
    rows = [r for r in catalog_rows(source) if model is None or r[0] == model]
    lines = [f"model source {source.name}: {source.description}", f"plugin: {plugins.models.origin(source.name)}"]
    if model is not None:
        from ..sources import ModelRequest  # torch loads only when a model is asked about

        problems = source.problems(ModelRequest(f"{source.name}:{model}")) if source.problems else []
        lines.append(f"`name: {source.name}:{model}` here: " + ("ready" if not problems else "; ".join(problems)))
    shown = rows
    if model is None and len(rows) > SHOWN:  # a big source: its models with offline weights matter most
        shown = [r for r in rows if r[2].startswith("offline") and not r[1].startswith("none")][:SHOWN]
        lines.append(
            f"with offline weights{' (the first ' + str(SHOWN) + ')' if len(shown) == SHOWN else ''}:"
            if shown
            else "with offline weights: none (`pretrained: true` downloads them from the hub)"
        )
    if shown:
        lines.append(
            tabulate(
                [[f"{source.name}:{n}", w or "-", a or "-"] for n, w, a in shown],
                headers=["model", "weights", "availability"],
                tablefmt="github",
            )
        )
    if model is None:
        lines.append(f"{len(rows)} models; `b2s-bench ls models '{source.name}:*'` lists them all")
    return lines


def describe(name: str, plugins: Plugins) -> list[str]:
    """Every registered thing called ``name`` (a name can be, say, both a dataset and a metric), as text."""
    found = []
    if name in plugins.compressors:
        found.append(_compressor(plugins.compressors.get(name), plugins))
    if name in plugins.metrics:
        found.append(_metric(plugins.metrics.get(name), plugins))
    if name in plugins.datasets:
        found.append(_dataset(plugins.datasets.get(name), plugins))
    if name in plugins.tasks:
        task = plugins.tasks.get(name)
        found.append([f"task {name}: {task.description}", f"version: {task.version}; plugin: {plugins.tasks.origin(name)}"])
    if name in plugins.reporters:
        found.append([f"reporter {name}: {plugins.reporters.get(name).description}"])
    source, _, model = name.partition(":")
    if source in plugins.models:
        found.append(_source(plugins.models.get(source), plugins, model or None))
    return ["\n".join(lines) for lines in found]


def main(args: argparse.Namespace, plugins: Plugins) -> int:
    found = describe(args.name, plugins)
    if not found:
        names = [
            *plugins.compressors.names(),
            *plugins.metrics.names(),
            *plugins.datasets.names(),
            *plugins.tasks.names(),
            *plugins.reporters.names(),
            *plugins.models.names(),
        ]
        raise UnknownNameError(
            "name", args.name, set(names), "`b2s-bench ls compressors` (or metrics, datasets, reporters, models) lists them"
        )
    # a compressor's, metric's, reporter's or executor's page depends on the plugins alone (cli/answers.py);
    # a dataset's or model's says what this machine has
    args.answer_kept = args.name not in plugins.datasets and args.name.partition(":")[0] not in plugins.models
    print("\n\n".join(found))
    return 0
