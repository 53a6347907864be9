"""Executors on this machine: ``process`` (the default: isolated, long-lived worker processes, with a
per-cell timeout) and ``inline`` (this process, one cell at a time: for debugging with pdb)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import b2s_bench as b2s


class InlineExecutor:
    """Runs each cell in this process, one at a time, when polled: no isolation, for debugging (pdb)."""

    capacity = 1

    def __init__(self, options: b2s.execution.ExecutorOptions):
        self.options = options
        self._queue: list[b2s.execution.CellTask] = []
        self._running: b2s.execution.ActiveCell | None = None

    def describe(self) -> str:
        # said in the run's header: a hung cell hangs the run (runtime.cell_timeout needs a worker to stop)
        return "this process (inline executor), one at a time, with no cell time limit"

    def submit(self, task: b2s.execution.CellTask) -> None:
        self._queue.append(task)

    def poll(self, timeout: float) -> list[b2s.execution.CellOutcome]:
        if not self._queue:
            return []
        task = self._queue.pop(0)
        start = time.time()
        self._running = b2s.execution.ActiveCell(task.cell_id, task.name, socket.gethostname(), start)
        try:
            record = b2s.execution.execute_cell(task.plan, task.cell_id)
        finally:
            self._running = None
        return [b2s.execution.CellOutcome(task.cell_id, record, None, socket.gethostname(), time.time() - start)]

    def active(self) -> list[b2s.execution.ActiveCell]:
        return [self._running] if self._running else []

    def cancel(self, cell_id: str) -> None:
        self._queue = [t for t in self._queue if t.cell_id != cell_id]

    def close(self) -> None:
        self._queue.clear()


def _process(options: b2s.execution.ExecutorOptions) -> Any:
    from .pool import ProcessExecutor

    return ProcessExecutor(options)


EXECUTORS = [
    b2s.ExecutorSpec(
        "process",
        _process,
        "worker processes on this machine (--workers N or auto: one per GPU, "
        "or cores / runtime.threads); crashes and timeouts fail only their cell",
        rank=0,
    ),
    b2s.ExecutorSpec(
        "inline", InlineExecutor, "in this process, one cell at a time; no isolation or timeout (for debugging with pdb)", rank=10
    ),
]


@b2s.hookimpl
def b2s_register_executors(register: Callable[[b2s.ExecutorSpec], None]) -> None:
    for spec in EXECUTORS:
        register(spec)
