"""The worker side of every executor: turn (plan, cell id) into a record, in any process.

A worker process loads the plugins and the suite the way the driver did (the same plugin files,
disabled plugins and plugin options), expands the suite, and keeps that state for the next cell:
workers are long-lived, so only the first cell pays for imports and model building.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

from .errors import CannotWrite
from .execution import RunPlan

__all__ = ["execute", "execute_cell", "setup", "adopt"]

_STATE: dict[RunPlan, Any] = {}


def setup(plan: RunPlan) -> Any:
    """This process's runner for ``plan`` (built on first use)."""
    if plan not in _STATE:
        import torch

        from .cellrun import CellRunner
        from .cells import expand
        from .plugins import load_plugins
        from .store import RunStore
        from .suite import load_suite

        if plan.threads:
            torch.set_num_threads(plan.threads)
        plugins = load_plugins(files=plan.plugin_files, disable=plan.plugin_disable)
        for flag, value in plan.plugin_options:
            plugins.cli_options.registry.get(flag).option.apply(value)
        suite = load_suite(plan.suite_file, plugins)
        device = torch.device(plan.device)
        runner = CellRunner(suite, plugins, device, RunStore(plan.out_dir))
        cells = {c.id: c for c in expand(suite, plugins, device.type)}
        _STATE.clear()  # one plan per process at a time: a new run's state replaces the old one
        _STATE[plan] = (runner, cells)
    return _STATE[plan]


def adopt(plan: RunPlan, runner: Any, cells: dict[str, Any]) -> None:
    """Let cells of ``plan`` computed in this very process (the inline executor) use the driver's own
    runner: its plugins (also ones given in Python), suite and model cache."""
    _STATE.clear()
    _STATE[plan] = (runner, cells)


def execute(plan: RunPlan, cell_id: str) -> dict[str, Any]:
    """The record of one cell. Errors inside the cell become an ``error`` record; only a dying
    process (a signal, ``sys.exit``) escapes, and the executor records that."""
    try:
        runner, cells = setup(plan)
    except Exception as e:  # the suite or plugins cannot be set up here: the cell fails with the reason
        return _setup_failure(cell_id, e)
    cell = cells.get(cell_id)
    if cell is None:
        return _setup_failure(cell_id, LookupError(
            f"cell {cell_id} is not in the suite as worker pid {os.getpid()} reads it: the suite file, its "
            "plugins or its model weights changed during the run; run it again"))
    try:
        return dict(runner.run(cell))
    except CannotWrite as e:  # told to the driver, which stops the run: never the cell's error record
        return {"cell_id": cell_id, "cannot_write": str(e)}


def _setup_failure(cell_id: str, error: BaseException) -> dict[str, Any]:
    return {"cell_id": cell_id, "status": "error", "setup_failed": True,
            "error": {"type": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()}}


execute_cell = execute  # the public name (b2s_bench.execute_cell)
