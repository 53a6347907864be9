"""What reporter plugins register and receive (kept free of heavy imports: pandas loads on use).

A :class:`ReportContext` hands reporters the records' frame and, computed once per report and
shared by every reporter, the tables built from it: :meth:`ReportContext.methods`,
:meth:`~ReportContext.leaderboards`, :meth:`~ReportContext.theory`, :meth:`~ReportContext.failures`,
the notes to print with them, and the terminal summary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from .tables import MetricMeta

__all__ = ["ReportContext", "ReporterSpec"]


@dataclasses.dataclass
class ReportContext:
    """What a reporter receives."""

    out_dir: Path
    frame: pd.DataFrame  # every record, one row each
    metrics: list[MetricMeta]  # in suite order
    settings: dict[str, Any]  # the suite's report settings
    suite: str
    _cache: dict[str, Any] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per report: reporters share what is costly (tables, figures) by key."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def primary(self) -> MetricMeta | None:
        """The quality metric of Pareto plots and verdicts (see ``b2s_bench.reporting.tables.primary_metric``)."""
        from .tables import primary_metric

        return primary_metric(self.metrics, self.settings.get("primary"))

    def methods(self) -> pd.DataFrame:
        """One row per method (seeds pooled): ``b2s_bench.reporting.tables.methods``."""
        from .tables import methods

        return self.cached("methods", lambda: methods(self.frame, self.metrics))

    def leaderboards(self) -> list[tuple[str, pd.DataFrame]]:
        """(title, display table) per model and dataset: ``b2s_bench.reporting.tables.leaderboards``."""
        from .tables import leaderboards

        return self.cached("leaderboards", lambda: leaderboards(self.frame, self.metrics, self.settings, table=self.methods()))

    def theory(self) -> list[tuple[str, pd.DataFrame]]:
        """(title, table) per theory section: ``b2s_bench.reporting.theory.theory_sections``."""
        from .theory import theory_sections

        return self.cached(
            "theory", lambda: theory_sections(self.frame, self.metrics, self.settings.get("primary"), table=self.methods())
        )

    def failures(self) -> pd.DataFrame:
        from .tables import failures

        return self.cached("failures", lambda: failures(self.frame))

    def not_applicable(self) -> pd.DataFrame:
        """Cells kept out of the rankings (``not-applicable``, ``short-of-target``), with why."""
        from .tables import not_applicable

        return self.cached("not_applicable", lambda: not_applicable(self.frame))

    def caveat_notes(self) -> list[str]:
        """Footnotes of the leaderboard rows marked † (settings without effect, unconverged fits)."""
        from .tables import caveat_notes

        return self.cached("caveat_notes", lambda: caveat_notes(self.frame))

    def operating_point_note(self) -> list[str]:
        """The note under the leaderboards: what the "operating point" column means, then one line per
        compressor with where its defaults come from (``b2s_bench.reporting.tables.operating_point_note``)."""
        from .tables import operating_point_note

        return self.cached("operating_point_note", lambda: operating_point_note(self.frame))

    def notes(self) -> dict[str, str]:
        """Text to print with the tables: "stats" (how intervals and verdicts are computed),
        "below_limit" (what a result below the Gaussian rate-distortion limit means) and a note for
        some theory sections, by title."""
        from .tables import stats_note
        from .theory import RATE_DISTORTION, SECTION_NOTES

        return {"stats": stats_note(), "below_limit": SECTION_NOTES[RATE_DISTORTION], **SECTION_NOTES}

    def summary(self, top: int = 5, width: int = 100) -> str:
        """The terminal summary (``b2s_bench.reporting.summary.summary_text``) of these records."""
        from .summary import summary_lines

        return "\n".join(summary_lines(self.frame, self.metrics, self.settings, self.out_dir, top, width, table=self.methods()))


@dataclasses.dataclass(frozen=True)
class ReporterSpec:
    """A reporter plugin: ``write(context) -> list of files written``."""

    name: str
    write: Callable[[ReportContext], list[Path]]
    description: str = ""
