"""Reports and statistics, built from records alone (public face).

- **Reporter plugins**: :class:`ReporterSpec` (the spec, also at the top level), :class:`ReportContext`,
  :class:`MetricMeta`, :class:`Record`, :func:`write_report` (every report of a run folder).
- **Tables**: :func:`leaderboards`, :func:`failures`, :func:`not_applicable`, :func:`caveat_notes`,
  :func:`primary_metric`, :func:`header`, :func:`short_labels` (cuts labels to a width, never two to
  the same text), :data:`BITS_PER_MB`, :data:`NOT_APPLICABLE_TITLE`, :data:`CAVEAT_MARK`.
- **Statistics**: :func:`per_example_arrays`, :func:`sample_scale`, :func:`clusters_of`,
  :func:`paired_bootstrap`, :func:`pooled_paired`, :class:`Paired`.
- **Theory checks**: :func:`theory_sections`, :func:`pareto_front`.

Importing it loads no pandas; pandas loads when a table is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_face

_EXPORTS = {
    "ReporterSpec": "spec",
    "ReportContext": "spec",
    "MetricMeta": "tables",
    "Record": "..store.records",
    "write_report": "files",
    "leaderboards": "tables",
    "failures": "tables",
    "not_applicable": "tables",
    "caveat_notes": "tables",
    "primary_metric": "tables",
    "header": "tables",
    "short_labels": "tables",
    "BITS_PER_MB": "tables",
    "NOT_APPLICABLE_TITLE": "tables",
    "CAVEAT_MARK": "tables",
    "per_example_arrays": "tables",
    "sample_scale": "tables",
    "clusters_of": "..store.samples",
    "paired_bootstrap": "stats",
    "pooled_paired": "stats",
    "Paired": "stats",
    "theory_sections": "theory",
    "pareto_front": "theory",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:
    from ..store.records import Record
    from ..store.samples import clusters_of
    from .files import write_report
    from .spec import ReportContext, ReporterSpec
    from .stats import Paired, paired_bootstrap, pooled_paired
    from .tables import (
        BITS_PER_MB,
        CAVEAT_MARK,
        NOT_APPLICABLE_TITLE,
        MetricMeta,
        caveat_notes,
        failures,
        header,
        leaderboards,
        not_applicable,
        per_example_arrays,
        primary_metric,
        sample_scale,
        short_labels,
    )
    from .theory import pareto_front, theory_sections
