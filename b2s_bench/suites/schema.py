"""What a suite parses into: frozen dataclasses, and the number of cells its grid makes.

:mod:`b2s_bench.suites.load` builds these from YAML (and re-exports them); :mod:`b2s_bench.suites.cells`
expands them into cells.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ConfigError, SuiteError
from ..sources import ModelRequest
from ..store.folder import HEARTBEAT_SECONDS, MIN_CLAIM_TIMEOUT
from .source import Located, PathKey, key_path

__all__ = [
    "Suite",
    "ModelEntry",
    "DatasetEntry",
    "StageEntry",
    "CompressorEntry",
    "ReportSettings",
    "RuntimeSettings",
    "FrozenMapping",
    "count_cells",
    "check_grid_size",
    "MAX_CELLS",
]

MAX_CELLS = 100_000  # the default of runtime.max_cells


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
    #: the model's own metrics (a suite that mixes tasks: top-1 for a classifier, mIoU for a segmenter),
    #: in place of the suite's ``metrics:``; None: the suite's
    metrics: tuple[str, ...] | None = None


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
    activations: Any = None  # its ActivationSettings (the suite's, with its own fields), or None

    def applies_to(self, model: ModelEntry) -> bool:
        """Whether this entry compresses ``model``: its ``models:`` globs match the label or the name."""
        return not self.models or any(
            fnmatch.fnmatchcase(model.label, p) or fnmatch.fnmatchcase(model.request.name, p) for p in self.models
        )

    def points(self) -> int:
        """How many settings points the entry's grid makes: the product of every stage's grid axes."""
        return math.prod(len(values) for stage in self.stages for values in stage.grid.values())


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


class FrozenMapping(Mapping[str, Any]):
    """A read-only, hashable mapping; nested mappings and lists are frozen too (lists become tuples)."""

    def __init__(self, data: Mapping[str, Any]):
        self._data = {str(k): _freeze(v) for k, v in data.items()}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data.items(), key=lambda kv: kv[0])))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._data) == dict(other)

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"

    def __copy__(self) -> FrozenMapping:
        return self  # immutable: a copy may be the same object

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenMapping:
        return self

    def thaw(self) -> dict[str, Any]:
        """Plain dicts and lists (for JSON or YAML)."""
        return {k: _thaw(v) for k, v in self._data.items()}


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value if isinstance(value, FrozenMapping) else FrozenMapping(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """How a suite runs; not part of cell ids.

    Attributes:
        batch_size: the evaluation batch.
        latency_repeats: timed forward passes of the latency metrics.
        save_artifacts: write each cell's artifact (and record its bytes on disk).
        weight_limits: record ``details.rate_distortion`` and ``details.weight_structure`` (the code
            against the rate–distortion limits, and what the weights offer beyond i.i.d.) for every
            cell that replaces weights; one CPU thread spends 0.05–0.12 s a cell on
            EfficientNet-Lite0 and 0.3–1.0 s on ResNet-50 (4 to 32 bits), plus 0.3 s and 1.7 s once
            per model for the weight structure (``benchmarks/bench_limits.py``), so ``false`` skips it
            where even that matters. Metrics that need it (``weight_rd_gap_db``,
            ``weight_ecsq_gap_db``) compute it either way.
        threads: torch CPU threads (default: torch's own).
        max_cells: the most cells the grid may make; a larger grid is refused before any config is
            built (a stray 1000-value axis would otherwise take hours to notice).
        cell_timeout: seconds after which a cell is stopped and recorded "timed out" (default six
            hours; 0 for no limit; ``--cell-timeout`` wins).
        claim_timeout: seconds without a heartbeat after which a run on another host takes a claimed
            cell over (its owner is presumed dead); at least 15 (three heartbeats). A claim of a live
            process on the same host is never taken over, one of a dead process at once.
        executor: settings of executors, by executor name (``{NAME: {key: value}}``), handed to
            that executor untouched (the core reads none of them); a plugin that gives its
            ``ExecutorSpec`` a ``settings`` dataclass has its section checked when the suite loads.
    """

    batch_size: int = 256
    latency_repeats: int = 20
    save_artifacts: bool = True
    weight_limits: bool = True
    threads: int | None = None
    max_cells: int = MAX_CELLS
    cell_timeout: float | None = None
    claim_timeout: float | None = None
    executor: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=lambda: FrozenMapping({}))

    def __post_init__(self) -> None:
        for name, section in self.executor.items():
            if not isinstance(section, Mapping):
                raise ConfigError(f"executor.{name} must be a mapping of that executor's settings, got {section!r}", "executor")
        # frozen all the way down: a suite (and its runtime) stays hashable and nobody edits a plugin's settings
        object.__setattr__(self, "executor", FrozenMapping(self.executor))
        if self.cell_timeout is not None and self.cell_timeout < 0:
            raise ConfigError(f"cell_timeout must be >= 0 seconds (0: no limit), got {self.cell_timeout}", "cell_timeout")
        if self.claim_timeout is not None and self.claim_timeout < MIN_CLAIM_TIMEOUT:
            beat = HEARTBEAT_SECONDS / 2
            raise ConfigError(
                f"claim_timeout must be at least {MIN_CLAIM_TIMEOUT:g} seconds (3 heartbeats: a run "
                f"refreshes its claims every {beat:g} s, so a shorter timeout takes cells over from "
                f"runs that are alive), got {self.claim_timeout:g}",
                "claim_timeout",
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}", "threads")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}", "batch_size")
        if self.latency_repeats < 1:
            raise ConfigError(f"latency_repeats must be >= 1, got {self.latency_repeats}", "latency_repeats")
        if self.max_cells < 1:
            raise ConfigError(f"max_cells must be >= 1, got {self.max_cells}", "max_cells")


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
    activations: Any = None  # the suite's ActivationSettings (every entry's default), or None

    def grid_size(self) -> int:
        """How many cells the grid makes (:func:`count_cells`)."""
        return count_cells(self)


def _entry_cells(suite: Suite, entry: CompressorEntry) -> int:
    return entry.points() * (entry.seeds or suite.seeds) * sum(entry.applies_to(m) for m in suite.models)


def count_cells(suite: Suite) -> int:
    """How many cells the grid makes, counted without building a config or a model.

    It is the number ``cells.expand`` makes, unless two entries give the very same point (that
    cell then runs once).
    """
    return len(suite.models) * suite.baseline + sum(_entry_cells(suite, e) for e in suite.compressors)


def check_grid_size(suite: Suite) -> int:
    """The grid's cell count, checked against ``runtime.max_cells`` (``load_suite`` calls it).

    Raises:
        SuiteError: naming ``runtime.max_cells``, how many cells the grid makes and its largest entry.
    """
    total, limit = count_cells(suite), suite.runtime.max_cells
    if total <= limit:
        return total
    biggest = max(suite.compressors, key=lambda e: _entry_cells(suite, e))
    file, line = suite.source.where(biggest.path)
    path = ("runtime", "max_cells")
    at = suite.source.where(path) if suite.source.defines(path) else (file, line)
    raise SuiteError(
        f"the grid makes {total:,} cells, more than runtime.max_cells ({limit:,}); the largest entry, "
        f"{key_path(biggest.path)} (line {line}), makes {_entry_cells(suite, biggest):,}. Shrink its "
        f"grid, or raise the limit with `runtime: {{max_cells: {total}}}`",
        at[0],
        at[1],
        key_path(path),
    )
