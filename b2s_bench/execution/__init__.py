"""Running cells (public face): what executor plugins implement and use, and a run from code.

- **Executors**: :class:`ExecutorSpec` (the spec, also at the top level), :class:`Executor`,
  :class:`ExecutorOptions`, :class:`RunPlan`, :class:`CellTask`, :class:`CellOutcome`,
  :class:`ActiveCell`, :func:`b2s_environment`.
- **In a worker or a batch job**: :func:`execute_cell` turns a task into a record in any process,
  :func:`die_with_parent` and :func:`set_log` tie a worker to its run, :func:`run_cells` is a batch
  job's cooperating run, :func:`read_record` and :func:`cell_path` read a run folder.
- **A run from code** (benchmarks, notebooks): :func:`load_plugins`, :func:`prepare_run` (plugins,
  suite, device, weights, cells: what ``b2s-bench run`` does before it runs), :class:`PreparedRun`,
  :class:`Runner`, :class:`RunOptions`, :class:`RunSummary`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_face

_EXPORTS = {
    "ExecutorSpec": "executors",
    "Executor": "executors",
    "ExecutorOptions": "executors",
    "RunPlan": "executors",
    "CellTask": "executors",
    "CellOutcome": "executors",
    "ActiveCell": "executors",
    "b2s_environment": "executors",
    "execute_cell": "worker",
    "die_with_parent": "worker",
    "set_log": "worker",
    "run_cells": "runner",
    "Runner": "runner",
    "RunOptions": "runner",
    "RunSummary": "runner",
    "read_record": "..store.records",
    "cell_path": "..store.records",
    "load_plugins": "..plugins",
    "prepare_run": "prepare",
    "PreparedRun": "prepare",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:
    from ..plugins import load_plugins
    from ..store.records import cell_path, read_record
    from .executors import (
        ActiveCell,
        CellOutcome,
        CellTask,
        Executor,
        ExecutorOptions,
        ExecutorSpec,
        RunPlan,
        b2s_environment,
    )
    from .prepare import PreparedRun, prepare_run
    from .runner import Runner, RunOptions, RunSummary, run_cells
    from .worker import die_with_parent, execute_cell, set_log
