"""What reports know of a metric, read back from the records (no imports: every module may use it)."""

from __future__ import annotations

import dataclasses

__all__ = ["MetricMeta"]


@dataclasses.dataclass(frozen=True)
class MetricMeta:
    """A metric as its records describe it (``MetricSpec.record_entry``)."""

    name: str
    unit: str
    higher_is_better: bool
    kind: str  # "quality", "size", "weights", "time"
    roles: tuple[str, ...] = ()  # see b2s_bench.metrics.ROLES
    rank: int = 100
    identity_target: float | None = None
    description: str = ""
