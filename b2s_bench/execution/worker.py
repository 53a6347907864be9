"""The worker side of every executor: turn (plan, cell id) into a record, in any process.

A worker process loads the plugins and the suite the way the driver did (the same plugin files,
disabled plugins and plugin options), expands the suite, and keeps that state for the next cell:
workers are long-lived, so only the first cell pays for imports and model building.

A cell's messages (a compressor's ``ctx.log``, Python warnings) go to :func:`set_log`'s sink,
prefixed by the cell's name: stderr by default, the driver's terminal for the process executor.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..errors import CannotWrite
from ..store.records import json_safe
from .executors import RunPlan

__all__ = ["execute", "execute_cell", "setup", "adopt", "set_log", "die_with_parent"]

_STATE: dict[RunPlan, Any] = {}
_SINK: list[Callable[[str], None]] = [lambda msg: print(msg, file=sys.stderr, flush=True)]
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def set_log(sink: Callable[[str], None]) -> None:
    """Where this process sends cells' messages (each already prefixed by its cell's name)."""
    _SINK[0] = sink


def _log(message: str) -> None:
    _SINK[0](message)


def die_with_parent(parent_pid: int, every: float = 1.0) -> None:
    """End this worker process when ``parent_pid`` (the run that started it) dies, however it dies.

    On Linux the kernel sends SIGKILL at the parent's death (``PR_SET_PDEATHSIG``; it fires when the
    thread that started this process ends, and the executor starts and stops its workers from one
    thread). A watchdog thread, checking that the parent is still ours every ``every`` seconds, is
    the fallback elsewhere. Without them a worker outlived a killed run, hanging in a plugin with no
    cell timeout any more, and holding the run's stdout open. It also makes the worker the first to go
    out of memory (:func:`first_to_go_out_of_memory`).
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the watchdog alone
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:  # a dead parent's children are re-parented
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="b2s-bench-parent-watchdog").start()
    first_to_go_out_of_memory()


#: the worker's ``/proc/self/oom_score_adj``: raised so that, out of memory, the kernel kills a worker
#: (its cell recorded failed, "killed by SIGKILL (out of memory ...)") before the run that holds the records
WORKER_OOM_SCORE_ADJ = 500


def first_to_go_out_of_memory() -> None:
    """Make this process the kernel's first choice when memory runs out (Linux; elsewhere nothing).

    A plugin that eats memory must cost its own cell, not the run: without this the out-of-memory killer
    may pick the driver (which holds the run's state), since its score is about its own size. Raising a
    process's own score needs no privilege."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(WORKER_OOM_SCORE_ADJ))
    except OSError:  # not Linux, or a sandbox that forbids it: the kernel's default choice
        pass


def setup(plan: RunPlan) -> Any:
    """This process's runner for ``plan`` (built on first use)."""
    if plan not in _STATE:
        import torch

        from ..store.folder import RunStore
        from .cell import CellRunner
        from .prepare import prepare_run

        if plan.threads:
            torch.set_num_threads(plan.threads)
        # the driver prepared the models' weights; a worker reads them (models=False)
        run = prepare_run(
            plan.suite_file,
            plugin_files=plan.plugin_files,
            plugin_disable=plan.plugin_disable,
            plugin_options=plan.plugin_options,
            device=plan.device,
        )
        runner = CellRunner(run.suite, run.plugins, run.device, RunStore(plan.out_dir), log=_log)
        cells = {c.id: c for c in run.all_cells}
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
    process (a signal, ``os._exit``) escapes (``sys.exit`` in a cell is its error), and the executor records that."""
    try:
        runner, cells = setup(plan)
    except Exception as e:  # the suite or plugins cannot be set up here: the cell fails with the reason
        return _setup_failure(cell_id, e)
    cell = cells.get(cell_id)
    if cell is None:
        return _setup_failure(
            cell_id,
            LookupError(
                f"cell {cell_id} is not in the suite as worker pid {os.getpid()} reads it: the suite file, its "
                "plugins or its model weights changed during the run; run it again"
            ),
        )
    try:
        # as it will be written: a plugin's info may hold what cannot be pickled back to the driver (a lambda)
        return dict(json_safe(dict(runner.run(cell))))
    except CannotWrite as e:  # told to the driver, which stops the run: never the cell's error record
        return {"cell_id": cell_id, "cannot_write": str(e)}


def _setup_failure(cell_id: str, error: BaseException) -> dict[str, Any]:
    return {
        "cell_id": cell_id,
        "status": "error",
        "setup_failed": True,
        "error": {"type": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()},
    }


execute_cell = execute  # the public name (b2s_bench.execution.execute_cell)
