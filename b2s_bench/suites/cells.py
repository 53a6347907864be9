"""Grid -> cells. A cell is one (model, dataset, compressor pipeline, settings) point, with a stable id.

The id is a hash of everything that affects the result: the model and a fingerprint of its
weights, the dataset and its options, each compressor's name, version and full config (defaults
included), the seed, the metrics and their versions, and the device type.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from pathlib import Path
from typing import Any

from ..compression.tracks import TRACKS
from ..config import build_config, config_identity, config_to_dict
from ..errors import ConfigError
from ..plugins import Plugins
from ..registry import matches
from ..store.records import fingerprint_id
from .load import CompressorEntry, DatasetEntry, ModelEntry, StageEntry, Suite

__all__ = ["Stage", "Cell", "expand", "select", "TRACK_ORDER", "CORE_VERSION"]

TRACK_ORDER = TRACKS  # from least to most data

#: The version of the core code that decides sizes and evaluation (b2s_bench/compression/sizes.py, contract.py,
#: compressed.py's size, build and artifact, codes.py, metrics.py's run_model). It is part of every cell id:
#: bump it when a change there changes results, and every record made before is recomputed.
#: tests/core/test_architecture.py fails when that code changes, until this is bumped or the change is
#: declared neutral there.
CORE_VERSION = "2"


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    version: str
    family: str
    track: str
    config: Any
    explicit: tuple[tuple[str, Any], ...]  # the settings the suite gave (for labels)
    # the settings the suite gave for this device (``device_settings``): a time budget, not a choice
    # of operating point (records list them apart from the changed settings); not in the cell id
    budget: tuple[str, ...] = ()
    # the sha256 of the local plugin file (``--plugin FILE.py``) that registered the compressor, None for an
    # installed plugin: a file being edited has no version to bump, so its contents join the cell id
    source: str | None = None

    @property
    def settings(self) -> dict[str, Any]:
        return config_to_dict(self.config)

    @property
    def label(self) -> str:
        inner = ", ".join(f"{k}={_short(v)}" for k, v in self.explicit)
        return f"{self.name}({inner})" if inner else self.name


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return str(v)


@dataclasses.dataclass(frozen=True)
class Cell:
    id: str
    suite: str
    model: ModelEntry
    dataset: DatasetEntry | None
    stages: tuple[Stage, ...]  # empty for the dense baseline
    label: str
    seed: int
    device: str
    metrics: tuple[str, ...]
    fingerprint: dict[str, Any] = dataclasses.field(compare=False, repr=False)
    seeds: int = 1  # how many seeds this cell's method runs (the others differ only in ``seed``)
    activations: Any = None  # ActivationSettings: the suite's W/A stage after the pipeline, or None

    @property
    def is_baseline(self) -> bool:
        return not self.stages

    @property
    def track(self) -> str:
        """The most data any stage uses (the activations stage included)."""
        if not self.stages:
            return "data-free"
        tracks = [s.track for s in self.stages] + ([self.activations.track] if self.activations is not None else [])
        return max(tracks, key=TRACK_ORDER.index)

    @property
    def family(self) -> str:
        return "+".join(s.family for s in self.stages) if self.stages else "dense"

    @property
    def name(self) -> str:
        return f"{self.model.label} {self.label}" + (f" seed={self.seed}" if self.seeds > 1 else "")


#: config fields that name a compressor's weight bits, in the order they are looked for
WEIGHT_BITS_FIELDS = ("bits", "inr_bits", "weight_bits")


def _wa(stages: tuple[Stage, ...], activation_bits: int) -> str:
    """The paper's W/A tag: "W6A6" when the last stage that has a weight-bits setting (``bits``,
    ``inr_bits`` or ``weight_bits``, an integer up to 16) says 6; "A6" alone when none says."""
    for stage in reversed(stages):
        for name in WEIGHT_BITS_FIELDS:
            value = getattr(stage.config, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 16:
                return f"W{value}A{activation_bits}"
    return f"A{activation_bits}"


def _stage_points(stage: StageEntry, device: str) -> list[dict[str, Any]]:
    keys = list(stage.grid)
    fixed = {**stage.settings, **stage.device_settings.get(device, {})}
    points = []
    for values in itertools.product(*(stage.grid[k] for k in keys)):
        points.append({**fixed, **dict(zip(keys, values))})
    return points


def _setting_path(suite: Suite, st: StageEntry, key: str | None, device: str) -> tuple[Any, ...]:
    """Where a setting was written: a grid axis, device_settings, a shorthand key or settings:."""
    if key in st.grid:
        return (*st.path, "grid", key)
    if key in st.device_settings.get(device, {}):
        return (*st.path, "device_settings", device, key)
    for path in ((*st.path, key), (*st.path, "settings", key)):
        if key is not None and suite.source.defines(path):
            return path
    return st.path


def _dataset_fp(entry: DatasetEntry | None, plugins: Plugins) -> Any:
    if entry is None:
        return None
    fp: dict[str, Any] = {"name": entry.name, "options": config_to_dict(entry.config)}
    spec = plugins.datasets.get(entry.name)
    origin = spec.origin(entry.config) if spec.origin else None
    if origin is not None:  # data chosen outside the suite (an environment variable, --data)
        fp["origin"] = origin
    return fp


def cell_id(fingerprint: dict[str, Any]) -> str:
    return fingerprint_id(fingerprint)


def _local_source(plugins: Plugins, compressor: str) -> str | None:
    """``sha256:...`` of the local plugin file that registered ``compressor``; None for an installed plugin."""
    info = plugins.info(plugins.compressors.origin(compressor))
    if info is None or info.distribution != "local file":
        return None
    try:
        return "sha256:" + hashlib.sha256(Path(info.origin).read_bytes()).hexdigest()
    except OSError:
        return None


def _entry_pipelines(suite: Suite, plugins: Plugins, entry: CompressorEntry, device: str) -> list[tuple[Stage, ...]]:
    """Every pipeline (one Stage per compressor) of a suite entry's grid, configs built and checked."""
    per_stage: list[list[Stage]] = []
    for st in entry.stages:
        spec = plugins.compressors.get(st.name)
        for other in sorted(set(st.device_settings) - {device}):  # the other device's settings are checked too
            for point in _stage_points(st, other):
                try:
                    build_config(spec.config, point, owner=f"compressor {st.name!r} on {other}")
                except ConfigError as e:
                    raise suite.source.error(_setting_path(suite, st, e.key, other), str(e)) from None
        built = []
        for point in _stage_points(st, device):
            try:
                config = build_config(spec.config, point, owner=f"compressor {st.name!r}")
                track = spec.track_for(config)
            except ConfigError as e:
                raise suite.source.error(_setting_path(suite, st, e.key, device), str(e)) from None
            budget = tuple(sorted(st.device_settings.get(device, {})))
            built.append(
                Stage(
                    st.name,
                    spec.version,
                    spec.family,
                    track,
                    config,
                    tuple(point.items()),
                    budget,
                    _local_source(plugins, st.name),
                )
            )
        per_stage.append(built)
    return [tuple(p) for p in itertools.product(*per_stage)]


