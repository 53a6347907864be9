"""A cooperating run: what a batch job (a Slurm array task) does with a run plan.

It is an ordinary run of the same suite into the same folder, restricted to the plan's cells: it
claims cells (so the array's tasks never compute one twice, and take over a dead task's claims),
writes records, and rebuilds the reports when it finds the whole suite done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .executors import RunPlan

__all__ = ["run_cells", "suite_finished"]


def suite_finished(out_dir: Path) -> bool:
    """Every cell of the suite has a record, and no run holds a claim."""
    from ..store.folder import RunStore

    store = RunStore(out_dir)
    manifest = store.manifest() or {}
    cells = manifest.get("cells", [])
    return bool(cells) and not store.active_claims() and all((out_dir / "cells" / f"{c}.json").is_file() for c in cells)


def run_cells(plan: RunPlan, cell_ids: list[str], executor: str | None = None, workers: int = 1) -> dict[str, Any]:
    """Run ``cell_ids`` of ``plan`` here; returns counts for the job's log."""
    from ..reporting.files import write_report
    from .prepare import prepare_run
    from .runner import Runner, RunOptions

    run = prepare_run(plan.suite_file, plugin_files=plan.plugin_files, plugin_disable=plan.plugin_disable,
                      plugin_options=plan.plugin_options, device=plan.device, only=cell_ids, models=True)
    options = RunOptions(out_dir=Path(plan.out_dir), progress=False, executor=executor, workers=workers,
                         cell_timeout=plan.cell_timeout)
    summary = Runner(run, options).run()
    reported = False
    if suite_finished(Path(plan.out_dir)):
        write_report(plan.out_dir, run.plugins)
        reported = True
    return {"computed": summary.computed, "failed": len(summary.failed), "by_others": summary.by_others,
            "reported": reported}
