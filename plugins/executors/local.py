"""Executors on this machine: ``process`` (the default: isolated, long-lived worker processes, with a
per-cell timeout) and ``inline`` (this process, one cell at a time: for debugging with pdb)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import b2s_bench as b2s


def _process(options: b2s.ExecutorOptions) -> Any:
    from .pool import ProcessExecutor

    return ProcessExecutor(options)


EXECUTORS = [
    b2s.ExecutorSpec("process", _process, "worker processes on this machine (--workers N or auto: one per GPU, "
                     "or cores / runtime.threads); crashes and timeouts fail only their cell", rank=0),
    b2s.ExecutorSpec("inline", b2s.InlineExecutor, "in this process, one cell at a time; no isolation or timeout "
                     "(for debugging with pdb)", rank=10),
]


@b2s.hookimpl
def b2s_register_executors(register: Callable[[b2s.ExecutorSpec], None]) -> None:
    for spec in EXECUTORS:
        register(spec)
