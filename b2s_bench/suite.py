"""Suites: YAML grids of models x compressors x settings x metrics, parsed into frozen dataclasses.

Every key is checked; every error names the file, the line, the key path and a fix. Compressor
settings are validated by each compressor's own config class when the grid is expanded into cells
(:mod:`b2s_bench.cells`), before anything runs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .config import build_config
from .errors import ConfigError, SuiteError, UnknownNameError, suggest
from .metrics import default_metrics
from .plugins import Plugins
from .sources import ModelRequest, split_model_name
from .yamlsource import Located, PathKey, load_located

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
    "EMBEDDED",
]

EMBEDDED = "embedded"
TOP_KEYS = {
    "suite": "the suite's name (used for the results folder)",
    "description": "one line about the suite",
    "include": "suite files whose keys this one extends",
    "seed": "the random seed of every cell",
    "seeds": "how many seeds stochastic compressors run (seed, seed+1, ...); reports give mean ± std",
    "device": "auto, cpu or cuda",
    "models": "the models to compress",
    "dataset": "the default dataset of every model",
    "compressors": "compressors and pipelines, with grids of settings",
    "metrics": "metric names",
    "baseline": "whether to add the dense model as a cell of its own (default true)",
    "report": "leaderboard settings",
    "runtime": "batch size, latency repeats, artifacts",
}
MODEL_KEYS = ("name", "pretrained", "weights", "dataset", "options", "label")
STAGE_KEYS = ("name", "settings", "grid", "device_settings", "label", "models", "seeds")
DEVICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    name: str
    config: Any  # the dataset plugin's frozen config


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    request: ModelRequest
    dataset: DatasetEntry | None
    label: str
    path: PathKey = dataclasses.field(compare=False, repr=False, default=())


@dataclasses.dataclass(frozen=True)
class StageEntry:
    name: str
    settings: Mapping[str, Any]
    grid: Mapping[str, tuple[Any, ...]]
    device_settings: Mapping[str, Mapping[str, Any]]
    path: PathKey = dataclasses.field(compare=False, repr=False, default=())


@dataclasses.dataclass(frozen=True)
class CompressorEntry:
    stages: tuple[StageEntry, ...]
    label: str | None
    models: tuple[str, ...] = ()  # only models whose label or name matches one of these globs (all when empty)
    seeds: int | None = None  # seeds of this entry (default: the suite's ``seeds``)
    path: PathKey = dataclasses.field(compare=False, repr=False, default=())


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    sort_by: str | None = None
    formats: tuple[str, ...] = ("markdown", "csv", "html", "json")
    plots: tuple[str, ...] = ("pareto",)
    group_by: str = "track"
    primary: str | None = None  # the quality metric of Pareto plots (default: the best-ranked "primary" metric)

    def __post_init__(self) -> None:
        if self.group_by not in ("track", "family", "none"):
            raise ConfigError(f"group_by must be track, family or none, got {self.group_by!r}", "group_by")


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """batch_size: evaluation batch; latency_repeats: timed forward passes; save_artifacts: write each
    cell's artifact (and record its bytes on disk); threads: torch CPU threads (default: torch's own)."""

    batch_size: int = 256
    latency_repeats: int = 20
    save_artifacts: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}", "threads")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}", "batch_size")
        if self.latency_repeats < 1:
            raise ConfigError(f"latency_repeats must be >= 1, got {self.latency_repeats}", "latency_repeats")


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    file: str
    seed: int
    device: str
    models: tuple[ModelEntry, ...]
    dataset: DatasetEntry | None
    compressors: tuple[CompressorEntry, ...]
    metrics: tuple[str, ...]
    baseline: bool
    report: ReportSettings
    runtime: RuntimeSettings
    seeds: int = 1
    source: Located = dataclasses.field(compare=False, repr=False, default=None)  # type: ignore[assignment]


def resolve_suite_path(suite: str | None) -> str:
    """A suite argument -> a file: a path, or the name of a suite shipped in the package."""
    if suite is None or suite == EMBEDDED:
        return str(resources.files("b2s_bench") / "suites" / f"{EMBEDDED}.yaml")
    if os.path.exists(suite):
        return suite
    shipped = resources.files("b2s_bench") / "suites" / f"{suite}.yaml"
    if shipped.is_file():
        return str(shipped)
    return suite  # load_located reports it as missing


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
        request = ModelRequest(name, pretrained, weights, dict(options))
        return ModelEntry(request, dataset, label, path)

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
        if "seeds" in raw and len(path) > 2 and path[-2] == "pipeline":
            raise self.fail((*path, "seeds"), "put `seeds:` on the pipeline entry, not on a stage")
        grid = self.expect(raw.get("grid", {}), dict, (*path, "grid"), "a mapping of setting -> list of values")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise self.fail((*path, "grid", key), f"grid values must be a non-empty list, e.g. `{key}: [{values!r}]`")
            if key in settings:
                raise self.fail((*path, "grid", key), f"{key!r} is both a fixed setting and a grid axis; keep one")
        dev = self.expect(raw.get("device_settings", {}), dict, (*path, "device_settings"), "a mapping cpu:/cuda: -> settings")
        self.check_keys(dev, ("cpu", "cuda"), (*path, "device_settings"), "device_settings")
        for k, v in dev.items():
            self.expect(v, dict, (*path, "device_settings", k), "a mapping of settings")
            for key in v:
                if key in grid:
                    raise self.fail((*path, "device_settings", k, key),
                                    f"{key!r} is both a grid axis and a {k} device setting (the grid would win); keep one")
        return StageEntry(name, settings, {k: tuple(v) for k, v in grid.items()}, {k: dict(v) for k, v in dev.items()}, path)

    def compressor(self, raw: Any, path: PathKey) -> CompressorEntry:
        if isinstance(raw, dict) and "pipeline" in raw:
            self.check_keys(raw, ("pipeline", "label", "models", "seeds"), path, "a pipeline entry")
            stages_raw = self.expect(raw["pipeline"], list, (*path, "pipeline"), "a list of compressors")
            if len(stages_raw) < 2:
                raise self.fail((*path, "pipeline"), "a pipeline needs at least two compressors")
            stages = tuple(self.stage(s, (*path, "pipeline", i)) for i, s in enumerate(stages_raw))
            for i, s in enumerate(stages_raw):
                if isinstance(s, dict) and "models" in s:
                    raise self.fail((*path, "pipeline", i, "models"), "put `models:` on the pipeline entry, not on a stage")
            for i, st in enumerate(stages[1:], start=1):
                if self.plugins.compressors.get(st.name).compress_tensor is None:
                    raise self.fail((*path, "pipeline", i),
                                    f"compressor {st.name!r} cannot follow another in a pipeline (it has no per-tensor "
                                    "form); put it first")
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
                    near = suggest(pattern, known)
                    hint = f"; did you mean {near[0]!r}?" if near else f" (models: {', '.join(known)})"
                    raise self.fail((*path, "models", i), f"no model of this suite matches {pattern!r}{hint}")
        seeds = None
        if isinstance(raw, dict) and "seeds" in raw:
            seeds = self.count(raw["seeds"], (*path, "seeds"))
        return CompressorEntry(stages, label, models, seeds, path)

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

    def suite(self) -> Suite:
        data = self.loc.data
        self.check_keys(data, TOP_KEYS, (), "a suite")
        for required in ("suite", "models", "compressors"):
            if required not in data:
                raise self.fail((), f"missing required key {required!r} ({TOP_KEYS[required]})")
        name = self.expect(data["suite"], str, ("suite",), "a suite name")
        seed = self.expect(data.get("seed", 0), int, ("seed",), "an integer seed")
        device = self.expect(data.get("device", "auto"), str, ("device",), "auto, cpu or cuda")
        if device not in DEVICES:
            raise self.fail(("device",), f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        models_raw = self.expect(data["models"], list, ("models",), "a list of models")
        if not models_raw:
            raise self.fail(("models",), "list at least one model")
        models = tuple(self.model(m, ("models", i)) for i, m in enumerate(models_raw))
        self._models = models
        dataset = self.dataset(data["dataset"], ("dataset",)) if "dataset" in data else None
        comps_raw = self.expect(data["compressors"], list, ("compressors",), "a list of compressors")
        compressors = tuple(self.compressor(c, ("compressors", i)) for i, c in enumerate(comps_raw))
        metrics = self.names(data.get("metrics", default_metrics(self.plugins.metrics)), self.plugins.metrics,
                             ("metrics",), "metric")
        report = self.settings(ReportSettings, data.get("report", {}), ("report",))
        for key in ("formats", "plots"):
            for i, r in enumerate(getattr(report, key)):
                self.lookup(self.plugins.reporters, r, ("report", key, i))
        if report.sort_by is not None and report.sort_by not in metrics:
            raise self.fail(("report", "sort_by"), f"sort_by must be one of the suite's metrics {list(metrics)}")
        runtime = self.settings(RuntimeSettings, data.get("runtime", {}), ("runtime",))
        baseline = self.expect(data.get("baseline", True), bool, ("baseline",), "true or false")
        description = self.expect(data.get("description", ""), str, ("description",), "a string")
        seeds = self.count(data["seeds"], ("seeds",)) if "seeds" in data else 1
        return Suite(name, description, self.loc.file, seed, device, models, dataset, compressors, metrics,
                     baseline, report, runtime, seeds, self.loc)


def load_suite(path: str | os.PathLike[str] | None, plugins: Plugins) -> Suite:
    """Parse and check a suite file (or the embedded default when ``path`` is None).

    Raises:
        SuiteError: located at file:line key.path, with a fix.
    """
    located = load_located(resolve_suite_path(None if path is None else str(path)))
    return _Parser(located, plugins).suite()