def _model_fp(model: ModelEntry, plugins: Plugins) -> dict[str, Any]:
    source = plugins.models.get(model.request.source)
    try:
        weights_fp = source.fingerprint(model.request) if source.fingerprint else "-"
    except Exception as e:  # the model will fail in its cells with a full message
        weights_fp = f"unavailable: {type(e).__name__}"
    return {
        "name": model.request.name,
        "pretrained": model.request.pretrained,
        "weights": model.request.weights,
        "options": dict(model.request.options),
        "fingerprint": weights_fp,
    }


def _model_cells(
    suite: Suite,
    plugins: Plugins,
    model: ModelEntry,
    device: str,
    pipelines: list[tuple[CompressorEntry, list[tuple[Stage, ...]]]],
    metrics: list[str],
) -> list[Cell]:
    dataset = model.dataset or suite.dataset
    base = {
        "model": _model_fp(model, plugins),
        "dataset": _dataset_fp(dataset, plugins),
        "metrics": metrics,
        "device": device,
        "core": CORE_VERSION,
    }
    combos: list[tuple[CompressorEntry | None, tuple[Stage, ...]]] = [(None, ())] if suite.baseline else []
    combos += [(entry, p) for entry, ps in pipelines if entry.applies_to(model) for p in ps]
    cells = []
    for entry, stages in combos:
        label = " > ".join(s.label for s in stages) if stages else "dense"
        if entry is not None and entry.label:
            label = f"{entry.label} {label}"
        activations = entry.activations if entry is not None else None
        if activations is not None:
            label = f"{label} {_wa(stages, activations.bits)}"
        seeds = 1 if entry is None else (entry.seeds or suite.seeds)  # the dense model is deterministic
        for seed in range(suite.seed, suite.seed + seeds):
            fingerprint = {
                **base,
                "seed": seed,
                "stages": [
                    {
                        "name": s.name,
                        "version": s.version,
                        "config": config_identity(s.config),
                        **({"source": s.source} if s.source is not None else {}),  # installed plugins keep their ids
                    }
                    for s in stages
                ],
            }
            if activations is not None:  # absent otherwise: cells without the stage keep their ids
                fingerprint["activations"] = config_identity(activations)
            cells.append(
                Cell(
                    cell_id(fingerprint),
                    suite.name,
                    model,
                    dataset,
                    stages,
                    label,
                    seed,
                    device,
                    suite.metrics if model.metrics is None else model.metrics,
                    fingerprint,
                    seeds,
                    activations,
                )
            )
    return cells


def expand(suite: Suite, plugins: Plugins, device: str) -> list[Cell]:
    """All cells of a suite, in suite order; configs are built (and so validated) here.

    Raises:
        SuiteError: a grid value that a compressor's config rejects, located at its key.
    """
    pipelines = [(entry, _entry_pipelines(suite, plugins, entry, device)) for entry in suite.compressors]
    unique: dict[str, Cell] = {}
    for model in suite.models:
        names = suite.metrics if model.metrics is None else model.metrics
        metrics = [f"{m}@{plugins.metrics.get(m).version}" for m in names]
        for c in _model_cells(suite, plugins, model, device, pipelines, metrics):
            unique.setdefault(c.id, c)  # the same point listed twice runs once
    return list(unique.values())


def select(cells: list[Cell], pattern: str | None) -> list[Cell]:
    """Cells whose "model label id" matches ``-k PATTERN`` (a substring or a glob, case-insensitive)."""
    if not pattern:
        return cells
    return [c for c in cells if matches(f"{c.name} {c.id}", pattern)]
