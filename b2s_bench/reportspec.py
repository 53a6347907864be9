"""What reporter plugins register and receive (kept free of heavy imports: pandas loads on use)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MetricMeta", "ReportContext", "ReporterSpec"]


@dataclasses.dataclass(frozen=True)
class MetricMeta:
    name: str
    unit: str
    higher_is_better: bool
    kind: str  # "quality", "size", "weights", "time"
    roles: tuple[str, ...] = ()  # see b2s_bench.metrics.ROLES
    rank: int = 100
    identity_target: float | None = None
    description: str = ""


@dataclasses.dataclass
class ReportContext:
    """What a reporter receives."""

    out_dir: Path
    frame: pd.DataFrame  # every record, one row each
    metrics: list[MetricMeta]  # in suite order
    settings: dict[str, Any]  # the suite's report settings
    suite: str


@dataclasses.dataclass(frozen=True)
class ReporterSpec:
    """A reporter plugin: ``write(context) -> list of files written``."""

    name: str
    write: Callable[[ReportContext], list[Path]]
    description: str = ""
