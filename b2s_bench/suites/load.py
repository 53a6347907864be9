"""Suites: YAML grids of models x compressors x settings x metrics, parsed into frozen dataclasses.

Every key is checked; every error names the file, the line, the key path and a fix. Compressor
settings are validated by each compressor's own config class when the grid is expanded into cells
(:mod:`b2s_bench.suites.cells`), before anything runs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..calibration.settings import ActivationSettings
from ..config import build_config, config_to_dict
from ..errors import ConfigError, SuiteError, UnknownNameError, suggest
from ..metrics import default_metrics
from ..plugins import Plugins, unknown_task
from ..sources import ModelRequest, split_model_name
from .schema import (
    MAX_CELLS,
    CompressorEntry,
    DatasetEntry,
    ModelEntry,
    ReportSettings,
    RuntimeSettings,
    StageEntry,
    Suite,
    check_grid_size,
    count_cells,
)
from .source import EMBEDDED, Located, PathKey, key_path, load_located, resolve_suite_path, shipped_suites

__all__ = [
    "Suite",
    "ModelEntry",
    "DatasetEntry",
    "StageEntry",
    "CompressorEntry",
    "ReportSettings",
    "RuntimeSettings",
    "load_suite",
    "resolve_suite_path",
    "shipped_suites",
    "count_cells",
    "check_grid_size",
    "EMBEDDED",
    "MAX_CELLS",
]

TOP_KEYS = {
    "suite": "the suite's name (used for the results folder)",
    "description": "one line about the suite",
    "include": "suite files whose keys this one extends",
    "seed": "the random seed of every cell (0..2**31 - 1)",
    "seeds": "how many seeds stochastic compressors run (seed, seed+1, ...); reports give mean ± std",
    "device": "auto, cpu or cuda",
    "models": "the models to compress",
    "dataset": "the default dataset of every model",
    "compressors": "compressors and pipelines, with grids of settings",
    "metrics": "metric names",
    "baseline": "whether to add the dense model as a cell of its own (default true)",
    "report": "leaderboard settings",
    "runtime": "batch size, latency repeats, artifacts, threads, the most cells a grid may make, executor settings",
    "activations": "W/A quantization of every compressor's model: bits, ranges (bn, synthetic, calibration), ...",
}
MODEL_KEYS = ("name", "pretrained", "weights", "dataset", "options", "label", "metrics")
#: the largest suite seed: 2**31 - 1, so seed + seeds - 1 stays within every generator's range (numpy's legacy
#: seed takes 0..2**32 - 1, default_rng no negative seed, torch.manual_seed nothing past 2**64 - 1)
MAX_SEED = 2**31 - 1
STAGE_KEYS = ("name", "settings", "grid", "device_settings", "label", "models", "seeds", "activations")
DEVICES = ("auto", "cpu", "cuda")
#: A suite's name names its results folder: no path separators, no "..", nothing hidden.
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


class _Parser:
    def __init__(self, located: Located, plugins: Plugins):
        self.loc = located
        self.plugins = plugins
        self._models: tuple[ModelEntry, ...] = ()

    def fail(self, path: PathKey, message: str) -> SuiteError:
        return self.loc.error(path, message)

    def expect(self, value: Any, types: type | tuple[type, ...], path: PathKey, what: str) -> Any:
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.fail(path, f"expected {what}, got {value!r}")
        if not isinstance(value, types):
            raise self.fail(path, f"expected {what}, got {type(value).__name__} {value!r}")
        return value

    def check_keys(self, mapping: Mapping[str, Any], allowed: Any, path: PathKey, what: str) -> None:
        for key in mapping:
            if key not in allowed:
                near = suggest(str(key), list(allowed))
                fix = f"did you mean {near[0]!r}?" if near else f"allowed keys: {', '.join(allowed)}"
                raise self.fail((*path, key), f"unknown key in {what}; {fix}")

    def lookup(self, registry: Any, name: str, path: PathKey) -> Any:
        try:
            return registry.get(name)
        except UnknownNameError as e:
            raise self.fail(path, e.message) from None

    def dataset(self, raw: Any, path: PathKey) -> DatasetEntry:
        if isinstance(raw, str):
            raw = {"name": raw}
        self.expect(raw, dict, path, "a dataset name or a mapping with name: and options")
        if "name" not in raw:
            raise self.fail(path, "a dataset needs a name, `dataset: {name: NAME}` (`b2s-bench ls datasets` lists them)")
        name = self.expect(raw["name"], str, (*path, "name"), "a dataset name")
        spec = self.lookup(self.plugins.datasets, name, (*path, "name"))
        problem = unknown_task(self.plugins, spec)
        if problem is not None:
            raise self.fail((*path, "name"), problem)
        options = {k: v for k, v in raw.items() if k != "name"}
        try:
            config = build_config(spec.config, options, owner=f"dataset {name!r}")
        except ConfigError as e:
            raise self.fail((*path, e.key) if e.key else path, str(e)) from None
        return DatasetEntry(name, config)

    def model(self, raw: Any, path: PathKey) -> ModelEntry:
        if isinstance(raw, str):
            raw = {"name": raw}
        self.expect(raw, dict, path, "a model name (SOURCE:NAME) or a mapping with name:")
        self.check_keys(raw, MODEL_KEYS, path, "a model entry")
        if "name" not in raw:
            raise self.fail(path, "a model needs a name, `name: SOURCE:NAME` (`b2s-bench ls models` lists them)")
        name = self.expect(raw["name"], str, (*path, "name"), "a model name")
        try:
            source, arch = split_model_name(name)
        except ValueError as e:
            raise self.fail((*path, "name"), str(e)) from None
        self.lookup(self.plugins.models, source, (*path, "name"))
        pretrained = self.expect(raw.get("pretrained", False), bool, (*path, "pretrained"), "true or false")
        weights = raw.get("weights")
        if weights is not None:
            self.expect(weights, str, (*path, "weights"), "a weights file path or package:MODULE")
            if pretrained:
                raise self.fail((*path, "weights"), "give either pretrained: true or weights:, not both")
            if not weights.startswith("package:") and not os.path.isabs(weights):
                weights = str(Path(self.loc.where(path)[0]).parent / weights)
        options = self.expect(raw.get("options", {}), dict, (*path, "options"), "a mapping of model options")
        dataset = self.dataset(raw["dataset"], (*path, "dataset")) if "dataset" in raw else None
        label = self.expect(raw.get("label", name), str, (*path, "label"), "a string")
        metrics = self.names(raw["metrics"], self.plugins.metrics, (*path, "metrics"), "metric") if "metrics" in raw else None
        request = ModelRequest(name, pretrained, weights, dict(options))
        return ModelEntry(request, dataset, label, path, metrics)

    def _check_labels(self, models: Sequence[ModelEntry], raw: Sequence[Any]) -> None:
        """Reports key a method by its model's label: two entries of one label must be the same model (the same
        name, weights, options), else their cells would be merged as seeds of one method."""
        first: dict[str, ModelEntry] = {}
        for i, entry in enumerate(models):
            seen = first.setdefault(entry.label, entry)
            if seen is entry or seen.request == entry.request:
                continue
            path: PathKey = ("models", i, "label") if isinstance(raw[i], dict) and "label" in raw[i] else ("models", i)
            raise self.fail(
                path,
                f"label {entry.label!r} is already {key_path(seen.path)}'s ({seen.request.name}), another model; reports "
                "would merge the two into one method: give each its own `label:`",
            )

    def stage(self, raw: Any, path: PathKey) -> StageEntry:
        if isinstance(raw, str):
            raw = {"name": raw}
        self.expect(raw, dict, path, "a compressor name or a mapping with name:")
        if "name" not in raw:
            hint = " (a pipeline is `pipeline: [a, b]`)" if "pipeline" not in raw else ""
            raise self.fail(path, f"a compressor needs a name, `name: NAME` (`b2s-bench ls compressors` lists them){hint}")
        name = self.expect(raw["name"], str, (*path, "name"), "a compressor name")
        self.lookup(self.plugins.compressors, name, (*path, "name"))
        settings = dict(self.expect(raw.get("settings", {}), dict, (*path, "settings"), "a mapping of settings"))
        # shorthand: any other key is a setting (checked by the compressor's config class)
        settings.update({k: v for k, v in raw.items() if k not in STAGE_KEYS})
        for key in ("seeds", "activations"):
            if key in raw and len(path) > 2 and path[-2] == "pipeline":
                raise self.fail((*path, key), f"put `{key}:` on the pipeline entry, not on a stage")
        grid = self.expect(raw.get("grid", {}), dict, (*path, "grid"), "a mapping of setting -> list of values")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                example = "VALUE, ..." if isinstance(values, list) else repr(values)  # an empty list: no value to show
                raise self.fail((*path, "grid", key), f"grid values must be a non-empty list, e.g. `{key}: [{example}]`")
            if key in settings:
                raise self.fail((*path, "grid", key), f"{key!r} is both a fixed setting and a grid axis; keep one")
        dev = self.expect(raw.get("device_settings", {}), dict, (*path, "device_settings"), "a mapping cpu:/cuda: -> settings")
        self.check_keys(dev, ("cpu", "cuda"), (*path, "device_settings"), "device_settings")
        for k, v in dev.items():
            self.expect(v, dict, (*path, "device_settings", k), "a mapping of settings")
            for key in v:
                if key in grid:
                    raise self.fail(
                        (*path, "device_settings", k, key),
                        f"{key!r} is both a grid axis and a {k} device setting (the grid would win); keep one",
                    )
        return StageEntry(name, settings, {k: tuple(v) for k, v in grid.items()}, {k: dict(v) for k, v in dev.items()}, path)

    def compressor(self, raw: Any, path: PathKey) -> CompressorEntry:
        if isinstance(raw, dict) and "pipeline" in raw:
            self.check_keys(raw, ("pipeline", "label", "models", "seeds", "activations"), path, "a pipeline entry")
            stages_raw = self.expect(raw["pipeline"], list, (*path, "pipeline"), "a list of compressors")
            if len(stages_raw) < 2:
                raise self.fail((*path, "pipeline"), "a pipeline needs at least two compressors")
            stages = tuple(self.stage(s, (*path, "pipeline", i)) for i, s in enumerate(stages_raw))
            for i, s in enumerate(stages_raw):
                if isinstance(s, dict) and "models" in s:
                    raise self.fail((*path, "pipeline", i, "models"), "put `models:` on the pipeline entry, not on a stage")
            for i, st in enumerate(stages[1:], start=1):
                later = self.plugins.compressors.get(st.name)
                if later.compress_tensor is None and later.recode is None:
                    raise self.fail(
                        (*path, "pipeline", i),
                        f"compressor {st.name!r} cannot follow another in a pipeline (it has no per-tensor form); put it first",
                    )
            label = raw.get("label")
        else:
            stage = self.stage(raw, path)
            stages = (stage,)
            label = raw.get("label") if isinstance(raw, dict) else None
        if label is not None:
            self.expect(label, str, (*path, "label"), "a string")
        models: tuple[str, ...] = ()
        if isinstance(raw, dict) and "models" in raw:
            models_raw = raw["models"]
            if isinstance(models_raw, str):
                models_raw = [models_raw]
            self.expect(models_raw, list, (*path, "models"), "a list of model labels or globs")
            models = tuple(self.expect(m, str, (*path, "models", i), "a model label or glob") for i, m in enumerate(models_raw))
            known = [m.label for m in self._models] + [m.request.name for m in self._models]
            for i, pattern in enumerate(models):
                if not any(fnmatch.fnmatchcase(k, pattern) for k in known):
                    self.blame_misnamed_model(pattern, (*path, "models", i))
                    near = suggest(pattern, known)
                    hint = f"; did you mean {near[0]!r}?" if near else f" (models: {', '.join(known)})"
                    raise self.fail((*path, "models", i), f"no model of this suite matches {pattern!r}{hint}")
        seeds = None
        if isinstance(raw, dict) and "seeds" in raw:
            seeds = self.count(raw["seeds"], (*path, "seeds"))
        activations = self._activations
        if isinstance(raw, dict) and "activations" in raw:
            activations = self.entry_activations(raw["activations"], (*path, "activations"))
        return CompressorEntry(stages, label, models, seeds, path, activations)

    def entry_activations(self, raw: Any, path: PathKey) -> ActivationSettings | None:
        """An entry's ``activations:``: null for none, or fields that override the suite's."""
        if raw is None:
            return None
        self.expect(raw, dict, path, "a mapping of activation settings (bits, ranges, ...) or null")
        base = config_to_dict(self._activations) if self._activations is not None else {}
        return self.settings(ActivationSettings, {**base, **raw}, path)

    def blame_misnamed_model(self, pattern: str, path: PathKey) -> None:
        """When ``pattern`` (a ``models:`` filter that matches nothing) is a name its source knows and a
        suite model near it has a name its source does not, the typo is in that model's entry: blame it.

        Sources are asked only here, on an error: listing a big source can take seconds.

        Raises:
            SuiteError: at the misnamed model's ``name``, suggesting ``pattern``.
        """
        try:
            source_name, arch = split_model_name(pattern)
        except ValueError:
            return
        near = suggest(pattern, [m.request.name for m in self._models if m.request.source == source_name])
        for model in (m for m in self._models if m.request.name in near):
            source = self.plugins.models.get(source_name)
            if _knows(source, arch) and not _knows(source, model.request.arch):
                line = self.loc.where(path)[1]
                raise self.fail(
                    (*model.path, "name"),
                    f"unknown {source_name} model {model.request.arch!r}; did you mean {pattern!r}? "
                    f"({key_path(path)} on line {line} names {pattern!r}; `b2s-bench ls models "
                    f"{source_name}:` lists the models)",
                )

    def task_uses(self, models: tuple[ModelEntry, ...], dataset: DatasetEntry | None) -> list[tuple[str, str, PathKey]]:
        """(task, model label, where its dataset is named) for each model that has a dataset."""
        uses = []
        for model in models:
            if model.dataset is not None:
                uses.append((self.plugins.datasets.get(model.dataset.name).task, model.label, (*model.path, "dataset")))
            elif dataset is not None:
                uses.append((self.plugins.datasets.get(dataset.name).task, model.label, ("dataset",)))
        return uses

    def check_tasks(self, metrics: tuple[str, ...], uses: list[tuple[str, str, PathKey]], at: PathKey = ("metrics",)) -> None:
        """Refuse a metric that does not serve the task of some model's dataset, at the metric's line."""
        for i, name in enumerate(metrics):
            spec = self.plugins.metrics.get(name)
            for task, label, where in uses:
                if spec.serves(task):
                    continue
                own = [m.name for m in self.plugins.metrics if m.tasks is not None and task in m.tasks]
                line = self.loc.where(where)[1]
                served = ", ".join(sorted(spec.tasks or ()))
                raise self.fail(
                    (*at, i),
                    f"metric {name!r} serves {served} only, but model {label!r} is evaluated on a {task} dataset "
                    f"({key_path(where)}{f' on line {line}' if line else ''}); metrics that serve {task}: "
                    f"{', '.join(own) or 'none of its own'}, and the size, weight and time metrics of every task "
                    f"(`b2s-bench ls metrics`). Remove {name!r}, give that model a dataset of a task it serves, "
                    "or give the model entry its own `metrics:` (a suite that mixes tasks)",
                )

    def count(self, raw: Any, path: PathKey) -> int:
        value = self.expect(raw, int, path, "a number of seeds (an integer >= 1)")
        if value < 1:
            raise self.fail(path, f"seeds must be >= 1, got {value}")
        return value

    def names(self, raw: Any, registry: Any, path: PathKey, what: str) -> tuple[str, ...]:
        self.expect(raw, list, path, f"a list of {what} names")
        out = []
        for i, name in enumerate(raw):
            self.expect(name, str, (*path, i), f"a {what} name")
            self.lookup(registry, name, (*path, i))
            out.append(name)
        return tuple(out)

    def settings(self, cls: type, raw: Any, path: PathKey) -> Any:
        self.expect(raw, dict, path, "a mapping")
        try:
            return build_config(cls, raw, owner=path[-1] if path else "")
        except ConfigError as e:
            raise self.fail((*path, e.key) if e.key else path, str(e)) from None

    def runtime(self, raw: Any) -> RuntimeSettings:
        """``runtime:``; each executor's section is checked by the executor's own settings dataclass."""
        raw = dict(self.expect(raw, dict, ("runtime",), "a mapping"))
        fields = {f.name for f in dataclasses.fields(RuntimeSettings)}
        for name in [k for k in raw if k not in fields and k in self.plugins.executors]:
            # `runtime: {NAME: {...}}` came before executor sections: still read, with the new spelling
            file, line = self.loc.where(("runtime", name))
            warnings.warn(
                f"{file}:{line}: runtime.{name} is deprecated and will be removed; write "
                f"`runtime: {{executor: {{{name}: {{...}}}}}}` instead",
                FutureWarning,
                stacklevel=2,
            )
            old = self.expect(raw.pop(name), dict, ("runtime", name), f"a mapping of the {name} executor's settings")
            executors = dict(self.expect(raw.get("executor", {}), dict, ("runtime", "executor"), "a mapping"))
            newer = executors.get(name, {})  # the new spelling wins; a section that is no mapping fails below
            executors[name] = {**old, **newer} if isinstance(newer, dict) else newer
            raw["executor"] = executors
        runtime = self.settings(RuntimeSettings, raw, ("runtime",))
        for name, section in runtime.executor.items():
            spec = self.lookup(self.plugins.executors, name, ("runtime", "executor", name))
            if spec.settings is not None:
                self.settings(spec.settings, dict(section), ("runtime", "executor", name))
        return runtime

    def suite(self) -> Suite:
        data = self.loc.data
        self.check_keys(data, TOP_KEYS, (), "a suite")
        for required in ("suite", "models", "compressors"):
            if required not in data:
                raise self.fail((), f"missing required key {required!r} ({TOP_KEYS[required]})")
        name = self.expect(data["suite"], str, ("suite",), "a suite name")
        if not NAME.fullmatch(name):
            fixed = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip(".-")[:100] or "my-suite"
            raise self.fail(
                ("suite",),
                f"a suite name may hold only letters, digits, '.', '_' and '-', may not start "
                f"with '.', and has at most 100 characters (it names the results folder), "
                f"got {name!r}; did you mean {fixed!r}?",
            )
        seed = self.expect(data.get("seed", 0), int, ("seed",), "an integer seed")
        if not 0 <= seed <= MAX_SEED:  # what torch, numpy and random all take, with room for seed+1, ... (seeds:)
            raise self.fail(("seed",), f"seed must be an integer in 0..{MAX_SEED}, got {seed}")
        device = self.expect(data.get("device", "auto"), str, ("device",), "auto, cpu or cuda")
        if device not in DEVICES:
            raise self.fail(("device",), f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        models_raw = self.expect(data["models"], list, ("models",), "a list of models")
        if not models_raw:
            raise self.fail(("models",), "list at least one model")
        models = tuple(self.model(m, ("models", i)) for i, m in enumerate(models_raw))
        self._check_labels(models, models_raw)
        self._models = models
        dataset = self.dataset(data["dataset"], ("dataset",)) if "dataset" in data else None
        self._activations: ActivationSettings | None = None
        if data.get("activations") is not None:
            self._activations = self.settings(ActivationSettings, data["activations"], ("activations",))
        comps_raw = self.expect(data["compressors"], list, ("compressors",), "a list of compressors")
        compressors = tuple(self.compressor(c, ("compressors", i)) for i, c in enumerate(comps_raw))
        uses = self.task_uses(tuple(m for m in models if m.metrics is None), dataset)
        metrics = self.names(
            data.get("metrics", default_metrics(self.plugins.metrics, {task for task, _, _ in uses})),
            self.plugins.metrics,
            ("metrics",),
            "metric",
        )
        if "metrics" in data:
            self.check_tasks(metrics, uses)
        for model in models:
            if model.metrics is not None:
                self.check_tasks(model.metrics, self.task_uses((model,), dataset), (*model.path, "metrics"))
        every = tuple(dict.fromkeys([*metrics, *(m for model in models for m in model.metrics or ())]))
        report = self.settings(ReportSettings, data.get("report", {}), ("report",))
        for key in ("formats", "plots"):
            for i, r in enumerate(getattr(report, key)):
                self.lookup(self.plugins.reporters, r, ("report", key, i))
        if report.sort_by is not None and report.sort_by not in every:
            raise self.fail(("report", "sort_by"), f"sort_by must be one of the suite's metrics {list(every)}")
        if report.primary is not None and report.primary not in every:
            raise self.fail(("report", "primary"), f"primary must be one of the suite's metrics {list(every)}")
        runtime = self.runtime(data.get("runtime", {}))
        baseline = self.expect(data.get("baseline", True), bool, ("baseline",), "true or false")
        description = self.expect(data.get("description", ""), str, ("description",), "a string")
        seeds = self.count(data["seeds"], ("seeds",)) if "seeds" in data else 1
        suite = Suite(
            name,
            description,
            self.loc.file,
            seed,
            device,
            models,
            dataset,
            compressors,
            metrics,
            baseline,
            report,
            runtime,
            seeds,
            self.loc,
            activations=self._activations,
        )
        check_grid_size(suite)  # before cells.expand builds a config per point
        return suite


def _knows(source: Any, arch: str) -> bool:
    """Whether a model source lists ``arch`` (a listing that fails tells nothing)."""
    try:
        return arch in source.list_models(arch)
    except Exception:
        return False


def load_suite(path: str | os.PathLike[str] | None, plugins: Plugins) -> Suite:
    """Parse and check a suite file, a shipped suite's name, or the embedded default when ``path`` is None.

    Raises:
        SuiteError: located at file:line key.path, with a fix; a grid past ``runtime.max_cells``.
    """
    located = load_located(resolve_suite_path(None if path is None else str(path)))
    return _Parser(located, plugins).suite()
